"""Issue 15 (k19rec): records, transports and key epochs made from their
fields at once (jvpn/frozen.py) are the objects their classes make: equal
field for field, of the class itself, hashing and refusing changes alike;
and the restart's decoders that use them (record_from_json,
KeyRing.unpack) answer and refuse exactly as the classes' constructors did."""

from __future__ import annotations

import dataclasses
import json
import operator
import struct

import pytest

from jvpn.frozen import positional_maker
from jvpn.keys import KeyRing, SessionKeys, ring_for
from jvpn.rekey_answer import RekeyAnswer
from jvpn.session import Event, SessionRecord, State, Transport, apply, new_session
from jvpn.store import Stored, Unreadable, record_from_json, record_to_json

_NAMES = tuple(f.name for f in dataclasses.fields(SessionRecord))


def _keys(sid: int, epoch: int, fill: int) -> SessionKeys:
    b = bytes([fill])
    return SessionKeys(sid, b * 32, b * 32, b * 16, bytes(range(16)), b * 32, epoch)


def _record(**changes) -> SessionRecord:
    rec = new_session(0x42, 1000, owner="gw-a", inner_addr="10.0.0.9", peer_key="cGVlcg==")
    rec, _tr = apply(rec, Event.ATTACH_OK, 1001, binding=Transport("198.18.0.4", 5000))
    return dataclasses.replace(rec, **changes)


def _same(made, want) -> None:
    """One object as the other: class, every field (by identity of type
    too: True is not 1), equality, hash, repr, and frozen."""
    assert type(made) is type(want)
    for f in dataclasses.fields(want):
        got, expected = getattr(made, f.name), getattr(want, f.name)
        assert got == expected and type(got) is type(expected), f.name
    assert made == want and hash(made) == hash(want) and repr(made) == repr(want)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, dataclasses.fields(want)[0].name, 99)


@pytest.mark.parametrize("cls, values", [
    (SessionRecord, operator.attrgetter(*_NAMES)(_record(switches_ms=(1, 2), confirmed=False))),
    (Transport, ("2001:db8::1", 7)),
    (SessionKeys, tuple(dataclasses.astuple(_keys(9, 3, 4)))),
    (KeyRing, (_keys(9, 1, 4), _keys(9, 0, 5), True, None, 1234)),
    (Stored, (_record(), b"secrets", 7, (9, False), None)),
])
def test_a_made_object_is_the_one_its_class_makes(cls, values):
    _same(positional_maker(cls)(*values), cls(*values))


def test_only_a_slotted_dataclass_of_its_fields_alone_is_made_this_way():
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Derived(Base):
        b: int

    for cls in (NoSlots, Derived):
        with pytest.raises(TypeError):
            positional_maker(cls)


def _reference_record(text: str) -> SessionRecord:
    """record_from_json as it was before (k18): the classes' constructors."""
    d = json.loads(text)
    d["state"] = State[d["state"]]
    for k in ("binding", "candidate"):
        nested = d.get(k)
        if nested and type(nested.get("addr")) is not str:
            raise TypeError(f"{k} address must be a string")
        d[k] = Transport(**nested) if nested else None
    d["switches_ms"] = tuple(d.get("switches_ms", ()))
    defaults = {f.name: f.default for f in dataclasses.fields(SessionRecord)
                if f.default is not dataclasses.MISSING}
    defaults["switches_ms"] = ()
    return SessionRecord(*operator.itemgetter(*_NAMES)({**defaults, **d}))


def _stored(**changes) -> dict:
    d = json.loads(record_to_json(_record()))
    d.update(changes)
    return d


@pytest.mark.parametrize("value", [
    _stored(),
    _stored(candidate={"addr": "2001:DB8:0::5", "port": 9}, state="RECOVERING"),
    _stored(binding={"addr": "::ffff:198.18.0.4", "port": 5000}),  # made canonical
    _stored(switches_ms=[5, 6], confirmed=False, newer_field=[1]),
])
def test_a_record_decodes_as_the_constructors_made_it(value):
    text = json.dumps(value)
    _same(record_from_json(text), _reference_record(text))
    for name in ("binding", "candidate"):
        t = getattr(record_from_json(text), name)
        if t is not None:
            _same(t, Transport(t.addr, t.port))


