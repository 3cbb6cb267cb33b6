"""What crossed the wire between the client and the gateway, in the bench's
clock (jvpn/bench/stall_trace.py): an AF_PACKET socket on one router port,
both ways, kernel timestamps (SO_TIMESTAMPNS, wall clock, placed on the
monotonic axis with the offset measured at start). It keeps the reattach
messages (REATTACH_REQ ... TERMINATE) and when data starts on a transport
(either way, after DATA_QUIET_S without), not every datagram: a timeline needs when the request
reached the gateway and when the gateway answered, which neither side's
events say (they are written after the work they report)."""

from __future__ import annotations

import socket
import struct
import threading
import time

from jvpn.bench.stall_trace import wall_offset_s
from jvpn.gate import abi
from jvpn.lab.addresses import PORT
from jvpn.lab.netns import socket_in

ETH_P_ALL, ETH_HLEN = 0x0003, 14
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
DATA_QUIET_S = 0.1  # data on a transport after this long without: a timeline entry
CONTROL = {abi.MSG_REATTACH_REQ: "REATTACH_REQ", abi.MSG_PATH_CHALLENGE: "PATH_CHALLENGE",
           abi.MSG_PATH_RESPONSE: "PATH_RESPONSE", abi.MSG_REATTACH_ACK: "REATTACH_ACK",
           abi.MSG_REATTACH_REJECT: "REATTACH_REJECT", abi.MSG_TERMINATE: "TERMINATE"}


def parse(frame: bytes) -> tuple[str, str, int] | None:
    """(direction, client transport, message type) of an IPv4/UDP frame to
    or from the jvpn port (its first message: control messages leave alone)."""
    ip = frame[ETH_HLEN:]
    if frame[12:14] != b"\x08\x00" or len(ip) < 29 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0xF) * 4
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    if len(ip) <= ihl + 8 or PORT not in (sport, dport):
        return None
    if dport == PORT:
        return "c2s", f"{socket.inet_ntoa(ip[12:16])}:{sport}", ip[ihl + 8]
    return "s2c", f"{socket.inet_ntoa(ip[16:20])}:{dport}", ip[ihl + 8]


class WireLog:
    """Entries (monotonic s, who, what) for the timelines: "wire" entries."""

    def __init__(self, ns: str, ifname: str):
        self.entries: list[tuple[float, str]] = []
        self._offset = wall_offset_s()
        self._data_seen: dict[str, dict[str, float]] = {}  # direction -> transport -> last
        self.sock = socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, anc, _f, _a = self.sock.recvmsg(256, socket.CMSG_SPACE(16))
            except (TimeoutError, OSError):
                continue
            self._frame(frame, self._stamp(anc))

    def _stamp(self, anc) -> float:
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack("qq", data[:16])
                return sec + nsec / 1e9 - self._offset
        return time.monotonic()

    def _frame(self, frame: bytes, t: float) -> None:
        got = parse(frame)
        if got is None:
            return
        direction, peer, kind = got
        arrow = "client -> gateway" if direction == "c2s" else "gateway -> client"
        if kind in CONTROL:
            self.entries.append((t, f"{CONTROL[kind]} {arrow} ({peer})"))
        elif kind == abi.MSG_DATA:
            # a transport data starts to use (again): a dual send alternates
            # two of them packet by packet, one entry each, not one a packet
            seen = self._data_seen.setdefault(direction, {})
            if t - seen.get(peer, float("-inf")) > DATA_QUIET_S:
                self.entries.append((t, f"data {arrow} via {peer}"))
            seen[peer] = t

    def stop(self) -> list[tuple[float, str]]:
        self._stop.set()
        self._t.join(timeout=2)
        self.sock.close()
        return self.entries
