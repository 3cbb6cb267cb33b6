"""Review R1 #3 and #4: expiry is measured on the epoch the gateway seals
under (a committed, unconfirmed rekey does not extend it), and after a
rekey from DEGRADED the expired epoch carries no data either way: the daemon
neither delivers what it receives under it nor seals data under it (the
gate passes both phases again at the commit: docs/protocol.md)."""

from __future__ import annotations

from jvpn import wire
from jvpn.gate import abi
from jvpn.policy import Policy
from jvpn.session import State
from jvpn.store import StoreError
from jvpn.tunnel import FLAG_KEY_PHASE
from kits.daemon_kit import ADDRESS, PEER_INNER, events_of, ipv4
from kits.rekey_kit import RekeyClient, gateway

NEW = ("198.51.100.77", 40_000)


def downstream(c: RekeyClient) -> list:
    """What the gateway sends for one inner packet to the client."""
    n = len(c.gw.sock.sent)
    c.gw.datapath.downstream(ipv4(ADDRESS.ip, dst=str(PEER_INNER[0])))
    return c.gw.sock.sent[n:]


def test_an_unconfirmed_rekey_does_not_extend_the_sealing_epoch(tmp_path):
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000)
    c = RekeyClient(gw)
    start = clock.ms
    clock.ms += 1_900
    gw.tick()
    msg, _eph = c.init()
    c.send(msg)  # committed; the RESP is lost and the client never uses epoch 1
    assert c.record().key_epoch == 1 and c.record().state is State.ATTACHED
    clock.ms = start + 1_999
    gw.tick()
    assert c.record().state is State.ATTACHED
    clock.ms = start + 2_000  # epoch 0 (still sealed under) is reject_after_ms old
    gw.tick()
    [ev] = events_of(gw.events, "KeyExpired")
    assert ev["key_epoch"] == 0 and ev["key_age_ms"] == 2_000
    [end] = events_of(gw.events, "SessionTerminated")
    assert end["reason_code"] == "KEY_EXPIRED" and gw.table.get(c.sid) is None


def _degraded_by_expiry(tmp_path):
    """A gateway whose session's keys passed reject_after_ms (expiry ends
    nothing: keys.expiry_terminates = false), made DEGRADED by a tick; its
    clock and the session's client."""
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000,
                        expiry_terminates=False)
    c = RekeyClient(gw)
    clock.ms += 2_000
    gw.tick()
    assert c.record().state is State.DEGRADED
    return gw, clock, c


def test_a_rekey_from_degraded_carries_no_data_under_the_expired_epoch(tmp_path):
    gw, _clock, c = _degraded_by_expiry(tmp_path)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)  # REKEY_OK at the commit; the RESP is delayed
    assert c.record().state is State.ATTACHED
    assert c.opened(resp)[0].type == abi.MSG_REKEY_RESP  # the answer goes, under epoch 0
    assert not c.data()  # data under the expired epoch 0: not delivered
    assert c.send(c.channel.seal(b"", abi.MSG_KEEPALIVE)) == []  # no keepalive reply
    assert downstream(c) == []  # nothing sealed under epoch 0
    gw.tick()
    assert c.record().state is State.ATTACHED  # the commit is not undone
    c.finish(resp, eph)
    assert c.data()  # epoch 1: delivered, and it confirms
    [(sent, _)] = downstream(c)
    assert wire.parse_header(sent).flags & FLAG_KEY_PHASE  # sealed under epoch 1
    assert events_of(gw.events, "KeyExpired")[-1]["key_epoch"] == 0


