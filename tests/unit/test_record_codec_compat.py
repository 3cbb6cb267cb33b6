"""The store codec (jvpn/store record_from_json) is forward-compatible: a
field a newer version adds is ignored, while a missing or mistyped required
field still makes the record Unreadable. Regression test of review R4."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jvpn.session import SessionRecord, State, Transport, new_session
from jvpn.store import Unreadable, record_from_json, record_to_json


def _record():
    return new_session(0x1234, 1, owner="gw-a").with_(peer_key="AAAA")


def test_a_record_with_a_field_this_version_does_not_know_reads_fine():
    d = json.loads(record_to_json(_record()))
    d["added_by_a_newer_version"] = {"anything": [1, 2]}
    assert record_from_json(json.dumps(d)) == _record()


@pytest.mark.parametrize("field", ["session_id", "state", "version", "created_ms"])
def test_a_record_missing_a_required_field_is_still_unreadable(field):
    d = json.loads(record_to_json(_record()))
    del d[field]
    d["added_by_a_newer_version"] = 1
    with pytest.raises(Unreadable):
        record_from_json(json.dumps(d))


def test_a_json_value_that_is_not_an_object_is_unreadable():
    with pytest.raises(Unreadable):
        record_from_json("[1, 2]")


def _as_asdict_wrote_it(rec) -> str:
    """The encoding before issue 15 (dataclasses.asdict), the format on disk."""
    from dataclasses import asdict

    d = asdict(rec)
    d["state"] = rec.state.name
    d["switches_ms"] = list(rec.switches_ms)
    if rec.confirmed:
        del d["confirmed"]
    return json.dumps(d, sort_keys=True)


@pytest.mark.parametrize("confirmed", [True, False])
def test_the_field_by_field_encoding_writes_what_asdict_wrote(confirmed):
    from jvpn.session import State, Transport

    rec = _record().with_(state=State.RECOVERING, binding=Transport("192.0.2.1", 5),
                          candidate=Transport("2001:db8::1", 6), switches_ms=(1, 2, 3),
                          transport_lost_ms=7, confirmed=confirmed, inner_addr="10.0.0.2")
    assert record_to_json(rec) == _as_asdict_wrote_it(rec)
    assert record_from_json(record_to_json(rec)) == rec
    bare = _record()  # None transports, empty switches
    assert record_to_json(bare) == _as_asdict_wrote_it(bare)


# ---- the handshake path's faster copies (issue 15): the same bytes, the same records ----

def _varied():
    from jvpn.session import Event, Transport, apply

    rec = new_session(0x77, 5, owner="gw-a", inner_addr="10.64.0.9", peer_key="AAAA")
    attached, _tr = apply(rec, Event.ATTACH_OK, 6, binding=Transport("::ffff:192.0.2.7", 9))
    return [rec, attached, attached.with_(confirmed=False),
            attached.with_(candidate=Transport("2001:db8::1", 7), switches_ms=(1, 2))]


def test_a_record_is_written_as_sorted_json_byte_for_byte():
    """record_to_json builds its dict in sorted order instead of sorting: the
    text is what json.dumps(..., sort_keys=True) gave for the same fields."""
    for rec in _varied():
        text = record_to_json(rec)
        assert text == json.dumps(json.loads(text), sort_keys=True)
        assert record_from_json(text) == rec


def test_with_is_dataclasses_replace():
    from dataclasses import replace

    from jvpn.session import Transport

    for rec in _varied():
        for kw in ({}, {"confirmed": False}, {"version": 9, "binding": None},
                   {"candidate": Transport("192.0.2.1", 1), "switches_ms": (3,)}):
            assert rec.with_(**kw) == replace(rec, **kw)
    with pytest.raises(TypeError):
        _record().with_(no_such_field=1)


# ---- the listing's JSON writer and the record codec write what json.dumps wrote ----
_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                          st.text(), st.text(alphabet=st.characters(max_codepoint=0x7f)))
_JSON_VALUES = st.recursive(_JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3),
    st.tuples(inner)), max_leaves=8)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
    ["%", "%s", "%%", "%(x)s", "peer", "inner", "\u2028", "\x00", "\ud800"])), _JSON_VALUES,
    max_size=8))
def test_the_listings_json_writer_writes_what_json_dumps_writes(row):
    from jvpn_cli import sessions  # noqa: PLC0415

    assert sessions.indented(row) == json.dumps(row, indent=2)


def test_the_listings_json_writer_with_odd_keys_and_values():
    from jvpn_cli import sessions  # noqa: PLC0415

    rows = [{"peer": "a\"b\\c\n\u00e9\ud83d\ude00\ud800\x7f\x00", "n": float("nan")},
            {"peer": "x", "allowed_ips": [float("inf")]}, {1: 2}, {True: 1, "a": 1},
            {"a": [[]]}, {"a": [{}]}, {"a": ()}, {"a": -0.0, "b": 1e300, "c": 2 ** 70},
            {"%s%%": "%s"}, {"a": State.ATTACHED}, {"a": []}]
    for row in rows:
        assert sessions.indented(row) == json.dumps(row, indent=2)


def _old_record_to_json(rec) -> str:
    """18dca72's record_to_json (sort_keys), for comparison."""
    d = {f.name: getattr(rec, f.name) for f in dataclasses.fields(SessionRecord)}
    for name in ("binding", "candidate"):
        if d[name] is not None:
            d[name] = {"addr": d[name].addr, "port": d[name].port}
    d["state"] = rec.state.name
    d["switches_ms"] = list(rec.switches_ms)
    if rec.confirmed:
        del d["confirmed"]
    return json.dumps(d, sort_keys=True)


_ADDRESSES = st.one_of(st.text(max_size=40), st.ip_addresses().map(str))
_TRANSPORTS = st.one_of(st.none(), st.builds(Transport, _ADDRESSES, st.integers(0, 65535)))


def _field_values():
    out = {}
    for f in dataclasses.fields(SessionRecord):
        if f.name in ("binding", "candidate"):
            out[f.name] = _TRANSPORTS
        elif f.name == "state":
            out[f.name] = st.sampled_from(list(State))
        elif f.name == "switches_ms":
            out[f.name] = st.lists(st.integers()).map(tuple)
        elif f.name == "confirmed":
            out[f.name] = st.booleans()
        elif isinstance(f.default, str):
            out[f.name] = st.text(max_size=12)
        else:
            out[f.name] = st.one_of(st.none(), st.integers(-2 ** 70, 2 ** 70))
    return out


_RECORDS = st.fixed_dictionaries(_field_values()).map(lambda d: SessionRecord(**d))


@settings(max_examples=1000, deadline=None)
@given(_RECORDS, st.data())
def test_a_record_writes_and_copies_as_before(rec, data):
    assert record_to_json(rec) == _old_record_to_json(rec)
    names = data.draw(st.sets(st.sampled_from([f.name for f in dataclasses.fields(rec)])))
    other = data.draw(_RECORDS)
    kw = {n: getattr(other, n) for n in names}
    assert rec.with_(**kw) == dataclasses.replace(rec, **kw)
    assert type(rec.with_(**kw)) is SessionRecord
    with pytest.raises(TypeError):
        rec.with_(nope=1)
