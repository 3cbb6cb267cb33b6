"""`bench scale`'s XDP figures (issue 15: "XDP valid-data cost at 1M
sessions ≤ 1.3× its cost at 1k, same run"), side by side.

Each figure is BPF_PROG_TEST_RUN of a lab's attached, pinned program
against its live maps (:func:`xdp_figures`): a DATA packet of a session in
the map, 1,000 single calls (each a new counter: a repeat would be a
replay; 1,000 is under the session's packet burst, GateConfig.
session_burst_packets), their median; and a packet of an unknown session
id, the median of 5 runs of 20,000 repetitions.

A ratio of two such figures taken minutes apart, in two labs, measures how
fast this machine (a VM, other work on its 2 cores) was at each moment as
much as the maps' size: the 1k figure moved twofold between two sets a
minute apart (docs/benchmarks.md). So the smallest size's lab stays up as
the reference while each larger size is measured, and :func:`paired`
takes ``PAIRS`` pairs, each a set of the reference and one of size N
with their test runs interleaved call by call (:func:`interleaved`: the
reference's DATA packet k, size N's, ...; microseconds apart); each
size's ratio is the median of the pairs' ratios, with their range. (Sets
alternated whole, 15 ms each, were not enough: the machine's slow
moments, 2x for one set to a minute, once fell on 5 of 9 reference sets.)
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path

from jvpn import wire
from jvpn.bench import scale_store
from jvpn.errors import JvpnError
from jvpn.gate import abi, testrun, xdp_link
from jvpn.lab import frames
from jvpn.lab.addresses import GW_IP, PORT

VALID_SINGLES = 1_000  # under the session's packet burst (GateConfig.session_burst_packets)
UNKNOWN_REPEAT, UNKNOWN_BATCHES = 20_000, 5
FIRST_COUNTER = 1_000  # above the stored replay ceiling (scale_store.CEILING)
PAIRS = 9  # reference set, size-N set, ...: odd, the median is one pair's
FIGURES = ("xdp_valid", "xdp_unknown")

def data_frame(seed: scale_store.Seed, i: int, counter: int, sid: int | None = None,
               keys=None) -> bytes:
    """A DATA packet of session ``i`` from its bound address, tagged under
    its header key (``sid``: another id, an unknown session; ``keys``: the
    session's keys, when the caller has them already)."""
    keys = keys or seed.session_keys(scale_store.session_id(i))
    b = scale_store.binding(i)
    hdr = wire.Header(type=abi.MSG_DATA, session_id=sid or keys.session_id, counter=counter)
    return frames.udp_frame(b.addr, b.port, GW_IP, PORT,
                            wire.message(hdr, keys.hdr_c2s, b"\0" * 64))


class XdpSet:
    """One set's packets on one lab's pinned program: session ``i``'s
    VALID_SINGLES DATA packets (counters from ``first_counter`` on, never
    used before for that session) and a packet of an unknown session id.
    A context manager: the program's descriptor is closed on the way out."""

    def __init__(self, pin_dir: Path, seed: scale_store.Seed, n: int, i: int,
                 first_counter: int = FIRST_COUNTER):
        keys = seed.session_keys(scale_store.session_id(i))
        self.frames = [data_frame(seed, i, first_counter + c, keys=keys)
                       for c in range(VALID_SINGLES)]
        self.unknown_frame = data_frame(seed, i, first_counter,
                                        sid=scale_store.session_id(n + 7), keys=keys)
        self.fd = xdp_link.pinned_prog_fd(pin_dir)
        if self.fd is None:
            raise JvpnError(f"no program pinned in {pin_dir}")

    def __enter__(self) -> XdpSet:
        return self

    def __exit__(self, *_exc) -> None:
        os.close(self.fd)

    def valid(self, k: int) -> int:
        """The kernel's ns for DATA packet ``k`` (one call: a repeat would be a replay)."""
        return _checked(testrun.run(self.fd, self.frames[k]), "XDP_PASS",
                        "a session's DATA packet")

    def unknown(self) -> float:
        """The kernel's ns per run, UNKNOWN_REPEAT runs of the unknown id's packet."""
        return _checked(testrun.run(self.fd, self.unknown_frame, UNKNOWN_REPEAT), "XDP_DROP",
                        "an unknown session's packet")


def _checked(result, action: str, what: str) -> int:
    if result.action_name != action:
        raise JvpnError(f"{what} got {result.action_name} from the gate, not {action}")
    return result.duration_ns


def interleaved(sets: list) -> list[dict]:
    """Each set's figures, their test runs alternated call by call (the
    first set's DATA packet k, the second's, ...; then the unknown id's
    batches likewise): whatever slows the machine for a moment (a VM's
    neighbour, a 2-core machine's other work) slows every set's runs alike."""
    valid: list[list[int]] = [[] for _ in sets]
    unknown: list[list[float]] = [[] for _ in sets]
    for k in range(VALID_SINGLES):
        for s, got in zip(sets, valid, strict=True):
            got.append(s.valid(k))
    for _ in range(UNKNOWN_BATCHES):
        for s, got in zip(sets, unknown, strict=True):
            got.append(s.unknown())
    return [{"xdp_valid_ns": statistics.median(v), "xdp_unknown_ns": round(statistics.median(u), 1)}
            for v, u in zip(valid, unknown, strict=True)]


class XdpSubject:
    """A lab's pinned gate and the ``n`` synthetic sessions its maps hold.
    Each set takes the next session (its own packet burst untouched) and,
    once every session had a turn, counters above the last round's: no
    packet is ever a replay."""

    def __init__(self, pin_dir: Path, seed: scale_store.Seed, n: int,
                 make_set: Callable[..., XdpSet] = XdpSet):
        self.pin_dir, self.seed, self.n, self.make_set = pin_dir, seed, n, make_set
        self._turn = n // 2  # away from session n // 3, the restart's client's

    def next_set(self) -> XdpSet:
        i, rounds = self._turn % self.n, self._turn // self.n
        self._turn += 1
        return self.make_set(self.pin_dir, self.seed, self.n, i,
                             FIRST_COUNTER + rounds * VALID_SINGLES)


def paired(reference: XdpSubject, subject: XdpSubject, pairs: int = PAIRS,
           interleave: Callable[[list], list[dict]] = interleaved) -> dict:
    """``pairs`` pairs, each a set of the reference and one of the subject
    with their test runs interleaved; per figure the median of the pairs'
    ratios (subject over reference), their range and every pair's ratio,
    and the median ns of each side's sets (``xdp_valid_ns`` the subject's,
    ``xdp_valid_ref_ns`` the reference's). Only the pairs that measured
    (no 0 ns figure on either side) count, and none unless half did."""
    refs, subs = [], []
    for _ in range(pairs):
        with reference.next_set() as r, subject.next_set() as s:
            ref, sub = interleave([r, s])
        refs.append(ref)
        subs.append(sub)
    out: dict = {"xdp_pairs": pairs}
    for name in FIGURES:
        key = f"{name}_ns"
        # a pair with a 0 ns figure on either side measured nothing (review
        # k20r4 F4): the figures are of the pairs that measured, and none
        # unless at least half of them did (review k20r5 F5)
        kept = [(r[key], s[key]) for r, s in zip(refs, subs, strict=True)
                if r[key] > 0 and s[key] > 0]
        if 2 * len(kept) < pairs:
            kept = []
        ratios = [s / r for r, s in kept]
        out[key] = statistics.median(s for _r, s in kept) if kept else None
        out[f"{name}_ref_ns"] = statistics.median(r for r, _s in kept) if kept else None
        out[f"{name}_ratio"] = round(statistics.median(ratios), 3) if ratios else None
        out[f"{name}_ratio_range"] = ([round(min(ratios), 3), round(max(ratios), 3)]
                                      if ratios else None)
        out[f"{name}_pair_ratios"] = [round(x, 3) for x in ratios]
    return out


def solo(subject: XdpSubject, sets: int = PAIRS,
         interleave: Callable[[list], list[dict]] = interleaved) -> dict:
    """The reference size itself: ``sets`` sets, the median ns of each
    figure over the sets that measured (none unless half did, as
    ``paired``: review k20r6 F4), its ratio 1.0 (to itself) when it has one."""
    runs = []
    for _ in range(sets):
        with subject.next_set() as s:
            runs.extend(interleave([s]))
    out: dict = {"xdp_pairs": 0}
    for name in FIGURES:
        key = f"{name}_ns"
        measured = [r[key] for r in runs if r[key] > 0]
        out[key] = statistics.median(measured) if 2 * len(measured) >= len(runs) else None
        out[f"{name}_ratio"] = 1.0 if out[key] else None
    return out
