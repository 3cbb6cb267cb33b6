"""The attacker of the threat tests and the demo: it sends from its own
namespace, or injects spoofed frames in front of the gateway."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time

from jvpn.lab import frames
from jvpn.lab.addresses import GW_IP, PORT, UPLINK_NET, UPLINK_ROUTER_IF
from jvpn.lab.netns import Lab


class Attacker:
    """Sends from the attacker's namespace (its own address) or injects
    spoofed frames on the segment in front of the gateway."""

    def __init__(self, lab: Lab):
        self.lab = lab

    def icmp_port_unreachable(self, client: tuple[str, int]) -> None:
        """From the attacker's own address, an ICMP port unreachable for a
        datagram the client at ``client`` sent the gateway: no spoofing is
        needed, the kernel takes it from anyone (only the quoted ports must
        match a socket)."""
        with self.lab.socket("atk", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            s.sendto(frames.icmp_port_unreachable(client, (GW_IP, PORT)), (client[0], 0))

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



HOLD_TABLE = "jvpnrelay"


class Relay:
    """The on-path attacker of issue 10 item 6, on the router: it holds the
    client's jvpn traffic (drops it in the router's forward path while its
    sniffer still sees it), gets the client's reattach request to the gateway
    from the attacker's own address, relays the gateway's challenge to the
    client spoofing the gateway, and hands the client's answer to the gateway
    from the attacker's address. Then it lets the client's traffic through
    again."""

    def __init__(self, lab: Lab, sniffer):
        self.lab, self.sniffer = lab, sniffer
        self.sock = lab.socket("atk", socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3.0)

    def hold(self) -> None:
        """Drop the client's datagrams to the gateway (the router forwards nothing)."""
        ifs = ", ".join(f'"{i}"' for i in UPLINK_ROUTER_IF.values())
        rules = f"""table ip {HOLD_TABLE} {{
  chain hold {{
    type filter hook forward priority -10;
    iifname {{ {ifs} }} udp dport {PORT} drop
  }}
}}
"""
        subprocess.run(self.lab.cmd("rt", "nft", "-f", "-"), input=rules, text=True,
                       check=True, capture_output=True, timeout=30)

    def release(self) -> None:
        self.lab.run("rt", "nft", "delete", "table", "ip", HOLD_TABLE, check=False)

    def next_from_client(self, msg_type: int, after: int, timeout: float = 10.0):
        """The first message of ``msg_type`` the sniffer saw after the first
        ``after`` ones: (message, the client's transport)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.sniffer.captured.get(msg_type, [])
            if len(got) > after:
                return got[after]
            time.sleep(0.02)
        raise TimeoutError(f"the client sent no message of type {msg_type}")

    def to_gateway(self, msg: bytes) -> None:
        self.sock.sendto(msg, (GW_IP, PORT))

    def from_gateway(self) -> bytes:
        return self.sock.recvfrom(65535)[0]

    def to_client(self, msg: bytes, client: tuple[str, int]) -> None:
        """``msg`` to the client as if from the gateway (a frame on the router's
        port behind the client's uplink, source GW_IP:PORT)."""
        uplink = next(u for u, net in UPLINK_NET.items()
                      if ipaddress.ip_address(client[0]) in ipaddress.ip_network(net))
        rif = UPLINK_ROUTER_IF[uplink]
        head = self.lab.mac("cl", uplink) + self.lab.mac("rt", rif) + b"\x08\x00"
        with self.lab.socket("rt", socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((rif, 0))
            s.send(head + frames.ipv4(GW_IP, client[0], 17,
                                      frames.udp(PORT, client[1], msg)))

    def close(self) -> None:
        self.release()
        self.sock.close()
