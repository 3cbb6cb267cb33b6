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

import fcntl
import itertools
import os
import struct
import threading
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from . import abi
from .keys import SessionKeys
from .replay import ReplayWindow
from .wire import header_tag

TUN_MTU = 1420  # 1500 - IPv4 20 - UDP 8 - header 32 - AEAD tag 16 = 1424
FLAG_REATTACH = 1  # s2c keepalive/data: the gateway wants a reattach

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
        from . import wire  # noqa: PLC0415

        try:
            hdr, fields = wire.open_control(msg, reattach_key)
        except wire.WireError:
            return None
        if hdr.session_id != self.session_id or not hdr.tag_valid(self.recv_hdr_key):
            return None
        if self.replay is not None and not self.replay.accept(hdr.counter):
            return None
        return hdr, fields


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
