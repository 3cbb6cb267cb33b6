"""The gateway's timers wait on the timer clock (CLOCK_BOOTTIME: never set
back; ``timer`` here), while the records' times and the timers' decisions
stay on the wall clock (``clock``). Review k20r5 F2: a wall clock that
does not move (frozen, or held back by small steps back no tick sees)
stalled every timer on the wall-clock queue, the rekey nudges with them.
The other clock faults an attacker or an accident brings (an NTP step, an
admin's ``date -s``, a VM paused for minutes, a clock jumping back and
forth) must neither stall the timers nor storm them: no state-change
storm, no nudge storm, no check storm, and a session's lifetime still
ends it (jvpn/gateway/timer_queue.py)."""

from __future__ import annotations

import pytest
from test_rekey_degraded_recovery import _nudged, _since, gate  # noqa: F401 - gate: the fixture

from jvpn.gate import abi
from jvpn.gateway import snapshot, timer_checks
from jvpn.gateway.timers import due_timer
from jvpn.policy import default_policy
from jvpn.session import Event, State
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import CLIENT, AdmitAll, Clock, handshake, make_gateway
from kits.reattach_kit import NEW, SID, Harness
from kits.rekey_kit import RekeyClient, policy

P = default_policy()
HOUR = 3_600_000
TICK = 100  # ms, TIMER_TICK_S
# a step the default policy's record deadlines let pass (the keys' 180 s,
# the lifetime's 8 h), beyond the silences (heartbeat 2 s, transport 15 s)
STEP = 60_000


def test_a_frozen_wall_clock_still_gets_nudges(tmp_path, gate):  # noqa: F811
    """k20r5 F2: a minute of the timer clock, the wall clock not moving:
    the next nudge was queued at the wall clock's now + 1 s, never reached."""
    gw, _clock, timer, b, sid, n = _nudged(tmp_path, gate, transport_lost_ttl_ms=HOUR)
    for _ in range(600):
        timer.ms += TICK
        b.tick()
    sent = _since(gw, sid, n)
    assert 55 <= sent <= 60, f"{sent} nudges in 60 s of the timer clock"


def test_a_wall_clock_held_by_steps_no_tick_sees_still_gets_nudges(tmp_path, gate):  # noqa: F811
    """k20r5 F2: the wall clock runs 100 ms between ticks and is stepped
    back 99 ms before each (a tick sees it 1 ms on: no step back)."""
    gw, clock, timer, b, sid, n = _nudged(tmp_path, gate, transport_lost_ttl_ms=HOUR)
    for _ in range(600):
        clock.ms += TICK - 99
        timer.ms += TICK
        b.tick()
    sent = _since(gw, sid, n)
    assert 55 <= sent <= 60, f"{sent} nudges in 60 s of the timer clock"


def test_a_wall_clock_swinging_an_hour_each_tick_neither_storms_nor_stalls_the_nudges(
        tmp_path, gate):  # noqa: F811
    gw, clock, timer, b, sid, n = _nudged(tmp_path, gate, transport_lost_ttl_ms=HOUR)
    for i in range(600):
        clock.ms += TICK + (HOUR if i % 2 == 0 else -HOUR)
        timer.ms += TICK
        b.tick()
    sent = _since(gw, sid, n)
    assert 55 <= sent <= 60, f"{sent} nudges in 60 s of the timer clock"


def _idle(tmp_path, count: int, policy=P):
    """``count`` confirmed sessions and the gateway's two clocks apart."""
    clock, timer = Clock(), Clock()
    gw = make_gateway(tmp_path, clock=clock, timer_ms=timer, policy=policy)
    peers = [handshake(gw, src=(CLIENT[0], CLIENT[1] + i), peer=i) for i in range(count)]
    for i, p in enumerate(peers):
        gw.datapath.datagram(p.seal(b"", abi.MSG_KEEPALIVE), (CLIENT[0], CLIENT[1] + i))
    lives = [gw.table.get(p.session_id) for p in peers]
    assert all(live.confirmed for live in lives)
    gw.tick()
    return gw, clock, timer, lives


def test_a_clock_swinging_back_and_forth_each_tick_does_not_recheck_every_session(
        tmp_path, monkeypatch):
    """Main made every session due on each step back: a wall clock swinging
    each tick had every session looked at every other tick (1.5 s each
    way: no deadline of theirs is passed, the heartbeat's 2 s included)."""
    gw, clock, timer, lives = _idle(tmp_path, 2)
    checks: list = []
    real = timer_checks.due_timer
    monkeypatch.setattr(timer_checks, "due_timer",
                        lambda *a: checks.append(1) or real(*a))
    for i in range(20):
        clock.ms += (1_500 if i % 2 == 0 else -1_500)
        timer.ms += 1
        gw.tick()
    assert [live.record.state for live in lives] == [State.ATTACHED] * 2
    assert len(checks) <= len(lives), f"{len(checks)} checks of {len(lives)} sessions"


