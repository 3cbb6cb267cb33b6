"""The userspace data path, both ends: UDP socket <-> ChaCha20-Poly1305 <-> TUN.

DATA / KEEPALIVE messages are the 32-byte tagged header, then the AEAD
ciphertext of the inner IP packet (nonce = 4 zero bytes | counter LE, AAD = the
header). On the gateway the XDP program already dropped forged, replayed and
wrongly bound DATA; userspace verifies the AEAD and changes nothing when it
fails. The client (no XDP) and the gateway's userspace-gate mode also check
the header tag and the data replay window here. Keepalives (and the control
messages ``open_control`` opens, the client's) are recorded in the channel's
control window, always, after the AEAD / HMAC verified: the gate only checks
their counters, since a copy of their header with another body must not
consume them (issue 10 item 5). The gateway's reattach validator keeps its
own window for the control messages it verifies.

Hot loop: one AEAD object per key (made on first use, dropped while the
session is idle: issue 15), preallocated header structs, no logging.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from jvpn import pathmtu
from jvpn.errors import JvpnError
from jvpn.gate import abi
from jvpn.keys import KeyRing, SessionKeys
from jvpn.prefixes import Network, PrefixSet
from jvpn.replay import DEFAULT_CONTROL_WINDOW, ControlWindow, ReplayWindow
from jvpn.wire import header_tag

# Every jvpn datagram fits its path (the XDP gate refuses IP fragments), but
# the TUN carries inner packets of up to 64 KB: the TCP stacks at both ends
# then work per 64 KB, and jvpn splits a large inner packet into DATA messages
# of at most the channel's ``max_plaintext`` bytes (sized to the path:
# jvpn/pathmtu.py), each one tagged, counted and sealed on its own.
TUN_MTU = pathmtu.DEFAULT_TUN_MTU
# a channel's size before any path is known: a 1500-byte IPv4 path = 1424
MAX_PLAINTEXT = pathmtu.max_plaintext(pathmtu.DEFAULT_PATH_MTU, 4)
FLAG_REATTACH = 1  # s2c keepalive/data: the gateway wants a reattach
FLAG_FRAGMENT = 2  # DATA: plaintext = fragment header + a piece of one inner packet
FLAG_KEY_PHASE = abi.FLAG_KEY_PHASE  # 4, any message: sealed under an odd key epoch
FLAG_REKEY = 8  # s2c keepalive/data: the gateway wants a rekey (docs/protocol.md "Rekey")
_FRAG = struct.Struct("<HBB")  # packet id, index, count
FRAG_PIECE = MAX_PLAINTEXT - _FRAG.size  # 1420: the piece on a default-sized channel
MIN_FRAG_PIECE = pathmtu.MIN_MAX_PLAINTEXT - _FRAG.size  # 496: a 576-byte IPv4 path
MAX_FRAG_PIECE = pathmtu.MAX_MAX_PLAINTEXT - _FRAG.size  # a 65535-byte path

# Reassembly limits, per session. A sender fragments one packet its TUN gave
# it: one IP packet, at most 65535 bytes (the total-length field), into
# pieces of at least MIN_FRAG_PIECE bytes (its path is at least 576 bytes), so
# into at most MAX_FRAGMENTS pieces; a fragment with more, or a packet whose
# pieces add up to more than 65535 bytes, is malformed. The sender emits a
# packet's fragments back to back (one GSO send), so at the receiver only
# reordering and loss leave packets incomplete side by side: 8 whole largest
# packets (512 KiB) and 32 packet ids leave room for that; no partial packet
# grows past 65535 bytes. A packet that misses a piece never completes; its
# TCP data is retransmitted after the RTO (200 ms at least) under a new
# packet id, so after 1 s its pieces are garbage.
MAX_INNER_PACKET = 65535
MAX_FRAGMENTS = -(-MAX_INNER_PACKET // MIN_FRAG_PIECE)  # 133
MAX_PENDING_PACKETS = 32
MAX_PENDING_BYTES = 8 * (MAX_INNER_PACKET + 1)  # 512 KiB
REASSEMBLY_TIMEOUT_S = 1.0

# Send counters are reserved in blocks: the store's floor F means "counters
# below F may have been used" (a restart or the next owner resumes at F). The
# next block is written when a quarter of the current one is left, so a send
# rarely waits for the store, and a counter at or above the durable floor is
# never handed out.
RESERVE_BLOCK = 1 << 20
RESERVE_AHEAD_RETRY_S = 1.0  # pace of retries of a failed ahead-write (still covered)

_HDR = struct.Struct("<BBHIQQQ")
_TAGGED = struct.Struct("<BBHIQQ")
_NONCE = struct.Struct("<4xQ")
_NEVER = float("-inf")  # one object for every session's "no retry pending"
# Held only while a channel makes one of its stateful parts on first use
# (a window, the reassembler, the filter): two threads asking at once get
# the same one, so no recorded counter or fragment is lost to a twin.
_MAKING = threading.Lock()


class CounterUnavailable(Exception):
    """No send counter for this message: nothing was sealed. A sender drops
    the message (or answers nothing) and goes on; its thread must not end."""


class CounterReserveFailed(CounterUnavailable):
    """The store did not take the next counter floor (``__cause__`` says why).
    Every later call retries the write first and fails the same way until it
    succeeds: no counter is ever used that a restart could hand out again."""


class ChannelRetired(CounterUnavailable):
    """The channel was retired (handover, fence): it sends nothing more."""


class SendCounter:
    """The send counters (AEAD nonces) of one session key, each used once
    across restarts and owners: a counter is handed out only below a floor
    ``reserve`` has durably written. One lock covers the handing out and the
    write, so ``retire`` cannot return while a write is in flight."""

    __slots__ = ("_ahead_retry_at", "_block", "_clock", "_durable", "_lock", "_next",
                 "_reserve", "_retired", "reserve_failures")

    def __init__(self, first: int, reserve: Callable[[int], None] | None,
                 block: int = RESERVE_BLOCK, clock: Callable[[], float] = time.monotonic):
        self._next = first
        self._reserve, self._block, self._clock = reserve, block, clock
        self._durable = first  # counters below it are ours (the store has a floor >= it)
        self._ahead_retry_at = _NEVER
        self._retired = False
        self._lock = threading.Lock()
        self.reserve_failures = 0  # failed floor writes, ahead or blocking

    def next(self) -> int:
        with self._lock:
            if self._retired:
                raise ChannelRetired("this channel was retired: it sends nothing more")
            c = self._next
            if self._reserve is not None:
                self._cover(c)
            self._next = c + 1
            return c

    @property
    def reserve_writer(self) -> Callable[[int], None] | None:
        """What writes a floor (None: no store behind this counter)."""
        return self._reserve

    def wanted_floor(self) -> int | None:
        """The floor ``next`` would write now (its counter not covered yet:
        None if it is, or retired); a caller that writes it itself, with
        others in one transaction, says so with ``reserved``."""
        with self._lock:
            if self._retired or self._reserve is None or self._next < self._durable:
                return None
            return self._next + self._block

    def reserved(self, floor: int) -> None:
        """``floor`` is durable (written by the caller of ``wanted_floor``)."""
        with self._lock:
            self._durable = max(self._durable, floor)

    def next_reserved(self) -> int:
        """``next`` without any store write: a counter the durable floor
        already covers, or CounterUnavailable (nothing handed out)."""
        with self._lock:
            if self._retired:
                raise ChannelRetired("this channel was retired: it sends nothing more")
            c = self._next
            if self._reserve is not None and c >= self._durable:
                raise CounterUnavailable(f"send counter {c} is not reserved yet")
            self._next = c + 1
            return c

    def _cover(self, c: int) -> None:
        """Make sure ``c`` is below the durable floor, writing the next block
        when a quarter of the current one is left."""
        if c < self._durable - self._block // 4:
            return
        covered = c < self._durable
        if covered and self._clock() < self._ahead_retry_at:
            return
        try:
            self._reserve(c + self._block)
        except Exception as e:  # noqa: BLE001 - any failure means "not durable"
            self.reserve_failures += 1
            if not covered:
                raise CounterReserveFailed(
                    f"send counter {c} not reserved: the counter floor write failed ({e})") from e
            self._ahead_retry_at = self._clock() + RESERVE_AHEAD_RETRY_S
            return
        self._durable = max(self._durable, c + self._block)

    def skip(self, n: int) -> None:
        """Leave ``n`` counters unused: the next one handed out is ``n``
        higher (a nonce never used is never reused; the reservation rule
        covers it when it is handed out)."""
        with self._lock:
            self._next += max(0, n)

    @property
    def upcoming(self) -> int:
        """The next counter to hand out (read only: a rekey's base counter)."""
        return self._next

    def retire(self) -> int:
        """After this returns no counter is handed out any more and no floor
        write is in flight. Returns a floor above every counter handed out:
        the durable one (or, without a store, the next counter)."""
        with self._lock:
            self._retired = True
            return self._durable if self._reserve is not None else self._next

    def resume(self) -> None:
        """Serve again after a handover that did not happen (still under the
        same reservation rule)."""
        with self._lock:
            self._retired = False


class _EpochCrypt:
    """One key epoch's keys as one side uses them. Its AEAD objects (each
    holds an OpenSSL context, about 2 KiB outside Python's heap) are made
    on first use and dropped by ``shed`` when the session is idle: only the
    key bytes stay (issue 15). No lock: two threads making one at once each
    get a working object for the same key and one of them stays; a thread
    holding one while another sheds it goes on using it."""

    __slots__ = ("_open", "_recv_key", "_seal", "_send_key", "keys", "phase_flag",
                 "recv_hdr_key", "send_hdr_key")

    def __init__(self, keys: SessionKeys, side: str):
        c2s, s2c = (keys.data_c2s, keys.hdr_c2s), (keys.data_s2c, keys.hdr_s2c)
        (self._send_key, self.send_hdr_key), (self._recv_key, self.recv_hdr_key) = (
            (c2s, s2c) if side == "client" else (s2c, c2s))
        self.keys = keys
        self._seal = self._open = None
        self.phase_flag = FLAG_KEY_PHASE if keys.phase else 0

    def sealer(self) -> Callable[[bytes, bytes, bytes], bytes]:
        seal = self._seal
        if seal is None:
            seal = self._seal = ChaCha20Poly1305(self._send_key).encrypt
        return seal

    def opener(self) -> Callable[[bytes, bytes, bytes], bytes]:
        open_ = self._open
        if open_ is None:
            open_ = self._open = ChaCha20Poly1305(self._recv_key).decrypt
        return open_

    @property
    def holds_aead(self) -> bool:
        return self._seal is not None or self._open is not None

    def shed(self) -> None:
        self._seal = self._open = None


class DataChannel:
    """One session's data keys seen from one side ("client" or "gateway").

    The keys are a :class:`KeyRing`: messages are sealed under its ``send``
    epoch (the key phase flag says which), and opened under the epoch their
    phase flag names, if that epoch is live (``set_keys`` changes the ring:
    a rekey, the end of its overlap). Counters and replay windows are the
    session's, not the epoch's: they carry over a rekey.

    ``reserve(floor)`` durably stores a counter floor (the gateway's store);
    ``allowed_inner_src`` (the gateway side) is what the peer may use as
    inner source: its AllowedIPs prefixes, or one packed IPv4 address
    (cryptokey routing, see ``inner_packet``).

    Compact (issue 15: a gateway holds a channel per idle session): slots;
    the AEAD objects are made on first use and ``shed`` when idle; the
    control window, the reassembler and the inner source filter are made
    on first use (each starts empty: made later, it behaves the same).
    ``__dict__`` stays for what is set on one channel only (tests replace a
    method): it costs a pointer until used."""

    __slots__ = ("__dict__", "_allowed_inner_src", "_by_phase", "_clock", "_control_replay",
                 "_control_window", "_inner_filter", "_packet_id", "_reassembly", "_send",
                 "admit_counter", "announced_counter", "check_tag", "counter", "max_plaintext",
                 "replay", "ring", "session_id", "side")

    def __init__(self, keys: SessionKeys | KeyRing, side: str, *, first_counter: int = 1,
                 check_replay: bool = True, check_tag: bool = True,
                 reserve: Callable[[int], None] | None = None,
                 reserve_block: int = RESERVE_BLOCK,
                 allowed_inner_src: bytes | tuple[Network, ...] | None = None,
                 admit_counter: Callable[[int], bool] | None = None,
                 control_window: int = DEFAULT_CONTROL_WINDOW,
                 clock: Callable[[], float] = time.monotonic):
        self.side = side
        self.set_keys(KeyRing.of(keys))
        self.session_id = self.ring.session_id
        self.counter = SendCounter(first_counter, reserve, reserve_block, clock)
        self.replay = ReplayWindow() if check_replay else None
        self._control_window, self._control_replay = control_window, None
        self.check_tag = check_tag
        self._packet_id = 0
        self._clock, self._reassembly = clock, None
        if isinstance(allowed_inner_src, bytes) and len(allowed_inner_src) != 4:
            raise ValueError("the allowed inner source is one packed IPv4 address")
        self._allowed_inner_src, self._inner_filter = allowed_inner_src, None
        self.admit_counter = admit_counter  # the gateway's replay ceiling (gateway/ceiling.py)
        self.max_plaintext = MAX_PLAINTEXT  # sized to the path by size_to
        self.announced_counter = 0  # the peer's last path-MTU announcement applied (gateway)

    def set_keys(self, ring: KeyRing) -> None:
        """The live epochs from now on. The data threads read ``_by_phase``
        and ``_send`` once per message: each is replaced whole, never
        changed in place, so a message sees one epoch's keys throughout."""
        by_phase: list[_EpochCrypt | None] = [None, None]  # indexed by key phase
        for k in ring.live():
            by_phase[k.phase] = _EpochCrypt(k, self.side)
        self._by_phase = tuple(by_phase)
        self._send = by_phase[ring.send.phase]
        self.ring = ring

    def shed(self) -> None:
        """Drop the AEAD objects (an idle session's): the next message
        makes them again from the key bytes the ring keeps."""
        for crypt in self._by_phase:
            if crypt is not None:
                crypt.shed()

    @property
    def holds_aead(self) -> bool:
        return any(c is not None and c.holds_aead for c in self._by_phase)

    @property
    def control_replay(self) -> ControlWindow:
        """Keepalives' and control messages' window (made on first use)."""
        return self._control_replay or self._make(
            "_control_replay", lambda: ControlWindow(self._control_window))

    @property
    def reassembly(self) -> Reassembler:
        return self._reassembly or self._make("_reassembly",
                                              lambda: Reassembler(clock=self._clock))

    @property
    def inner_filter(self) -> InnerSourceFilter | None:
        """Cryptokey routing's ingress filter (None: no filter, the client)."""
        if self._inner_filter is not None or self._allowed_inner_src is None:
            return self._inner_filter
        return self._make("_inner_filter", lambda: InnerSourceFilter(self._allowed_inner_src))

    def _make(self, slot: str, make: Callable[[], object]):
        """A stateful part, made once whatever threads ask at the same time."""
        with _MAKING:
            part = getattr(self, slot)
            if part is None:
                part = make()
                setattr(self, slot, part)
            return part

    def drop_counts(self) -> dict[str, int]:
        """The reassembler's and the inner filter's non-zero drop counters
        (none made yet: none dropped; reading makes none)."""
        out = {}
        if self._reassembly is not None:
            out.update((f"reassembly_{k}", v) for k, v in self._reassembly.drops.items() if v)
        if self._inner_filter is not None:
            out.update((f"inner_{k}", v) for k, v in self._inner_filter.refused.items() if v)
        return out

    @property
    def send_hdr_key(self) -> bytes:
        return self._send.send_hdr_key

    @property
    def send_keys(self) -> SessionKeys:
        """The epoch this side seals under (control messages use its key)."""
        return self._send.keys

    def keys_for(self, flags: int) -> SessionKeys | None:
        """The live epoch a received message's key phase names, if any."""
        crypt = self._by_phase[1 if flags & FLAG_KEY_PHASE else 0]
        return crypt.keys if crypt is not None else None

    def size_to(self, path_mtu: int, family: int) -> None:
        """Every DATA datagram from now on fits ``path_mtu`` (clamped to what
        ``family`` must carry) over an outer IP of ``family``."""
        self.max_plaintext = pathmtu.max_plaintext(path_mtu, family)

    def next_counter(self) -> int:
        """The next send counter; raises CounterUnavailable (nothing sent)."""
        return self.counter.next()

    def next_reserved_counter(self) -> int:
        """See SendCounter.next_reserved."""
        return self.counter.next_reserved()

    def skip_counters(self, n: int) -> None:
        """See SendCounter.skip."""
        self.counter.skip(n)

    @property
    def reserve_failures(self) -> int:
        return self.counter.reserve_failures

    def retire(self) -> int:
        """See SendCounter.retire: the floor a handover may hand on."""
        return self.counter.retire()

    def resume(self) -> None:
        self.counter.resume()

    def header(self, msg_type: int, flags: int = 0, counter: int | None = None) -> bytes:
        """A tagged header under the send epoch (control messages build
        their own body on it, and MAC it under ``send_keys.reattach``)."""
        c = self.next_counter() if counter is None else counter
        return self._header(self._send, msg_type, flags, c)

    def _header(self, crypt: _EpochCrypt, msg_type: int, flags: int, c: int) -> bytes:
        tagged = _TAGGED.pack(msg_type, abi.WIRE_VERSION, flags | crypt.phase_flag, 0,
                              self.session_id, c)
        return tagged + struct.pack("<Q", header_tag(crypt.send_hdr_key, tagged))

    def seal(self, payload: bytes, msg_type: int = abi.MSG_DATA, flags: int = 0) -> bytes:
        c = self.next_counter()
        crypt = self._send  # one epoch for the header and the AEAD
        hdr = self._header(crypt, msg_type, flags, c)
        return hdr + (crypt._seal or crypt.sealer())(_NONCE.pack(c), payload, hdr)

    def seal_packet(self, packet: bytes, flags: int = 0) -> list[bytes]:
        """One inner packet as DATA messages: one if it fits, else equal-size
        fragments (the last may be shorter). ``flags``: added to each (the
        gateway's FLAG_REKEY). Raises CounterUnavailable."""
        limit = self.max_plaintext  # one read: a resize meanwhile applies to the next packet
        if len(packet) <= limit:
            return [self.seal(packet, abi.MSG_DATA, flags)]
        if len(packet) > MAX_INNER_PACKET:
            return []  # larger than any IP packet: nothing sane to send
        count = -(-len(packet) // (limit - _FRAG.size))
        size = -(-len(packet) // count)
        pid = self._next_packet_id()
        return [self.seal(_FRAG.pack(pid, i, count) + packet[i * size:(i + 1) * size],
                          abi.MSG_DATA, FLAG_FRAGMENT | flags) for i in range(count)]

    def _next_packet_id(self) -> int:
        self._packet_id = (self._packet_id + 1) & 0xFFFF
        return self._packet_id

    def open(self, msg: bytes) -> tuple[int, int, bytes] | None:
        """(type, flags, payload) of an authentic, fresh message, else None.
        Nothing changes on failure: a replay window moves only after the
        AEAD verified. A keepalive is always checked against the control
        window (the gate does not record its counter)."""
        if len(msg) < abi.HDR_LEN + abi.AEAD_TAG_LEN:
            return None
        t, _v, flags, _r, sid, counter, tag = _HDR.unpack_from(msg)
        crypt = self._by_phase[1 if flags & FLAG_KEY_PHASE else 0]
        if sid != self.session_id or crypt is None:  # no live epoch of that phase
            return None
        hdr = msg[: abi.HDR_LEN]
        if self.check_tag and header_tag(crypt.recv_hdr_key, hdr[:abi.TAGGED_LEN]) != tag:
            return None
        try:
            payload = (crypt._open or crypt.opener())(_NONCE.pack(counter), msg[abi.HDR_LEN:], hdr)
        except InvalidTag:
            return None
        # every check before any state moves: the window (read only), then
        # the replay ceiling (it may write ahead), then the window records
        window = self.control_replay if t == abi.MSG_KEEPALIVE else self.replay
        if window is not None and not window.fresh(counter):
            return None
        if self.admit_counter is not None and not self.admit_counter(counter):
            return None
        if window is not None:
            window.accept(counter)  # fresh a moment ago, on this one receive thread
        return t, flags, payload

    def inner_packet(self, flags: int, payload: bytes) -> bytes | None:
        """The inner packet a DATA message's payload completes, if it may
        enter the TUN: reassembled (fragments), then, on the gateway, checked
        against the peer's allowed inner source. None: not (yet) a packet."""
        packet = self.reassembly.add(payload) if flags & FLAG_FRAGMENT else payload
        if packet is None or self.inner_filter is None:
            return packet
        return packet if self.inner_filter.accept(packet) else None

    def open_control(self, msg: bytes) -> tuple | None:
        """(header, fields) of an authentic, fresh control message (tag, then
        HMAC under the control key of the epoch its key phase names, then
        the control window), else None."""
        from jvpn import wire  # noqa: PLC0415

        if len(msg) < abi.HDR_LEN:
            return None
        crypt = self._by_phase[wire.key_phase(_HDR.unpack_from(msg)[2])]
        if crypt is None:
            return None
        try:
            hdr, fields = wire.open_control(msg, crypt.keys.reattach)
        except wire.WireError:
            return None
        if hdr.session_id != self.session_id or not hdr.tag_valid(crypt.recv_hdr_key):
            return None
        if not self.control_replay.accept(hdr.counter):
            return None
        return hdr, fields


UDP_SEGMENT = 103  # linux/udp.h: the socket option for UDP GSO
GSO_MAX_BYTES = 60000  # one GSO send stays under the 64 KB IP limit


def send_messages(sock, msgs: list[bytes], dst: tuple[str, int]) -> int:
    """Send DATA messages; equal-size runs go out as one UDP GSO send (one
    syscall, the kernel cuts them into datagrams, each a whole jvpn message).
    Returns the bytes that left (a non-waiting sender's drop sends 0)."""
    if len(msgs) == 1 or not _gso_ok[0]:
        return sum(sock.sendto(m, dst) for m in msgs)
    size = len(msgs[0])
    per_send = max(1, GSO_MAX_BYTES // size)
    sent = 0
    for i in range(0, len(msgs), per_send):
        batch = msgs[i:i + per_send]
        try:
            sent += sock.sendmsg([b"".join(batch)], [(socket.SOL_UDP, UDP_SEGMENT,
                                                      struct.pack("=H", size))], 0, dst)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.EIO):
                raise
            _gso_ok[0] = False  # no UDP GSO here: plain sends from now on
            sent += sum(sock.sendto(m, dst) for m in batch)
    return sent


_gso_ok = [True]


class _Partial:
    """One inner packet being reassembled."""
    __slots__ = ("missing", "parts", "size", "started")

    def __init__(self, count: int, started: float):
        self.started, self.missing = started, count
        self.parts: list[bytes | None] = [None] * count
        self.size = 0


class Reassembler:
    """Inner packets from authenticated fragments, bounded per session in
    packets (MAX_PENDING_PACKETS), bytes (MAX_PENDING_BYTES, the oldest
    incomplete packet dropped first) and time (REASSEMBLY_TIMEOUT_S).

    ``drops`` counts what it refused: "malformed" fragments (impossible
    index, count or size), incomplete packets "evicted" for room and
    "expired" ones. ``buffered_bytes`` is what it holds now."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_bytes: int = MAX_PENDING_BYTES, timeout_s: float = REASSEMBLY_TIMEOUT_S):
        self._clock, self._max_bytes, self._timeout = clock, max_bytes, timeout_s
        self._pending: dict[int, _Partial] = {}  # insertion order = age order
        self.buffered_bytes = 0
        self.drops = {"malformed": 0, "evicted": 0, "expired": 0}

    def add(self, plaintext: bytes) -> bytes | None:
        """The whole inner packet once its last fragment arrives, else None."""
        self.expire()
        if not _fragment_ok(plaintext):
            self.drops["malformed"] += 1
            return None
        pid, index, count = _FRAG.unpack_from(plaintext)
        entry = self._pending.get(pid)
        if entry is None or len(entry.parts) != count:
            if entry is not None:  # the id was reused for another packet
                self._discard(pid, "evicted")
            entry = self._pending[pid] = _Partial(count, self._clock())
        piece = plaintext[_FRAG.size:]
        old = entry.parts[index]
        entry.missing -= old is None
        grown = len(piece) - (len(old) if old is not None else 0)
        entry.parts[index], entry.size = piece, entry.size + grown
        self.buffered_bytes += grown
        if entry.size > MAX_INNER_PACKET:  # pieces of any size: bound each packet here
            self._discard(pid, "malformed")
            return None
        if entry.missing:
            self._make_room(keep=pid)
            return None
        self._discard(pid, None)
        return b"".join(entry.parts)

    def expire(self) -> None:
        """Drop incomplete packets older than the timeout (oldest first)."""
        deadline = self._clock() - self._timeout
        while self._pending:
            pid, entry = next(iter(self._pending.items()))
            if entry.started >= deadline:
                return
            self._discard(pid, "expired")

    def _make_room(self, keep: int) -> None:
        while ((self.buffered_bytes > self._max_bytes or len(self._pending) > MAX_PENDING_PACKETS)
               and len(self._pending) > 1):
            oldest = next(iter(self._pending))
            self._discard(oldest if oldest != keep else list(self._pending)[1], "evicted")

    def _discard(self, pid: int, reason: str | None) -> None:
        entry = self._pending.pop(pid)
        self.buffered_bytes -= entry.size
        if reason is not None:
            self.drops[reason] += 1


def _fragment_ok(plaintext: bytes) -> bool:
    """A fragment one IP packet of at most MAX_INNER_PACKET bytes can give
    (any path between the smallest and the largest one)."""
    if len(plaintext) < _FRAG.size or len(plaintext) - _FRAG.size > MAX_FRAG_PIECE:
        return False
    _pid, index, count = _FRAG.unpack_from(plaintext)
    return 0 < count <= MAX_FRAGMENTS and index < count


class InnerSourceFilter:
    """Cryptokey routing, ingress half (WireGuard's allowed-IPs check): a
    decrypted inner packet enters the TUN only if it is a well-formed IPv4
    or IPv6 packet whose source is inside the peer's AllowedIPs (its
    assigned addresses and the subnets behind it). Anything else would let
    an authenticated peer speak as another peer, or as any host. ``refused``
    counts "spoofed" sources and "malformed" packets (neither IPv4 nor IPv6,
    bad header length, a length field not the packet's length).

    ``allowed``: the prefixes (or, as before, one packed IPv4 address)."""

    def __init__(self, allowed: bytes | tuple[Network, ...]):
        if isinstance(allowed, bytes):
            if len(allowed) != 4:
                raise ValueError("the allowed inner source is one packed IPv4 address")
            allowed = (ipaddress.IPv4Network(allowed),)
        self.allowed = PrefixSet(allowed)
        # the common case, the peer's own addresses, without a call
        self._hosts = frozenset(n.network_address.packed for n in allowed
                                if n.prefixlen == n.max_prefixlen
                                and not _ipv4_in_ipv6(n.network_address.packed))
        self.refused = {"spoofed": 0, "malformed": 0}

    def accept(self, packet: bytes) -> bool:
        src = _well_formed_src(packet)
        if src is None:
            self.refused["malformed"] += 1
            return False
        if src not in self._hosts and (_ipv4_in_ipv6(src) or src not in self.allowed):
            self.refused["spoofed"] += 1
            return False
        return True


_V4_IN_V6 = (b"\0" * 10 + b"\xff\xff", b"\0" * 12)  # ::ffff:0:0/96 (mapped), ::/96 (compatible)


def _ipv4_in_ipv6(src: bytes) -> bool:
    """An IPv6 source that spells an IPv4 address (IPv4-mapped or -compatible):
    never a peer's, whatever its AllowedIPs say (a dual-stack socket reads
    ::ffff:a.b.c.d as the IPv4 a.b.c.d, another peer's, or any host's)."""
    return len(src) == 16 and src[:12] in _V4_IN_V6


def _well_formed_src(packet: bytes) -> bytes | None:
    """The source of a well-formed IPv4 or IPv6 packet, else None."""
    n = len(packet)
    version = packet[0] >> 4 if n else 0
    if version == 4 and n >= 20:
        header_len = (packet[0] & 0x0F) * 4
        if 20 <= header_len <= n and int.from_bytes(packet[2:4], "big") == n:
            return packet[12:16]
    elif version == 6 and n >= 40 and int.from_bytes(packet[4:6], "big") + 40 == n:
        return packet[8:24]  # a jumbogram (payload length 0) is refused: never this size
    return None


# ---------------------------------------------------------------- TUN

_TUNSETIFF = 0x400454CA
_TUNSETPERSIST = 0x400454CB
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000


class TunBusy(JvpnError):
    """Another process has the TUN device open (a second gateway or client on
    the same name): the caller names the setting that chose the name."""


def tun_exists(name: str) -> bool | None:
    """True: a TUN device of this name exists in our network namespace;
    False: the name is another kind of interface; None: no interface has it.
    Asked over netlink: /sys/class/net shows the namespace sysfs was mounted
    in, not ours (nsenter --net keeps the host's)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        try:
            links = ipr.get_links(ifname=name)
        except Exception:  # noqa: BLE001 - NetlinkError(ENODEV): no such interface
            return None
        if not links:
            return None
        info = links[0].get_attr("IFLA_LINKINFO")
        return info is not None and info.get_attr("IFLA_INFO_KIND") == "tun"


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
        try:
            fcntl.ioctl(self.fd, _TUNSETIFF, ifr)
            fcntl.ioctl(self.fd, _TUNSETPERSIST, 1 if persist else 0)
        except OSError as e:
            self.close()
            if e.errno == errno.EBUSY:  # one queue: one process at a time
                raise TunBusy(f"TUN device {name} is busy: another process has it open "
                              "(another jvpn gateway or client on this name?)") from None
            raise
        self.name = name

    def configure(self, address: str, prefixlen: int, mtu: int = TUN_MTU,
                  address6: ipaddress.IPv6Interface | None = None) -> None:
        """The inner IPv4 address, and the inner IPv6 one when given (no
        duplicate address detection: the tunnel's prefix is ours alone, and
        DAD would hold the address back for a second)."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.name)[0]
            ipr.link("set", index=idx, mtu=mtu)
            ipr.addr("replace", index=idx, address=address, prefixlen=prefixlen)
            if address6 is not None:
                self._configure6(ipr, idx, address6, IFA_F_NODAD)
            ipr.link("set", index=idx, state="up")

    def _configure6(self, ipr, idx: int, address6: ipaddress.IPv6Interface, nodad: int) -> None:
        try:
            ipr.addr("replace", index=idx, address=str(address6.ip),
                     prefixlen=address6.network.prefixlen, family=socket.AF_INET6, flags=nodad)
        except Exception as e:  # noqa: BLE001 - NetlinkError: one line for the operator
            raise JvpnError(f"{self.name}: cannot add the inner IPv6 address {address6}: {e} "
                            f"(IPv6 disabled? sysctl net.ipv6.conf.{self.name}.disable_ipv6)"
                            ) from None

    def read(self) -> bytes:
        return os.read(self.fd, 65535)

    def set_nonblocking(self) -> None:
        """read() raises BlockingIOError instead of waiting (see wait_readable)."""
        os.set_blocking(self.fd, False)

    def wait_readable(self, timeout_s: float) -> bool:
        """For a non-blocking reader (the gateway's): wait at most
        ``timeout_s`` for a packet, so the reading thread sees a stop in
        that time (a blocking read would wait for the next packet, forever
        on an idle tunnel; closing the fd does not wake it)."""
        fd = self.fd
        if fd < 0:
            return False
        try:
            readable, _w, _x = select.select([fd], [], [], timeout_s)
        except (OSError, ValueError):  # closed meanwhile: the caller sees its stop
            return False
        return bool(readable)

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
    """The destination of an inner packet: 4 bytes (IPv4), 16 (IPv6), or None."""
    n = len(packet)
    if n >= 20 and packet[0] >> 4 == 4:
        return packet[16:20]
    if n >= 40 and packet[0] >> 4 == 6:
        return packet[24:40]
    return None


def inner_src(packet: bytes) -> bytes | None:
    n = len(packet)
    if n >= 20 and packet[0] >> 4 == 4:
        return packet[12:16]
    if n >= 40 and packet[0] >> 4 == 6:
        return packet[8:24]
    return None
