"""Issue 15: the gateway's tick does work proportional to what is due, not
to the sessions it serves (jvpn/gateway/timer_queue.py, timer_checks.py),
and every timer still fires on time (injected clock)."""

from __future__ import annotations

from jvpn.bench.session_memory import NOW_MS, install
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway import timer_checks
from jvpn.gateway.table import AEAD_IDLE_MS
from jvpn.gateway.timer_queue import TimerQueue
from jvpn.policy import default_policy
from jvpn.session import State
from kits.daemon_kit import CLIENT, Clock, events_of, handshake, make_gateway

P = default_policy()


class RoomyGate(UserspaceGate):
    """Keeps no elements: 100k sessions without the model's 64k slots."""

    def put(self, *_a, **_k) -> None:
        pass


def counting(monkeypatch, module, name: str) -> list:
    calls: list = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_tick_over_100k_idle_sessions_with_nothing_due_looks_at_none(tmp_path, monkeypatch):
    clock = Clock(NOW_MS)
    gw = make_gateway(tmp_path, clock=clock, gate=RoomyGate())
    install(gw.table, 100_000)  # ATTACHED, heard from at NOW_MS
    vetted: list = []
    gw.entitled = lambda live: vetted.append(1) or True  # synthetic peers: all configured
    checked = counting(monkeypatch, timer_checks, "due_timer")
    keys = counting(monkeypatch, timer_checks.key_timers, "run")
    for _ in range(100):  # new sessions: each looked at once, a time slice per tick
        gw.tick()
        if len(checked) >= 100_000:
            break
    assert len(checked) == len(keys) == len(vetted) == 100_000
    checked.clear(), keys.clear(), vetted.clear()
    clock.ms += P.heartbeat_volatile_ms  # nothing due yet (due after this, not at it)
    gw.tick()
    assert checked == keys == vetted == []
    assert len(gw.table.timers) == 100_000 and not gw.table.unconfirmed


def confirmed(gw):
    peer = handshake(gw)
    assert gw.table.unconfirmed  # the handshake's session, indexed
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    assert not gw.table.unconfirmed
    return peer, gw.table.get(peer.session_id)


def test_silence_makes_a_session_volatile_on_time_and_traffic_postpones_it(tmp_path):
    clock = Clock()
    gw = make_gateway(tmp_path, clock=clock)
    peer, live = confirmed(gw)
    heard = live.last_rx_ms
    gw.tick()
    clock.ms = heard + 1_500
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)  # no lock, no touch
    clock.ms = heard + P.heartbeat_volatile_ms + 1  # the old deadline: looked at, not due
    gw.tick()
    assert live.record.state is State.ATTACHED
    clock.ms = heard + 1_500 + P.heartbeat_volatile_ms
    gw.tick()
    assert live.record.state is State.ATTACHED
    clock.ms += 1
    gw.tick()
    assert live.record.state is State.VOLATILE
    clock.ms += P.volatile_to_degraded_ms
    gw.tick()
    assert live.record.state is State.VOLATILE
    clock.ms += 1
    gw.tick()
    assert live.record.state is State.DEGRADED


def test_key_expiry_and_the_idle_aead_drop_fire_on_time(tmp_path):
    clock = Clock()
    policy = default_policy().__class__(**{**P.as_dict(), "rekey_after_ms": 30_000,
                                           "reject_after_ms": 60_000,
                                           "heartbeat_volatile_ms": 300_000,
                                           "transport_lost_ttl_ms": 3_600_000})
    gw = make_gateway(tmp_path, clock=clock, policy=policy)
    peer, live = confirmed(gw)
    made, heard = live.record.created_ms, live.last_rx_ms
    gw.tick()
    assert live.channel.holds_aead
    clock.ms = heard + AEAD_IDLE_MS - 1
    gw.tick()
    assert live.channel.holds_aead
    clock.ms += 1
    gw.tick()
    assert not live.channel.holds_aead  # shed at its time, by the same structure
    clock.ms = made + policy.reject_after_ms - 1
    gw.tick()
    assert not events_of(gw.events, "KeyExpired")
    clock.ms += 1
    gw.tick()
    assert events_of(gw.events, "KeyExpired") and gw.table.get(peer.session_id) is None