def test_a_wall_clock_stepped_back_an_hour_still_ends_a_session_at_its_lifetime(
        tmp_path, monkeypatch):
    """The decision stays the wall clock's (the record's ``created_ms`` is
    shared through the store): stepped back an hour, the session's lifetime
    ends an hour later, when the wall clock reaches it again; meanwhile it
    is looked at a few times, not every tick."""
    policy = P.__class__(**{**P.as_dict(), "max_lifetime_ms": 60_000,
                            "heartbeat_volatile_ms": 10 * HOUR,
                            "transport_lost_ttl_ms": 10 * HOUR})
    gw, clock, timer, [live] = _idle(tmp_path, 1, policy)
    sid, ends = live.record.session_id, live.record.created_ms + 60_000
    checks: list = []
    real = timer_checks.due_timer
    monkeypatch.setattr(timer_checks, "due_timer",
                        lambda *a: checks.append(1) or real(*a))
    clock.ms -= HOUR
    while clock.ms < ends + TICK:
        clock.ms += 10_000
        timer.ms += 10_000
        gw.tick()
        assert (gw.table.get(sid) is None) == (clock.ms > ends)
    assert len(checks) <= 8, f"{len(checks)} checks"


def test_a_wall_clock_stepped_forward_past_a_lifetime_ends_the_session_at_the_next_tick(
        tmp_path):
    policy = P.__class__(**{**P.as_dict(), "max_lifetime_ms": 60_000})
    gw, clock, timer, [live] = _idle(tmp_path, 1, policy)
    clock.ms += 61_000
    timer.ms += TICK
    gw.tick()
    assert gw.table.get(live.record.session_id) is None


