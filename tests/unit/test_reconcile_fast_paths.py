"""Issue 15 (k17rec): the restart pass's element and record fast paths
give exactly what the slow paths gave: the element's bytes equal a keyword
construction's, and a store value that is not a record is still refused
(Unreadable), one record at a time."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest

from jvpn.gate import abi
from jvpn.gate.element import session_element
from jvpn.keys import KeyRing, SessionKeys
from jvpn.session import Event, State, Transport, apply, new_session
from jvpn.store import Unreadable, record_from_json, record_to_json


def _keys(sid: int, epoch: int, fill: int) -> SessionKeys:
    b = bytes([fill])
    return SessionKeys(sid, b * 32, b * 32, bytes(range(fill, fill + 16)), b * 16, b * 32, epoch)


def _keyword_element(rec, keys, fence, remote, unused, **slot) -> abi.Session:
    """The element as the keyword constructor built it before (the reference)."""
    words = {k.phase: struct.unpack("<QQ", k.hdr_c2s) for k in KeyRing.of(keys).live()}
    mask = sum(abi.key_phase_bit(p) for p in words)
    for phase in (0, 1):
        words.setdefault(phase, struct.unpack("<QQ", unused()))
    b = rec.binding
    family, addr = abi.AF_NONE, (0, 0, 0, 0)
    if b is not None:
        family = abi.AF_INET6 if ":" in b.addr else abi.AF_INET
        addr = abi.addr_words(b.addr)
    return abi.Session(tag_key=words[0], tag_key_phase1=words[1], key_phases=mask,
                       version=rec.version, fence=fence,
                       state=abi.STATE_REMOTE if remote else int(rec.state),
                       bind_family=family, bind_addr=addr,
                       bind_port=abi.port_word(b.port) if b else 0, **slot)


def _ring(sid: int, overlap: bool | str) -> KeyRing:
    if overlap == "phase 1":  # one epoch, an odd one (k19rec: its own path)
        return KeyRing(_keys(sid, 3, 7))
    ring = KeyRing(_keys(sid, 0, 1))
    return ring.rotated(_keys(sid, 1, 7), confirmed=True) if overlap else ring


@pytest.mark.parametrize("addr", [None, "198.18.0.1", "2001:db8::7"])
@pytest.mark.parametrize("overlap", [False, True, "phase 1"])
@pytest.mark.parametrize("remote", [False, True])
def test_an_element_built_positionally_has_the_keyword_constructions_bytes(addr, overlap, remote):
    rec = new_session(0x1122334455667788, 5, inner_addr="10.0.0.2")
    if addr is not None:
        rec, _tr = apply(rec, Event.ATTACH_OK, 6, binding=Transport(addr, 4000))
    slot = dict(rt_slot=77, rt_gen=(1 << 64) - 1, replay_floor=1 << 40, ctl_floor=9,
                probe_floor=(1 << 63) + 3)
    keys = _ring(rec.session_id, overlap)
    got = session_element(rec, keys, 0xABCDEF, remote, unused_key=lambda: b"\x05" * 16, **slot)
    want = _keyword_element(rec, keys, 0xABCDEF, remote, lambda: b"\x05" * 16, **slot)
    assert bytes(got) == bytes(want)
    assert type(got) is abi.Session


def _record():
    rec = new_session(0x42, 1000, owner="gw-a", inner_addr="10.0.0.9", peer_key="cGVlcg==")
    rec, _tr = apply(rec, Event.ATTACH_OK, 1001, binding=Transport("198.18.0.4", 5000))
    return rec


def test_a_record_with_every_field_known_reads_back_equal():
    rec = dataclasses.replace(_record(), confirmed=False, switches_ms=(3, 4))
    assert record_from_json(record_to_json(rec)) == rec


def test_a_record_with_an_unknown_field_drops_only_that_field():
    d = json.loads(record_to_json(_record()))
    d["from_a_newer_version"] = {"x": 1}
    assert record_from_json(json.dumps(d)) == _record()


@pytest.mark.parametrize("change", [
    {"state": "NOT_A_STATE"}, {"state": 2}, {"state": ["ATTACHED"]},
    {"binding": {"addr": "1.2.3.4"}}, {"binding": {"addr": "1.2.3.4", "port": 1, "x": 2}},
    {"binding": [1, 2]}, {"session_id": "66"}, {"version": 1.5}, {"epoch": None},
    {"peer_key": 7}, {"confirmed": 1}, {"switches_ms": 5},
])
def test_a_hostile_field_is_refused_as_unreadable(change):
    d = json.loads(record_to_json(_record()))
    d.update(change)
    with pytest.raises(Unreadable):
        record_from_json(json.dumps(d))


@pytest.mark.parametrize("text", ['[1, 2]', '"ATTACHED"', "7", "null", "{", b"\xff\xfe", "{}"])
def test_a_value_that_is_no_record_is_refused_as_unreadable(text):
    with pytest.raises(Unreadable):
        record_from_json(text)


def test_a_missing_field_is_refused_as_unreadable():
    d = json.loads(record_to_json(_record()))
    del d["created_ms"]
    with pytest.raises(Unreadable):
        record_from_json(json.dumps(d))
    assert State.ATTACHED is record_from_json(record_to_json(_record())).state


# ---- a value nested deeper than the decoder's recursion limit (k17rec) ----
DEEP = "[" * 100_000 + "]" * 100_000  # json raises RecursionError, not a ValueError


@pytest.mark.parametrize("text", [DEEP, '{"state": ' + DEEP + "}", DEEP.encode()])
def test_a_value_nested_too_deep_is_unreadable_not_a_recursion_error(text):
    with pytest.raises(Unreadable):
        record_from_json(text)


def test_one_record_nested_too_deep_costs_that_session_only(tmp_path):
    """Before: the decoder's RecursionError left the store's pass, and the
    whole start failed on one stored value."""
    from jvpn.keys import derive_session_keys  # noqa: PLC0415
    from jvpn.store.sqlite import SqliteStore  # noqa: PLC0415
    from kits.daemon_kit import AdmitAll, make_gateway  # noqa: PLC0415

    store = SqliteStore(tmp_path / "s.db")
    sids = list(range(1000, 1006))
    for sid in sids:
        rec, _tr = apply(new_session(sid, 1, owner="gw-test"), Event.ATTACH_OK, 1,
                         binding=Transport("192.0.2.1", 1000 + sid))
        store.create(rec.with_(inner_addr="10.99.0.2"), derive_session_keys(
            sid, bytes([sid % 256]) * 32, b"\x06" * 32, b"\x07" * 32).pack())
    store._db.execute("UPDATE sessions SET record=? WHERE session_id=1003", (DEEP,))
    gw = make_gateway(tmp_path, store=store, gate=AdmitAll())
    gw.reconcile()
    assert set(gw.table.sessions) == set(sids) - {1003}


@pytest.mark.parametrize("field", ["version", "fence"])
def test_an_element_field_out_of_range_is_refused_not_cut_short(field):
    """k18rec2: the packed element refuses a value its field cannot hold
    (a damaged store's version of 2**64), where ctypes kept its low bits."""
    rec = new_session(0x1122334455667788, 5, inner_addr="10.0.0.2")
    rec, _tr = apply(rec, Event.ATTACH_OK, 6, binding=Transport("198.18.0.1", 4000))
    fence = 0
    if field == "version":
        rec = dataclasses.replace(rec, version=1 << 64)
    else:
        fence = 1 << 64
    with pytest.raises(ValueError, match="does not fit"):
        session_element(rec, _ring(rec.session_id, False), fence)
