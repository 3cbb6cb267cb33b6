"""Issue 15: a restart schedules each restored session at the time its
timers can first fire, not all of them at once (at 1M the timer thread
then checked every restored session, a million checks in the first
seconds of serving). The due times are lower bounds: key expiry, the
heartbeat window and the lifetime are still acted on no later than due."""

from __future__ import annotations

import os

import pytest

from jvpn.keys import derive_session_keys
from jvpn.policy import Policy
from jvpn.session import Event, State, Transport, apply, new_session
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import AdmitAll, Clock, make_gateway

NOW = 1_700_000_000_000
SIDS = list(range(2000, 2040))


@pytest.fixture(autouse=True)
def _private_umask():
    old = os.umask(0o077)
    yield
    os.umask(old)


def _store(path, keys_ms: dict[int, int]) -> SqliteStore:
    store = SqliteStore(path)
    for sid, made in keys_ms.items():
        rec, _tr = apply(new_session(sid, made, owner="gw-test"), Event.ATTACH_OK, made,
                         binding=Transport("192.0.2.1", 1000 + sid))
        store.create(rec.with_(inner_addr="10.99.0.2", keys_ms=made), derive_session_keys(
            sid, bytes([sid % 256]) * 32, b"\x06" * 32, b"\x07" * 32).pack())
        store.set_floor(sid, 100)
    return store


def _restarted(tmp_path, keys_ms: dict[int, int]):
    clock = Clock(NOW)
    gw = make_gateway(tmp_path, store=_store(tmp_path / "s.db", keys_ms), gate=AdmitAll(),
                      clock=clock)
    gw.reconcile()
    return gw, clock


def test_restored_sessions_are_not_all_due_at_the_first_tick(tmp_path):
    gw, _clock = _restarted(tmp_path, dict.fromkeys(SIDS, NOW - 1_000))
    assert set(gw.table.sessions) == set(SIDS)
    assert gw.table.timers.stale() == 0  # no superseded entry for the first pop to walk
    assert gw.table.timers.pop_due(NOW + 1) == []  # nothing to check at the first ticks
    p = gw.policy
    for sid in SIDS:  # each no later than its keys' expiry nor its heartbeat window
        due = gw.table.timers.due_time(sid)
        assert due is not None
        assert due <= NOW - 1_000 + p.reject_after_ms
        assert due <= NOW + p.heartbeat_volatile_ms + 1


def test_a_restored_session_whose_keys_expired_is_due_at_once_and_ends(tmp_path):
    p = Policy()
    old = NOW - p.reject_after_ms - 1
    gw, _clock = _restarted(tmp_path, {2000: old, 2001: NOW - 1_000})
    assert gw.table.timers.pop_due(NOW + 1) == [2000]
    gw.table.timers.touch(2000)  # back: the tick pops it
    gw.run_due_timers()
    assert 2000 not in gw.table.sessions  # KEYS_EXPIRED: ended and forgotten
    assert gw.table.get(2001).record.state is State.ATTACHED


def test_a_restored_session_is_checked_when_its_keys_expire(tmp_path):
    gw, clock = _restarted(tmp_path, {2000: NOW - 1_000})
    clock.ms = NOW - 1_000 + gw.policy.reject_after_ms + 1
    gw.run_due_timers()
    assert 2000 not in gw.table.sessions
