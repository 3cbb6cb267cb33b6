"""A session's traffic as the daemon itself counts it: what it received and
authenticated, and what it sent to the session's binding (data and
keepalives). The kernel counts received traffic in its runtime map when the
XDP gate runs (`jvpn-xdp sessions` prefers that); nothing else counts what
the daemon sends.

Two threads add to one session's figures (the UDP loop receives and answers
keepalives, the TUN loop sends data): a lock per session keeps the sums
exact; it is taken for a few additions per datagram."""

from __future__ import annotations

import threading


class Traffic:
    __slots__ = ("_lock", "rx_bytes", "rx_packets", "tx_bytes", "tx_packets")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rx_packets = self.rx_bytes = self.tx_packets = self.tx_bytes = 0

    def received(self, nbytes: int) -> None:
        """One authenticated message (data or keepalive), as sent on the wire."""
        with self._lock:
            self.rx_packets += 1
            self.rx_bytes += nbytes

    def sent(self, msgs: list[bytes]) -> None:
        """Messages handed to the socket for the session's binding."""
        n, nbytes = len(msgs), sum(map(len, msgs))
        with self._lock:
            self.tx_packets += n
            self.tx_bytes += nbytes

    def figures(self) -> dict[str, int]:
        with self._lock:
            return {"rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
                    "tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes}
