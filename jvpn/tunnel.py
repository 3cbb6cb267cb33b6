"""The userspace data path, both ends: UDP socket <-> ChaCha20-Poly1305 <-> TUN.

DATA / KEEPALIVE messages are the 32-byte tagged header, then the AEAD
ciphertext of the inner IP packet (nonce = 4 zero bytes | counter LE, AAD = the
header). On the gateway the XDP program already dropped forged, replayed and
wrongly bound packets; userspace verifies the AEAD and changes nothing when it
fails. The client (no XDP) and the gateway's userspace-gate mode also check
the header tag and the replay window here.

Hot loop: one AEAD object per key, preallocated header structs, no logging.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import socket
import struct
import threading
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from jvpn.gate import abi
from jvpn.keys import SessionKeys
from jvpn.replay import ReplayWindow
from jvpn.wire import header_tag

# Every jvpn datagram fits a 1500-byte path (the XDP gate refuses IP fragments),
# but the TUN carries inner packets of up to 64 KB: the TCP stacks at both ends
# then work per 64 KB, and jvpn splits a large inner packet into DATA messages
# of at most MAX_PLAINTEXT bytes, each one tagged, counted and sealed on its own.
TUN_MTU = 65000
MAX_PLAINTEXT = 1500 - 20 - 8 - 32 - 16  # IPv4, UDP, jvpn header, AEAD tag = 1424
FLAG_REATTACH = 1  # s2c keepalive/data: the gateway wants a reattach
FLAG_FRAGMENT = 2  # DATA: plaintext = fragment header + a piece of one inner packet
_FRAG = struct.Struct("<HBB")  # packet id, index, count
FRAG_PIECE = MAX_PLAINTEXT - _FRAG.size
MAX_PENDING_PACKETS = 32  # per session, oldest dropped first

_HDR = struct.Struct("<BBHIQQQ")
_TAGGED = struct.Struct("<BBHIQQ")
_NONCE = struct.Struct("<4xQ")


class DataChannel:
    """One session's data keys seen from one side ("client" or "gateway")."""

    RESERVE_BLOCK = 1 << 20

    def __init__(self, keys: SessionKeys, side: str, *, first_counter: int = 1,
                 check_replay: bool = True, check_tag: bool = True,
                 reserve: Callable[[int], None] | None = None):
        c2s, s2c = (keys.data_c2s, keys.hdr_c2s), (keys.data_s2c, keys.hdr_s2c)
        (send_key, self.send_hdr_key), (recv_key, self.recv_hdr_key) = (
            (c2s, s2c) if side == "client" else (s2c, c2s))
        self.session_id = keys.session_id
        self._seal = ChaCha20Poly1305(send_key).encrypt
        self._open = ChaCha20Poly1305(recv_key).decrypt
        self._counter = itertools.count(first_counter)
        self._lock = threading.Lock()
        self.replay = ReplayWindow() if check_replay else None
        self.check_tag = check_tag
        self.last_counter = first_counter - 1
        self._reserve = reserve  # persists a floor before counters below it are used
        self._floor = first_counter
        self._packet_id = 0
        self.reassembly = Reassembler()

    def next_counter(self) -> int:
        with self._lock:
            c = next(self._counter)
            if self._reserve is not None and c >= self._floor:
                self._floor = c + self.RESERVE_BLOCK
                self._reserve(self._floor)
            self.last_counter = c
            return c

    def header(self, msg_type: int, flags: int = 0, counter: int | None = None) -> bytes:
        """A tagged header (control messages build their own body on it)."""
        c = self.next_counter() if counter is None else counter
        tagged = _TAGGED.pack(msg_type, abi.WIRE_VERSION, flags, 0, self.session_id, c)
        return tagged + struct.pack("<Q", header_tag(self.send_hdr_key, tagged))

    def seal(self, payload: bytes, msg_type: int = abi.MSG_DATA, flags: int = 0) -> bytes:
        c = self.next_counter()
        hdr = self.header(msg_type, flags, c)
        return hdr + self._seal(_NONCE.pack(c), payload, hdr)

    def seal_packet(self, packet: bytes) -> list[bytes]:
        """One inner packet as DATA messages: one if it fits, else equal-size
        fragments (the last may be shorter)."""
        if len(packet) <= MAX_PLAINTEXT:
            return [self.seal(packet)]
        count = -(-len(packet) // FRAG_PIECE)
        if count > 255:
            return []  # larger than any IP packet: nothing sane to send
        size = -(-len(packet) // count)
        pid = self._next_packet_id()
        return [self.seal(_FRAG.pack(pid, i, count) + packet[i * size:(i + 1) * size],
                          abi.MSG_DATA, FLAG_FRAGMENT) for i in range(count)]

    def _next_packet_id(self) -> int:
        self._packet_id = (self._packet_id + 1) & 0xFFFF
        return self._packet_id

    def open(self, msg: bytes) -> tuple[int, int, bytes] | None:
        """(type, flags, payload) of an authentic, fresh message, else None.
        Nothing changes on failure: the replay window moves only after the
        AEAD verified."""
        if len(msg) < abi.HDR_LEN + abi.AEAD_TAG_LEN:
            return None
        t, _v, flags, _r, sid, counter, tag = _HDR.unpack_from(msg)
        if sid != self.session_id:
            return None
        hdr = msg[: abi.HDR_LEN]
        if self.check_tag and header_tag(self.recv_hdr_key, hdr[:abi.TAGGED_LEN]) != tag:
            return None
        try:
            payload = self._open(_NONCE.pack(counter), msg[abi.HDR_LEN:], hdr)
        except InvalidTag:
            return None
        if self.replay is not None and not self.replay.accept(counter):
            return None
        return t, flags, payload


    def open_control(self, msg: bytes, reattach_key: bytes) -> tuple | None:
        """(header, fields) of an authentic, fresh control message (tag, then
        HMAC, then the replay window), else None."""
        from jvpn import wire  # noqa: PLC0415

        try:
            hdr, fields = wire.open_control(msg, reattach_key)
        except wire.WireError:
            return None
        if hdr.session_id != self.session_id or not hdr.tag_valid(self.recv_hdr_key):
            return None
        if self.replay is not None and not self.replay.accept(hdr.counter):
            return None
        return hdr, fields


UDP_SEGMENT = 103  # linux/udp.h: the socket option for UDP GSO
GSO_MAX_BYTES = 60000  # one GSO send stays under the 64 KB IP limit


def send_messages(sock, msgs: list[bytes], dst: tuple[str, int]) -> None:
    """Send DATA messages; equal-size runs go out as one UDP GSO send (one
    syscall, the kernel cuts them into datagrams, each a whole jvpn message)."""
    if len(msgs) == 1 or not _gso_ok[0]:
        for m in msgs:
            sock.sendto(m, dst)
        return
    size = len(msgs[0])
    per_send = max(1, GSO_MAX_BYTES // size)
    for i in range(0, len(msgs), per_send):
        batch = msgs[i:i + per_send]
        try:
            sock.sendmsg([b"".join(batch)], [(socket.SOL_UDP, UDP_SEGMENT,
                                              struct.pack("=H", size))], 0, dst)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.EIO):
                raise
            _gso_ok[0] = False  # no UDP GSO here: plain sends from now on
            for m in batch:
                sock.sendto(m, dst)


_gso_ok = [True]


class Reassembler:
    """Inner packets from authenticated fragments. Bounded: at most
    MAX_PENDING_PACKETS incomplete packets, the oldest forgotten first."""

    def __init__(self):
        self._pending: dict[int, list] = {}

    def add(self, plaintext: bytes) -> bytes | None:
        if len(plaintext) < _FRAG.size:
            return None
        pid, index, count = _FRAG.unpack_from(plaintext)
        if count == 0 or index >= count:
            return None
        entry = self._pending.get(pid)
        if entry is None or len(entry[1]) != count:
            entry = self._pending[pid] = [count, [None] * count]
            while len(self._pending) > MAX_PENDING_PACKETS:
                del self._pending[next(iter(self._pending))]
        parts = entry[1]
        if parts[index] is None:
            entry[0] -= 1
        parts[index] = plaintext[_FRAG.size:]
        if entry[0]:
            return None
        del self._pending[pid]
        return b"".join(parts)


# ---------------------------------------------------------------- TUN

_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000


class Tun:
    """A TUN device in the current network namespace."""

    def __init__(self, name: str, persist: bool = False):
        """``persist``: the device outlives this process, so a restarted
        daemon finds the same interface, address and routes (the inner TCP
        connections of the gateway's host keep their local address)."""
        if len(name.encode()) > 15:
            raise ValueError(f"interface name {name!r} is longer than 15 bytes")
        self.fd = os.open("/dev/net/tun", os.O_RDWR)
        ifr = struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI)
        fcntl.ioctl(self.fd, _TUNSETIFF, ifr)
        fcntl.ioctl(self.fd, _TUNSETPERSIST, 1 if persist else 0)
        self.name = name

    def configure(self, address: str, prefixlen: int, mtu: int = TUN_MTU) -> None:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.name)[0]
            ipr.link("set", index=idx, mtu=mtu)
            ipr.addr("replace", index=idx, address=address, prefixlen=prefixlen)
            ipr.link("set", index=idx, state="up")

    def read(self) -> bytes:
        return os.read(self.fd, 65535)

    def write(self, packet: bytes) -> None:
        try:
            os.write(self.fd, packet)
        except OSError:
            pass  # a malformed inner packet: the kernel refuses it, we go on

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def destroy(self) -> None:
        """Remove a persistent device."""
        if self.fd >= 0:
            fcntl.ioctl(self.fd, _TUNSETPERSIST, 0)
        self.close()


def inner_dst(packet: bytes) -> bytes | None:
    """The IPv4 destination of an inner packet (4 bytes), or None."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        return packet[16:20]
    return None


def inner_src(packet: bytes) -> bytes | None:
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        return packet[12:16]
    return None
