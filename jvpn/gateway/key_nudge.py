"""The way back from DEGRADED by expired keys (issue 13, docs/protocol.md
"Rekey", overlap and expiry; review R2 #3). With ``keys.expiry_terminates =
false`` expired keys leave the session DEGRADED: no data passes and its
keepalives get no reply, yet the client asks for a rekey only when an
authentic message from the gateway carries FLAG_REKEY. So the gateway's
timer sends the session's binding an empty keepalive with FLAG_REKEY, at
most one every ``REKEY_NUDGE_MS``, as long as the session is DEGRADED with
expired keys. It carries nothing but the flag (sealed under the send epoch,
like the RESP that follows): no data flows under expired keys."""

from __future__ import annotations

from collections.abc import Callable

from jvpn.config import REKEY_NUDGE_MS
from jvpn.gate import abi
from jvpn.gateway import key_age
from jvpn.session import State
from jvpn.tunnel import FLAG_REKEY, CounterUnavailable


class RekeyNudge:
    """``timer_ms``: the pace's clock, one never set back (the session
    table's, CLOCK_BOOTTIME; a test's). The wall clock says whether the
    keys expired; pacing by it, a clock stepped back held the nudges for
    the length of the step, or sent one a step, or none while it was held
    (reviews k20fix, k20r3 F3, k20r4 F2/F3)."""

    def __init__(self, sock, incidents, timer_ms: Callable[[], int],
                 every_ms: int = REKEY_NUDGE_MS):
        self.sock, self.incidents, self.every_ms = sock, incidents, every_ms
        self.timer_ms = timer_ms
        self.sent_ms: dict[int, int] = {}  # sid -> when its last nudge left (timer_ms)

    def tick(self, live, now: int, policy) -> None:
        """The timer's, for one served session."""
        rec = live.record
        sid = rec.session_id
        if not _nudged(live):
            self.sent_ms.pop(sid, None)
            return
        if not key_age.expired(live, now, policy):
            return  # the pace kept: a wall clock swung back over the expiry (review k20r5 F1)
        last, at = self.sent_ms.get(sid), self.timer_ms()
        if last is not None and at - last < self.every_ms:
            return
        self.sent_ms[sid] = at
        try:
            msg = live.channel.seal(b"", abi.MSG_KEEPALIVE, FLAG_REKEY)
            if self.sock.sendto(msg, (rec.binding.addr, rec.binding.port)):
                live.traffic.nudged(msg)
        except (OSError, CounterUnavailable) as e:
            self.incidents.report("keepalive", e)  # the next tick tries again

    def forget(self, keep) -> None:
        """Sessions no longer served."""
        for sid in [s for s in self.sent_ms if s not in keep]:
            del self.sent_ms[sid]

    def due_at(self, live, now: int, timer_now: int,
               policy) -> tuple[int | None, int | None] | None:
        """When ``tick`` sends this session's next nudge, as (wall clock,
        timer clock) (None: it sends none until the session changes). A
        DEGRADED session whose keys the wall clock says have not expired (it
        was stepped back over the expiry) is due when they do by age, on the
        wall clock, not left to the stranding time (review k20r5 F1); by
        messages, the data path touches it. Expired: the pace, on the timer
        clock (``timer_now``: ``timer_ms`` read by the caller)."""
        rec = live.record
        if not _nudged(live):
            return None
        if not key_age.expired(live, now, policy):
            return max(now, key_age.sealing_since(live, policy) + policy.reject_after_ms), None
        last = self.sent_ms.get(rec.session_id)
        return None, timer_now if last is None else max(timer_now, last + self.every_ms)


def _nudged(live) -> bool:
    """A session the nudges are for while its keys are expired: DEGRADED,
    bound, with an element (a quarantined one has none a rekey could bring back)."""
    rec = live.record
    return rec.state is State.DEGRADED and rec.binding is not None and not live.quarantined
