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