def test_the_current_epoch_past_reject_after_carries_no_data_before_its_timer_runs(tmp_path):
    """Review k16r2 #2b: the key-expiry timer may be late (a backlog of due
    sessions, a neighbour's failing write); the data path checks the epoch
    it opens or seals under at use, so keys past reject_after_ms carry
    nothing in the meantime, either way."""
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000)
    c = RekeyClient(gw)
    clock.ms += 1_999
    assert c.data() and len(downstream(c)) == 1  # still within reject_after_ms
    clock.ms += 1  # no tick: the timers have not looked at the session
    assert not c.data()  # not delivered
    assert c.send(c.channel.seal(b"", abi.MSG_KEEPALIVE)) == []  # no keepalive reply
    assert downstream(c) == []  # nothing sealed under the expired keys
    assert c.record().state is State.ATTACHED and not events_of(gw.events, "KeyExpired")


# ---- expired keys prove nothing on the control path either (review k16r3) ----
def test_a_reattach_proven_under_an_expired_current_epoch_moves_nothing_and_seals_nothing(
        tmp_path):
    """The current epoch past reject_after_* proves nothing at use, before
    the key-expiry timer runs (a backlog), on the control path as on the
    data path (k16r2 #2b): a REATTACH_REQ under it gets no challenge (none
    sealed under it), its PATH_RESPONSE moves no binding (review k16r3)."""
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000)
    c = RekeyClient(gw)
    clock.ms += 2_000  # past reject_after_ms; no tick yet (a backlog)
    assert not c.data()  # the data path refuses the expired epoch (k16r2 #2b)
    sent, moved = _reattach_from_new(c)
    assert sent == [] and not moved, (
        f"sealed {len(sent)} control message(s) under expired keys; binding moved: {moved}")
    assert c.record().state is State.ATTACHED and not events_of(gw.events, "KeyExpired")


def _reattach_from_new(c) -> tuple[list, bool]:
    """The key holder's REATTACH_REQ from NEW, and its PATH_RESPONSE to any
    challenge: (what the gateway sent back, whether the binding moved)."""
    sent = c.send(c.reattach_request(seq=1), src=NEW)
    moved = False
    if sent:
        _hdr, (server_nonce, client_nonce) = c.opened(sent[0][0])
        c.send(c.control(abi.MSG_PATH_RESPONSE, server_nonce, client_nonce), src=NEW)
        moved = c.record().binding.port == NEW[1]
    return sent, moved


def _rekeyed_from_degraded(tmp_path):
    """A session DEGRADED by expired keys, a rekey committed (ATTACHED), its
    RESP taken by the client, which seals under epoch 1 now; the gateway
    still waits for the confirmation (it seals under the expired epoch 0)."""
    gw, clock, c = _degraded_by_expiry(tmp_path)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    assert c.record().state is State.ATTACHED and not c.live().keys.confirmed
    c.finish(resp, eph)
    return gw, clock, c


def test_a_probe_under_the_new_epoch_is_not_answered_under_the_expired_one(tmp_path):
    """After a rekey from DEGRADED the gateway seals nothing under the
    expired epoch 0 but the rekey's answers (review R1 #4). A probe under
    the fresh epoch 1 does not confirm the rekey, and its reply would be
    sealed under the send epoch, 0: no reply then (review k16r3)."""
    _gw, _clock, c = _rekeyed_from_degraded(tmp_path)
    sent = c.send(c.control(abi.MSG_PATH_PROBE, 9), src=c.src)
    assert not c.live().keys.confirmed  # a probe confirms nothing
    under_epoch_0 = [m for m, _to in sent
                     if not wire.parse_header(m).flags & FLAG_KEY_PHASE]
    assert under_epoch_0 == [], "a probe reply sealed under the expired epoch 0"


def test_a_reattach_under_the_expired_previous_epoch_is_not_served(tmp_path):
    """After a rekey from DEGRADED a REATTACH_REQ sealed under the expired
    previous epoch 0 proves nothing (the data path refuses that epoch too):
    no challenge sealed under it, its PATH_RESPONSE moves no binding
    (review k16r3)."""
    _gw, _clock, c = _rekeyed_from_degraded(tmp_path)
    assert not c.data(keys=c.old)  # the data path refuses epoch 0 (R1 #4)
    sent = c.send(c.reattach_request(seq=1, keys=c.old), src=NEW)
    moved = False
    if sent:
        _hdr, (server_nonce, client_nonce) = c.opened(sent[0][0])
        c.send(c.control(abi.MSG_PATH_RESPONSE, server_nonce, client_nonce, keys=c.old),
               src=NEW)
        moved = c.record().binding.port == NEW[1]
    assert sent == [] and not moved, (
        f"sealed {len(sent)} message(s) under the expired epoch 0; binding moved: {moved}")


