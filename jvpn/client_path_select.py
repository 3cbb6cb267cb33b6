"""The client's choice of path (docs/protocol.md "Choosing a path"): a score
per path, which candidates are eligible, the three rules, hysteresis, and
the bounds the gateway judges a switch by (cooldown, switches per minute).
Pure: :meth:`Selector.decide` returns a :class:`Decision` from the
measurements, the policy and the clock, and calls nothing back; the caller
acts on it and reports a started switch with :meth:`Selector.switched`."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from jvpn.client_path_health import PathHealth, is_dead
from jvpn.codes import Reason, SwitchDenial, Volatility
from jvpn.policy import Policy

PREFERENCE = 1.25  # the preferred (OS's) candidate's bonus
RTT_SCALE_MS = 100.0
ELIGIBLE_DECIDED = 3  # probes decided before a candidate may be chosen
ELIGIBLE_RECENT = 3  # ... and one of this many last answered
MINUTE_MS = 60_000

STAY, SWITCH = "stay", "switch"
REATTACH_SAME, REATTACH_PREFERRED = "reattach_same", "reattach_preferred"  # nothing eligible


def score(loss: float, srtt_ms: float, preferred: bool, dead: bool = False) -> float:
    """q = (1 - loss) / (1 + srtt/100), x1.25 when preferred; 0 when dead."""
    if dead:
        return 0.0
    q = (1.0 - loss) / (1.0 + srtt_ms / RTT_SCALE_MS)
    return q * PREFERENCE if preferred else q


@dataclass(frozen=True)
class Candidate:
    """A non-active candidate as the selector sees it."""

    key: object
    health: PathHealth
    preferred: bool = False

    def eligible(self, active_dead: bool, now_ms: int) -> bool:
        h = self.health
        if active_dead:
            return h.last_answered is True
        return (not h.on_probation(now_ms) and h.decided_count() >= ELIGIBLE_DECIDED
                and h.answered_in_last(ELIGIBLE_RECENT))

    def score(self) -> float:
        return score(self.health.recent_loss(), self.health.rtt.srtt, self.preferred)


@dataclass(frozen=True)
class Active:
    """The active path: its health, whether it is the preferred candidate,
    whether its candidate still exists, and its VOLATILE reason (or None)."""

    health: PathHealth
    preferred: bool
    present: bool
    why: Volatility | None

    @property
    def dead(self) -> bool:
        return is_dead(self.why, self.health.drops_confirmed())

    def score(self, now_ms: int) -> float:
        loss = self.health.loss(now_ms)  # heartbeats' or data's, the worse
        return score(loss, self.health.rtt.srtt, self.preferred, self.dead)


@dataclass(frozen=True)
class Decision:
    action: str = STAY  # STAY, SWITCH, REATTACH_SAME, REATTACH_PREFERRED
    target: object = None  # the chosen candidate's key (SWITCH)
    reason: str | None = None  # the VOLATILE reason or planned_move (SWITCH)
    active_score: float = 0.0
    target_score: float = 0.0
    denied: str | None = None  # a TransportSwitchDenied code to report (once per episode)


@dataclass
class Selector:
    policy: Policy
    switches: deque = field(default_factory=deque)  # when each switch started (ms)
    denied_now: set = field(default_factory=set)  # denial codes said this episode
    better_since: int | None = None  # a planned move's candidate has been better since (ms)

    def switched(self, now_ms: int) -> None:
        self.switches.append(now_ms)
        self.better_since = None

    def _expire(self, now_ms: int) -> None:
        while self.switches and now_ms - self.switches[0] >= MINUTE_MS:
            self.switches.popleft()

    def follow_route(self, now_ms: int, key: object) -> Decision:
        """The OS moved its route to the gateway to a candidate no probe has
        proven (in an anycast cluster it may land on another gateway, whose
        standby answers no probe): a switch to it, as a route change made
        before candidates, within the bounds (held back: STAY, no denial)."""
        self._expire(now_ms)
        return self._bounded(now_ms, Decision(SWITCH, key, str(Reason.PLANNED_MOVE)),
                             dead=False, volatile=False)

    def decide(self, now_ms: int, active: Active, candidates: list[Candidate]) -> Decision:
        """Rules 1-3 of the spec, bounded; call when no switch is in flight."""
        self._expire(now_ms)
        if active.why is None:
            self.denied_now.clear()  # a new episode starts at the next VOLATILE
        dead = active.dead
        pool = [c for c in candidates if c.eligible(dead, now_ms)]
        best = max(pool, key=lambda c: c.score(), default=None)
        mine = active.score(now_ms)
        if dead:
            return self._dead(now_ms, active, best, mine)
        if best is not None and best.score() > self._bar(mine):
            if active.why is None and not self._held(now_ms):
                return Decision(active_score=mine)
            reason = str(active.why) if active.why else str(Reason.PLANNED_MOVE)
            return self._bounded(now_ms, Decision(SWITCH, best.key, reason, mine, best.score()),
                                 dead=False, volatile=active.why is not None)
        self.better_since = None
        if active.why is not None:
            return self._deny(SwitchDenial.NO_VALID_CANDIDATE, mine)
        return Decision(active_score=mine)

    def _held(self, now_ms: int) -> bool:
        """A planned move only once a candidate has beaten the bar for a
        whole loss window: a short stall inflates the active path's srtt
        (late echoes are RTT samples) for a few hundred ms, and nothing is
        wrong with a path that works."""
        if self.better_since is None:
            self.better_since = now_ms
        return now_ms - self.better_since >= self.policy.loss_window_ms

    def _bar(self, active_score: float) -> float:
        if self.policy.enforce_hysteresis:
            return self.policy.switch_improvement_factor * active_score
        return active_score

    def _dead(self, now_ms: int, active: Active, best: Candidate | None,
              mine: float) -> Decision:
        if best is not None:
            wanted = Decision(SWITCH, best.key, str(active.why), mine, best.score())
        else:  # nothing proven: a NAT rebinding (same socket) or a route change
            wanted = Decision(REATTACH_SAME if active.present else REATTACH_PREFERRED,
                              reason=str(active.why), active_score=mine)
        return self._bounded(now_ms, wanted, dead=True, volatile=True)

    def _bounded(self, now_ms: int, wanted: Decision, dead: bool,
                 volatile: bool = True) -> Decision:
        """The gateway's bounds: the cooldown, and max_switches_per_min - 1
        in any minute (the last one kept for a dead path). A planned move
        held back is no denial (nothing is wrong): it just waits."""
        p = self.policy
        last = self.switches[-1] if self.switches else None
        allowed = p.max_switches_per_min if dead else p.max_switches_per_min - 1
        code = None
        if last is not None and now_ms - last < p.switch_cooldown_ms:
            code = SwitchDenial.COOLDOWN_ACTIVE
        elif len(self.switches) >= allowed:
            code = SwitchDenial.SWITCH_RATE_LIMITED
        if code is None:
            return wanted
        if not volatile:
            return Decision(active_score=wanted.active_score)
        return self._deny(code, wanted.active_score)

    def _deny(self, code: str, mine: float) -> Decision:
        said = code in self.denied_now
        self.denied_now.add(code)
        return Decision(active_score=mine, denied=None if said else str(code))
