"""What the operator sees of the key lifecycle (issue 13): each session's key
epoch and key age in the snapshot (`sessions`, `top`, /metrics) taken from
its record, and the rekey events counted by result and reason (the
EventTally behind /metrics and `top`). The daemon's real wiring over a fake
socket and TUN; the records are made as a rekey leaves them (the exchange
itself is jvpn/gateway/rekey.py's)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from unit.test_inspect import PUBS, _gateway, _scrape

from jvpn import client_clock, keys
from jvpn.codes import EventType, Reason
from jvpn.events import EventLog
from jvpn.gateway import operations, snapshot
from jvpn.gateway.metrics import GatewayCollector
from jvpn.gateway.tally import EventTally
from jvpn.keys import KeyRing, SessionKeys
from jvpn_cli import views
from kits.daemon_kit import Clock, handshake


@pytest.fixture
def gw(tmp_path):
    g = _gateway(tmp_path, Clock())
    yield g
    g.store.close()


def rekeyed(gw, sid: int, epoch: int, keys_ms: int) -> None:
    """The record as a committed rekey leaves it (key_epoch, keys_ms)."""
    live = gw.table.sessions[sid]
    live.record = dataclasses.replace(live.record, key_epoch=epoch, keys_ms=keys_ms)


def test_the_key_age_is_that_of_the_current_keys_not_of_the_session(gw):
    peer = handshake(gw)
    created = gw.table.sessions[peer.session_id].record.created_ms
    gw.clock_ms.ms += 600_000
    [row] = snapshot.sessions(gw)
    assert (row["key_epoch"], row["keys_ms"], row["key_age_s"]) == (0, created, 600.0)
    rekeyed(gw, peer.session_id, 5, gw.clock_ms.ms - 30_000)  # the fifth rekey, 30 s ago
    [row] = snapshot.sessions(gw)
    assert (row["key_epoch"], row["key_age_s"]) == (5, 30.0)
    assert row["created_ms"] == row["last_handshake_ms"] == created  # the session stays


def mid_rekey(gw, sid: int, confirmed: bool) -> None:
    """The live ring as a commit (unconfirmed) or the confirmation leaves
    it (the previous epoch still accepted), and the record's epoch."""
    live = gw.table.sessions[sid]
    old = KeyRing.of(live.keys).current
    new = SessionKeys(sid, bytes(32), bytes(32), bytes(range(16)), bytes(16), bytes(32),
                      epoch=old.epoch + 1)
    ring = KeyRing.of(live.keys).rotated(new)
    live.keys = ring.with_confirmed() if confirmed else ring
    rekeyed(gw, sid, new.epoch, gw.clock_ms.ms)


def test_the_snapshot_says_whether_the_committed_epoch_is_confirmed_and_the_old_live(gw):
    """Review R3 F5: from the commit, the record names epoch E+1 and its age
    while the gateway still seals under E; the rows say so from the live
    ring (key_confirmed, key_overlap), --wide marks it, /metrics counts the
    sessions with a previous epoch live."""
    a, b = handshake(gw), handshake(gw, ("192.0.2.11", 6000), peer=1)
    rows = {r["session_id"]: r for r in snapshot.sessions(gw)}
    assert {(r["key_confirmed"], r["key_overlap"]) for r in rows.values()} == {(True, False)}
    mid_rekey(gw, a.session_id, confirmed=False)
    mid_rekey(gw, b.session_id, confirmed=True)
    rows = {int(r["session_id"], 16): r for r in snapshot.sessions(gw)}
    assert (rows[a.session_id]["key_epoch"], rows[a.session_id]["key_confirmed"],
            rows[a.session_id]["key_overlap"]) == (1, False, True)
    assert (rows[b.session_id]["key_confirmed"], rows[b.session_id]["key_overlap"]) == (True, True)
    assert [views.key_epoch_cell(rows[s]) for s in (a.session_id, b.session_id)] == ["1*", "1+"]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(EventTally(gw.timer_ms), gw, "jvpn-gw", max_age_s=0))
    assert _scrape(registry)[("jvpn_sessions_key_overlap", ())] == 2
    live = gw.table.sessions[b.session_id]
    live.keys = live.keys.without_previous()  # b's overlap ended
    assert _scrape(registry)[("jvpn_sessions_key_overlap", ())] == 1
    rows = {int(r["session_id"], 16): r for r in snapshot.sessions(gw)}
    assert views.key_epoch_cell(rows[b.session_id]) == "1" and not rows[b.session_id]["key_overlap"]


def test_a_clock_behind_the_keys_shows_age_zero(gw):
    peer = handshake(gw)
    rekeyed(gw, peer.session_id, 1, gw.clock_ms.ms + 5_000)  # written by a peer ahead of us
    assert snapshot.sessions(gw)[0]["key_age_s"] == 0


