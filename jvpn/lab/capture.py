"""AF_PACKET captures in a lab namespace: the raw frames, the jvpn messages
in them (GSO batches cut as the kernel's header says), and the attacker's
sniffer on the router."""

from __future__ import annotations

import socket
import struct
import threading

from jvpn.gate import abi
from jvpn.lab.addresses import PORT, UPLINK_ROUTER_IF
from jvpn.lab.netns import socket_in

SOL_PACKET, PACKET_VNET_HDR = 263, 15
ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800


class Capture:
    """AF_PACKET in namespace ``ns`` (one interface, or all), each frame
    behind a virtio-net header (PACKET_VNET_HDR: it says how a GSO batch is
    cut); a thread calls ``on_frame(raw, meta)`` for each one, sent or
    received (meta[2] is the packet type)."""

    def __init__(self, ns: str, on_frame, ifname: str | None = None, proto: int = ETH_P_IP):
        """``proto`` ETH_P_ALL: the frames the interface sends too (the kernel
        hands outgoing frames to ETH_P_ALL sockets only)."""
        self.sock = socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
        self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        if ifname is not None:
            self.sock.bind((ifname, 0))
        self.sock.settimeout(0.1)
        self.on_frame = on_frame
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw, meta = self.sock.recvfrom(70000)
            except (TimeoutError, OSError):
                continue
            self.on_frame(raw, meta)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(timeout=2)
        self.sock.close()


def udp_messages(raw: bytes) -> tuple[tuple[str, int], list[bytes]] | None:
    """(source transport, jvpn messages) of one frame captured with a
    virtio-net header (PACKET_VNET_HDR) if it is IPv4/UDP to our port; a GSO
    batch (several messages in one skb, as the client sends them) is cut the
    way the header says."""
    gso_type, gso_size = raw[1], struct.unpack_from("=H", raw, 4)[0]
    ip = raw[10 + 14:]
    if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0xF) * 4
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    if dport != PORT:
        return None
    payload = ip[ihl + 8:]
    step = gso_size if gso_type and gso_size else len(payload)
    return ((socket.inet_ntoa(ip[12:16]), sport),
            [payload[i:i + step] for i in range(0, len(payload), step)])


class Sniffer:
    """The attacker's view of the client's traffic: a mirror of the router's
    client-side ports (AF_PACKET in the router namespace)."""

    def __init__(self, lab):
        self.captured: dict[int, list[tuple[bytes, tuple[str, int]]]] = {}
        self._cap = Capture(lab.ns("rt"), self._frame)

    def _frame(self, raw: bytes, meta) -> None:
        got = udp_messages(raw) if meta[0] in UPLINK_ROUTER_IF.values() else None
        for msg in got[1] if got else ():
            if len(msg) >= abi.HDR_LEN:
                self.captured.setdefault(msg[0], []).append((msg, got[0]))

    def stop(self) -> None:
        self._cap.stop()



def jvpn_datagram(raw: bytes) -> tuple[str, tuple[str, int], list[bytes]] | None:
    """(direction, client transport, jvpn messages) of one IPv4/UDP frame
    captured with a virtio-net header, either way: "c2s" (to our port) or
    "s2c" (from it); a GSO batch is cut the way the header says."""
    gso_type, gso_size = raw[1], struct.unpack_from("=H", raw, 4)[0]
    ip = raw[10 + 14:]
    if raw[10 + 12:10 + 14] != b"\x08\x00" or len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0xF) * 4
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    if PORT not in (sport, dport):
        return None
    direction, client = (("c2s", (socket.inet_ntoa(ip[12:16]), sport)) if dport == PORT
                         else ("s2c", (socket.inet_ntoa(ip[16:20]), dport)))
    payload = ip[ihl + 8:]
    step = gso_size if gso_type and gso_size else len(payload)
    return direction, client, [payload[i:i + step] for i in range(0, len(payload), step)]


class Recorder:
    """Every jvpn message crossing ``ifname`` in namespace ``ns``, both
    ways, in the order seen: (direction, message, client transport). On the
    router's gateway-side port it is what an on-path attacker records (the
    forward secrecy test): the client's datagrams leave through it (outgoing,
    hence ETH_P_ALL), the gateway's arrive on it."""

    def __init__(self, ns: str, ifname: str):
        self.messages: list[tuple[str, bytes, tuple[str, int]]] = []
        self._lock = threading.Lock()
        self._cap = Capture(ns, self._frame, ifname, ETH_P_ALL)

    def _frame(self, raw: bytes, meta) -> None:
        got = jvpn_datagram(raw)
        if got is None:
            return
        direction, client, msgs = got
        # a forwarded frame crosses the port once each way: c2s leaves
        # towards the gateway (outgoing), s2c arrives from it (incoming)
        if (direction == "c2s") != (meta[2] == socket.PACKET_OUTGOING):
            return
        with self._lock:
            self.messages.extend((direction, m, client) for m in msgs if len(m) >= abi.HDR_LEN)

    def snapshot(self) -> list[tuple[str, bytes, tuple[str, int]]]:
        with self._lock:
            return list(self.messages)

    def stop(self) -> None:
        self._cap.stop()
