"""Review k21r2: a peer's claim (its newest claimed initiation, the store's
``initiations``) ahead of this gateway's clock by more than
HANDSHAKE_AHEAD_MAX_MS is still the bar. Such a claim is what an older
gateway left for a client a day ahead (its record now unreadable: review
k21r2 F1, not fixed), but it is also what a gateway whose clock was later
stepped back, or the other gateway of a cluster whose clock is ahead of
ours, wrote for a client whose clock was right. A rule that took a claim
dated ahead of the claiming gateway's clock as none (the fix first tried
for F1) let a two-day-old captured initiation be answered and claimed:
the claim lowered, every capture newer than it was then fresh on every
gateway of the store. Nothing in the claim row tells the two apart.

Clocks injected: the gateway's ``Clock``, the client's timestamps."""

from __future__ import annotations

from test_capacity_answerable import CLIENT, MS, T0_NS
from test_restored_handshake_ahead import _gateway

from jvpn.codes import Reason
from jvpn.config import HANDSHAKE_AHEAD_MAX_MS
from jvpn.handshake import Initiator
from jvpn.keys import public_from_private
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import GW_PUB, PEER_KEYS, Clock, events_of

REPLAYER = ("203.0.113.66", 9999)


def _answered(gw, msg: bytes, src) -> bool:
    n = len(gw.sock.sent)
    gw.datapath.datagram(msg, src)
    return bool(gw.sock.sent[n:])


def test_a_capture_older_than_the_claim_is_a_replay_to_a_gateway_whose_clock_went_back(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    start = clock.ms
    gw = _gateway(tmp_path, store, clock)
    captured = Initiator(PEER_KEYS[0], GW_PUB, clock_ns=lambda: T0_NS).initiation()
    assert _answered(gw, captured, CLIENT)  # claimed; whoever was on path kept it
    two_days = 2 * HANDSHAKE_AHEAD_MAX_MS
    clock.ms = start + two_days
    newer = Initiator(PEER_KEYS[0], GW_PUB, clock_ns=lambda: T0_NS + two_days * MS)
    assert _answered(gw, newer.initiation(), CLIENT)  # the peer's claim: two days on
    store._db.execute("DELETE FROM sessions")  # its sessions ended: no live bar but the claim
    store._db.commit()
    clock.ms = start + HANDSHAKE_AHEAD_MAX_MS // 2  # our clock stepped back a day and a half
    again = _gateway(tmp_path, store, clock)
    again.reconcile()
    assert not _answered(again, captured, REPLAYER), "a two-day-old capture claimed again"
    assert [e["reason_code"] for e in events_of(again.events, "HandshakeRejected")] == [
        Reason.REPLAY_DETECTED]
    assert store.last_initiation(public_from_private(PEER_KEYS[0])) == T0_NS + two_days * MS
    store.close()
