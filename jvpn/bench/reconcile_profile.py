"""Where a restart's reconcile spends its time (issue 15): a profiling
harness, not a timed test.

    sudo nice -n 15 .venv/bin/python -m jvpn.bench.reconcile_profile 100000 [out.prof]
    sudo nice -n 15 .venv/bin/python -m jvpn.bench.reconcile_profile 1000000 --plain

(``--plain``: the unprofiled run only, the honest figures; at 1M the
profiled one takes several times as long. ``--aged S``: the records and
their keys made S seconds before the store is written; with S near the
policy's ``reject_after_ms`` (180 s) the keys expire during the first
checks, as at 1M, where writing the store and the reconcile take 3 min.
``PROFILE_BATCHES=1``: the timers' first three batches profiled, each.
``PROFILE_READ=1``: the store's pass alone timed first, read and decoded
without a restore; at 1M it adds half a minute before the reconcile, so
the synthetic keys are older at the first checks. ``--cli``: once
reconciled, the operator socket served and `jvpn-xdp sessions --json`
timed against it (output to /dev/null), nothing else running, then the
daemon's pages alone; ``PROFILE_CLI=FILE``: that CLI run under cProfile,
its stats in FILE, and the daemon's pages profiled too; ``CLI_OTHER=DIR``
``CLI_ROUNDS=K``: another tree's CLI (an exported main) against the same
daemon, alternating with this tree's, K rounds.)

The `bench scale` lab (jvpn/bench/scale_lab.py): a namespace, the gate
attached with room for N sessions, N synthetic sessions in a fresh SQLite
store, their peers file. Then, inside the namespace, a child process
builds the gateway exactly as `gateway up` does (jvpn/gateway/build.py:
the real XdpGate over the pinned maps) and runs what ``Gateway.start``
runs before serving (the follower armed, reconcile, the revocation of
unconfigured peers) under cProfile; it prints the seconds and µs per
session of each, and the profile's top entries (cumulative and own time).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

from jvpn.bench.scale_lab import ScaleLab, start_timeout_s

TOP = 35  # profile lines printed per ordering
DRAIN_LIMIT_S = 60.0  # the timers' first checks run back to back at most this long
PAGE = 10_000  # rows per page, as the CLI asks (jvpn_cli/views.py SESSIONS_PAGE)


def _built(config_path: str):
    """The gateway as `gateway up` builds it, its follower armed (Gateway.start's first step)."""
    from jvpn.config import load_gateway_config  # noqa: PLC0415
    from jvpn.gate.paths import GatePaths  # noqa: PLC0415
    from jvpn.gateway.build import build_gateway  # noqa: PLC0415

    cfg = load_gateway_config(config_path)
    paths = GatePaths(Path(os.environ["JVPN_PIN_ROOT"]), Path(os.environ["JVPN_RUN_DIR"]))
    gw = build_gateway(cfg, tun_name="jvpn-prof", paths=paths)
    gw.follower.arm()
    return gw


def run_child(config_path: str, out: str) -> None:
    """In the lab's namespace: build, reconcile under cProfile, report."""
    gw = _built(config_path)
    prof = cProfile.Profile()
    started = time.perf_counter()
    prof.enable()
    gw.reconcile()
    reconciled = time.perf_counter()
    gw.revoke_orphans()
    time_pages(gw)
    prof.disable()
    ended = time.perf_counter()
    n = max(len(gw.table.sessions), 1)
    print(f"sessions {len(gw.table.sessions)}: reconcile {reconciled - started:.2f} s "
          f"({(reconciled - started) / n * 1e6:.1f} us/session, profiled), "
          f"revoke_orphans and pages {ended - reconciled:.2f} s", flush=True)
    prof.dump_stats(out)
    stats = pstats.Stats(out)
    for order in ("cumulative", "tottime"):
        stats.sort_stats(order).print_stats(TOP)


def run_unprofiled(config_path: str) -> None:
    """The same start, without the profiler's overhead: the honest figure."""
    gw = _built(config_path)
    if os.environ.get("PROFILE_NO_GC"):
        import gc  # noqa: PLC0415

        gc.disable()
    if os.environ.get("PROFILE_READ"):
        _time_the_read(gw)
    sampler = _Sampler(os.environ["PROFILE_SAMPLE"]) if os.environ.get("PROFILE_SAMPLE") else None
    started, cpu = time.perf_counter(), time.process_time()
    if sampler is not None:
        with sampler:
            gw.reconcile()
    else:
        gw.reconcile()
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    n = max(len(gw.table.sessions), 1)
    # the process's CPU time too (user and system, every thread): on this
    # shared machine the wall time moves with the others' load far more
    print(f"sessions {len(gw.table.sessions)}: reconcile {took:.2f} s "
          f"({took / n * 1e6:.1f} us/session, not profiled; CPU {cpu:.2f} s, "
          f"{cpu / n * 1e6:.1f} us/session)", flush=True)
    if os.environ.get("PROFILE_LISTING"):
        time_the_listing(gw, n)
        return
    # as in `gateway up`: the timer thread ticks from the start (a restart
    # schedules each restored session when its timers can first fire)
    due = len(gw.table.timers)
    holds = _BatchHolds(gw)
    ticking = _TimerThread(gw)
    ticking.start()
    _print_pages(f"while the timer thread ticks ({due} sessions scheduled)", time_pages(gw), n)
    ticking.stop()
    left_s, ticks = drain_timers(gw)
    print(f"the timers' first checks: {left_s:.2f} s more ({ticks} ticks) once the "
          f"pages ended{' (stopped there: still due)' if left_s >= DRAIN_LIMIT_S else ''}",
          flush=True)
    print(f"the timers' batches (each one hold of the control lock): {holds}", flush=True)
    _print_pages("with the timer thread stopped", time_pages(gw), n)


class _Sampler:
    """``PROFILE_SAMPLE=FILE``: the unprofiled reconcile's stacks sampled
    every SAMPLE_US of its CPU time (a profiling timer's signal, no
    per-call hook: the shares of the honest run, not cProfile's, which
    inflate call-heavy code); each function's share of the samples, with
    its callees (inclusive) and alone (exclusive), to FILE."""

    SAMPLE_US = 500

    def __init__(self, out: str):
        from collections import Counter  # noqa: PLC0415

        self.out, self.inclusive, self.exclusive, self.samples = out, Counter(), Counter(), 0

    def _sample(self, _signum, frame) -> None:
        self.samples += 1
        seen = set()
        leaf = True
        while frame is not None:
            code = frame.f_code
            key = f"{code.co_filename.rsplit('/jvpn/', 1)[-1]}:{code.co_name}"
            if leaf:
                self.exclusive[key] += 1
                leaf = False
            if key not in seen:
                seen.add(key)
                self.inclusive[key] += 1
            frame = frame.f_back

    def __enter__(self):
        import signal  # noqa: PLC0415

        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.SAMPLE_US / 1e6, self.SAMPLE_US / 1e6)
        return self

    def __exit__(self, *_exc):
        import signal  # noqa: PLC0415

        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_DFL)
        n = max(self.samples, 1)
        with open(self.out, "w") as f:
            f.write(f"{self.samples} samples, every {self.SAMPLE_US} us of CPU\n")
            for title, counts in (("inclusive", self.inclusive), ("exclusive", self.exclusive)):
                f.write(f"\n{title}:\n")
                for key, c in counts.most_common(60):
                    f.write(f"{100 * c / n:6.1f}%  {key}\n")


