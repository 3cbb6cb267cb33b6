"""Issue 15 (k20rec): a restored idle session's first due time taken from
its record alone (jvpn/gateway/idle_due.py) is exactly what the timers'
general ``_next_due`` gives it: over random records, counters and policies,
over each condition that sends a session to the general function, and over
each bound's edge (due exactly now, a message budget spent exactly)."""

from __future__ import annotations

import dataclasses
import os
import random

import pytest

from jvpn.gateway.idle_due import idle_due_at
from jvpn.gateway.key_timers import MAX_MESSAGES_PER_MS
from jvpn.keys import KeyRing, SessionKeys
from jvpn.policy import REJECT_AFTER_MESSAGES_MIN, default_policy
from jvpn.session import Event, State, Transport, apply, new_session
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import PEER_INNER, AdmitAll, Clock, make_gateway

NOW = 1_700_000_000_000
H = 3_600_000
INNER = str(PEER_INNER[0])


@pytest.fixture(autouse=True)
def _private_umask():
    old = os.umask(0o077)
    yield
    os.umask(old)


def _epoch(sid: int, epoch: int) -> SessionKeys:
    return SessionKeys(sid, bytes([sid % 251]) * 32, bytes(32), bytes([epoch + 1]) * 16,
                       bytes(16), bytes(32), epoch=epoch)


def _ring(rng: random.Random, sid: int, epoch: int) -> KeyRing:
    """Mostly one epoch; sometimes an overlap, confirmed or not (the
    general function's cases)."""
    ring = KeyRing(_epoch(sid, epoch))
    if epoch and rng.random() < 0.15:
        ring = KeyRing(_epoch(sid, epoch - 1)).rotated(_epoch(sid, epoch))
        if rng.random() < 0.5:
            ring = ring.with_confirmed(overlap_until_ms=NOW + rng.randrange(-5_000, 5_000))
    return ring


def _maybe(rng: random.Random, value):
    return value if rng.random() < 0.5 else None


def _record(rng: random.Random, sid: int, state: State, epoch: int):
    created = NOW - rng.randrange(0, 10 * H)
    rec, _tr = apply(new_session(sid, created, owner="gw-test"), Event.ATTACH_OK, created,
                     binding=Transport("192.0.2.1", 1000 + sid % 1000))
    return rec.with_(
        state=state, inner_addr=INNER, key_epoch=epoch,
        keys_ms=rng.choice([0, created, rng.randrange(created, NOW + 1)]),
        last_change_ms=rng.choice([rng.randrange(created, NOW + 1), max(created, NOW - 5_000)]),
        transport_lost_ms=rng.choice([None, 0, NOW - rng.randrange(0, 60_000)]),
        recovery_deadline_ms=_maybe(rng, NOW + rng.randrange(-10_000, 10_000)),
        key_c2s_base=rng.choice([0, rng.randrange(1 << 50)]),
        key_s2c_base=rng.choice([0, rng.randrange(1 << 50)]),
        c2s_floor=rng.choice([0, 1, rng.randrange(1 << 52)]))


def _policy(rng: random.Random):
    return dataclasses.replace(
        default_policy(),
        max_lifetime_ms=rng.choice([8 * H, rng.randrange(1, 12 * H)]),
        transport_lost_ttl_ms=rng.randrange(1, 120_000),
        heartbeat_volatile_ms=rng.randrange(1, 600_000),
        volatile_to_degraded_ms=rng.randrange(1, 60_000),
        reject_after_ms=rng.choice([180_000, rng.randrange(1, 4 * H)]),
        reject_after_messages=rng.choice([REJECT_AFTER_MESSAGES_MIN, 1 << 62,
                                          rng.randrange(1, 1 << 53)]),
        expiry_terminates=rng.random() < 0.7)


STATES = [State.ATTACHED] * 4 + [State.VOLATILE, State.RECOVERING, State.DEGRADED]


@pytest.fixture
def gw(tmp_path):
    """Its timer clock apart from its wall clock (``Live.last_rx_ms`` is
    the timer clock's: both functions give each part on its own clock)."""
    clock = Clock(NOW)
    return make_gateway(tmp_path, gate=AdmitAll(), clock=clock, timer_ms=Clock(5 * H))


def _installed(gw, rng: random.Random, sid: int):
    epoch = rng.choice([0, 0, 1, rng.randrange(2, 100)])
    rec = _record(rng, sid, rng.choice(STATES), epoch)
    first = rng.choice([1, rng.randrange(1, 1 << 52)])
    stored = (rng.choice([0, rng.randrange(1 << 52)]), rng.random() < 0.5)
    live = gw.table.install(rec, _ring(rng, sid, epoch), PEER_INNER[0].packed, first_counter=first,
                            stored_ceiling=stored)
    if rng.random() < 0.1:
        live.channel  # noqa: B018 - its first use makes it
    live.quarantined = rng.random() < 0.05
    live.secrets_unsaved = live.secrets_unsaved or rng.random() < 0.05
    live.confirmed = rng.random() < 0.95
    return live


