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
alternates one set of the reference with one of size N, ``PAIRS`` times;
each size's ratio is the median of the pairs' ratios (a pair's two sets
are a few milliseconds apart), with their range.
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

Run = Callable[[], dict]


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


def xdp_figures(pin_dir: Path, seed: scale_store.Seed, n: int, i: int,
                first_counter: int = FIRST_COUNTER) -> dict:
    """One set of XDP figures with session ``i``'s packets, counters from
    ``first_counter`` on (never used before for that session)."""
    fd = xdp_link.pinned_prog_fd(pin_dir)
    if fd is None:
        raise JvpnError(f"no program pinned in {pin_dir}")
    try:
        keys = seed.session_keys(scale_store.session_id(i))
        valid = [data_frame(seed, i, first_counter + c, keys=keys)
                 for c in range(VALID_SINGLES)]
        results = [testrun.run(fd, f) for f in valid]
        _require_action(results, "XDP_PASS", "a session's DATA packet")
        unknown = data_frame(seed, i, first_counter, sid=scale_store.session_id(n + 7), keys=keys)
        _require_action([testrun.run(fd, unknown)], "XDP_DROP", "an unknown session's packet")
        unknown_ns = statistics.median(testrun.run(fd, unknown, UNKNOWN_REPEAT).duration_ns
                                       for _ in range(UNKNOWN_BATCHES))
        return {"xdp_valid_ns": statistics.median(r.duration_ns for r in results),
                "xdp_unknown_ns": round(unknown_ns, 1)}
    finally:
        os.close(fd)


def _require_action(results: list, action: str, what: str) -> None:
    wrong = [r.action_name for r in results if r.action_name != action]
    if wrong:
        raise JvpnError(f"{what} got {wrong[0]} from the gate, not {action} "
                        f"({len(wrong)} of {len(results)})")


class XdpSubject:
    """A lab's pinned gate and the ``n`` synthetic sessions its maps hold.
    Each set takes the next session (its own packet burst untouched) and,
    once every session had a turn, counters above the last round's: no
    packet is ever a replay."""

    def __init__(self, pin_dir: Path, seed: scale_store.Seed, n: int,
                 measure: Callable[..., dict] = xdp_figures):
        self.pin_dir, self.seed, self.n, self.measure = pin_dir, seed, n, measure
        self._turn = n // 2  # away from session n // 3, the restart's client's

    def run(self) -> dict:
        i, rounds = self._turn % self.n, self._turn // self.n
        self._turn += 1
        return self.measure(self.pin_dir, self.seed, self.n, i,
                            FIRST_COUNTER + rounds * VALID_SINGLES)


def paired(reference: Run, subject: Run, pairs: int = PAIRS) -> dict:
    """``pairs`` times a set of the reference, then one of the subject; per
    figure the median of the pairs' ratios (subject over reference), their
    range and every pair's ratio, and the median ns of each side's sets
    (``xdp_valid_ns`` the subject's, ``xdp_valid_ref_ns`` the reference's).
    A pair whose reference figure is 0 gives no ratio."""
    refs, subs = [], []
    for _ in range(pairs):
        refs.append(reference())
        subs.append(subject())
    out: dict = {"xdp_pairs": pairs}
    for name in FIGURES:
        key = f"{name}_ns"
        ratios = [s[key] / r[key] for r, s in zip(refs, subs, strict=True) if r[key] > 0]
        out[key] = statistics.median(s[key] for s in subs)
        out[f"{name}_ref_ns"] = statistics.median(r[key] for r in refs)
        out[f"{name}_ratio"] = round(statistics.median(ratios), 3) if ratios else None
        out[f"{name}_ratio_range"] = ([round(min(ratios), 3), round(max(ratios), 3)]
                                      if ratios else None)
        out[f"{name}_pair_ratios"] = [round(x, 3) for x in ratios]
    return out


def solo(subject: Run, sets: int = PAIRS) -> dict:
    """The reference size itself: ``sets`` sets, the median ns of each
    figure, its ratio 1.0 (to itself) when it has one."""
    runs = [subject() for _ in range(sets)]
    out: dict = {"xdp_pairs": 0}
    for name in FIGURES:
        key = f"{name}_ns"
        out[key] = statistics.median(r[key] for r in runs)
        out[f"{name}_ratio"] = 1.0 if out[key] > 0 else None
    return out
