"""Adversarial review k16r1 of 997c2e9..89243f9: proof-of-concept tests.
Each fails on the reviewed code; the docstring says which promise it breaks."""

from jvpn.gateway.ceiling import REPLAY_BLOCK, STORE_SHARE, ReplayCeiling, StoreBreaker


def test_an_intermittently_slow_store_holds_the_loop_at_most_a_quarter():
    """Review E M2 capped the pause at PAUSE_CAP_S (2 s) and a slow call's
    budget debt at PAUSE_CAP_S * STORE_SHARE (0.5 s); the doubling that
    restores the 19x rule resets at the first write that lands fast. A
    store that is slow only every other write (a local user's I/O bursts
    making fsyncs take seconds, or an etcd link that flaps) never keeps
    the streak: each 5 s write is followed by a 2 s pause, then one fast
    write resets the streak, then the next 5 s write. The receive loop
    then spends ~70% of its time blocked in store calls, where the 19x
    rule bounded it at ~5% and the budget at STORE_SHARE (25%)."""
    now, blocked, calls = [0.0], [0.0], [0]

    def flapping(_c):
        calls[0] += 1
        took = 5.0 if calls[0] % 2 else 0.005  # slow, fast, slow, fast...
        now[0] += took
        blocked[0] += took

    breaker = StoreBreaker(clock=lambda: now[0])
    sessions = [ReplayCeiling(0, REPLAY_BLOCK, flapping, breaker=breaker) for _ in range(4)]
    counters = [REPLAY_BLOCK] * 4  # each message needs a write (past the block)
    while now[0] < 600.0:
        for i, rc in enumerate(sessions):  # one message per session per 2 ms
            rc.admit(counters[i])
            counters[i] += REPLAY_BLOCK
        now[0] += 0.002
    share = blocked[0] / now[0]
    assert share <= STORE_SHARE, f"receive loop blocked in store calls {share:.0%} of the time"


def test_quiet_sessions_ahead_in_the_queue_do_not_idle_the_writes():
    """The queue of turns (review E M2) waits for its front session to ask
    again (up to TURN_HOLD_S), even with the store idle. Twenty sessions
    whose ahead-writes (covered counters, asked at each message) were
    refused during one pause, each sending twice a second, then hold the
    writes after the pause: each turn waits for that session's next
    message. A busy session that reached its block's end last (every
    message uncovered, dropped) waits seconds for a write the store makes
    in milliseconds: here seconds after the pause, where 21 writes take 63 ms."""
    now, first_write = [0.0], []

    def fsync(_c):
        first_write.append(now[0])  # the first one: the pause's end
        now[0] += 0.003

    def slow_once(_c):
        now[0] += 1.0  # one slow write: the pause (PAUSE_CAP_S)

    breaker = StoreBreaker(clock=lambda: now[0])
    quiet_block = REPLAY_BLOCK
    ReplayCeiling(0, 0, slow_once, block=64, breaker=breaker).admit(1)
    quiet = [ReplayCeiling(0, quiet_block, fsync, breaker=breaker) for _ in range(20)]
    ahead = quiet_block - quiet_block // 8  # covered, an ahead-write due
    for i, rc in enumerate(quiet):  # each asks once early in the pause
        now[0] += 0.01
        assert rc.admit(ahead + i)
    busy = ReplayCeiling(0, REPLAY_BLOCK, fsync, breaker=breaker)
    step, tick, admitted_at = 0.002, 0, None
    while now[0] < 30.0 and admitted_at is None:
        tick += 1
        if busy.admit(REPLAY_BLOCK + tick):  # past its block: needs a write
            admitted_at = now[0]
        for i, rc in enumerate(quiet):  # twice a second each, the later in line a bit earlier
            if tick % 250 == (-5 * i) % 250:
                rc.admit(ahead + i)
        now[0] += step
    assert admitted_at is not None
    waited = admitted_at - first_write[0]
    assert waited < 0.5, f"the busy session's write waited {waited:.1f} s past the pause"