def test_a_reload_looks_at_every_session_again(tmp_path):
    clock = Clock()
    gw = make_gateway(tmp_path, clock=clock)
    _peer, live = confirmed(gw)
    gw.tick()
    assert gw.table.timers.due_time(live.record.session_id) > clock.ms
    gw.policy = P.__class__(**{**P.as_dict(), "heartbeat_volatile_ms": 100})
    assert gw.table.timers.due_time(live.record.session_id) == 0  # next tick
    clock.ms = live.last_rx_ms + 101
    gw.tick()
    assert live.record.state is State.VOLATILE


def test_the_queue_pops_in_time_order_and_skips_superseded_entries():
    q = TimerQueue()
    q.schedule(1, 50)
    q.schedule(2, 10)
    q.schedule(1, 70)  # later: the earlier entry stands
    q.replace(2, 90)  # after its check: the new time alone
    q.touch(3)
    assert q.pop_due(49) == [3]
    assert q.pop_due(60) == [1]
    assert q.pop_due(89) == []
    q.discard(2)
    assert q.pop_due(1_000) == [] and len(q) == 0


def test_the_queue_compacts_superseded_entries():
    q = TimerQueue()
    for t in range(10_000, 0, -1):
        q.schedule(7, t)  # each earlier: each supersedes the last
    assert len(q._heap) <= 2 * len(q) + 1024
    assert q.pop_due(1) == [7] and q.pop_due(10**9) == []


def test_a_wall_clock_stepped_back_holds_no_entry_past_its_wait_and_makes_none_due():
    """The waiting is on the timer clock (review k20r5 F2); main made every
    session due at a step back instead (once per step: every other tick, for
    a clock swinging each tick), and an entry scheduled after a step back no
    tick saw (a creeping clock) waited the step on top."""
    q, hour, minute = TimerQueue(), 3_600_000, 60_000
    q.pop_due(10 * hour, timer=5)
    q.replace(1, 10 * hour + minute)
    q.replace(2, 10 * hour + 1_000)
    assert q.pop_due(9 * hour, timer=6) == []  # stepped back: nothing made due by it
    assert q.pop_due(9 * hour, timer=1_004) == []
    assert q.pop_due(9 * hour, timer=1_005) == [2]  # its wait, on the timer clock
    assert q.pop_due(9 * hour, timer=4 + minute) == []
    assert q.pop_due(9 * hour, timer=5 + minute) == [1]
    assert q.due_time(1) is None and len(q) == 0


def test_a_frozen_wall_clock_holds_no_entry():
    q = TimerQueue()
    q.pop_due(1_000, timer=0)
    q.replace(1, 1_500)
    assert q.pop_due(1_000, timer=499) == []
    assert q.pop_due(1_000, timer=500) == [1]
    q.replace(1, 1_500)  # looked at, rescheduled by what is left on the wall clock
    assert q.due_time(1) == 1_500
    assert q.pop_due(1_000, timer=999) == [] and q.pop_due(1_000, timer=1_000) == [1]


def test_a_wall_clock_stepped_forward_makes_due_what_waits_less_than_the_step_once():
    q, hour = TimerQueue(), 3_600_000
    q.pop_due(10 * hour, timer=0)
    q.replace(1, 10 * hour + 1_000)
    q.replace(2, 10 * hour + 2 * hour)
    assert q.pop_due(11 * hour, timer=100) == [1]  # a VM paused an hour (or a step)
    assert q.pop_due(11 * hour + 100, timer=200) == []
    assert q.due_time(2) == 12 * hour  # the wall clock's reckoning, still
    assert q.pop_due(11 * hour, timer=hour - 100) == []  # back again: nothing
    assert q.pop_due(11 * hour, timer=hour + 100) == [2]


