"""The session table's indexes for its periodic readers (issue 15): the
gateway's tick does work proportional to what is due, not to the sessions.
A mixin of jvpn/gateway/table.py's SessionTable, which alone writes them
(a new session, a confirmation, a session dropped, every record change):

  timers       the sessions' timers by due time (jvpn/gateway/timer_queue.py):
               every change of a session touches it (looked at next tick)
  unconfirmed  the handshakes' sessions awaiting their confirmation
               (jvpn/gateway/control.py: confirm, expire_unconfirmed)
  added        sessions new since revocation's last look (revocation.py)
"""

from __future__ import annotations

from jvpn.gateway.timer_queue import TimerQueue


class Indexes:
    def _init_indexes(self) -> None:
        self.timers = TimerQueue()
        self.unconfirmed: dict = {}  # session id -> Live
        self.added: set[int] = set()

    def unconfirmed_of(self, inner: bytes) -> list:
        """The peer's sessions whose handshake awaits its confirmation."""
        return [live for live in self.unconfirmed.values() if live.inner == inner]

    def _indexed(self, live, routed: bool) -> None:
        """A session new to the table (unrouted: unconfirmed)."""
        sid = live.record.session_id
        self.timers.touch(sid)
        self.added.add(sid)
        if not routed:
            self.unconfirmed[sid] = live

    def _confirmed(self, live) -> None:
        live.confirmed = True
        sid = live.record.session_id
        self.unconfirmed.pop(sid, None)
        self.timers.touch(sid)

    def _unindexed(self, sid: int) -> None:
        self.timers.discard(sid)
        self.unconfirmed.pop(sid, None)
