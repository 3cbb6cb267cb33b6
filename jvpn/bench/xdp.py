"""`jvpn-xdp bench xdp`: nanoseconds per packet for each verdict path of the
XDP program, next to an empty XDP program, measured in one run with
BPF_PROG_TEST_RUN (no interface, no traffic).

Method (docs/benchmarks.md):
- paths that give the same verdict when the same frame is run again are
  timed with ``repeat`` (the kernel's own average over R runs, median of a
  few batches);
- ``data_valid`` cannot be repeated (the second run is a replay), so it is
  timed one distinct frame per call, then the same frames again (now replays,
  same calls, same cache state): data_valid = drop_replay (repeat-averaged)
  + (valid single-call - replay single-call);
- the raw single-call figures are reported too.

Issue 13 (the gate during a rekey): the same data_valid estimate for the
single-key element (one phase accepted: before a rekey, and after its
overlap) and for an element accepting both phases (a rekey's overlap), for
data under the current phase and under the previous one, interleaved in
rounds in the same run, with the repeat-averaged replay drop of each (the
same checks but the window write: the steadier figure); ``rekey`` gives
them as ratios of the single-key figures. ``drop_key_phase`` is an
old-phase packet after the overlap.
"""

from __future__ import annotations

import os
import platform
import statistics
import uuid
from collections.abc import Callable
from pathlib import Path

from jvpn import wire
from jvpn.gate import abi, testrun
from jvpn.gate.attach import unpin
from jvpn.gate.config import GateConfig
from jvpn.gate.loader import BuildOptions, Program, load_plain, measure_ns_per_jiffy
from jvpn.lab import frames
from jvpn.lab.addresses import TESTRUN_CLIENT_IP, TESTRUN_CLIENT_PORT, TESTRUN_GW_IP

BASELINE_PROGRAM = """
#include <uapi/linux/bpf.h>
int xdp_main(struct xdp_md *ctx) { return XDP_PASS; }
"""

KEY = bytes(range(16))  # key phase 0 (the epoch before a rekey)
KEY1 = bytes(range(16, 32))  # key phase 1 (the epoch after it)
CLIENT, CLIENT_PORT, GW = TESTRUN_CLIENT_IP, TESTRUN_CLIENT_PORT, TESTRUN_GW_IP
SID = 0x0123456789ABCDEF  # one phase accepted
SID_OVERLAP = SID ^ 2  # both phases accepted: a rekey's overlap
# name -> (session, header key, flags): valid data, one configuration each
REKEY_PATHS = {"data_valid_single_key": (SID, KEY, 0),
               "data_valid_overlap_current": (SID_OVERLAP, KEY1, abi.FLAG_KEY_PHASE),
               "data_valid_overlap_previous": (SID_OVERLAP, KEY, 0)}


def _frame(counter: int, *, sid: int = SID, key: bytes = KEY, sport: int = CLIENT_PORT,
           t: int = abi.MSG_DATA, payload: bytes = b"\0" * 64, flags: int = 0) -> bytes:
    msg = wire.message(wire.Header(type=t, session_id=sid, counter=counter, flags=flags), key,
                       payload)
    return frames.udp_frame(CLIENT, sport, GW, abi.DEFAULT_PORT, msg)


def _element(**keys) -> abi.Session:
    return abi.Session(**keys, state=abi.STATE_ATTACHED, bind_family=abi.AF_INET,
                       bind_addr=abi.addr_words(CLIENT), bind_port=abi.port_word(CLIENT_PORT))


def _repeat_ns(prog_fd: int, frame: bytes, repeat: int, batches: int) -> float:
    return statistics.median(testrun.run(prog_fd, frame, repeat).duration_ns
                             for _ in range(batches))


def _single_ns(prog_fd: int, frames_: list[bytes]) -> float:
    return statistics.median(testrun.run(prog_fd, f).duration_ns for f in frames_)


def run_xdp_bench(repeat: int = 200_000, batches: int = 5, singles: int = 20_000,
                  progress: Callable[[str], None] = lambda _: None) -> dict:
    pins = Path("/sys/fs/bpf") / f"jvpn-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    baseline_bpf, baseline_fd = load_plain(BASELINE_PROGRAM)
    prog = Program(pins, BuildOptions())
    try:
        return _measure(prog, baseline_fd, repeat, batches, singles, progress)
    finally:
        prog.close()
        baseline_bpf.cleanup()
        unpin(pins)


