"""Review k18rall (the session's whole change as one piece): a record the
stores cannot read back is never written; a binding address must be an
address; the listing and /metrics share one key-age rule."""

from __future__ import annotations

import pytest

from jvpn.gate import abi
from jvpn.session import Event, Transport, apply, new_session
from jvpn.store import StoreError
from kits.daemon_kit import AdmitAll, handshake, make_gateway


# ---------------------------------------------------------------- F1
def test_a_c2s_floor_the_gateway_writes_is_one_its_store_reads_back(tmp_path):
    """path_validation writes c2s_floor = max(rec.c2s_floor, hdr.counter + 1)
    for a PATH_RESPONSE whose counter passed the control window, and the
    window accepts any counter below abi.reject_after() (~2**64). k18's
    record_from_json (_in_range) refuses a c2s_floor above MAX_VERSION
    (2**63 - 1). The writer (cas) never checks it: the record is written,
    then every read of it (get, a restart's restore, a follower's watch)
    skips it as Unreadable: the session is gone for every gateway and its
    row is never deleted by anyone (only a Live's timers delete it)."""
    from jvpn.keys import derive_session_keys  # noqa: PLC0415
    from jvpn.replay import ControlWindows  # noqa: PLC0415
    from jvpn.store.sqlite import SqliteStore  # noqa: PLC0415

    sid, counter = 0x51, 1 << 63
    assert counter < abi.reject_after()
    assert ControlWindows().fresh(sid, counter)  # reattach._fresh passes it
    store = SqliteStore(tmp_path / "s.db")
    rec, _tr = apply(new_session(sid, 1, owner="gw-test"), Event.ATTACH_OK, 1,
                     binding=Transport("192.0.2.1", 4000))
    rec = rec.with_(inner_addr="10.99.0.2")
    store.create(rec, derive_session_keys(sid, b"\x05" * 32, b"\x06" * 32, b"\x07" * 32).pack())
    new = rec.with_(version=rec.version + 1, c2s_floor=max(rec.c2s_floor, counter + 1))
    try:
        store.cas(sid, rec.version, new)
    except StoreError:
        return  # refused at the writer: what the reader refuses is never written
    assert store.get(sid) is not None, "written by cas, then unreadable: the session is lost"


def test_the_listing_and_the_metrics_share_one_key_age_rule(tmp_path, monkeypatch):
    """k18 inlined snapshot.keys_made_ms / key_age_s / key_ring_state into
    session_values (a second copy of each rule; key_age_s now has no caller)
    while metrics.py still calls the helpers: a change to one rule (the
    record's keys_ms meaning) moves /metrics and not `sessions`/`top`."""
    from jvpn.gateway import snapshot  # noqa: PLC0415

    gw = make_gateway(tmp_path, gate=AdmitAll())
    handshake(gw)
    monkeypatch.setattr(snapshot, "keys_made_ms", lambda rec: 12345)
    monkeypatch.setattr(snapshot, "key_age_s", lambda keys_ms, now_ms: -1.0)
    [row] = snapshot.sessions(gw)
    assert (row["keys_ms"], row["key_age_s"]) == (12345, -1.0), "a second copy of the rule"


# ---------------------------------------------------------------- F4
@pytest.mark.parametrize("addr", [5, 3221225985, True, ["192.0.2.1"]])
def test_a_binding_address_that_is_no_text_is_an_unreadable_record(addr):
    """_in_range (k18) checks a transport's port type and range, and
    record_from_json checks peer_key is a str, but a binding's addr is taken
    as stored: an integer is read (str(binding) '0.0.0.5:4000') and
    session_element builds an element bound to 0.0.0.5 (ipaddress takes
    ints); a text that is no address fails later, in _put/standby/
    channel_of (pathmtu.family_of) instead of at the read, which is what
    _in_range's docstring promises for the element's fields."""
    import json  # noqa: PLC0415

    from jvpn.store import Unreadable, record_from_json, record_to_json  # noqa: PLC0415

    rec, _tr = apply(new_session(0x51, 1, owner="gw"), Event.ATTACH_OK, 1,
                     binding=Transport("192.0.2.1", 4000))
    d = json.loads(record_to_json(rec))
    d["binding"] = {"addr": addr, "port": 4000}
    with pytest.raises(Unreadable):
        record_from_json(json.dumps(d))