def test_the_idle_due_time_is_the_general_one_over_random_sessions_and_policies(gw):
    rng = random.Random(20)
    taken = declined = 0
    for n in range(3000):
        gw.policy = _policy(rng)
        gw.clock_ms.ms = NOW + rng.choice([0, 1, rng.randrange(0, 20 * H)])
        gw.table.timer_ms.ms += rng.choice([0, 1, rng.randrange(0, 20 * H)])
        sid = 0x1000 + n
        live = _installed(gw, rng, sid)
        live.last_rx_ms -= rng.choice([0, rng.randrange(0, 10 * H)])  # silent since
        fast = idle_due_at(live, gw.clock_ms(), gw.table.timer_ms(), gw.policy)
        if fast is None:
            declined += 1
        else:
            taken += 1
            assert fast == gw._next_due(live), (n, live.record, gw.policy)
        gw.table.drop_local(sid)
    assert taken > 1500 and declined > 300  # both ways, many times


def _idle(gw, **changes):
    """An idle restored session: confirmed, one epoch, no channel."""
    rec, _tr = apply(new_session(0x77, NOW - 1_000, owner="gw-test"), Event.ATTACH_OK,
                     NOW - 1_000, binding=Transport("192.0.2.1", 1077))
    rec = rec.with_(**{"inner_addr": INNER, "keys_ms": NOW - 1_000, **changes})
    return gw.table.install(rec, KeyRing(_epoch(0x77, 0)), PEER_INNER[0].packed, first_counter=100,
                            stored_ceiling=(0, True))


@pytest.mark.parametrize("change", ["channel", "quarantined", "secrets_unsaved",
                                    "unconfirmed", "overlap", "degraded", "terminated"])
def test_each_other_case_goes_to_the_general_function(gw, change):
    live = _idle(gw, state=State.DEGRADED if change == "degraded" else
                 State.TERMINATED if change == "terminated" else State.ATTACHED)
    assert (change in ("degraded", "terminated")
            or idle_due_at(live, NOW, gw.table.timer_ms(), gw.policy) is not None)
    if change == "channel":
        live.channel  # noqa: B018
    elif change == "quarantined":
        live.quarantined = True
    elif change == "secrets_unsaved":
        live.secrets_unsaved = True
    elif change == "unconfirmed":
        live.confirmed = False
    elif change == "overlap":
        live.keys = KeyRing(_epoch(0x77, 0)).rotated(_epoch(0x77, 1)).with_confirmed(NOW + 5)
    assert idle_due_at(live, NOW, gw.table.timer_ms(), gw.policy) is None


def test_the_edges_of_each_bound(gw):
    p = gw.policy
    # due exactly now (keys' age spent to the millisecond): the next tick, as the general one
    live = _idle(gw, keys_ms=NOW - p.reject_after_ms)
    assert idle_due_at(live, NOW, gw.table.timer_ms(), p) == gw._next_due(live)
    assert gw._next_due(live)[0] == NOW + 1
    gw.table.drop_local(0x77)
    # the message budget spent exactly: due now, one message short: now + 0 by the rate
    for spent in (p.reject_after_messages, p.reject_after_messages - 1,
                  p.reject_after_messages - MAX_MESSAGES_PER_MS * 7):
        live = _idle(gw, key_s2c_base=0)
        live._channel.first_counter = spent + 1
        assert idle_due_at(live, NOW, gw.table.timer_ms(), p) == gw._next_due(live)
        gw.table.drop_local(0x77)
    # a transport lost at 0 (no loss recorded) and a RECOVERING one without its deadline
    for changes in ({"transport_lost_ms": 0}, {"state": State.RECOVERING,
                                                "recovery_deadline_ms": None},
                    {"state": State.VOLATILE, "last_change_ms": NOW - 10 * H},
                    {"state": State.VOLATILE, "last_change_ms": NOW - 1_000},
                    {"state": State.RECOVERING, "recovery_deadline_ms": NOW + 1_000}):
        live = _idle(gw, **changes)
        assert idle_due_at(live, NOW, gw.table.timer_ms(), p) == gw._next_due(live)
        gw.table.drop_local(0x77)


def test_a_reconcile_schedules_each_session_at_its_general_due_time(tmp_path):
    """The wiring: after a restart each restored session is due when the
    general function says (the idle ones through the fast path)."""
    rng = random.Random(7)
    store = SqliteStore(tmp_path / "s.db")
    for n in range(200):
        sid = 0x2000 + n
        rec = _record(rng, sid, rng.choice([State.ATTACHED, State.VOLATILE, State.DEGRADED]), 0)
        store.create(rec.with_(recovery_deadline_ms=None), _epoch(sid, 0).pack())
        store.set_floor(sid, rng.randrange(1, 1 << 40))
    clock = Clock(NOW)
    gw = make_gateway(tmp_path, store=store, gate=AdmitAll(), clock=clock)
    gw.reconcile()
    assert len(gw.table.sessions) > 150
    for sid, live in gw.table.sessions.items():
        # one clock here: both parts on the wall clock's reckoning
        at = min(t for t in gw._next_due(live) if t is not None)
        # 0: left due at the next tick (its touch at the install)
        assert gw.table.timers.due_time(sid) == (at if at > NOW + 1 else 0)
