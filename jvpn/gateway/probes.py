"""Path probes (issue 14, docs/protocol.md "Transport selection", "The probe
budget"): a client measures its candidate paths by sending PATH_PROBE from
each, and the gateway answers each authentic, fresh probe with one
PATH_PROBE_REPLY to the probe's source, no larger than the probe, carrying
its view of the session (state, whether the probe came from the binding,
how long ago the binding last carried authenticated traffic, the policy
version).

A probe **moves nothing**: no store read or write, no record, binding,
state or timer change (``last_rx_ms`` is not refreshed: a probe is not the
session's traffic), no event. Its only effects: its counter is recorded
in the session's **probe window** (``ProbeWindows``: its own, not the
control window the reattach and rekey validators share), so its copies get
nothing, and the gate's **probe_floor** rises to it, so its replays die at
the gate before they spend the session's probe bucket (a captured probe
replayed at 10/s would otherwise starve the client's own probes). It does
not raise the gate's ``ctl_floor``, and the gate does not check a probe
against that floor: a probe on a slow candidate is not killed by a later
heartbeat of the fast active path, nor a slow reattach of ours by a fast
candidate's probe (issue 14). That is sound because the message type is
under the MAC (a probe's counter can never be read as another control
type's). Only another probe of ours can overtake a probe into a replay:
the client keeps one probe in flight at a time (jvpn/client_probe_guard.py).
The probe window still refuses the copies that reach the daemon before the
floor is raised (one HMAC each, bounded by the gate's probe bucket).

Checks, cheapest first and in this order, each a silent refusal counted by
its result (``jvpn_path_probes_total{result}``): the session is served and
owned here, not quarantined, in a state that answers (``refused``); the
header tag, then the HMAC, under the epoch the key phase names
(``forged``: one SipHash and no HMAC for a forged tag); the probe window
(``replayed``); the per-session probe bucket, sized from the policy in force
(``rate_limited``). ``ProbeCheck`` decides; ``Probes`` carries a decision
out in two steps: under the control lock the check, the window mark, the
probe_floor raise and the reply's view; after it, the send counter and the
seal. The send counter
can wait for the store (its block reservation, ``set_floor``): under the
gateway-wide control lock, a hung store would hold every session's
reattach behind one probe."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from jvpn import wire
from jvpn.gate import abi
from jvpn.gateway import key_age
from jvpn.gateway.sealing import opening_keys, seal_control
from jvpn.keys import SessionKeys
from jvpn.policy import Policy
from jvpn.ratelimit import KeyedBuckets
from jvpn.replay import ControlWindows
from jvpn.session import State, Transport
from jvpn.tunnel import CounterUnavailable

# the bounded label set of jvpn_path_probes_total{result}
ANSWERED, REPLAYED, FORGED, RATE_LIMITED, REFUSED = (
    "answered", "replayed", "forged", "rate_limited", "refused")
RESULTS = (ANSWERED, REPLAYED, FORGED, RATE_LIMITED, REFUSED)
# the states whose probes are answered (the gate's masks say the same)
ANSWERS_IN = frozenset({State.ATTACHED, State.VOLATILE, State.RECOVERING, State.DEGRADED})
PROBE_LEN = abi.HDR_LEN + wire.PATH_PROBE.size + wire.MAC_LEN  # 112
# per-session buckets kept (the least recently used is forgotten: a
# forgotten session's bucket starts full, which is its burst, no more)
BUCKETS_KEPT = 65_536
# a probe overtaken by this many counters of other traffic is still fresh:
# the gate's own window (a probe older than that is dropped there anyway)
PROBE_WINDOW = abi.replay_window(abi.REPLAY_BITS)
# per-session probe windows kept (~3 KB each: ~50 MB at most). A forgotten
# window (and every window, after a restart) starts empty: a replay still
# fresh at the gate gets one more reply, sealed, to the replayer's address
# and no larger than the probe (nothing it can read or use), then is refused
PROBE_WINDOWS_KEPT = 16_384

Send = tuple[bytes, Transport]


@dataclass(frozen=True)
class Answer:
    """An answered probe whose reply is still to be sealed (outside the
    control lock): the session, the reply's fields (its view, taken under
    the lock) and where the reply goes."""

    live: object
    fields: tuple
    to: Transport


@dataclass(frozen=True)
class ProbeDecision:
    """``result`` (one of RESULTS); for an answered probe, what to record
    and reply: the counter, the probe id, the epoch it opened under."""

    result: str
    counter: int = 0
    probe_id: int = 0
    keys: SessionKeys | None = None


def budget(p: Policy) -> tuple[float, float]:
    """(rate per second, burst) of one session's probes: 2 ·
    max_candidate_count per probe_interval_ms, burst 2 · max_candidate_count
    (every candidate probed twice as often as the client does)."""
    n = 2 * p.max_candidate_count
    return n * 1000 / p.probe_interval_ms, float(n)


class ProbeWindows(ControlWindows):
    """One window per session for its verified probes alone, as wide as the
    gate's data window (a probe overtaken by ~4000 counters of other
    traffic still counts once), for the PROBE_WINDOWS_KEPT sessions that
    probed last (the least recently used is forgotten)."""

    def __init__(self, capacity: int = PROBE_WINDOWS_KEPT):
        super().__init__(PROBE_WINDOW, capacity)


class ProbeCheck:
    """The validator: decides on one probe against the in-memory session
    (never the store). It changes nothing but its own buckets."""

    def __init__(self, *, windows: ProbeWindows, owns: Callable[[object], bool],
                 policy: Callable[[], Policy], clock_ms: Callable[[], int],
                 timer_ms: Callable[[], int] | None = None):
        self.windows, self.owns, self.policy, self.clock_ms = windows, owns, policy, clock_ms
        timer = timer_ms or clock_ms  # the budget refills on the timer clock (not stepped)
        self.buckets = KeyedBuckets(*budget(policy()), lambda: timer() / 1000,
                                    max_keys=BUCKETS_KEPT)
        self.hmacs = 0  # HMAC verifications made: bounded work (tests)

    def check(self, msg: bytes, live) -> ProbeDecision:
        if live is None or not self._answers(live):
            return ProbeDecision(REFUSED)
        if len(msg) != PROBE_LEN:
            return ProbeDecision(FORGED)
        opened = self._open(msg, live)
        if opened is None:
            return ProbeDecision(FORGED)
        hdr, (probe_id,), keys = opened
        if hdr.type != abi.MSG_PATH_PROBE or hdr.session_id != live.record.session_id:
            return ProbeDecision(FORGED)
        if not self.windows.fresh(hdr.session_id, hdr.counter):
            return ProbeDecision(REPLAYED)
        if self._under_expired(live, keys):
            return ProbeDecision(REFUSED)
        self._size_buckets()
        if not self.buckets.allow(hdr.session_id):
            return ProbeDecision(RATE_LIMITED)
        return ProbeDecision(ANSWERED, hdr.counter, probe_id, keys)

    def _answers(self, live) -> bool:
        rec = live.record
        return (rec.state in ANSWERS_IN and not live.quarantined and live.installed
                and self.owns(rec))

    def _open(self, msg: bytes, live) -> tuple | None:
        """(header, fields, keys) if the tag and then the HMAC hold under
        the epoch the key phase names: no HMAC for a forged tag."""
        try:
            hdr = wire.parse_header(msg)
        except wire.WireError:
            return None
        keys = opening_keys(live.keys, hdr)
        if keys is None or not hdr.tag_valid(keys.hdr_c2s):
            return None
        self.hmacs += 1
        try:
            hdr, fields = wire.open_control(msg, keys.reattach)
        except wire.WireError:
            return None
        return hdr, fields, keys

    def _under_expired(self, live, keys: SessionKeys) -> bool:
        """Opened under an epoch past reject_after_* (the previous, or the
        current before its timer ran: review k16r2 #2b): the data path
        delivers nothing under it, and no probe is answered either; nor
        one whose reply would be sealed under such an epoch (a probe under
        a rekey's new epoch while the gateway still seals under the
        expired previous one: review k16r3)."""
        now, p = self.clock_ms(), self.policy()
        return key_age.opened_expired(live, keys, now, p) or key_age.sending_expired(live, now, p)

    def _size_buckets(self) -> None:
        """The policy in force (a reload changes it) sizes every bucket."""
        self.buckets.rate, self.buckets.burst = budget(self.policy())


class Probes:
    """Carries out probe decisions: ``message`` (the caller holds the
    control lock) records the counter in the session's probe window, then
    raises the gate's probe_floor to it (never the control window, never
    ctl_floor), and takes the reply's view; ``seal`` (the caller has
    released the lock) seals each reply under the send epoch with the
    session's send counter. Every probe is counted by result."""

    def __init__(self, *, table, owns: Callable[[object], bool],
                 policy: Callable[[], Policy], clock_ms: Callable[[], int],
                 windows: ProbeWindows | None = None,
                 timer_ms: Callable[[], int] | None = None):
        self.table, self.policy, self.clock_ms = table, policy, clock_ms
        self.checks = ProbeCheck(windows=windows or ProbeWindows(), owns=owns, policy=policy,
                                 clock_ms=clock_ms, timer_ms=timer_ms)
        self.counts: Counter[str] = Counter(dict.fromkeys(RESULTS, 0))
        self._counting = threading.Lock()  # seal() counts outside the control lock

    def message(self, msg: bytes, src: Transport) -> list[Answer]:
        """One PATH_PROBE as received from ``src`` (control lock held): the
        reply to seal, if it is answered. No store is called here."""
        sid = int.from_bytes(msg[8:16], "little") if len(msg) >= 16 else 0
        live = self.table.get(sid)
        d = self.checks.check(msg, live)
        if d.result != ANSWERED:
            self._count(d.result)
            return []
        self.checks.windows.mark(sid, d.counter)
        self.table.raise_probe_floor(sid, d.counter)  # never ctl_floor: the gate's rule
        return [Answer(live, self.view(live, d.probe_id, src), src)]

    def seal(self, answers: list[Answer]) -> list[Send]:
        """The replies of ``message``'s answers, after the control lock is
        released: the send counter may write its reservation to the store."""
        out, now, p = [], self.clock_ms(), self.policy()
        for a in answers:
            if key_age.sending_expired(a.live, now, p):  # expired since the check: no reply
                self._count(REFUSED)
                continue
            try:
                counter = a.live.channel.next_counter()
            except CounterUnavailable:
                self._count(REFUSED)  # the client's next probe asks again
                continue
            out.append((seal_control(a.live.channel.send_keys, abi.MSG_PATH_PROBE_REPLY,
                                     a.live.record.session_id, counter, *a.fields), a.to))
            self._count(ANSWERED)
        return out

    def _count(self, result: str) -> None:
        with self._counting:
            self.counts[result] += 1

    def view(self, live, probe_id: int, src: Transport) -> tuple:
        """The reply's fields: the gateway's view of the session."""
        rec = live.record
        from_binding = rec.binding is not None and (src.addr, src.port) == (
            rec.binding.addr, rec.binding.port)
        age = min(max(0, self.table.timer_ms() - live.last_rx_ms), wire.RX_AGE_MAX)
        return (probe_id, rec.state.value, wire.PROBE_FROM_BINDING if from_binding else 0,
                age, self.policy().version & 0xFFFFFFFF)