def test_an_entry_set_while_the_wall_clock_was_stepped_back_is_due_when_it_is_set_right():
    """Review k21r1: a wait taken while the wall clock is an hour back is an
    hour longer than the wall clock's once it is set right (all of it, or
    part of it: a step back of J, forward K < J); ``q`` takes no step that
    does not lead further than ever, so only the wall clock can make it due
    then. Never late to its wall-clock deadline, as on main's one clock."""
    q, hour = TimerQueue(), 3_600_000
    q.pop_due(10 * hour, timer=0)
    assert q.pop_due(9 * hour, timer=100) == []  # stepped back an hour
    q.replace(1, 9 * hour + 60_000)  # a minute away, on the wall clock then
    q.replace(2, 9 * hour + 40 * 60_000)  # forty
    assert q.pop_due(9 * hour + 30 * 60_000, timer=200) == [1]  # half set right: past 1's
    assert q.pop_due(10 * hour + 300, timer=300) == [2]  # set right: past 2's
    assert len(q) == 0


def test_a_wall_clock_held_back_still_makes_an_entry_due_once():
    """The entry waits on both clocks while the wall clock lags: due at
    whichever comes first, popped once (the other's entry goes stale)."""
    q, hour = TimerQueue(), 3_600_000
    q.pop_due(10 * hour, timer=0)
    assert q.pop_due(9 * hour, timer=100) == []
    q.replace(1, 9 * hour + 1_000)
    assert q.pop_due(8 * hour, timer=1_099) == []  # further back
    assert q.pop_due(8 * hour, timer=1_100) == [1]  # its wait, on the timer clock
    q.replace(1, 8 * hour + 2_000)
    q.replace(1, 8 * hour + 5_000)  # the first one superseded
    assert q.pop_due(8 * hour + 2_000, timer=1_200) == []
    assert q.pop_due(8 * hour + 5_000, timer=1_300) == [1]  # the wall clock reached it
    assert q.pop_due(10 * hour, timer=9_100) == [] and len(q) == 0


def test_one_clock_stepped_back_counts_as_no_time_and_time_again_from_there():
    """``timer`` None: a tool's single clock (the daemon passes both)."""
    q = TimerQueue()
    q.pop_due(10_000)
    q.replace(1, 10_500)
    assert q.pop_due(4_000) == []
    assert q.pop_due(4_499) == [] and q.pop_due(4_500) == [1]


def test_a_counter_jump_past_the_message_budget_expires_the_keys_within_two_ticks(tmp_path):
    """The c2s count is the highest counter admitted, which the client
    chooses: one message past ``reject_after_messages`` spends the budget
    at once, and the data path (no control lock) has the session looked at."""
    from jvpn.policy import REJECT_AFTER_MESSAGES_MIN  # noqa: PLC0415
    from kits.rekey_kit import gateway  # noqa: PLC0415

    gw, clock = gateway(tmp_path, reject_after_messages=REJECT_AFTER_MESSAGES_MIN)
    peer, live = confirmed(gw)
    gw.tick()  # scheduled by the rate bound: about 20 days ahead
    base = live.record.key_c2s_base
    peer.channel.skip_counters(base + REJECT_AFTER_MESSAGES_MIN + 1
                               - peer.channel.counter.upcoming)
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    for _ in range(2):
        clock.ms += 100
        gw.tick()
    assert events_of(gw.events, "KeyExpired")


def test_a_limited_pop_takes_the_earliest_and_leaves_the_rest_due():
    """Issue 15 (the VOLATILE storm): the tick takes the due sessions a
    batch at a time, releasing the control lock between batches."""
    q = TimerQueue()
    for sid in range(1, 6):
        q.schedule(sid, 10 * sid)
    assert q.pop_due(100, limit=2) == [1, 2]
    assert q.pop_due(100, limit=2) == [3, 4]
    assert q.pop_due(100) == [5] and len(q) == 0


def _stepped_back_and_set_right(count: int) -> TimerQueue:
    """``count`` sessions rescheduled while the wall clock was an hour
    back (each a minute away then: all on the backstop), then set right:
    all of them due on the wall clock at once."""
    q, hour = TimerQueue(), 3_600_000
    q.pop_due(10 * hour, timer=0)
    assert q.pop_due(9 * hour, timer=100) == []  # stepped back an hour
    for sid in range(1, count + 1):
        q.replace(sid, 9 * hour + 60_000)
    assert q.pop_due(10 * hour + 300, timer=300, limit=0) == []  # set right
    return q


