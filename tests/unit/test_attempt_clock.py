"""Review k19r3 (stop 24's "not done"): an attempt's age was the gateway's
wall clock less its ``created_ms``, taken both ways (abs: one dated in the
future expires, review k19r1 R3), so a wall clock stepped back (NTP, an
operator) more than the TTL ended every live handshake attempt at the
next tick, and at capacity let a retry replace an attempt whose answer
its client still takes. An attempt made in this process now ages by the
timer clock (never set back); one restored from the store has only its
stored wall-clock ``created_ms`` and keeps the k19r1 R3 rule.

Clocks injected: the gateway's wall clock (``Clock``), its timer clock
(``Gateway(timer_ms=...)``), each initiation's timestamp (the client's)."""

from __future__ import annotations

from test_capacity_answerable import CLIENT, MS, OTHER, T0_NS, Client, _full_refusals

from jvpn.config import UNCONFIRMED_TTL_MS
from jvpn.gate import abi
from jvpn.handshake import Initiator
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import GW_PUB, PEER_KEYS, AdmitAll, Clock, handshake, make_gateway

STEP_MS = UNCONFIRMED_TTL_MS + 1_000  # a wall-clock step larger than the TTL


def _gateway(tmp_path, *, max_sessions: int = 10, store=None):
    """(gateway, its wall clock, its timer clock)."""
    wall, timer = Clock(), Clock(50_000)
    gate = AdmitAll()
    gate.max_sessions = max_sessions
    gw = make_gateway(tmp_path, gate=gate, clock=wall, timer_ms=timer, store=store,
                      cookie_threshold_per_s=10_000)
    return gw, wall, timer


def _full(tmp_path):
    """MaxSessions 2, one of them another peer's confirmed session."""
    gw, wall, timer = _gateway(tmp_path, max_sessions=2)
    other = handshake(gw, src=OTHER, peer=1)
    gw.datapath.datagram(other.seal(b"", abi.MSG_KEEPALIVE), OTHER)
    return gw, wall, timer


def _initiate(gw, at_ms: int) -> tuple[Initiator, bytes | None]:
    """Peer 0's initiation stamped ``at_ms`` after T0 by the client; the
    gateway's clocks stay where the test put them."""
    init = Initiator(PEER_KEYS[0], GW_PUB, clock_ns=lambda: T0_NS + at_ms * MS)
    n = len(gw.sock.sent)
    gw.datapath.datagram(init.initiation(), CLIENT)
    answers = [m for m, to in gw.sock.sent[n:] if to == CLIENT]
    return init, answers[0] if answers else None


def test_a_wall_clock_stepped_back_ends_no_live_attempt(tmp_path):
    gw, wall, timer = _gateway(tmp_path)
    init, answer = _initiate(gw, 0)
    wall.ms -= STEP_MS
    timer.ms += 100
    gw.controlpath.expire_unconfirmed()
    assert len(gw.table.unconfirmed) == 1, "a clock step ended the live attempt"
    assert Client(gw, wall).confirms(init, answer)


def test_a_wall_clock_stepped_forward_ends_no_live_attempt(tmp_path):
    gw, wall, timer = _gateway(tmp_path)
    _initiate(gw, 0)
    wall.ms += STEP_MS
    timer.ms += 100
    gw.controlpath.expire_unconfirmed()
    assert len(gw.table.unconfirmed) == 1


def test_an_attempt_made_here_expires_by_its_timer_clock(tmp_path):
    """The wall clock stopped (or stepped back as far as it went on): the
    attempt still ends once the TTL has passed on the timer clock."""
    gw, _wall, timer = _gateway(tmp_path)
    _initiate(gw, 0)
    timer.ms += UNCONFIRMED_TTL_MS
    gw.controlpath.expire_unconfirmed()
    assert len(gw.table.unconfirmed) == 1  # at the TTL, not past it
    timer.ms += 1
    gw.controlpath.expire_unconfirmed()
    assert not gw.table.unconfirmed and not gw.table.made_ms and not gw.table.answers


def test_at_capacity_a_step_back_does_not_let_a_retry_replace_an_answerable_attempt(tmp_path):
    """The k18rall F2 case behind a clock step: the client's retry inside
    the first answer's window is refused and gets the first answer again,
    which the client still takes; before, the step made the attempt look
    expired, the retry replaced it, and the late first answer named a
    session gone."""
    gw, wall, timer = _full(tmp_path)
    first, first_answer = _initiate(gw, 0)
    wall.ms -= STEP_MS
    timer.ms += 250
    _retry, again = _initiate(gw, 250)
    assert again == first_answer and len(_full_refusals(gw)) == 1
    assert Client(gw, wall).confirms(first, first_answer)


def test_a_restored_attempt_ages_by_its_stored_wall_clock(tmp_path):
    """After a restart only the stored ``created_ms`` dates it: past the
    TTL on the wall clock it ends, whatever the timer clock says; dated
    more than the TTL ahead (review k19r1 R3) it ends too."""
    store = SqliteStore(tmp_path / "s.db")
    gw, wall, _timer = _gateway(tmp_path, store=store)
    _initiate(gw, 0)
    again, wall_again, _timer_again = _gateway(tmp_path, store=store)
    wall_again.ms = wall.ms
    again.reconcile()
    assert len(again.table.unconfirmed) == 1 and not again.table.made_ms
    wall_again.ms += UNCONFIRMED_TTL_MS + 1
    again.controlpath.expire_unconfirmed()
    assert not again.table.unconfirmed
    store.close()


def test_a_restored_attempt_dated_far_ahead_still_expires(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    gw, wall, _timer = _gateway(tmp_path, store=store)
    _initiate(gw, 0)
    again, wall_again, _timer_again = _gateway(tmp_path, store=store)
    wall_again.ms = wall.ms - STEP_MS  # the record is dated beyond the TTL ahead
    again.reconcile()
    again.controlpath.expire_unconfirmed()
    assert not again.table.unconfirmed
    store.close()