def time_the_listing(gw, n: int) -> None:
    """``--cli``: `jvpn-xdp sessions --json` against this gateway's operator
    socket (served by a thread here, as the daemon's "operator" thread), the
    timers not ticking; then the daemon's pages alone. ``PROFILE_CLI``: the
    CLI under cProfile (stats to that file) and the pages profiled.
    ``CLI_OTHER=DIR``: another tree's CLI (an exported main) too, against
    the same daemon, alternating with this one's ``CLI_ROUNDS`` times (the
    load of a shared machine drifts less within one lab than between two)."""
    import threading  # noqa: PLC0415

    stop = threading.Event()
    serving = threading.Thread(target=gw.operator.serve, args=(stop,), daemon=True)
    serving.start()
    prof_to = os.environ.get("PROFILE_CLI")
    cli = [sys.executable, *(["-m", "cProfile", "-o", prof_to] if prof_to else []),
           "-m", "jvpn_cli.main", "sessions", "--json"]
    trees = [("", None)]
    if os.environ.get("CLI_OTHER"):
        trees.append((f" [{os.environ['CLI_OTHER']}]", _other_tree(os.environ["CLI_OTHER"])))
    for _round in range(int(os.environ.get("CLI_ROUNDS", "1"))):
        for label, env in trees:
            took, cli_cpu, ours, rc = _run_cli(cli, env)
            # CPU time too: on a loaded machine the wall time is the others' as much
            print(f"`sessions --json`{label}{' (profiled)' if prof_to else ''}: {took:.2f} s "
                  f"({took / n * 1e6:.1f} us/row), exit {rc}; CPU: the CLI "
                  f"{cli_cpu:.2f} s, the daemon's pages {ours:.2f} s", flush=True)
    stop.set()
    serving.join()
    if prof_to:
        pstats.Stats(prof_to).sort_stats("cumulative").print_stats(TOP)
        pstats.Stats(prof_to).sort_stats("tottime").print_stats(TOP)
        prof = cProfile.Profile()
        prof.enable()
    _print_pages("alone", time_pages(gw), n)
    if prof_to:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(TOP)