def _measure(prog: Program, baseline_fd: int, repeat: int, batches: int, singles: int,
             progress: Callable[[str], None]) -> dict:
    fd = prog.prog_fd
    tick = measure_ns_per_jiffy()
    unlimited = GateConfig(session_pps=0, session_bytes_per_sec=0, source_control_pps=0,
                           global_control_pps=0, ns_per_jiffy=tick)
    with prog.maps() as maps:
        maps.write_config(unlimited.to_abi())
        maps.put_session(SID, _element(tag_key=wire.key_words(KEY),
                                       key_phases=abi.key_phase_bit(0)))
        maps.put_session(SID_OVERLAP, _element(tag_key=wire.key_words(KEY),
                                               tag_key_phase1=wire.key_words(KEY1),
                                               key_phases=abi.KEY_PHASES_ALL))

        progress("baseline")
        baseline = _repeat_ns(baseline_fd, _frame(1), repeat, batches)
        baseline_single = _single_ns(baseline_fd, [_frame(1)] * singles)

        progress("data_valid")
        valid = [_frame(c) for c in range(1, singles + 1)]
        data_single = _single_ns(fd, valid)

        replay_single = _single_ns(fd, valid)

        paths = {}
        for name, f in _repeatable_frames(valid[0]).items():
            progress(name)
            paths[name] = _repeat_ns(fd, f, repeat, batches)

        paths["data_valid"] = paths["drop_replay"] + max(data_single - replay_single, 0.0)
        paths.update(_rekey_paths(fd, singles, repeat, progress))

        progress("drop_rate_limited")
        maps.write_config(GateConfig(source_control_pps=1, source_control_burst=1,
                                     global_control_pps=0, ns_per_jiffy=tick).to_abi())
        hs = _frame(0, sid=0, t=abi.MSG_HANDSHAKE_INIT)
        testrun.run(fd, hs)  # the one the bucket allows
        paths["drop_rate_limited"] = _repeat_ns(fd, hs, repeat, batches)
        counters = maps.read_counters()

    return _report(baseline, baseline_single, data_single, replay_single, paths, counters,
                   repeat=repeat, batches=batches, singles=singles)


