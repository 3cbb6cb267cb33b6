"""When the client has no session any more (docs/protocol.md, "A client the
gateway forgot"). The gateway ends a session it heard nothing from for its
transport TTL (a closed laptop lid, a train tunnel) and forgets it; it then
stays silent to the client's reattach requests (it has no keys to seal an
answer with, and it never answers what it cannot authenticate). If its
TERMINATE did not reach the client, silence is all the client gets.

The rule:

- Only an authenticated message from the gateway (a keepalive reply, data,
  a control message whose MAC verified) proves the session alive.
- No authenticated message for ``timeout_ms`` while the client runs: the
  session is presumed ended.
- Nothing unauthenticated shortens the wait. The gateway sends no
  unauthenticated "no such session" (it would be a reflector, and anyone
  could forge it). ICMP errors are not asked for on the session's socket:
  with IP_RECVERR any off-path sender of a forged port unreachable fails
  the client's next send (RFC 5927), and a real one comes during a gateway
  restart that the session survives (the store keeps it). The handshake
  alone uses them, to tell "nothing listens" from silence
  (jvpn/client_icmp.py, jvpn/client_causes.py).
- Time the process did not run (a suspended laptop, SIGSTOP) is not
  silence it could hear through: after a gap longer than ``pause_ms``
  between two ticks the wait starts again, so a client resumed after an
  hour checks with the gateway (its reattach) before it gives up. A clock
  set back counts the same way (the wait starts again, never stalls).

Pure: the caller says what happened and when (an injected clock)."""

from __future__ import annotations

PAUSE_MS = 2_000  # the monitor ticks every 50 ms: a longer gap is a pause


class OrphanWatch:
    def __init__(self, timeout_ms: int, now: int, pause_ms: int = PAUSE_MS):
        self.timeout_ms, self.pause_ms = timeout_ms, pause_ms
        self.quiet_since = self.last_tick = now

    def heard(self, now: int) -> None:
        """An authenticated message from the gateway: the session is alive."""
        self.quiet_since = now

    def tick(self, now: int) -> str | None:
        """Why the session is presumed ended, or None."""
        if not 0 <= now - self.last_tick <= self.pause_ms:
            # we did not run (or the clock was set back): the silence starts now
            self.quiet_since = now
        self.last_tick = now
        quiet = now - self.quiet_since
        if quiet >= self.timeout_ms:
            return (f"no answer from the gateway for {quiet / 1000:.0f} s: session presumed "
                    "ended (OrphanTimeout)")
        return None