def test_a_wall_clock_stepped_forward_a_minute_sends_no_session_volatile(tmp_path):
    """A VM paused a minute, an NTP step forward, ``date -s``: the clients
    were not silent for a minute of the gateway's time (its timer clock),
    and a step forward of more than the heartbeat's 2 s sent every ATTACHED
    session VOLATILE at once (a state-change storm; past the transport's
    15 s, TERMINATED: transport_lost_ms was the last receive). Silence is
    measured on the timer clock: a session silent for the heartbeat's time
    of it still goes VOLATILE."""
    gw, clock, timer, lives = _idle(tmp_path, 2)
    clock.ms += STEP
    timer.ms += TICK
    gw.tick()
    assert [live.record.state for live in lives] == [State.ATTACHED] * 2
    for _ in range(P.heartbeat_volatile_ms // TICK + 1):
        clock.ms += TICK
        timer.ms += TICK
        gw.tick()
    assert [live.record.state for live in lives] == [State.VOLATILE] * 2


def test_a_frozen_wall_clock_still_sends_a_silent_session_volatile(tmp_path):
    """And the record's ``transport_lost_ms`` is the wall clock's now less
    the silence (``last_rx_ms`` is the timer clock's: never written as is)."""
    gw, clock, timer, [live] = _idle(tmp_path, 1)
    for _ in range(P.heartbeat_volatile_ms // TICK + 1):  # the last tick: 2.1 s silent
        timer.ms += TICK
        gw.tick()
    assert live.record.state is State.VOLATILE
    assert live.record.transport_lost_ms == clock.ms - (timer.ms - live.last_rx_ms)
    assert timer.ms - live.last_rx_ms == P.heartbeat_volatile_ms + TICK


def test_a_frozen_wall_clock_still_ends_a_degraded_session_whose_binding_fell_silent(
        tmp_path, gate):  # noqa: F811
    """The stranding (key_timers.stranded: DEGRADED, keys expired, binding
    silent for ``transport_lost_ttl_ms``) is silence: the timer clock's."""
    gw, _clock, timer, b, sid, _n = _nudged(tmp_path, gate, transport_lost_ttl_ms=15_000)
    for _ in range(150):  # 15 s since the DEGRADED tick; the client silent 20 s
        timer.ms += TICK
        b.tick()
    assert gw.table.get(sid) is None


def test_a_wall_clock_stepped_back_then_set_right_still_ends_a_session_at_its_lifetime(
        tmp_path):
    """Review k21r1: an admin's ``date -s`` an hour back, set right a
    minute later (or an NTP spoofer's step back, undone). A session looked
    at while the clock was back is rescheduled by what the wall clock then
    had left (an hour more); when the clock is set right its lifetime has
    passed on the wall clock, and it must end at the next tick, as it did
    on main (a step back made every session due, the set-right made its
    deadline due), not an hour later (the queue's clock took the step
    forward as no time: the wall clock's lead was not above its highest)."""
    policy = P.__class__(**{**P.as_dict(), "max_lifetime_ms": 60_000,
                            "heartbeat_volatile_ms": 10 * HOUR,
                            "transport_lost_ttl_ms": 10 * HOUR})
    gw, clock, timer, [live] = _idle(tmp_path, 1, policy)
    sid, ends = live.record.session_id, live.record.created_ms + 60_000
    clock.ms -= HOUR  # stepped back
    while timer.ms < ends + 10_000:  # the session looked at while the clock is back
        clock.ms += 10_000
        timer.ms += 10_000
        gw.tick()
    assert gw.table.get(sid) is not None  # the wall clock has not reached its lifetime
    clock.ms += HOUR  # set right: the lifetime passed 10 s ago
    for _ in range(3):
        clock.ms += TICK
        timer.ms += TICK
        gw.tick()
    assert gw.table.get(sid) is None, "the session outlived its lifetime by the step back"


@pytest.mark.parametrize("deadline", ["lifetime", "keys"])
def test_an_active_sessions_record_deadline_passed_while_the_clock_lagged_ends_it_when_set_right(
        tmp_path, deadline):
    """Review k21r3 F2's fix keeps review k21r1's bound for an active
    session too: its looks while the wall clock is an hour back are its
    heartbeat's (on the timer clock, every 2.1 s), and its record's
    deadline (the lifetime, or the keys' age: the wall clock's) passes on
    the wall clock's true reading meanwhile; set right, the session ends
    within BACKSTOP_LAG_MS (here at the next tick), not at a silence's
    look, nor an hour later."""
    short = ({"max_lifetime_ms": 60_000} if deadline == "lifetime"
             else {"rekey_after_ms": 30_000, "reject_after_ms": 60_000})
    policy = P.__class__(**{**P.as_dict(), **short})
    gw, clock, timer, [live] = _idle(tmp_path, 1, policy)
    sid = live.record.session_id
    ends = (live.record.created_ms if deadline == "lifetime"
            else live.record.keys_ms or live.record.created_ms) + 60_000
    clock.ms -= HOUR  # stepped back
    while timer.ms < ends + 10_000:  # active: traffic each tick, looked at every 2.1 s
        clock.ms += TICK
        timer.ms += TICK
        live.last_rx_ms = timer.ms
        gw.tick()
    assert gw.table.get(sid) is live and live.record.state is State.ATTACHED
    clock.ms += HOUR  # set right: its deadline passed 10 s ago
    clock.ms += TICK
    timer.ms += TICK
    gw.tick()
    assert gw.table.get(sid) is None, f"the session outlived its {deadline} past the set-right"


def test_the_sessions_listing_shows_the_last_receive_on_the_wall_clock_less_the_silence(
        tmp_path):
    """``last_rx_ms`` is kept on the timer clock; the operator's listing
    gives it on the wall clock (now less the silence): a step forward of a
    minute is no minute of silence there either."""
    gw, clock, timer, [_live] = _idle(tmp_path, 1)
    clock.ms += STEP
    timer.ms += 700
    [row] = snapshot.sessions(gw)
    assert row["last_rx_ms"] == clock.ms - 700


def test_a_probe_reply_gives_the_silence_the_timer_clock_measured(tmp_path):
    """A probe reply's receive age (docs/protocol.md "Transport
    selection") is the timer clock's silence, not a wall-clock step."""
    clock, timer = Clock(), Clock()
    gw = make_gateway(tmp_path, gate=AdmitAll(), clock=clock, timer_ms=timer, policy=policy())
    c = RekeyClient(gw)
    clock.ms += STEP
    timer.ms += 700
    [(reply, _to)] = c.send(c.control(abi.MSG_PATH_PROBE, 42), src=("198.51.100.7", 6000))
    _hdr, (_probe_id, _state, _flags, rx_age, _version) = c.opened(reply)
    assert rx_age == 700


def test_data_after_a_wall_clock_step_forward_postpones_volatile_by_the_timer_clock(tmp_path):
    """The data path writes the last receive on the timer clock: data that
    came after a step forward of a minute counts as silence from then, not
    from a minute later (a session silent for the heartbeat's time goes
    VOLATILE on time, not a minute late)."""
    gw, clock, timer, [_live] = _idle(tmp_path, 1)
    clock.ms += STEP
    timer.ms += TICK
    gw.tick()
    peer = handshake(gw, src=(CLIENT[0], CLIENT[1] + 5), peer=1)
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), (CLIENT[0], CLIENT[1] + 5))
    fresh = gw.table.get(peer.session_id)
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), (CLIENT[0], CLIENT[1] + 5))
    for _ in range(P.heartbeat_volatile_ms // TICK + 1):
        clock.ms += TICK
        timer.ms += TICK
        gw.tick()
    assert fresh.record.state is State.VOLATILE


DAY = 24 * HOUR


@pytest.mark.parametrize("timer_lead", [-DAY, DAY], ids=["timer-behind", "timer-ahead"])
def test_a_proven_switch_counts_the_silence_from_the_switch_on_the_timer_clock(
        tmp_path, timer_lead):
    """Review k21r3: a proven path response (RECOVERING -> ATTACHED) is
    traffic from the client, on the timer clock (``Live.last_rx_ms``). Its
    two clocks a day apart: written on the wall clock, the switched session
    either went VOLATILE at once (a redundant switch) or counted no silence
    for a day (a client gone after its reattach never made it VOLATILE)."""
    h = Harness(tmp_path)
    timer = Clock(h.clock.ms + timer_lead)
    h.table.timer_ms = timer
    h.clock.ms += 5_000
    timer.ms += 5_000
    h.reattach(NEW)
    assert h.record().state is State.ATTACHED
    live = h.table.get(SID)
    silence = timer.ms - live.last_rx_ms
    assert silence == 0, f"{silence} ms of silence at the switch"
    heard = live.heard_ms(h.clock.ms - timer.ms)
    assert due_timer(h.record(), heard, h.clock.ms + h.policy.heartbeat_volatile_ms,
                     h.policy) is None
    assert due_timer(h.record(), heard, h.clock.ms + h.policy.heartbeat_volatile_ms + 1,
                     h.policy)[0] is Event.INSTABILITY_DETECTED
    h.store.close()


@pytest.mark.parametrize("timer_lead", [-DAY, DAY], ids=["timer-behind", "timer-ahead"])
def test_a_restored_session_counts_its_silence_from_the_restart_on_the_timer_clock(
        tmp_path, timer_lead):
    """Review k21r3: a restart's restored session was last heard (as far
    as this gateway knows) at the restore, on the timer clock. Its two
    clocks a day apart: a ``Live`` built with the wall clock's now went
    VOLATILE at the first tick, or stayed ATTACHED a day past its silence."""
    _gw, clock, timer, [live] = _idle(tmp_path, 1)
    sid = live.record.session_id
    timer.ms += timer_lead  # a reboot's timer clock (CLOCK_BOOTTIME starts again)
    gw = make_gateway(tmp_path, store=SqliteStore(tmp_path / "s.db"), clock=clock,
                      timer_ms=timer)
    gw.reconcile()
    restored = gw.table.get(sid)
    for _ in range(P.heartbeat_volatile_ms // TICK):  # 2 s: not yet silent too long
        clock.ms += TICK
        timer.ms += TICK
        gw.tick()
    assert restored.record.state is State.ATTACHED
    clock.ms += TICK
    timer.ms += TICK
    gw.tick()
    assert restored.record.state is State.VOLATILE


def test_a_wall_clock_stepped_back_and_set_right_does_not_recheck_every_active_session(
        tmp_path, monkeypatch):
    """Review k21r3 F2: sessions with traffic are looked at every heartbeat
    window (their due time is a lower bound). Rescheduled while the wall
    clock lags an hour, each also waited on the backstop for "now + 2 s" on
    the lagging wall clock; set right, every one of them was due at once,
    though a silence is on the timer clock and none is near its end (an
    NTP spoofer stepping it back and forth: a sweep each time). The queue
    now takes the silence on the timer clock, the records' deadlines (an
    hour and more away here) on the wall clock: nothing is held."""
    gw, clock, timer, lives = _idle(tmp_path, 2)
    checks: list = []
    real = timer_checks.due_timer
    monkeypatch.setattr(timer_checks, "due_timer",
                        lambda *a: checks.append(1) or real(*a))

    def run(ticks: int, back: int) -> list[int]:
        per_tick = []
        for _ in range(ticks):
            clock.ms += TICK - back
            back = 0
            timer.ms += TICK
            for live in lives:  # traffic from each client (as the data path records it)
                live.last_rx_ms = timer.ms
            checks.clear()
            gw.tick()
            per_tick.append(len(checks))
        return per_tick

    steady = run(50, 0)
    lagging = run(50, HOUR)  # stepped back an hour for 5 s: every session rescheduled
    [set_right] = run(1, -HOUR)
    assert [live.record.state for live in lives] == [State.ATTACHED] * 2
    # both looked at every 2.1 s (at the 21st, 42nd ... tick): the set-right
    # (the 101st) is 0.4 s before their next look
    assert [i for i, n in enumerate(steady + lagging) if n] == [20, 41, 62, 83]
    assert set_right == 0, f"{set_right} sessions looked at the tick the clock was set right"
