"""The session table's indexes for its periodic readers (issue 15): the
gateway's tick does work proportional to what is due, not to the sessions.
A mixin of jvpn/gateway/table.py's SessionTable, which alone writes them
(a new session, a confirmation, a session dropped, every record change):

  timers       the sessions' timers by due time (jvpn/gateway/timer_queue.py):
               every change of a session touches it (looked at next tick)
  unconfirmed  the handshakes' sessions awaiting their confirmation
               (jvpn/gateway/control.py: confirm, expire_unconfirmed)
  attempts     the same by peer (its inner IPv4): one per peer, a new
               attempt replaces it (jvpn/gateway/new_session.py)
  writing      the peers whose handshake's writes are queued (group commit)
  added        sessions new since revocation's last look (revocation.py)
"""

from __future__ import annotations

from jvpn.gateway.timer_queue import TimerQueue


class Indexes:
    def _init_indexes(self) -> None:
        self.timers = TimerQueue()
        self.unconfirmed: dict = {}  # session id -> Live
        self.attempts: dict = {}  # the peer's inner IPv4 (packed) -> its unconfirmed Live
        self.writing: set[bytes] = set()  # peers (inner IPv4) whose handshake is being written
        self.added: set[int] = set()

    def attempt_of(self, inner: bytes):
        """The peer's session whose handshake awaits its confirmation (one
        per peer; a restart may restore an older one too: it expires)."""
        return self.attempts.get(inner)

    def _indexed(self, live, routed: bool) -> None:
        """A session new to the table (unrouted: unconfirmed)."""
        sid = live.record.session_id
        self.timers.touch(sid)
        self.added.add(sid)
        if not routed:
            self.unconfirmed[sid] = live
            self.attempts[live.inner] = live

    def _confirmed(self, live) -> None:
        live.confirmed = True
        sid = live.record.session_id
        self.unconfirmed.pop(sid, None)
        self._no_attempt(live)
        self.timers.touch(sid)

    def _unindexed(self, sid: int) -> None:
        self.timers.discard(sid)
        live = self.unconfirmed.pop(sid, None)
        if live is not None:
            self._no_attempt(live)

    def _no_attempt(self, live) -> None:
        if self.attempts.get(live.inner) is live:
            del self.attempts[live.inner]
