"""Review k16r5 (PoC): ceiling turns rotate only away from THE last writer
(review k16r3). Two key holders whose counters jump (two peers' keys, or two
sessions of one peer) alternate: each is "not the last" every other time,
so the refill goes to whichever of them asks first; an honest session at
20 messages a second gets no write."""

from __future__ import annotations

from jvpn.gateway.ceiling import REPLAY_BLOCK, ReplayCeiling, StoreBreaker


def test_two_jumpers_do_not_starve_an_honest_session():
    now = [0.0]

    def fsync(_c):
        now[0] += 0.003

    breaker = StoreBreaker(clock=lambda: now[0])
    jumpers = [ReplayCeiling(0, REPLAY_BLOCK, fsync, breaker=breaker) for _ in range(2)]
    honest = ReplayCeiling(0, 0, fsync, breaker=breaker)
    counters = [REPLAY_BLOCK, REPLAY_BLOCK]

    def jump():
        for i, j in enumerate(jumpers):
            j.admit(counters[i])
            counters[i] += 3 * REPLAY_BLOCK // 4

    while now[0] < 5.0:
        jump()
        now[0] += 0.001
    admitted, next_honest = False, now[0]
    while now[0] < 35.0 and not admitted:
        jump()
        if now[0] >= next_honest:
            admitted = honest.admit(1)
            next_honest = now[0] + 0.05
        now[0] += 0.001
    assert admitted, "two jumpers alternated every write for 30 s: the honest session got none"


def test_one_jumper_does_not_starve_a_session_that_asks_once_a_second():
    """A queued session is dropped TURN_HOLD_S (0.5 s) after its last ask:
    an idle honest session (a keepalive a second, at its block's end or its
    first message after a restart) is forgotten between its asks, the last
    writer is then alone in the queue, and it takes every refill."""
    now = [0.0]

    def fsync(_c):
        now[0] += 0.003

    breaker = StoreBreaker(clock=lambda: now[0])
    jumper = ReplayCeiling(0, REPLAY_BLOCK, fsync, breaker=breaker)
    honest = ReplayCeiling(0, 0, fsync, breaker=breaker)
    counter = REPLAY_BLOCK
    while now[0] < 5.0:
        jumper.admit(counter)
        counter += 3 * REPLAY_BLOCK // 4
        now[0] += 0.001
    admitted, next_honest = False, now[0]
    while now[0] < 65.0 and not admitted:
        jumper.admit(counter)
        counter += 3 * REPLAY_BLOCK // 4
        if now[0] >= next_honest:
            admitted = honest.admit(1)
            next_honest = now[0] + 1.0
        now[0] += 0.001
    assert admitted, "a session asking once a second got no write in 60 s"