def _other_tree(tree: str) -> dict:
    """The environment that runs TREE's code with this interpreter: its
    directory first, the editable install's finder (this tree) dropped."""
    import tempfile  # noqa: PLC0415

    shim = tempfile.mkdtemp(prefix="jvpn-cli-other-")
    Path(shim, "sitecustomize.py").write_text(
        "import sys\nsys.meta_path[:] = [f for f in sys.meta_path "
        "if 'editable' not in repr(f).lower()]\n")
    return {**os.environ, "PYTHONPATH": f"{shim}:{tree}"}


def _run_cli(cli: list[str], env: dict | None) -> tuple[float, float, float, int]:
    """(wall s, the CLI's CPU s, this process's CPU s meanwhile, exit status)."""
    import resource  # noqa: PLC0415

    was, ours = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time()
    started = time.perf_counter()
    cwd = env["PYTHONPATH"].rsplit(":", 1)[1] if env else None
    done = subprocess.run(cli, stdout=subprocess.DEVNULL, check=False, env=env, cwd=cwd)
    took = time.perf_counter() - started
    ours, now = time.process_time() - ours, resource.getrusage(resource.RUSAGE_CHILDREN)
    cli_cpu = now.ru_utime + now.ru_stime - was.ru_utime - was.ru_stime
    return took, cli_cpu, ours, done.returncode


def _time_the_read(gw) -> None:
    """The store's pass alone (Store.restorable: rows read and decoded into
    records), before the reconcile: its share of the reconcile's time
    (``PROFILE_READ=1``)."""
    started, cpu = time.perf_counter(), time.process_time()
    n = sum(1 for _ in gw.store.restorable())
    took, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"the store's pass alone ({n} records read and decoded): {took:.2f} s, "
          f"CPU {cpu:.2f} s ({cpu / max(n, 1) * 1e6:.1f} us/record)", flush=True)


class _BatchHolds:
    """How long each of the timers' batches held the control lock (the
    gateway's ``_timer_batch`` runs with it held), and what it popped."""

    def __init__(self, gw):
        self.took: list[float] = []
        batch = gw._timer_batch

        def timed(tick):
            started = time.perf_counter()
            prof = None
            if os.environ.get("PROFILE_BATCHES") and len(self.took) < 3:
                prof = cProfile.Profile()
                prof.enable()
            try:
                return batch(tick)
            finally:
                self.took.append(time.perf_counter() - started)
                if prof is not None:
                    prof.disable()
                    pstats.Stats(prof).sort_stats("cumulative").print_stats(40)

        gw._timer_batch = timed

    def __str__(self) -> str:
        took = sorted(self.took)
        if not took:
            return "none"
        pick = [took[min(int(len(took) * q), len(took) - 1)] * 1e3 for q in (0.5, 0.99)]
        return (f"{len(took)} batches, {sum(took):.2f} s in all; median {pick[0]:.1f} ms, "
                f"p99 {pick[1]:.1f} ms, slowest {took[-1] * 1e3:.1f} ms "
                f"(next {', '.join(f'{t * 1e3:.0f}' for t in took[-6:-1][::-1])} ms)")


def _print_pages(when: str, pages: tuple[list[float], dict], n: int) -> None:
    took, gc_pauses = pages
    print(f"sessions pages of {PAGE} {when}: {sum(took):.2f} s in all "
          f"({sum(took) / n * 1e6:.1f} us/row), first {took[0]:.2f} s (its snapshot "
          f"and sort), slowest of the others {max(took[1:], default=0):.2f} s; "
          f"collector (any thread) by generation: {gc_pauses}", flush=True)


