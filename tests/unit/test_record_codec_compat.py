"""The store codec (jvpn/store record_from_json) is forward-compatible: a
field a newer version adds is ignored, while a missing or mistyped required
field still makes the record Unreadable. Regression test of review R4."""

from __future__ import annotations

import json

import pytest

from jvpn.session import new_session
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
