"""The gateway's timers, session by session (a mixin of
jvpn/gateway/daemon.py's Gateway; its tick calls them under the control
lock). Issue 15: the tick looks only at the sessions whose timers may be
due (the session table's ``timers``, jvpn/gateway/timer_queue.py); each
one looked at is scheduled again at the earliest time any of its timers
can fire, from what it then holds:

  jvpn/gateway/timers.py      lifetime, transportless TTL, silence, windows
  jvpn/gateway/key_timers.py  key expiry (time and messages), the overlap's
                              end, a retried write, the idle AEAD drop
  jvpn/gateway/key_nudge.py   the DEGRADED session's rekey nudges

Each is a lower bound (``last_rx_ms`` moves without the lock, and only
forward): a session looked at early is rescheduled, never late. Anything
that changes a session under the lock (the table's writes) touches it, and
a reload's new policy touches them all (once)."""

from __future__ import annotations

from jvpn.gateway import key_timers
from jvpn.gateway.table import Live
from jvpn.gateway.timers import due_at, due_timer
from jvpn.policy import Policy
from jvpn.session import State


class TimerChecks:
    def _due_sessions(self) -> list[Live]:
        """The sessions whose timers may be due (jvpn/gateway/timer_queue.py):
        an idle session costs the tick nothing (issue 15)."""
        due = (self.table.get(sid) for sid in self.table.timers.pop_due(self.clock_ms()))
        return [live for live in due if live is not None]

    def _check(self, live: Live) -> None:
        """One session's timers, then its next due time from what it holds
        now (every tick again while its step fails: as before)."""
        sid = live.record.session_id
        try:
            self._timers(live)
        finally:
            if self.table.get(sid) is live:
                self.table.timers.replace(sid, self._next_due(live))

    def _next_due(self, live: Live) -> int | None:
        """The earliest time any of the session's timers can fire (lower
        bounds: early is a recheck, never late); None: not until it changes."""
        if not live.confirmed:
            return None  # the control path's (expire_unconfirmed); confirm touches it
        now, p = self.clock_ms(), self.policy
        if live.record.state is State.TERMINATED:
            return now + 1
        times = [due_at(live.record, live.last_rx_ms, p), key_timers.due_at(live, now, p),
                 self.rekey_nudge.due_at(live, now, p)]
        return max(min(t for t in times if t is not None), now + 1)

    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        """A reload's policy changes every deadline: each session is looked
        at again next tick (once per reload, not per tick)."""
        self._policy = policy
        table = getattr(self, "table", None)
        if table is not None:
            for sid in table.sessions:
                table.timers.touch(sid)

    def _timers(self, live: Live) -> None:
        if not live.confirmed:
            return  # a handshake's session: confirmed or expired by the control path
        if live.record.state is State.TERMINATED:
            self.table.forget(live.record.session_id)
            return
        due = due_timer(live.record, live.last_rx_ms, self.clock_ms(), self.policy)
        if due is not None:
            event, detail, changes = due
            self.table.transition(live, event, detail=detail, **changes)
        if live.record.session_id in self.table:
            key_timers.run(self.table, live, self.clock_ms(), self.policy)
            self.rekey_nudge.tick(live, self.clock_ms(), self.policy)