def test_a_touched_session_is_not_held_behind_the_backstops_catch_up():
    """Review k21r3: after a wall clock set right, every session rescheduled
    while it lagged is due on the backstop at once (one sweep: at 1M, many
    ticks of batches). The backstop was popped before the queue's own heap,
    so a session touched meanwhile (a commit, new keys, a quarantine, the
    data path's nudge: "looked at next tick") waited for the whole sweep;
    on one heap a touch (NOW) comes first."""
    q = _stepped_back_and_set_right(300)
    q.touch(1_000)
    assert 1_000 in q.pop_due(10 * 3_600_000 + 400, limit=128, timer=400)


def test_the_two_heaps_give_the_earliest_first_across_a_limited_pop():
    """``pop_due``: at most ``limit``, earliest first (on the wall clock's
    reckoning), whichever heap holds them: a batch that took the backstop's
    first left an entry of the queue's own heap, due a minute earlier, for
    a later batch (or tick)."""
    hour = 3_600_000
    q = TimerQueue()
    q.pop_due(10 * hour, timer=0)
    q.replace(1, 10 * hour + 1_000)  # on the queue's clock only (no lag)
    assert q.pop_due(9 * hour, timer=100) == []  # stepped back an hour
    q.replace(2, 9 * hour + 60_000)  # on the backstop too
    assert q.pop_due(9 * hour + 60_100, timer=60_200, limit=1) == [1]  # due since ~9 h + 900
    assert q.pop_due(9 * hour + 60_100, timer=60_200, limit=1) == [2]
    assert len(q) == 0


def test_a_leap_second_does_not_put_every_schedule_on_both_heaps():
    """Review k21rall L2: a leap second steps the wall clock back by exactly
    1 s and nothing sets it right; the two clocks' readings then differ by
    a millisecond either way from tick to tick. With the backstop's bound
    at 1 s, every tick read 1 ms high pushed each schedule onto both heaps
    for the rest of the process (the cost of a real step back, for none)."""
    q, hour = TimerQueue(), 3_600_000
    wall = timer = 10 * hour
    q.pop_due(wall, timer=timer)
    wall -= 1_000  # the leap second
    held = 0
    for tick in range(1, 1_001):
        wall += 100 + (-1 if tick % 2 else 1)  # readings a millisecond apart
        timer += 100
        q.pop_due(wall, timer=timer)
        for sid in range(10):
            q.replace(sid, wall + 60_000)
        held = max(held, q.held_on_the_wall_clock())
    assert held == 0, f"{held} schedules held on the wall clock's heap too"


HOUR = 3_600_000


def _lagging_an_hour() -> TimerQueue:
    """A queue whose wall clock was stepped back an hour at timer 100."""
    q = TimerQueue()
    q.pop_due(10 * HOUR, timer=0)
    assert q.pop_due(9 * HOUR, timer=100) == []
    return q


def test_a_silence_set_while_the_wall_clock_lags_is_not_due_when_it_is_set_right():
    """Review k21r3 F2: a timer-clock due time (the heartbeat's silence)
    waits on ``q`` alone, exactly; held on the wall clock by the lagging
    reading, every session rescheduled during the lag was due at once when
    the clock was set right. A record's deadline two hours away on the
    lagging wall clock (an hour past the set-right) is held on neither:
    its entry comes sooner."""
    q = _lagging_an_hour()  # q: the wall clock + 1 h (and 100 ms), the timer clock + 10 h
    q.replace(1, 11 * HOUR, timer_at=2_200)  # silent until 2.2 s on the timer clock
    q.replace(2, None, timer_at=2_200)
    assert q.held_on_the_wall_clock() == 0
    assert q.pop_due(10 * HOUR + 300, timer=300) == []  # set right
    assert q.pop_due(10 * HOUR + 2_199, timer=2_199) == []
    assert sorted(q.pop_due(10 * HOUR + 2_200, timer=2_200)) == [1, 2]


