"""The session table's indexes for its periodic readers (issue 15): the
gateway's tick does work proportional to what is due, not to the sessions.
A mixin of jvpn/gateway/table.py's SessionTable, which alone writes them
(a new session, a confirmation, a session dropped, every record change):

  timers       the sessions' timers by due time (jvpn/gateway/timer_queue.py):
               every change of a session touches it (looked at next tick)
  unconfirmed  the handshakes' sessions awaiting their confirmation
               (jvpn/gateway/control.py: confirm, expire_unconfirmed)
  attempts     the same by peer (its inner IPv4), oldest first (by their
               initiations' timestamps, handshake_ns): ATTEMPTS_KEPT
               at most, a new attempt replaces the oldest (new_session.py)
  made_ms      an attempt made in this process: the timer clock then (its age:
               new_session.py attempt_expired; a wall clock stepped back or
               forward does not age it, review k19r3); none for one restored
  answers      an attempt's own response (message 2), sent again when its
               client's next initiation is refused at capacity (review k19r1
               R4); none for one restored; dropped at its confirmation or end
  refused      per peer with attempts, its newer initiations refused at
               capacity (AttemptAnswerable) since its newest attempt was made:
               the client no longer takes the oldest one's answer once it
               has sent ATTEMPTS_KEPT newer initiations, refused ones too
  writing      the peers whose handshake's writes are queued (group commit)
  added        sessions new since revocation's last look (revocation.py)
  of_peer      each peer's sessions in the table (its inner IPv4): where the
               downstream's heir is looked for when one ends (downstream.py),
               not in a walk of every session (at 1M, a batch of 128 ended
               sessions held the control lock for seconds); a session id
               alone for the usual one session, a tuple beyond (memory)
"""

from __future__ import annotations

from bisect import insort

from jvpn.client_clock import timer_ms as _timer_ms
from jvpn.gateway.timer_queue import TimerQueue


def _initiated(live) -> int:
    return live.record.handshake_ns


class Indexes:
    # the clock attempts made here age by: never set back, and counts a
    # suspend (CLOCK_BOOTTIME, as the client's timers: jvpn/client_clock.py);
    # a test's virtual clock in its place (jvpn/gateway/daemon.py timer_ms)
    timer_ms = staticmethod(_timer_ms)

    def _init_indexes(self) -> None:
        self.timers = TimerQueue()
        self.unconfirmed: dict = {}  # session id -> Live
        self.attempts: dict = {}  # the peer's inner IPv4 (packed) -> its unconfirmed Lives
        self.made_ms: dict[int, int] = {}  # an attempt made here: session id -> timer_ms then
        self.answers: dict[int, bytes] = {}  # an attempt's session id -> its response
        self.refused: dict[bytes, int] = {}  # the peer's inner IPv4 (packed) -> a count
        self.writing: set[bytes] = set()  # peers (inner IPv4) whose handshake is being written
        self.added: set[int] = set()
        self.of_peer: dict = {}  # the peer's inner IPv4 (packed) -> a session id, or a tuple

    def sessions_of(self, inner: bytes) -> tuple[int, ...]:
        """The ids of the peer's sessions in the table."""
        got = self.of_peer.get(inner, ())
        return got if isinstance(got, tuple) else (got,)

    def attempts_of(self, inner: bytes) -> list:
        """The peer's sessions whose handshake awaits its confirmation,
        oldest first by their initiations' timestamps (ATTEMPTS_KEPT at most)."""
        return self.attempts.get(inner, [])

    def _indexed(self, live, routed: bool) -> None:
        """A session new to the table (unrouted: unconfirmed)."""
        sid = live.record.session_id
        self.timers.touch(sid)
        self.added.add(sid)
        mine = self.sessions_of(live.inner)
        if sid not in mine:  # restored again: one entry
            self.of_peer[live.inner] = (*mine, sid) if mine else sid
        if not routed:
            self.unconfirmed[sid] = live
            self._no_attempt(sid, live.inner)  # restored again: the new Live only
            # oldest first by its initiation's timestamp, the client's clock
            # (a new attempt's is the newest: it goes last); a restart
            # restores them in the store's order (review k19r1 R1)
            insort(self.attempts.setdefault(live.inner, []), live, key=_initiated)
            self.refused.pop(live.inner, None)  # those were older than this one

    def _confirmed(self, live) -> None:
        live.confirmed = True
        sid = live.record.session_id
        self.unconfirmed.pop(sid, None)
        self.answers.pop(sid, None)
        self.made_ms.pop(sid, None)
        self._no_attempt(sid, live.inner)
        self.timers.touch(sid)

    def _unindexed(self, sid: int, inner: bytes | None) -> None:
        """``inner``: the peer of the session dropped (None: none was here)."""
        self.timers.discard(sid)
        if inner is not None:
            left = tuple(other for other in self.sessions_of(inner) if other != sid)
            if len(left) > 1:
                self.of_peer[inner] = left
            elif left:
                self.of_peer[inner] = left[0]
            else:
                self.of_peer.pop(inner, None)
        live = self.unconfirmed.pop(sid, None)
        self.answers.pop(sid, None)
        self.made_ms.pop(sid, None)
        if live is not None:
            self._no_attempt(sid, live.inner)

    def _no_attempt(self, sid: int, inner: bytes) -> None:
        left = [other for other in self.attempts.get(inner, ()) if other.record.session_id != sid]
        if left:
            self.attempts[inner] = left
        else:
            self.attempts.pop(inner, None)
            self.refused.pop(inner, None)
