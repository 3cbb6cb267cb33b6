"""Review k16r3 proofs of concept (adversarial review of k16fixR1/R2).
Each test states the property that should hold; they fail on main at
ed452a1."""

from __future__ import annotations

from jvpn import wire
from jvpn.gate import abi
from jvpn.gateway.ceiling import REPLAY_BLOCK, ReplayCeiling, StoreBreaker
from jvpn.session import State
from jvpn.tunnel import FLAG_KEY_PHASE
from kits.daemon_kit import events_of
from kits.rekey_kit import RekeyClient, gateway

NEW = ("198.51.100.77", 40_000)


def test_a_reattach_proven_under_an_expired_current_epoch_moves_nothing_and_seals_nothing(
        tmp_path):
    """Review k16r2 #2b made the data path refuse the current epoch past
    reject_after_* at use, before the key-expiry timer runs (a backlog). The
    control path does not: a REATTACH_REQ proven with the expired keys is
    answered (a challenge sealed under them) and its PATH_RESPONSE moves the
    binding (ACK sealed under them too): the expired keys still prove
    possession and still seal, for as long as the timer is late."""
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000)
    c = RekeyClient(gw)
    clock.ms += 2_000  # past reject_after_ms; no tick yet (a backlog)
    assert not c.data()  # the data path refuses the expired epoch (k16r2 #2b)
    sent = c.send(c.reattach_request(seq=1), src=NEW)
    moved = False
    if sent:
        _hdr, (server_nonce, client_nonce) = c.opened(sent[0][0])
        c.send(c.control(abi.MSG_PATH_RESPONSE, server_nonce, client_nonce), src=NEW)
        moved = c.record().binding.port == NEW[1]
    assert sent == [] and not moved, (
        f"sealed {len(sent)} control message(s) under expired keys; binding moved: {moved}")
    assert c.record().state is State.ATTACHED and not events_of(gw.events, "KeyExpired")


def _rekeyed_from_degraded(tmp_path):
    """A session DEGRADED by expired keys, a rekey committed (ATTACHED), its
    RESP taken by the client, which seals under epoch 1 now; the gateway
    still waits for the confirmation (it seals under the expired epoch 0)."""
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000,
                        expiry_terminates=False)
    c = RekeyClient(gw)
    clock.ms += 2_000
    gw.tick()
    assert c.record().state is State.DEGRADED
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    assert c.record().state is State.ATTACHED and not c.live().keys.confirmed
    c.finish(resp, eph)
    return gw, clock, c


def test_a_probe_under_the_new_epoch_is_not_answered_under_the_expired_one(tmp_path):
    """After a rekey from DEGRADED the gateway seals nothing under the
    expired epoch 0 but the rekey's answers (review R1 #4; the data path's
    _send_expired). A probe opened under the fresh epoch 1 passes
    ProbeCheck._under_expired (it looks only at the epoch it opened under),
    and ProbeReplies.seal seals the reply under channel.send_keys: epoch 0,
    expired. A probe does not confirm the rekey, so the client can make the
    gateway seal one reply per probe budget under the expired keys."""
    _gw, _clock, c = _rekeyed_from_degraded(tmp_path)
    sent = c.send(c.control(abi.MSG_PATH_PROBE, 9), src=c.src)
    assert not c.live().keys.confirmed  # a probe confirms nothing
    under_epoch_0 = [m for m, _to in sent
                     if not wire.parse_header(m).flags & FLAG_KEY_PHASE]
    assert under_epoch_0 == [], "a probe reply sealed under the expired epoch 0"


def test_a_reattach_under_the_expired_previous_epoch_is_not_served(tmp_path):
    """The same for the control path, under the previous epoch: after a
    rekey from DEGRADED a REATTACH_REQ sealed under the expired epoch 0 is
    still proven (ReattachServer opens under either live epoch, no
    previous_expired check), answered under epoch 0, and its PATH_RESPONSE
    moves the binding, all under keys the data path refuses."""
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
    a rekey, unbounded. Its keys are past reject_after_*: the data path
    neither delivers nor seals under them, yet a REATTACH_REQ under them
    is still proven, answered under them and moves the binding: whoever
    holds the expired keys (the point of reject_after_* is to bound what a
    leaked key can do) can point the session at its own address."""
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000,
                        expiry_terminates=False)
    c = RekeyClient(gw)
    clock.ms += 2_000
    gw.tick()
    assert c.record().state is State.DEGRADED and not c.data()
    sent = c.send(c.reattach_request(seq=1), src=NEW)
    moved = False
    if sent:
        _hdr, (server_nonce, client_nonce) = c.opened(sent[0][0])
        c.send(c.control(abi.MSG_PATH_RESPONSE, server_nonce, client_nonce), src=NEW)
        moved = c.record().binding.port == NEW[1]
    assert sent == [] and not moved, (
        f"sealed {len(sent)} message(s) under expired keys; binding moved: {moved}; "
        f"state {c.record().state.name}")


def test_a_spent_budget_reaches_an_honest_session_that_sends_slower_than_the_turn_moment():
    """Review k16r1 made the front of the queue of turns take a free store
    only if it asked within TURN_MOMENT_S (10 ms). A key holder whose
    counters jump most of a block per message asks at every message and
    spends the budget the moment it refills. An honest session at its
    block's end (or at the first message after a restart: its window
    starts at the stored ceiling, uncovered) that sends fewer than 100
    messages a second is at the front, but its asks always meet a spent
    budget, and when the budget refills the jumper asks first, more than
    TURN_MOMENT_S after the honest session's last ask: the honest turn
    lapses, every time. test_a_spent_budget_is_shared_in_turns passes only
    because its honest session asks every 1 ms, as often as the jumper."""
    now = [0.0]

    def fsync(_c):
        now[0] += 0.003  # a healthy store

    breaker = StoreBreaker(clock=lambda: now[0])
    jumper = ReplayCeiling(0, REPLAY_BLOCK, fsync, breaker=breaker)
    honest = ReplayCeiling(0, 0, fsync, breaker=breaker)
    counter = REPLAY_BLOCK
    while now[0] < 5.0:  # the jumper alone: the budget spent
        jumper.admit(counter)
        counter += 3 * REPLAY_BLOCK // 4
        now[0] += 0.001
    admitted, next_honest = False, now[0]
    while now[0] < 35.0 and not admitted:
        jumper.admit(counter)  # one jumper message per ms
        counter += 3 * REPLAY_BLOCK // 4
        if now[0] >= next_honest:  # 20 messages a second: an interactive session
            admitted = honest.admit(1)  # its first counter, uncovered: needs a write
            next_honest = now[0] + 0.05
        now[0] += 0.001
    assert admitted, "the honest session got no write in 30 s (its data dropped meanwhile)"