def test_tally_counts_rekeys_by_result_and_reason():
    log, tally = EventLog("t"), EventTally(client_clock.timer_ms)
    log.add_listener(tally)
    for epoch in (1, 2):
        log.emit(EventType.KEY_ROTATED, Reason.KEY_ROTATED, 0x11, key_epoch=epoch)
    log.emit(EventType.REKEY_DENIED, Reason.RATE_LIMITED, 0x11, key_epoch=2)
    log.emit(EventType.REKEY_DENIED, Reason.KEY_EXPIRED, 0x11, key_epoch=2)
    log.emit(EventType.KEY_EXPIRED, Reason.KEY_EXPIRED, 0x11, key_epoch=2)
    log.emit(EventType.SECURITY_KEY_COMPROMISE_SUSPECTED,
             "SEC_KEY_COMPROMISE_SUSPECTED", 0x11, key_epoch=2)
    f = tally.figures()
    # a refusal naming KEY_EXPIRED is not an expiry: the result keeps them apart
    assert f["rekeys"] == [["denied", "KEY_EXPIRED", 1], ["denied", "RATE_LIMITED", 1],
                           ["expired", "KEY_EXPIRED", 1], ["rotated", "KEY_ROTATED", 2]]
    assert f["key_compromises_suspected"] == 1


def test_metrics_serve_rekeys_key_age_and_the_peers_key_epoch(gw):
    tally = EventTally(gw.timer_ms)
    gw.events.add_listener(tally)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(tally, gw, "jvpn-gw", per_peer=True, max_age_s=0))
    a = handshake(gw)
    handshake(gw, ("192.0.2.11", 6000), peer=1)
    gw.clock_ms.ms += 90_000
    rekeyed(gw, a.session_id, 3, gw.clock_ms.ms - 10_000)
    gw.events.emit(EventType.KEY_ROTATED, Reason.KEY_ROTATED, a.session_id, key_epoch=3)
    gw.events.emit(EventType.REKEY_DENIED, Reason.REPLAY_DETECTED, a.session_id, key_epoch=3)
    m = _scrape(registry)
    assert m[("jvpn_rekeys_total", (("reason", "KEY_ROTATED"), ("result", "rotated")))] == 1
    assert m[("jvpn_rekeys_total", (("reason", "REPLAY_DETECTED"), ("result", "denied")))] == 1
    assert m[("jvpn_key_compromises_suspected_total", ())] == 0
    assert m[("jvpn_key_age_max_seconds", ())] == 90.0  # bob's handshake keys, not alice's
    alice = (("allowed_ips", "10.99.0.2/32"), ("friendly_name", "alice"),
             ("interface", "jvpn-gw"), ("public_key", keys.encode(PUBS[0])))
    bob = dict(alice) | {"allowed_ips": "10.99.0.3/32", "friendly_name": "bob",
                         "public_key": keys.encode(PUBS[1])}
    bob = tuple(sorted(bob.items()))
    assert m[("jvpn_peer_key_epoch", alice)] == 3 and m[("jvpn_peer_key_epoch", bob)] == 0
    assert m[("jvpn_peer_key_age_seconds", alice)] == 10.0
    assert m[("jvpn_peer_key_age_seconds", bob)] == 90.0


def test_without_metrics_peers_no_series_names_a_peer(gw):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(EventTally(gw.timer_ms), gw, "jvpn-gw", per_peer=False))
    handshake(gw)
    m = _scrape(registry)
    assert not [k for k in m if k[0].startswith("jvpn_peer_")]
    assert m[("jvpn_key_age_max_seconds", ())] == 0  # the keys are new


def test_figures_carry_the_rekey_counts_for_top(gw):
    tally = EventTally(gw.timer_ms)
    gw.events.add_listener(tally)
    gw.events.emit(EventType.KEY_EXPIRED, Reason.KEY_EXPIRED, 0x11, key_epoch=0)
    f = operations.figures(gw, tally)
    assert f["rekeys"] == [["expired", "KEY_EXPIRED", 1]]
    assert f["key_compromises_suspected"] == 0


def test_every_served_metric_is_documented(gw):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(EventTally(gw.timer_ms), gw, "jvpn-gw", per_peer=True))
    handshake(gw)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    names = {name for name, _labels in _scrape(registry)}
    undocumented = sorted(n for n in names if f"`{_family(n)}" not in doc)
    assert not undocumented, f"served, not in docs/metrics.md: {undocumented}"


def _family(sample: str) -> str:
    """A histogram's samples (_bucket, _count, _sum) are documented as the family."""
    for suffix in ("_bucket", "_count", "_sum"):
        if sample.endswith(suffix) and "latency" in sample:
            return sample.removesuffix(suffix)
    return sample