class _GcPauses:
    """The cyclic collector's passes meanwhile: {generation: [count, total s, longest s]}."""

    def __init__(self):
        import gc  # noqa: PLC0415

        self.gc, self.by_gen, self._began = gc, {}, 0.0

    def __enter__(self):
        self.gc.callbacks.append(self._seen)
        return self.by_gen

    def __exit__(self, *_exc):
        self.gc.callbacks.remove(self._seen)
        for got in self.by_gen.values():
            got[1], got[2] = round(got[1], 3), round(got[2], 3)

    def _seen(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = time.perf_counter() - self._began
        got = self.by_gen.setdefault(info["generation"], [0, 0.0, 0.0])
        got[0], got[1], got[2] = got[0] + 1, got[1] + took, max(got[2], took)


class _TimerThread:
    """The gateway's timer tick (daemon.py _timer_loop: TIMER_TICK_S apart)."""

    def __init__(self, gw):
        import threading  # noqa: PLC0415

        self.gw, self.done = gw, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        from jvpn.gateway.daemon import TIMER_TICK_S  # noqa: PLC0415

        while not self.done.wait(TIMER_TICK_S):
            self.gw.run_due_timers()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def drain_timers(gw, limit_s: float = DRAIN_LIMIT_S) -> tuple[float, int]:
    """Ticks back to back until a tick leaves nothing due, or ``limit_s``
    (at 1M the synthetic sessions' heartbeat window, 5 minutes from their
    restore, ends meanwhile: the VOLATILE storm): (seconds, ticks)."""
    started, ticks = time.perf_counter(), 0
    while time.perf_counter() - started < limit_s and (
            popped := gw.table.timers.pop_due(gw.clock_ms(), limit=1,
                                                 timer=gw.table.timer_ms())):
        gw.table.timers.touch(popped[0])  # back: looked at by the tick
        ticks += 1
        gw.run_due_timers()
    return time.perf_counter() - started, ticks


def time_pages(gw) -> tuple[list[float], dict]:
    """:func:`page_times`, and the collector's passes meanwhile."""
    with _GcPauses() as pauses:
        took = page_times(gw)
    return took, pauses


def page_times(gw) -> list[float]:
    """The daemon's side of `sessions --json`: each page as the operator
    socket answers it (rows, then the reply's JSON), seconds each."""
    import json  # noqa: PLC0415

    from jvpn.gateway.operator_pages import SessionPages  # noqa: PLC0415

    pages, took, cursor = SessionPages(), [], None
    while True:
        started = time.perf_counter()
        more = {"cursor": cursor} if cursor else {}
        # as the CLI asks (a daemon before columns ignores them: dicts)
        rows, cursor = pages.page(gw, {"limit": PAGE, "kernel_rx": False, "columns": True,
                                       **more})
        json.dumps({"rows": rows, "next": cursor}, default=str)
        took.append(time.perf_counter() - started)
        if not cursor:
            return took


def _option(argv: list[str], name: str) -> float:
    """``name S`` taken out of ``argv`` (0 without it); ``--plain`` too."""
    value = 0.0
    if name in argv:
        at = argv.index(name)
        value = float(argv[at + 1])
        del argv[at:at + 2]
    argv[:] = [a for a in argv if a != "--plain"]
    return value


def main(argv: list[str]) -> None:
    if argv[:1] == ["child"]:
        run_child(argv[1], argv[2])
        return
    if argv[:1] == ["plain"]:
        run_unprofiled(argv[1])
        return
    plain_only = "--plain" in argv
    if "--cli" in argv:
        argv.remove("--cli")
        os.environ["PROFILE_LISTING"] = "1"
    aged_s = _option(argv, "--aged")
    n = int(argv[0])
    out = argv[1] if len(argv) > 1 else "/tmp/reconcile.prof"
    lab = ScaleLab(n, progress=lambda p: print(p, file=sys.stderr, flush=True))
    lab.now_ms -= int(aged_s * 1000)
    try:
        lab.up()
        print(f"store written in {lab.fill_store()} s", file=sys.stderr, flush=True)
        conf = str(lab.tmp / "state.conf")
        runs = [["plain", conf]] + ([] if plain_only else [["child", conf, out]])
        for args in runs:
            # the maps the first run wrote are pinned: reconcile again on them, as a restart
            subprocess.run(lab.lab.cmd("gw", "nice", "-n", "15", sys.executable, "-m",
                                       "jvpn.bench.reconcile_profile", *args),
                           env=lab.env, timeout=start_timeout_s(n) * 10, check=False)
    finally:
        lab.down()


if __name__ == "__main__":
    main(sys.argv[1:])
