"""RFC 6479 sliding-window anti-replay, WireGuard's counter_validate(): the
one algorithm of bpf/include/replay.h, in Python. The reference model uses it
on the kernel's struct layout; the client and the userspace gate on a
``ReplayWindow``."""

from __future__ import annotations

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
    """Per-direction receive window (same fields as jvpn_session_rt)."""

    __slots__ = ("bits", "replay_bitmap", "replay_top")

    def __init__(self, bits: int = abi.REPLAY_BITS):
        self.bits = bits
        self.replay_top = 0
        self.replay_bitmap = [0] * abi.replay_words(bits)

    def accept(self, counter: int) -> bool:
        return replay_accept(self, counter, self.bits)