def test_a_record_deadline_set_while_the_wall_clock_lags_is_held_unless_a_silence_is_as_soon():
    """The wall-clock part is held on the wall clock (the backstop) when its
    entry's time on ``q`` (where the wall clock is once set right) is more
    than BACKSTOP_LAG_MS past it: its own wait, or a silence due later
    still; not when a silence comes within BACKSTOP_LAG_MS of it."""
    q = _lagging_an_hour()  # q: the wall clock + 1 h (and 100 ms), the timer clock + 10 h
    soon = 9 * HOUR + 60_000  # a minute away on the lagging wall clock (passed once set right)
    q.replace(1, soon, timer_at=2 * HOUR)  # a silence far: held
    q.replace(2, soon)  # no silence (not ATTACHED): held
    later = 11 * HOUR  # two hours away on the lagging wall clock, an hour past the set-right
    q.replace(3, later, timer_at=HOUR + 2_000)  # on q 2 s after it
    q.replace(4, later, timer_at=HOUR + 2_001)  # 1 ms more: held
    assert q.held_on_the_wall_clock() == 3
    assert q.pop_due(9 * HOUR + 59_999, timer=60_099) == []
    assert sorted(q.pop_due(9 * HOUR + 60_000, timer=60_100)) == [1, 2]
    assert q.pop_due(11 * HOUR - 1, timer=HOUR - 1) == []  # set right (q: the wall clock)
    assert q.pop_due(11 * HOUR, timer=HOUR) == [4]  # by the wall clock
    assert q.pop_due(11 * HOUR + 1_999, timer=HOUR + 1_999) == []
    assert q.pop_due(11 * HOUR + 2_000, timer=HOUR + 2_000) == [3]  # 2 s late: the bound
    assert q.held_on_the_wall_clock() == 0 and len(q) == 0


def test_a_reschedule_leaves_no_earlier_wall_clock_entry_behind():
    """Review k21r4's gap: a session rescheduled (``replace``) to a time not
    held on the wall clock, or touched, keeps no entry of its earlier wall-
    clock deadline on the backstop: it would be looked at early (at the
    old time) and the backstop never emptied (every pop on both heaps)."""
    q = _lagging_an_hour()
    q.replace(1, 9 * HOUR + 60_000)  # held
    q.replace(2, 9 * HOUR + 60_000)
    assert q.held_on_the_wall_clock() == 2
    q.replace(1, None, timer_at=100 + 10 * 60_000)  # its check: a silence, ten minutes
    q.touch(2)
    assert q.held_on_the_wall_clock() == 0
    assert q.pop_due(9 * HOUR + 200, timer=200) == [2]  # the touch
    q.replace(2, None, timer_at=100 + 10 * 60_000)
    assert q.pop_due(9 * HOUR + 60_000, timer=60_100) == []  # the old deadlines: nothing
    assert q.pop_due(10 * HOUR + 120_000, timer=120_000) == []  # set right: nothing
    assert sorted(q.pop_due(10 * HOUR + 600_100, timer=600_100)) == [1, 2]


def test_a_session_popped_from_the_backstop_is_forgotten_there():
    """Review k21r4's gap: the backstop's pop (``take``) forgets the session
    there: a session popped by the wall clock and scheduled again while the
    clock still lags is held at its new deadline (not taken for one holding
    an earlier), and nothing stays held once it is popped."""
    q = _lagging_an_hour()
    assert q.pop_due(8 * HOUR, timer=200) == []  # two hours back
    q.replace(1, 8 * HOUR + 60_000)
    assert q.pop_due(9 * HOUR, timer=300) == [1]  # an hour forward: by the wall clock
    assert q.held_on_the_wall_clock() == 0
    q.schedule(1, 9 * HOUR + 60_000)  # a minute away, still an hour back
    assert q.held_on_the_wall_clock() == 1
    assert q.pop_due(10 * HOUR + 60_000, timer=400) == [1]  # set right: past it