def _rekey_paths(fd: int, singles: int, repeat: int,
                 progress: Callable[[str], None], rounds: int = 5) -> dict[str, float]:
    """For the single-key element and the overlap element under each phase:
    drop_replay (repeat-averaged: every check of valid data but the window
    write) and data_valid (same method as above), interleaved: each round
    times every configuration on fresh counters, in a rotated order, so
    drift on a shared machine hits all three alike; median of the rounds."""
    progress("rekey overlap")
    per_round = max(singles // rounds, 10)
    counters = {SID: singles + 1, SID_OVERLAP: 1}  # above what data_valid used
    replays: dict[str, list[float]] = {name: [] for name in REKEY_PATHS}
    valids: dict[str, list[float]] = {name: [] for name in REKEY_PATHS}
    names = list(REKEY_PATHS)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sid, key, flags = REKEY_PATHS[name]
            first = counters[sid]
            counters[sid] += per_round
            valid = [_frame(c, sid=sid, key=key, flags=flags)
                     for c in range(first, first + per_round)]
            diff = _single_ns(fd, valid) - _single_ns(fd, valid)  # valid - replay
            replays[name].append(_repeat_ns(fd, valid[-1], repeat, 1))
            valids[name].append(replays[name][-1] + max(diff, 0.0))
    out = {name: statistics.median(v) for name, v in valids.items()}
    out.update({_replay_name(name): statistics.median(v) for name, v in replays.items()})
    return out


def _replay_name(data_valid_name: str) -> str:
    return data_valid_name.replace("data_valid", "drop_replay")


def _repeatable_frames(replayed: bytes) -> dict[str, bytes]:
    """One frame per verdict path whose verdict does not change when the
    same frame runs again (so a repeat-averaged run measures that path)."""
    return {
        "drop_unknown_session": _frame(1, sid=SID ^ 1),
        "drop_malformed": frames.udp_frame(CLIENT, CLIENT_PORT, GW, abi.DEFAULT_PORT,
                                           b"\x04" * 20),
        "drop_bad_tag": _frame(10**9, key=bytes(16)),
        "drop_wrong_binding": _frame(10**9, sport=CLIENT_PORT + 1),
        "drop_replay": replayed,
        "drop_key_phase": _frame(10**9, key=KEY1, flags=abi.FLAG_KEY_PHASE),  # after an overlap
        "pass_other": frames.tcp_frame(CLIENT, GW),
    }


def _report(baseline: float, baseline_single: float, data_single: float, replay_single: float,
            paths: dict, counters: dict, *, repeat: int, batches: int, singles: int) -> dict:
    overhead = max(baseline_single - baseline, 0.0)
    return {
        "baseline_ns": round(baseline, 2),
        "paths": {k: round(v, 2) for k, v in paths.items()},
        "ratios": {k: round(v / baseline, 2) if baseline else None for k, v in paths.items()},
        "rekey": _rekey_ratios(paths),
        "single_call": {"baseline_ns": baseline_single, "data_valid_ns": data_single,
                        "drop_replay_ns": replay_single,
                        "timer_overhead_ns": round(overhead, 2)},
        "method": "BPF_PROG_TEST_RUN; repeat-averaged where the verdict repeats; data_valid "
                  "= drop_replay + (valid - replay), both single-call on the same frames",
        "repeat": repeat,
        "batches": batches,
        "singles": singles,
        "verdicts_seen": {k: v["packets"] for k, v in counters.items() if v["packets"]},
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
    }


def _rekey_ratios(paths: dict) -> dict:
    """The overlap element against the single-key one, measured interleaved
    by the same method: valid data, and the replay drop (every check of
    valid data but the window write; repeat-averaged, the steadier figure)."""
    out = {}
    for prefix in ("data_valid", "drop_replay"):
        single = paths[f"{prefix}_single_key"]
        out[f"{prefix}_single_key_ns"] = round(single, 2)
        for phase in ("current", "previous"):
            ns = paths[f"{prefix}_overlap_{phase}"]
            out[f"{prefix}_overlap_{phase}_ns"] = round(ns, 2)
            out[f"{prefix}_overlap_{phase}_vs_single_key"] = (
                round(ns / single, 3) if single else None)
    return out


# ---- where the time goes: one primitive per tiny program, same harness ----
_COMPONENT_PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include "siphash.h"
struct locked { struct bpf_spin_lock lock; __u32 pad; __u64 x; };
BPF_F_TABLE("hash", __u64, struct locked, h, 65536, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(c, __u64, 16);
int xdp_main(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u64 *w = data + 42;
	__u64 key = 1;
	struct locked *v;

	if ((void *)(w + 4) > end)
		return XDP_PASS;
	BODY
	return XDP_PASS;
}
"""
COMPONENTS = {
    "empty_program": "",
    "percpu_counter": "int i = 3; __u64 *n = c.lookup(&i); if (n) (*n)++;",
    "hash_lookup_miss": "key = w[1]; if (h.lookup(&key)) return XDP_DROP;",
    "hash_lookup_hit": "v = h.lookup(&key); if (!v) return XDP_DROP;",
    "hash_hit_spin_lock": "v = h.lookup(&key); if (!v) return XDP_DROP; "
                          "bpf_spin_lock(&v->lock); v->x++; bpf_spin_unlock(&v->lock);",
    "siphash_24_bytes": "if (jvpn_siphash24_24(1, 2, w[0], w[1], w[2]) == w[3]) return XDP_DROP;",
    "ktime_get_coarse_ns": "if (bpf_ktime_get_coarse_ns() == 5) return XDP_DROP;",
    "jiffies64": "if (bpf_jiffies64() == 5) return XDP_DROP;",
}


def run_cost_breakdown(repeat: int = 200_000, batches: int = 5) -> dict:
    """ns per run of each primitive's program; subtract empty_program for
    the primitive's own cost."""
    import ctypes

    frame = _frame(1)
    out = {}
    for name, body in COMPONENTS.items():
        b, fd = load_plain(_COMPONENT_PROGRAM.replace("BODY", body))
        try:
            b[b"h"][ctypes.c_uint64(1)] = b[b"h"].Leaf()
            out[name] = _repeat_ns(fd, frame, repeat, batches)
        finally:
            b.cleanup()
    return out
