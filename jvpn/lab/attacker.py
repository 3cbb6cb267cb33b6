"""The attacker of the threat tests and the demo: it sends from its own
namespace, or injects spoofed frames in front of the gateway."""

from __future__ import annotations

import socket

from jvpn.lab import frames
from jvpn.lab.addresses import GW_IP, PORT
from jvpn.lab.netns import Lab


class Attacker:
    """Sends from the attacker's namespace (its own address) or injects
    spoofed frames on the segment in front of the gateway."""

    def __init__(self, lab: Lab):
        self.lab = lab

    def send(self, msgs: list[bytes], spoof: tuple[str, int] | None = None) -> None:
        """From the attacker's own address (its namespace), or with a spoofed
        source injected as Ethernet frames on the segment in front of the
        gateway (the router's gateway-side port: behind the carrier NAT, and
        below any IP stack that would rewrite the packet)."""
        if spoof is None:
            with self.lab.socket("atk", socket.AF_INET, socket.SOCK_DGRAM) as s:
                for m in msgs:
                    s.sendto(m, (GW_IP, PORT))
            return
        head = self.lab.mac("gw", "gw0") + self.lab.mac("rt", "r0") + b"\x08\x00"
        with self.lab.socket("rt", socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind(("r0", 0))
            for m in msgs:
                s.send(head + frames.ipv4(spoof[0], GW_IP, 17, frames.udp(spoof[1], PORT, m)))

