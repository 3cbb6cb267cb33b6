"""Per-path measurement on the client (docs/protocol.md "Transport selection"):
samples sent with their ids and times (the active path's heartbeats, a
candidate's probes), answers matched to them (RTT smoothed as RFC 6298 does),
samples lost when unanswered past the loss timeout, and the active path's
VOLATILE verdict (:meth:`PathHealth.volatility`). Pure: the caller passes the
clock (ms ints) and the policy; nothing here sends or reads a socket (the
caller sends the confirmation heartbeats :meth:`PathHealth.confirm` asks for)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from jvpn.client_path_delivery import DataDelivery
from jvpn.codes import Volatility
from jvpn.policy import Policy

SRTT_START_MS = 100.0  # before the first sample (the spec's start)
RTTVAR_START_MS = 50.0  # RFC 6298: R/2 of the start value
LOSS_TIMEOUT_MIN_MS = 100  # a loaded client or gateway answers in ~100 ms at p90
LOSS_TIMEOUT_MAX_MS = 1_000
WINDOW_MIN_DECIDED = 10  # the window's loss counts once this many heartbeats are decided
PROBE_HISTORY = 20  # a candidate's loss: over its last this many decided probes
PROBATION_MS = 60_000  # a path left VOLATILE: no planned move back for this long
LATE_KEPT = 64  # samples already lost whose late answer still says the path is alive
HEARTBEATS_PER_WINDOW = 40  # while traffic flows: a loss estimate over 40 samples
HEARTBEAT_MIN_MS = 20
CONFIRMATIONS = 2  # heartbeats sent at once after a run of drops; all lost: dead


def heartbeat_every_ms(policy: Policy) -> int:
    """The heartbeat cadence while traffic flows: loss_window_ms / 40, at least 20 ms."""
    return max(HEARTBEAT_MIN_MS, policy.loss_window_ms // HEARTBEATS_PER_WINDOW)


@dataclass
class Rtt:
    """RFC 6298 smoothing: alpha 1/8, beta 1/4; the first sample sets both."""

    srtt: float = SRTT_START_MS
    rttvar: float = RTTVAR_START_MS
    sampled: bool = False

    def sample(self, r_ms: float) -> None:
        if not self.sampled:
            self.srtt, self.rttvar, self.sampled = r_ms, r_ms / 2, True
            return
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r_ms)
        self.srtt = 0.875 * self.srtt + 0.125 * r_ms

    def loss_timeout_ms(self) -> float:
        """max(100 ms, 2·srtt + 4·rttvar), at most 1 s."""
        return min(LOSS_TIMEOUT_MAX_MS, max(LOSS_TIMEOUT_MIN_MS, 2 * self.srtt + 4 * self.rttvar))


class PathHealth:
    """One path's samples. ``sent`` / ``answered`` / ``tick`` feed it;
    ``window_loss`` (the active path's, over ``loss_window_ms``) and
    ``recent_loss`` (a candidate's, over its last 20 decided probes) read it."""

    def __init__(self, policy: Policy, now_ms: int):
        self.policy = policy
        self.rtt = Rtt()
        self.outstanding: dict[int, int] = {}  # sample id -> sent at (ms)
        self.lost_late: dict[int, tuple[int, list]] = {}  # lost id -> (sent at, its decision)
        self.decided: deque[list] = deque()  # [decided at, answered]: a late echo revises it
        self.consecutive_drops = 0
        self.last_heard_ms = now_ms  # authenticated traffic received on this path
        self.last_answered: bool | None = None
        self.probation = 0  # samples still to decide before a planned move back (left())
        self.probation_until_ms = 0  # ... and not before this time
        self.window_from_ms = now_ms  # the window counts what was decided since (rebound)
        self.confirming: set[int] | None = None  # this run's confirmations (once asked for)
        self.confirmations_lost = 0
        # the data it carries (jvpn/client_path_delivery.py); data sent just
        # before a heartbeat may still be on its way: a cadence's lag
        self.delivery = DataDelivery(policy.loss_window_ms, heartbeat_every_ms(policy))

    # ------------------------------------------------------------ feeding
    def sent(self, sample_id: int, now_ms: int, confirmation: bool = False) -> None:
        self.delivery.heartbeat(sample_id, now_ms)
        self.outstanding[sample_id] = now_ms
        if confirmation and self.confirming is not None:
            self.confirming.add(sample_id)

    def answered(self, sample_id: int, now_ms: int) -> bool:
        """An answer to sample ``sample_id``: taken only once and only while
        outstanding (a late answer to a sample already lost, a duplicate or
        a made-up id counts nothing). True if taken."""
        sent_ms = self.outstanding.pop(sample_id, None)
        if sent_ms is None:
            self._late(sample_id, now_ms)
            return False
        self.rtt.sample(max(0, now_ms - sent_ms))
        self._decide(now_ms, True)
        self._run_over()
        self.heard(now_ms)
        return True

    def _late(self, sample_id: int, now_ms: int) -> None:
        """An answer to a sample already counted lost (it came after the
        loss timeout): the path is slow, not dead, and not lossy: the run
        of drops ends, the window counts the sample answered after all (a
        loaded gateway's late echoes are no loss: the move off a path is
        for lost packets; its RTT is the score's other half), and its round
        trip is sampled (each sample has its own id: no ambiguity, RFC
        6298's Karn rule does not apply), so the timeout grows with the
        delay instead of calling a stalled path dead."""
        late = self.lost_late.pop(sample_id, None)
        if late is None:
            return
        sent_ms, decision = late
        decision[1] = True
        self.rtt.sample(max(0, now_ms - sent_ms))
        self._run_over()
        self.heard(now_ms)

    def _run_over(self) -> None:
        """An echo (late or not): the path answers; the run of drops and
        its confirmation episode end."""
        self.consecutive_drops = 0
        self.confirming, self.confirmations_lost = None, 0

    def confirm(self) -> int:
        """How many confirmation heartbeats to send now (on the active
        socket, at once, each reported by ``sent(..., confirmation=True)``):
        CONFIRMATIONS once per run of max_consecutive_drops, else 0. A run
        of drops makes the path VOLATILE; only the loss of these too makes
        it dead: random loss needs five in a row, a stall ~300 ms. The
        heartbeats already on their way (sent after the run's, on a path
        slower than the cadence) confirm as well as new ones would, a loss
        timeout sooner: only the missing ones are sent."""
        run = self.consecutive_drops >= self.policy.max_consecutive_drops
        if self.confirming is not None or not run:
            return 0
        self.confirming = set(sorted(self.outstanding)[:CONFIRMATIONS])
        return CONFIRMATIONS - len(self.confirming)

    def drops_confirmed(self) -> bool:
        """The run's confirmation heartbeats were all lost: the path is dead."""
        return self.confirming is not None and self.confirmations_lost >= CONFIRMATIONS

    def heard(self, now_ms: int) -> None:
        self.last_heard_ms = max(self.last_heard_ms, now_ms)

    def tick(self, now_ms: int) -> int:
        """Samples unanswered past the loss timeout are lost; returns how many."""
        limit = self.rtt.loss_timeout_ms()
        # a copy: the receive thread takes answers out meanwhile
        lost = sorted(i for i, t in list(self.outstanding.items()) if now_ms - t >= limit)
        count = 0
        for i in lost:
            sent_ms = self.outstanding.pop(i, None)
            if sent_ms is None:
                continue  # answered meanwhile
            self.lost_late[i] = (sent_ms, self._decide(now_ms, False))
            self.consecutive_drops += 1
            count += 1
            if self.confirming is not None and i in self.confirming:
                self.confirmations_lost += 1
        while len(self.lost_late) > LATE_KEPT:
            self.lost_late.pop(next(iter(self.lost_late)), None)
        self._forget(now_ms)
        return count

    def left(self, volatile: bool, now_ms: int) -> None:
        """This path stopped being the active one. If it was VOLATILE, a
        planned move back waits for a whole history of probes decided since
        (its last 20 then no longer hold the heartbeats it was left for) and
        for a minute (the switch-rate window): a path that went VOLATILE
        once by noise (random loss) does not bring the client back within
        seconds only to leave again: at most one move back per minute."""
        self.outstanding.clear()  # echoes of its last heartbeats come to a socket not heard
        self.lost_late.clear()
        self._run_over()
        self.delivery.restart()
        self.probation = PROBE_HISTORY if volatile else 0
        self.probation_until_ms = now_ms + PROBATION_MS if volatile else 0

    def rebound(self, now_ms: int) -> None:
        """The gateway's binding moved to this path (a reattach's ACK):
        heartbeats sent before went to another binding; start the run afresh."""
        self.outstanding.clear()
        self.lost_late.clear()
        self._run_over()
        self.delivery.restart()  # the count may be another gateway's now
        self.window_from_ms = now_ms  # its probes were no heartbeats: the window starts now
        self.heard(now_ms)

    def on_probation(self, now_ms: int) -> bool:
        return self.probation > 0 or now_ms < self.probation_until_ms

    def _decide(self, now_ms: int, answered: bool) -> list:
        self.probation = max(0, self.probation - 1)
        decision = [now_ms, answered]
        self.decided.append(decision)
        self.last_answered = answered
        self._forget(now_ms)
        return decision

    def _forget(self, now_ms: int) -> None:
        """Keep what either reading needs: the window, and the last 20."""
        window = self.policy.loss_window_ms
        while len(self.decided) > PROBE_HISTORY and now_ms - self.decided[0][0] > window:
            self.decided.popleft()

    # ------------------------------------------------------------ reading
    def unanswered(self) -> bool:
        return bool(self.outstanding)

    def window_loss(self, now_ms: int) -> float | None:
        """The loss over the last ``loss_window_ms``; None below 10 decided."""
        window = self.policy.loss_window_ms
        recent = [ok for t, ok in self.decided
                  if now_ms - t <= window and t > self.window_from_ms]
        if len(recent) < WINDOW_MIN_DECIDED:
            return None
        return recent.count(False) / len(recent)

    def data_loss(self, now_ms: int) -> float | None:
        """The share of the data sent over the window the gateway did not
        deliver (jvpn/client_path_delivery.py), or None: too little sent, or
        an older gateway's echoes."""
        return self.delivery.loss(now_ms)

    def loss(self, now_ms: int) -> float:
        """The active path's loss for its score: its heartbeats' or its
        data's, whichever is worse (a path that passes heartbeats but drops
        data must not look perfect to the selector)."""
        return max(self.window_loss(now_ms) or 0.0, self.data_loss(now_ms) or 0.0)

    def recent_loss(self) -> float:
        """A candidate's loss over its last 20 decided probes (0 with none)."""
        last = [ok for _t, ok in list(self.decided)[-PROBE_HISTORY:]]
        return last.count(False) / len(last) if last else 0.0

    def decided_count(self) -> int:
        return len(self.decided)

    def answered_in_last(self, n: int) -> bool:
        return any(ok for _t, ok in list(self.decided)[-n:])

    def heartbeat_age_ms(self, now_ms: int) -> int:
        return max(0, now_ms - self.last_heard_ms)

    def volatility(self, now_ms: int, present: bool = True,
                   send_failed: bool = False) -> Volatility | None:
        """The active path's VOLATILE reason, the first that holds in the
        spec's order; None when none holds. consecutive_drop_exceeded is
        dead only once :meth:`drops_confirmed` (see :func:`is_dead`)."""
        p = self.policy
        if not present or send_failed:
            return Volatility.TRANSPORT_DEAD
        if self.consecutive_drops >= p.max_consecutive_drops:
            return Volatility.CONSECUTIVE_DROP_EXCEEDED
        if self.heartbeat_age_ms(now_ms) >= p.heartbeat_volatile_ms:
            return Volatility.HEARTBEAT_TIMEOUT
        loss = self.window_loss(now_ms)
        if loss is not None and loss > p.loss_volatile_threshold:
            return Volatility.LOSS_THRESHOLD_EXCEEDED
        if self.data_lossy(now_ms):
            return Volatility.LOSS_THRESHOLD_EXCEEDED  # its detail: "data"
        return None

    def data_lossy(self, now_ms: int) -> bool:
        """Less than 1 - loss_volatile_threshold of the data sent over the
        window delivered (at least DATA_MIN_SENT sent)."""
        loss = self.data_loss(now_ms)
        return loss is not None and loss > self.policy.loss_volatile_threshold


DEAD = frozenset({Volatility.TRANSPORT_DEAD, Volatility.HEARTBEAT_TIMEOUT})


def is_dead(why: Volatility | None, drops_confirmed: bool) -> bool:
    """transport_dead and heartbeat_timeout make a path dead (its score is
    0) at once; consecutive_drop_exceeded once its confirmations were lost
    too (``drops_confirmed``: :meth:`PathHealth.drops_confirmed`)."""
    if why is Volatility.CONSECUTIVE_DROP_EXCEEDED:
        return drops_confirmed
    return why in DEAD
