"""Issue 15 (k19rec): a stored record in the layout the stores write is
read straight from its text (jvpn/store/record_text.py); every other text is
decoded as JSON as before. Both paths give the same record, field for field,
and refuse the same values the same way."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from jvpn.config import HANDSHAKE_AHEAD_MAX_MS
from jvpn.session import SessionRecord, State, Transport
from jvpn.store import Unreadable, _decoded, record_from_json, record_to_json
from jvpn.store.record_text import _KIND, fields_of

_NAMES = tuple(f.name for f in dataclasses.fields(SessionRecord))


def _same(a: SessionRecord, b: SessionRecord) -> None:
    assert type(a) is type(b) is SessionRecord
    for name in _NAMES:
        x, y = getattr(a, name), getattr(b, name)
        assert x == y and type(x) is type(y), name
        if isinstance(x, Transport):
            assert type(x.port) is type(y.port) and type(x.addr) is type(y.addr)
    assert a == b


def _random_record(rng: random.Random) -> SessionRecord:
    def big():
        return rng.choice([0, 1, rng.randrange(1 << 63), (1 << 63) - 1, rng.randrange(10**6)])

    def transport():
        # addresses a store reads back (text that is none: tests/unit/test_stored_binding.py)
        addr = rng.choice(["198.18.0.4", "2001:db8::9", "::ffff:10.1.2.3", "fe80::1%eth0"])
        return rng.choice([None, Transport(addr, rng.randrange(1, 1 << 16))])

    values = {n: big() for n, kind in _KIND.items() if kind == "int"}
    values.update(
        session_id=rng.randrange(1 << 64), state=rng.choice(list(State)),
        binding=transport(), candidate=transport(),
        switches_ms=tuple(big() for _ in range(rng.randrange(4))),
        transport_lost_ms=rng.choice([None, big()]), recovery_deadline_ms=rng.choice([None, big()]),
        owner=rng.choice(["", "gw-a", "gw \"q\"", "gw\\b", "gw\n", "gw ü"]),
        handoff_to=rng.choice(["", "gw-b"]), inner_addr=rng.choice(["", "10.0.0.2"]),
        peer_key=rng.choice(["", "cGVlcg=="]), confirmed=rng.choice([True, False]))
    # one a store writes: its initiation not dated ahead of it (jvpn/store _AHEAD_MAX_NS)
    values["handshake_ns"] = min(values["handshake_ns"],
                                 (values["created_ms"] + HANDSHAKE_AHEAD_MAX_MS) * 1_000_000)
    return SessionRecord(**values)


def test_every_field_has_a_kind():
    assert set(_KIND) == set(_NAMES)


def test_written_records_read_back_equal_on_both_paths():
    rng = random.Random(15)
    matched = 0
    for _ in range(3000):
        rec = _random_record(rng)
        text = record_to_json(rec)
        matched += fields_of(text) is not None
        _same(record_from_json(text), _decoded(text))
        _same(record_from_json(text), rec)
    assert 500 < matched < 2500  # both paths taken (escaped strings: json's)


def _written(**changes) -> str:
    rec = SessionRecord(session_id=7, state=State.ATTACHED, version=2, created_ms=1,
                        last_change_ms=2, binding=Transport("198.18.0.1", 4000),
                        owner="gw-a", inner_addr="10.0.0.2")
    return record_to_json(dataclasses.replace(rec, **changes))


def _edited(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


_T = _written()
_VARIANTS = [
    _edited(_T, '"version": 2', '"version": 2.0'),  # a float
    _edited(_T, '"version": 2', '"version": 2e0'),
    _edited(_T, '"version": 2', '"version": -2'),  # negative: out of range
    _edited(_T, '"version": 2', '"version": 02'),  # not JSON
    _edited(_T, '"version": 2', '"version": ' + "9" * 21),  # longer than the layout's
    _edited(_T, '"version": 2', '"version": ' + "9" * 20),  # 20 digits: out of range
    _edited(_T, '"version": 2', '"version": true'),
    _edited(_T, '"version": 2', '"version": "2"'),
    _edited(_T, '"version": 2', '"version": null'),
    _edited(_T, '"session_id": 7', '"session_id": 18446744073709551616'),
    _edited(_T, '"session_id": 7', '"session_id": -1'),
    _edited(_T, '"state": "ATTACHED"', '"state": "BOGUS"'),
    _edited(_T, '"state": "ATTACHED"', '"state": "attached"'),
    _edited(_T, '"state": "ATTACHED"', '"state": 2'),
    _edited(_T, '"owner": "gw-a"', '"owner": "gw\\u0041"'),  # an escape: json's path
    _edited(_T, '"owner": "gw-a"', '"owner": "gw\x01"'),  # a control character
    _edited(_T, '"owner": "gw-a"', '"owner": 5'),
    _edited(_T, '"owner": "gw-a"', '"owner": null'),
    _edited(_T, '"port": 4000', '"port": 65536'),
    _edited(_T, '"port": 4000', '"port": "4000"'),
    _edited(_T, '"port": 4000', '"port": 4000, "scope": 1'),
    _edited(_T, '"addr": "198.18.0.1"', '"addr": 7'),
    _edited(_T, '"addr": "198.18.0.1"', '"addr": "::ffff:198.18.0.1"'),  # made canonical
    _edited(_T, '"addr": "198.18.0.1"', '"addr": "2001:DB8:0::1"'),
    _edited(_T, '"addr": "198.18.0.1"', '"addr": "not an address"'),
    _edited(_T, '"addr": "198.18.0.1"', '"addr": ""'),
    _edited(_T, '"addr": "198.18.0.1"', '"addr": "198.18.0.1.5"'),
    _edited(_T, '"addr": "198.18.0.1"', '"addr": "198.018.0.1"'),
    _edited(_T, '"addr": "198.18.0.1"', '"addr": "fe80::1%eth0"'),
    _edited(_T, '"port": 4000', '"port": 0'),
    _edited(_T, '"addr": "198.18.0.1", ', ''),
    _edited(_T, '"binding": {', '"binding": {"x": 1, '),
    _edited(_T, '"switches_ms": []', '"switches_ms": [1, 2]'),
    _edited(_T, '"switches_ms": []', '"switches_ms": [1,2]'),
    _edited(_T, '"switches_ms": []', '"switches_ms": ["1"]'),
    _edited(_T, '"switches_ms": []', '"switches_ms": {}'),
    _edited(_T, '"transport_lost_ms": null', '"transport_lost_ms": 5'),
    _edited(_T, '"c2s_floor": 0', '"c2s_floor": 9223372036854775808'),
    _edited(_T, '"candidate": null, ', '"candidate": null, "confirmed": false, '),
    _edited(_T, '"candidate": null, ', '"candidate": null, "confirmed": true, '),
    _edited(_T, '"candidate": null, ', '"candidate": null, "confirmed": 0, '),
    _edited(_T, '"candidate": null, ', '"candidate": {}, '),
    _edited(_T, '"version": 2}', '"version": 2, "zz_newer": 1}'),  # a newer version's field
    _edited(_T, '"version": 2}', '"version": 2, "version": 3}'),  # a key twice
    _edited(_T, '"peer_key": "", ', ''),  # an older version's record: a field absent
    _edited(_T, '"session_id": 7, ', ''),  # a required field absent
    _edited(_T, ', "c2s_floor"', ',"c2s_floor"'),  # other spacing
    _T + " ", " " + _T, _T + "x", _T[:-1], "", "null", "[]", "{}",
]


@pytest.mark.parametrize("text", _VARIANTS)
def test_any_text_reads_or_is_refused_as_the_json_path_does(text):
    try:
        want = _decoded(text)
        from jvpn.store import _in_range  # the checks every read applies after it
        _in_range(want)
        if not (isinstance(want.session_id, int) and isinstance(want.version, int)
                and isinstance(want.epoch, int) and isinstance(want.peer_key, str)
                and isinstance(want.confirmed, bool)):
            raise TypeError("ill-typed")
    except Exception:  # noqa: BLE001 - any refusal of the JSON path
        with pytest.raises(Unreadable):
            record_from_json(text)
        return
    _same(record_from_json(text), want)


def test_a_refused_state_is_reported_as_the_json_path_reports_it():
    text = _edited(_T, '"state": "ATTACHED"', '"state": "BOGUS"')
    assert fields_of(_T) is not None
    with pytest.raises(Unreadable, match=r"KeyError: 'BOGUS'"):
        record_from_json(text)


def test_bytes_take_the_json_path():
    assert fields_of(_T.encode()) is None
    _same(record_from_json(_T.encode()), record_from_json(_T))


def test_the_text_a_store_writes_takes_the_layouts_path():
    for text in (_T, _written(candidate=Transport("2001:db8::1", 1), switches_ms=(4, 5),
                              confirmed=False, transport_lost_ms=9)):
        assert fields_of(text) is not None
        assert json.loads(text)  # and is JSON


@pytest.mark.parametrize("count", [1, 256, 257, 100_000])
def test_a_long_switch_list_reads_the_same_and_only_a_short_one_takes_the_layouts_path(count):
    text = _written(switches_ms=tuple(range(1, count + 1)))
    assert (fields_of(text) is not None) == (count <= 256)  # longer: json's (faster there)
    _same(record_from_json(text), _decoded(text))
    assert record_from_json(text).switches_ms == tuple(range(1, count + 1))