@pytest.mark.parametrize("transport", [
    {"addr": "198.18.0.4"},  # no port
    {"addr": "198.18.0.4", "port": 1, "scope": 2},  # a field Transport does not have
    {"port": 1, "other": 2},  # no address
    {"addr": 7, "port": 1},  # an address that is no string
    {"addr": "198.18.0.4", "port": "1"},  # a port that is no integer
    {"addr": "198.18.0.4", "port": 1 << 16},  # out of range
    {"addr": "198.18.0.4", "port": 0},  # no UDP source's
    {"addr": "not an address", "port": 5000},  # read as a record before k22gaps
    ["198.18.0.4", 1],  # no object
])
def test_a_damaged_transport_is_refused_as_before(transport):
    text = json.dumps(_stored(binding=transport))
    with pytest.raises(Unreadable) as got:
        record_from_json(text)
    # the same refusal as the constructors' path: it raised too, or its
    # record fails the range checks every read applies
    try:
        _reference_record(text)
    except (TypeError, KeyError, AttributeError) as e:
        assert type(e).__name__ in str(got.value)


def _answer(new_epoch: int) -> RekeyAnswer:
    return RekeyAnswer(new_epoch=new_epoch, switch_epoch=0, version=3, overlap_ms=5,
                       prev_keys_ms=10, prev_c2s_base=1, prev_s2c_base=2,
                       client_ephemeral=b"\x01" * 32, gateway_ephemeral=b"\x02" * 32,
                       confirm=b"\x03" * 32)


@pytest.mark.parametrize("ring", [
    KeyRing(_keys(5, 0, 1)),
    KeyRing(_keys(5, 1, 1), _keys(5, 0, 2)),  # an overlap
    KeyRing(_keys(5, 1, 1), _keys(5, 0, 2), confirmed=False, answer=_answer(1)),
    KeyRing(_keys(5, 1, 1), _keys(5, 0, 2), overlap_until_ms=99),
])
def test_a_key_ring_unpacks_as_its_class_makes_it(ring):
    _same(KeyRing.unpack(ring.pack()), ring)
    _same(KeyRing.unpack(ring.pack()).current, ring.current)


def test_an_overlap_end_stored_without_a_previous_epoch_is_kept_as_before():
    keys = _keys(5, 4, 1)  # no pack writes it; a store value may hold it
    raw = struct.pack("<4sBQ", b"JKR2", 2 | 8, 4) + keys.pack() + struct.pack("<Q", 77)
    _same(KeyRing.unpack(raw), KeyRing(keys, None, True, None, 77))


def test_a_version_1_secrets_value_unpacks_as_before():
    keys = _keys(5, 0, 3)
    _same(KeyRing.unpack(keys.pack()), KeyRing(keys))


def test_a_damaged_ring_is_refused_as_before():
    one = KeyRing(_keys(5, 0, 1)).pack()
    unconfirmed = bytearray(one)
    unconfirmed[4] &= ~2  # one epoch, not confirmed: nothing to send under
    with pytest.raises(ValueError, match="unconfirmed keys need the previous epoch"):
        KeyRing.unpack(bytes(unconfirmed))
    with pytest.raises(ValueError, match="wrong length"):
        KeyRing.unpack(one + b"\x00")
    rec = _record(session_id=6)
    with pytest.raises(ValueError, match="name session"):
        ring_for(rec, one)


def test_positional_maker_makes_what_the_class_makes_whatever_its_field_names():
    """Review k19r4: jvpn/frozen.py generates
    ``def make(<fields>): o = _new(_twin); o.<f> = <f> ...``, so a field named
    like one of that function's own names (``o``) was overwritten by the
    object itself, silently. No class made this way has such a field today;
    the maker must refuse one (TypeError, as for any layout it cannot make)
    or make it right, never another object."""
    from dataclasses import dataclass

    from jvpn.frozen import positional_maker

    @dataclass(frozen=True, slots=True)
    class Named:
        o: int
        b: int

    try:
        make = positional_maker(Named)
    except TypeError:
        return  # refused: fine
    made = make(1, 2)
    assert made.o == 1 and made == Named(1, 2)
