"""An element refuses a field out of its range (k18rec2) instead of cutting
it short; review k18r4: so a damaged store value is that record unreadable,
a refused element leaves no half-installed session, a lease id that is no
u64 is no lease (fenced), and one session's refused standby never stops a
fence's loop."""

from __future__ import annotations

import json

import pytest

from jvpn.session import Event, Transport, apply, new_session


def _store_with(tmp_path, sids):
    from jvpn.keys import derive_session_keys  # noqa: PLC0415
    from jvpn.store.sqlite import SqliteStore  # noqa: PLC0415

    store = SqliteStore(tmp_path / "s.db")
    for sid in sids:
        rec, _tr = apply(new_session(sid, 1, owner="gw-test"), Event.ATTACH_OK, 1,
                         binding=Transport("192.0.2.1", 1000 + sid))
        store.create(rec.with_(inner_addr=f"10.99.0.{sid - 990}"), derive_session_keys(
            sid, bytes([sid % 256]) * 32, b"\x06" * 32, b"\x07" * 32).pack())
    return store


def _damage(store, sid, **fields):
    (text,) = store._db.execute("SELECT record FROM sessions WHERE session_id=?",
                                (sid,)).fetchone()
    d = json.loads(text)
    d.update(fields)
    store._db.execute("UPDATE sessions SET record=? WHERE session_id=?", (json.dumps(d), sid))


@pytest.mark.parametrize("damage", [
    {"version": 1 << 64}, {"version": -1},  # new with k18rec2: ctypes kept the low bits
    {"c2s_floor": 1 << 64},  # new with k18rec2 (ctypes made the element's replay floor 0)
    {"binding": {"addr": "192.0.2.1", "port": 70000}},  # OverflowError: as before k18rec2
])
def test_an_element_refused_at_reconcile_leaves_no_half_installed_session(tmp_path, damage):
    """session_element now raises ValueError for a stored version outside
    u64 (ctypes kept its low bits). The reconcile reports it (that session
    only), but table.install had already put the Live in the table, indexed
    and routed it, and taken a runtime slot before gate.put raised: a
    session served by nobody (no element) that the daemon lists, routes to
    and counts against MaxSessions, and a runtime slot no element names."""
    from kits.daemon_kit import AdmitAll, make_gateway  # noqa: PLC0415

    sids = list(range(1000, 1004))
    store = _store_with(tmp_path, sids)
    _damage(store, 1002, **damage)
    gate = AdmitAll()
    gw = make_gateway(tmp_path, store=store, gate=gate)
    gw.reconcile()
    assert set(gate.model.sessions) == set(sids) - {1002}
    assert set(gw.table.sessions) == set(sids) - {1002}  # not half-installed
    assert gw.table.for_destination(bytes([10, 99, 0, 12])) is None  # not routed
    assert 1002 not in gate.slots.slot_of  # its runtime slot given back


def test_a_lease_id_out_of_u64_is_no_lease_not_every_element_refused(tmp_path):
    """The fencing token is the store's lease id (ClusterOwnership.token).
    A store that returns garbage (a negative id) was cut to u64 by ctypes in
    both the Fence and every element, consistently; since k18rec2 the Fence
    still takes it (ctypes) but every session_element raises ValueError: every
    install and handshake fails after its store write, leaving each session
    half-installed. A token that cannot be a u64 must be no lease (fenced:
    fail closed in one place), never an error per session."""
    from jvpn.keys import KeyRing  # noqa: PLC0415
    from kits.follower_kit import INNER, Rig, keys_of  # noqa: PLC0415

    r = Rig(tmp_path)
    try:
        r.store.lease_id = -5
        assert not r.ownership.lease_valid()  # no fencing token: fenced
        rec = r.record(0x77, "gw-a")
        r.store.create(rec, keys_of(0x77).pack())
        r.table.install(rec, KeyRing(keys_of(0x77)), INNER.packed)  # no ValueError
    finally:
        r.store.close()


def test_one_record_refused_by_the_element_does_not_stop_the_fence(tmp_path):
    """fence() sets ``fenced`` and then moves each installed session to a
    standby element (gate.standby: session_element). A record of ours the
    store watch delivered with a version beyond u64 (the follower's
    ``observe`` keeps it as the session's record without a gate write) now
    makes session_element raise ValueError in the middle of that loop
    (ctypes cut it before k18rec2): every session after it stays installed,
    its senders not retired, while the lease is not certainly alive, and
    since ``fenced`` is already True no later tick fences them again."""
    import dataclasses  # noqa: PLC0415

    from jvpn.keys import KeyRing  # noqa: PLC0415
    from kits.follower_kit import Rig, keys_of  # noqa: PLC0415

    r = Rig(tmp_path)
    try:
        sids = [0x71, 0x72, 0x73]
        for i, sid in enumerate(sids):
            rec = r.record(sid, "gw-a").with_(inner_addr=f"10.99.0.{i + 2}")
            r.store.create(rec, keys_of(sid).pack())
            r.table.install(rec, KeyRing(keys_of(sid)), bytes([10, 99, 0, i + 2]))
        first = r.table.get(sids[0])
        r.follower.on_store_record(sids[0], dataclasses.replace(first.record, version=1 << 64))
        r.store.lease_valid = lambda margin_s=0.0: False
        r.store.lease_deadline = lambda: 0.0
        r.store.lease_expired = lambda: False
        try:
            r.follower.check_lease()
        except ValueError:
            pass  # the daemon's tick contains it (reported): the loop has ended anyway
        assert r.table.fenced
        assert [sid for sid in sids if r.table.get(sid).installed] == []
    finally:
        r.store.close()


def test_the_benchmarks_notes_name_live_attributes_that_exist():
    """docs/benchmarks.md (k18rec2) says a listing reads zeros through
    ``Live.traffic_figures``: the property is ``Live.traffic_so_far``."""
    import re  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from jvpn.gateway.table import Live  # noqa: PLC0415

    text = (Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md").read_text()
    named = set(re.findall(r"`Live\.([A-Za-z_]\w*)", text))
    assert named and {n for n in named if not hasattr(Live, n)} == set()
