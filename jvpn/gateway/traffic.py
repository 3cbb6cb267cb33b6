"""A session's traffic as the daemon itself counts it: what it received and
authenticated, and what it sent to the session's binding (data and
keepalives). The kernel counts received traffic in its runtime map when the
XDP gate runs (`jvpn-xdp sessions` prefers that); nothing else counts what
the daemon sends.

Per packet, so no lock: every field has one writer thread. The UDP loop
counts what it received and the keepalives it answered, the TUN loop the
data it sent (jvpn/gateway/datapath.py), the timer thread its rekey nudges
(jvpn/gateway/key_nudge.py) in fields of their own: an unlocked ``+=`` from
two threads can lose a count. A reader (the operator socket, a scrape) sees
each field's old or new value, never a torn one."""

from __future__ import annotations

from jvpn.randpool import randbits


class Traffic:
    __slots__ = ("delivered", "incarnation", "ka_bytes", "ka_packets", "nudge_bytes",
                 "nudge_packets", "rx_bytes", "rx_packets", "tx_bytes", "tx_packets")

    def __init__(self) -> None:
        self.rx_packets = self.rx_bytes = 0  # the UDP loop's
        # the UDP loop's, with either gate: DATA messages opened (the echo's count)
        self.delivered = 0
        # the count's, in every echo: each install of the session here
        # (a new Live: a restart, a handover, an install again) counts from
        # 0 under a new one, so the client starts its comparison again
        # (jvpn/client_path_delivery.py) rather than read a fall as loss
        self.incarnation = randbits(32)
        self.ka_packets = self.ka_bytes = 0  # the UDP loop's: keepalive replies
        self.nudge_packets = self.nudge_bytes = 0  # the timer thread's: rekey nudges
        self.tx_packets = self.tx_bytes = 0  # the TUN loop's: data

    def received(self, nbytes: int) -> None:
        """One authenticated message (data or keepalive), as on the wire (UDP loop)."""
        self.rx_packets += 1
        self.rx_bytes += nbytes

    def data_delivered(self) -> None:
        """One DATA message opened under the AEAD (UDP loop), whichever gate
        runs: what a heartbeat's echo tells the client was delivered
        (wire.KEEPALIVE_ECHO). The kernel's runtime count is no substitute:
        it restarts when the element is claimed again, and the daemon would
        read a map per echo; this one lives as long as the session does here."""
        self.delivered += 1

    def replied(self, msg: bytes) -> None:
        """A keepalive reply the socket took (UDP loop)."""
        self.ka_packets += 1
        self.ka_bytes += len(msg)

    def nudged(self, msg: bytes) -> None:
        """A flagged keepalive the socket took (the timer thread's rekey nudge)."""
        self.nudge_packets += 1
        self.nudge_bytes += len(msg)

    def sent(self, msgs: list[bytes]) -> None:
        """Data messages the socket took for the binding (TUN loop)."""
        self.tx_packets += len(msgs)
        self.tx_bytes += sum(map(len, msgs))

    def sent_so_far(self) -> tuple[int, int]:
        """(packets, bytes) sent to the binding: data, keepalive replies, nudges."""
        return (self.tx_packets + self.ka_packets + self.nudge_packets,
                self.tx_bytes + self.ka_bytes + self.nudge_bytes)

    def figures(self) -> dict[str, int]:
        tx_packets, tx_bytes = self.sent_so_far()
        return {"rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
                "tx_packets": tx_packets, "tx_bytes": tx_bytes}



class _NotCounted:
    """A session's counts before its first (its Traffic not made yet, jvpn/
    gateway/table.py ``Live.traffic``): zeros for a reader, never counted into."""

    __slots__ = ()
    rx_packets = rx_bytes = delivered = ka_packets = ka_bytes = tx_packets = tx_bytes = 0
    nudge_packets = nudge_bytes = 0

    def sent_so_far(self) -> tuple[int, int]:
        return 0, 0

    def figures(self) -> dict[str, int]:
        return {"rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0}


NOT_COUNTED = _NotCounted()
