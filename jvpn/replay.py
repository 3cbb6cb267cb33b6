"""RFC 6479 sliding-window anti-replay, WireGuard's counter_validate(): the
one algorithm of bpf/include/replay.h, in Python. The reference model uses it
on the kernel's struct layout; the client and the userspace gate on a
``ReplayWindow``; the gateway daemon keeps a ``ControlWindows`` for the
control messages it verified (issue 10 item 5)."""

from __future__ import annotations

from array import array
from collections import OrderedDict

from jvpn.gate import abi


def replay_accept(rt, counter: int, bits: int = abi.REPLAY_BITS) -> bool:
    """Mirror of replay.h:jvpn_replay_accept (RFC 6479, WireGuard's order)."""
    words, window = abi.replay_words(bits), abi.replay_window(bits)
    if counter >= abi.reject_after(bits):
        return False
    seq = counter + 1
    if window + seq < rt.replay_top:
        return False
    index = seq >> 6
    if seq > rt.replay_top:
        cur = rt.replay_top >> 6
        span = min(index - cur, words)
        for i in range(1, span + 1):
            rt.replay_bitmap[(cur + i) & (words - 1)] = 0
        rt.replay_top = seq
    index &= words - 1
    bit = 1 << (seq & 63)
    if rt.replay_bitmap[index] & bit:
        return False
    rt.replay_bitmap[index] |= bit
    return True


def replay_fresh(rt, counter: int, bits: int = abi.REPLAY_BITS) -> bool:
    """Mirror of replay.h:jvpn_replay_fresh: would ``counter`` be accepted?
    Records nothing (the gate's check of keepalives and control messages,
    whose bodies only the daemon can verify)."""
    if counter >= abi.reject_after(bits):
        return False
    seq = counter + 1
    if abi.replay_window(bits) + seq < rt.replay_top:
        return False
    if seq > rt.replay_top:
        return True
    return not rt.replay_bitmap[(seq >> 6) & (abi.replay_words(bits) - 1)] & (1 << (seq & 63))


def seed_floor(rt, top: int, bits: int = abi.REPLAY_BITS) -> None:
    """Start a window as if every counter below ``top`` (a previous owner's
    ``replay_top``) had been seen: a handed-over session cannot be replayed
    to its new gateway. Bits above ``top`` in its own word stay clear, so the
    next counters are accepted. ``top`` 0 is an empty window. Mirror of
    replay.h:jvpn_replay_seed."""
    words = abi.replay_words(bits)
    rt.replay_top = top
    for i in range(words):
        rt.replay_bitmap[i] = (1 << 64) - 1 if top else 0
    if top:
        rt.replay_bitmap[(top >> 6) & (words - 1)] = (1 << ((top & 63) + 1)) - 1


class ReplayWindow:
    """Per-direction receive window (same fields as jvpn_session_rt). The
    ring is an array of unsigned 64-bit words, not a list of Python ints
    (one object per word): the daemon holds one per session (issue 15)."""

    __slots__ = ("bits", "replay_bitmap", "replay_top")

    def __init__(self, bits: int = abi.REPLAY_BITS):
        self.bits = bits
        self.replay_top = 0
        self.replay_bitmap = array("Q", bytes(8 * abi.replay_words(bits)))

    def accept(self, counter: int) -> bool:
        return replay_accept(self, counter, self.bits)

    def fresh(self, counter: int) -> bool:
        """Would ``counter`` be accepted? Records nothing."""
        return replay_fresh(self, counter, self.bits)


DEFAULT_CONTROL_WINDOW = 128  # the policy's security.replay_window_size default


def window_bits(size: int) -> int:
    """The ring size whose guaranteed window (bits - 64) holds ``size``
    counters: a power of two, at least 128."""
    bits = 128
    while bits - 64 < size:
        bits *= 2
    return bits


class ControlWindow(ReplayWindow):
    """The daemon's control-plane window of one session: at least ``size``
    counters remembered (the policy's security.replay_window_size). Marked
    only after the message's AEAD / HMAC verified. ``fresh`` asks without
    marking."""

    __slots__ = ()

    def __init__(self, size: int = DEFAULT_CONTROL_WINDOW):
        super().__init__(window_bits(size))


class ControlWindows:
    """One ControlWindow per session, for the sessions that sent control
    messages lately: at most ``capacity`` (the least recently used is
    forgotten; what protects a reattach across that, and across restarts,
    is the record's reattach sequence and the one-shot path challenge)."""

    def __init__(self, size: int = DEFAULT_CONTROL_WINDOW, capacity: int = 65536):
        self.size, self.capacity = size, capacity
        self._windows: OrderedDict[int, ControlWindow] = OrderedDict()

    def fresh(self, sid: int, counter: int) -> bool:
        w = self._windows.get(sid)
        return w is None or w.fresh(counter)

    def mark(self, sid: int, counter: int) -> bool:
        """Record a verified counter; False if it was not fresh."""
        w = self._windows.get(sid)
        if w is None:
            while len(self._windows) >= self.capacity:
                self._windows.popitem(last=False)
            w = self._windows[sid] = ControlWindow(self.size)
        else:
            self._windows.move_to_end(sid)
        return w.accept(counter)
