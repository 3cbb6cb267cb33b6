"""When the client has no session any more (docs/protocol.md, "A client the
gateway forgot"). The gateway ends a session it heard nothing from for its
transport TTL (a closed laptop lid, a train tunnel) and forgets it; it then
stays silent to the client's reattach requests (it cannot seal an answer
for a session it has no keys for, and it never answers what it cannot
authenticate). If its TERMINATE did not reach the client, silence is all
the client gets.

The rule, in the client's own terms:

- Only an authenticated message from the gateway (a keepalive reply, data,
  a control message whose MAC verified) proves the session alive.
- No authenticated message for ``timeout_ms`` while the client runs: the
  session is presumed ended.
- An unauthenticated hint (an ICMP port unreachable naming the gateway's
  address and port) only shortens that wait, to ``grace_ms`` from the hint,
  and only if no authenticated message arrives in that time. An off-path
  spoofer can send hints but cannot silence a gateway that answers: its
  next keepalive reply cancels the hint. A hint never ends a session whose
  gateway still answers authenticated messages.
- Time the process did not run (a suspended laptop, SIGSTOP) is not
  silence it could hear through: after a gap longer than ``pause_ms``
  between two ticks the wait starts again, so a client resumed after an
  hour checks with the gateway (its reattach) before it gives up.

Pure: the caller says what happened and when (an injected clock)."""

from __future__ import annotations

PAUSE_MS = 2_000  # the monitor ticks every 50 ms: a longer gap is a pause


class OrphanWatch:
    def __init__(self, timeout_ms: int, grace_ms: int, now: int, pause_ms: int = PAUSE_MS):
        self.timeout_ms, self.grace_ms, self.pause_ms = timeout_ms, grace_ms, pause_ms
        self.quiet_since = self.last_tick = now
        self.hint_at: int | None = None
        self.hint_what = ""

    def heard(self, now: int) -> None:
        """An authenticated message from the gateway: alive, any hint void."""
        self.quiet_since, self.hint_at = max(self.quiet_since, now), None

    def hint(self, now: int, what: str) -> None:
        """An unauthenticated sign the session is gone. The first one since
        the last authenticated message counts; a flood of them does not move
        the deadline."""
        if self.hint_at is None:
            self.hint_at, self.hint_what = now, what

    def tick(self, now: int) -> str | None:
        """Why the session is presumed ended, or None."""
        if now - self.last_tick > self.pause_ms:
            self.quiet_since, self.hint_at = now, None  # we did not run: start again
        self.last_tick = now
        quiet = now - self.quiet_since
        if quiet >= self.timeout_ms:
            return (f"no answer from the gateway for {quiet / 1000:.0f} s: session presumed "
                    "ended (OrphanTimeout)")
        if self.hint_at is not None and now - self.hint_at >= self.grace_ms:
            return (f"session presumed ended: {self.hint_what}, and no authenticated answer "
                    f"from the gateway for {quiet / 1000:.0f} s")
        return None