def test_a_degraded_sessions_expired_keys_cannot_move_its_binding(tmp_path):
    """DEGRADED by expired keys (keys.expiry_terminates = false) lasts until
    a rekey, unbounded. Its keys are past reject_after_*: they bound what a
    leaked key can do, so a REATTACH_REQ under them is not proven, gets no
    challenge, and cannot point the session at another address; the way
    back is the rekey (test_rekey_degraded_recovery.py; review k16r3)."""
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000,
                        expiry_terminates=False)
    c = RekeyClient(gw)
    clock.ms += 2_000
    gw.tick()
    assert c.record().state is State.DEGRADED and not c.data()
    sent, moved = _reattach_from_new(c)
    assert sent == [] and not moved, (
        f"sealed {len(sent)} message(s) under expired keys; binding moved: {moved}; "
        f"state {c.record().state.name}")


def test_a_degraded_by_expiry_session_whose_binding_went_silent_ends_within_the_ttl(tmp_path):
    """Review k16r5 #1: with keys.expiry_terminates = false, a session
    DEGRADED by expired keys comes back only by a rekey from its binding
    (a reattach under expired keys is refused unanswered, review k16r3).
    Its binding's path dead, it was kept for ever, nudged every
    REKEY_NUDGE_MS, its slot held; now the timers end it once nothing
    authenticated came from the binding for transport_lost_ttl_ms, and its
    client's next handshake gets a fresh session."""
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000,
                        expiry_terminates=False)
    c = RekeyClient(gw)
    start = clock.ms  # the binding's last authenticated message: the handshake
    clock.ms += 2_000
    gw.tick()
    assert c.record().state is State.DEGRADED
    ttl = Policy.transport_lost_ttl_ms
    ended_at = None
    for i in range(4 * ttl // 1_000):  # nothing from the binding all along
        clock.ms += 1_000
        if i % 3 == 0:  # the client, moved to NEW, retries its reattach: refused unanswered
            assert c.send(c.reattach_request(seq=1 + i), src=NEW) == []
        gw.tick()
        live = gw.table.get(c.sid)
        if live is None or live.record.state is State.TERMINATED:
            ended_at = clock.ms
            break
    assert ended_at is not None, "still DEGRADED, nudging a dead binding, its slot held"
    assert ended_at - start <= ttl + 1_000  # the TTL, give or take a tick
    assert gw.store.get(c.sid) is None or c.record().state is State.TERMINATED


def test_no_reattach_reply_is_sealed_under_an_expired_send_epoch(tmp_path, monkeypatch):
    """Review k16r5 #2: after a rekey from DEGRADED the send epoch is the
    expired previous one until the confirmation is written; a reattach
    under the new epoch whose confirmation write fails was answered under
    the expired epoch 0. Now no reply is sealed under it, and the decision
    is refused before its commit (nothing changes)."""
    gw, _clock, c = _rekeyed_from_degraded(tmp_path)

    def refused(*_a, **_k):
        raise StoreError("store unavailable")

    monkeypatch.setattr(gw.table, "confirm_keys", refused)
    before = c.record()
    sent = c.send(c.reattach_request(seq=1), src=NEW)  # under the fresh epoch 1
    assert not c.live().keys.confirmed
    under_epoch_0 = [m for m, _to in sent if not wire.parse_header(m).flags & FLAG_KEY_PHASE]
    assert under_epoch_0 == [], (
        f"{len(under_epoch_0)} reattach reply(ies) sealed under the expired epoch 0")
    assert c.record() == before  # refused before its commit: nothing changed
