"""`jvpn-xdp bench scale`: the gateway at 1k, 100k, 1M sessions end to end
(issue 15). For each size, a fresh lab (jvpn/bench/scale_lab.py): the gate
attached with room for N sessions, the daemon started once on an empty
store (its memory baseline) and once on a store of N synthetic sessions
of its own (jvpn/bench/scale_store.py); then:

- kernel_bytes_per_session: the pinned maps' own accounting (bpftool's
  ``bytes_memlock``), their total over N, and per map;
- daemon_bytes_per_session: the daemon's RSS once serving N sessions less
  its RSS on the empty store (same config, same peers file), over N;
- reconcile_s: the seconds its Reconciled event reports; reconcile_cpu_s
  the daemon's CPU seconds meanwhile (its ``cpu_s``, every thread): on a
  shared two-core machine the wall time moves with the others' load, the
  CPU time far less (and it is what `reconcile_profile` reports);
- xdp_valid_ns / xdp_unknown_ns: BPF_PROG_TEST_RUN of the attached, pinned
  program against the live maps: a DATA packet of a session in the map
  (distinct counters, one call each: a repeat would be a replay; 1,000 of
  them, under the session's packet burst) and one of an unknown session
  id (repeat-averaged), jvpn/bench/scale_xdp.py. Their ratios are taken
  side by side: the smallest size's lab stays up (its daemon stopped, its
  gate and maps kept) while each larger size is measured, and the sets
  pair, the smallest lab's with this size's, their test runs interleaved
  call by call, ``xdp_pairs`` (9) times:
  ``xdp_valid_ratio`` / ``xdp_unknown_ratio`` the median of the pairs'
  ratios, ``*_ratio_range`` their least and greatest, ``*_pair_ratios``
  each pair's, ``xdp_valid_ns`` / ``xdp_unknown_ns`` the median of this
  size's sets and ``xdp_valid_ref_ns`` / ``xdp_unknown_ref_ns`` of the
  reference's, of the pairs that measured (no 0 ns figure), none unless
  half did (the smallest size itself: 9 sets of its own, ratio 1.0);
  with ``daemon_cpu_during_xdp_s``, the daemon's CPU seconds meanwhile;
  ``quiet``: the same pairs again (other sessions) once the daemon used
  under 5 % of a core for half a second (``daemon_quiet_wait_s``, at most
  60 s): whether the daemon's work on the other core of a two-core machine
  (after a restore of 1M, a listing) slows the test runs;
- sessions_json_s: `jvpn-xdp sessions --json` (output to /dev/null) timed,
  then daemon_pages_s: its pages asked directly (a longer timeout); both
  first thing once serving, before the XDP test runs (the silence timers'
  storm comes 5 minutes after the restore), with the state changes
  counted while they ran.

At the largest size, a restart: SIGTERM, start again, seconds until
Reconciled and until GatewayStarted (serving), then one session's client
reattaches from a new address (jvpn/bench/scale_reattach.py): the seconds
of its exchange and from the start to its ACK.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from jvpn.bench.scale_lab import ScaleLab, start_timeout_s
from jvpn.bench.scale_reattach import ReattachClient
from jvpn.bench.scale_xdp import XdpSubject, data_frame, paired, solo  # noqa: F401 - data_frame: the tests' frames
from jvpn.errors import JvpnError
from jvpn.gateway.operator import SOCKET_NAME
from jvpn.lab.addresses import GW_IP, PORT

DEFAULT_SIZES = (1_000, 100_000, 1_000_000)
# the maps sized by --max-sessions (the others have sizes of their own)
SESSION_MAPS = ("sessions", "session_rt")
# a clean stop writes each session's exact ceiling (one transaction each):
# past this the restart is measured after a SIGKILL (a crash) instead
RESTART_STOP_S = 180
CLI_PAGE = 10_000  # rows per page, as `sessions` asks (jvpn_cli/views.py SESSIONS_PAGE)
PAGE_TIMEOUT_S = 300  # the CLI waits 10 s (jvpn/operator.py DEFAULT_TIMEOUT_S)


def run_scale_bench(sizes: list[int], progress: Callable[[str], None] = lambda _p: None,
                    lab_factory=ScaleLab, measure=None, restart_of=None) -> dict:
    """One lab per size, smallest first; the restart at the largest. The
    smallest size's lab stays up (its daemon stopped, its gate and maps
    kept) until the last size is measured: the reference each larger size's
    XDP figures are taken beside (jvpn/bench/scale_xdp.py). Every lab is
    torn down on every way out."""
    measure, restart_of = measure or measure_size, restart_of or measure_restart
    sizes = sorted(set(sizes))
    by_size, restart, up, reference = {}, {}, [], None
    try:
        for n in sizes:
            lab = lab_factory(n, progress)
            up.append(lab)
            lab.up()
            subject = XdpSubject(lab.pin_dir, lab.seed, n)
            by_size[str(n)] = measure(lab, progress, subject, reference)
            if n == sizes[-1]:
                restart = restart_of(lab, progress)
            if reference is None:
                reference = subject
                lab.stop(timeout_s=60)  # idle beside the others: no timers, no storm
            else:
                _tear_down([up.pop()], progress)
    finally:
        _tear_down(up, progress)
    return assemble(sizes, by_size, restart)


def _tear_down(labs: list, progress: Callable[[str], None]) -> None:
    """Each lab's down, the last made first, whatever the one before raised."""
    if not labs:
        return
    lab = labs.pop()
    try:
        try:  # a progress line that fails (a stream gone) leaves no lab up (review k20r4 F5)
            progress(f"{lab.sessions}: cleanup")
        finally:
            lab.down()
    finally:
        _tear_down(labs, progress)


def measure_size(lab: ScaleLab, progress: Callable[[str], None], subject: XdpSubject,
                 reference: XdpSubject | None = None) -> dict:
    n = lab.sessions
    baseline = lab.start("empty")
    time.sleep(1)  # its threads and first tick settled, as the measured one below
    rss_empty = baseline.rss()
    lab.stop(timeout_s=60)
    store_s = lab.fill_store()
    daemon = lab.start("state")
    started = time.monotonic()  # serving: lab.start returns once it does
    time.sleep(1)
    rss_full = daemon.rss()
    reconciled = daemon.event("Reconciled") or {}
    kernel = kernel_bytes(lab.pin_dir)
    progress(f"{n}: sessions --json")
    listing = listing_figures(lab, daemon, serving_since=started)
    progress(f"{n}: XDP test runs")
    sets = ((lambda: paired(reference, subject)) if reference
            else (lambda: solo(subject)))
    xdp = xdp_beside(daemon, sets)
    progress(f"{n}: XDP test runs once the daemon is quiet")
    waited = daemon.wait_quiet()
    quiet = xdp_beside(daemon, sets)
    xdp["quiet"] = {**quiet, "daemon_quiet_wait_s": waited}
    return {"sessions": n, "capacity": lab.capacity, "store_write_s": store_s,
            "sessions_restored": reconciled.get("sessions"),
            "reconcile_s": reconciled.get("seconds"),
            "reconcile_cpu_s": reconciled.get("cpu_s"),
            "kernel_bytes_per_session": round(kernel["total"] / n, 1),
            "kernel_session_maps_bytes_per_session": round(kernel["per_session_maps"] / n, 1),
            "kernel_bytes_per_map": kernel["maps"],
            "daemon_rss_empty": rss_empty, "daemon_rss": rss_full,
            "daemon_bytes_per_session": round((rss_full - rss_empty) / n, 1),
            **xdp, **listing,
            "state_changes": len(daemon.events_of("SessionStateChange"))}


def listing_figures(lab: ScaleLab, daemon, serving_since: float) -> dict:
    """The CLI's listing and the daemon's pages, first thing once serving:
    the synthetic sessions' silence timers start at their restore, so at
    1M a listing after the XDP test runs met the VOLATILE storm of the
    policy's 5 minutes (issue 15); ``listing_after_serving_s`` says when
    it started, ``state_changes_during_listing`` whether a storm ran
    meanwhile anyway."""
    before = len(daemon.events_of("SessionStateChange"))
    after_s = round(time.monotonic() - serving_since, 3)
    figures = {**sessions_json(lab), **daemon_pages(lab)}
    during = len(daemon.events_of("SessionStateChange")) - before
    return {**figures, "listing_after_serving_s": after_s,
            "state_changes_during_listing": during}


def measure_restart(lab: ScaleLab, progress: Callable[[str], None]) -> dict:
    progress(f"{lab.sessions}: restart (SIGTERM, at most {RESTART_STOP_S} s)")
    stop_s, clean = lab.stop(timeout_s=RESTART_STOP_S)
    started = time.monotonic()
    daemon = lab.start("state")
    serving_s = time.monotonic() - started
    reconciled = daemon.event("Reconciled") or {}
    progress(f"{lab.sessions}: a client's reattach")
    return {"sessions": lab.sessions, "stop_s": stop_s if clean else None,
            "stop": "SIGTERM" if clean else f"SIGKILL after {stop_s} s",
            "reconcile_s": reconciled.get("seconds"),
            "reconcile_cpu_s": reconciled.get("cpu_s"),
            "sessions_restored": reconciled.get("sessions"),
            "start_to_serving_s": round(serving_s, 3),
            **client_reattach(lab, started)}


def client_reattach(lab: ScaleLab, started: float) -> dict:
    """One session's client reattaches from a new address once the daemon
    serves: the seconds of its exchange, and from the start to its ACK (a
    reattach that fails is reported, the other figures stay)."""
    client = ReattachClient(lab.lab.ns("cl"), lab.seed, lab.sessions // 3, (GW_IP, PORT))
    try:
        took = client.reattach()
    except (JvpnError, OSError) as e:
        return {"client_reattach_error": str(e).splitlines()[0]}
    finally:
        client.close()
    return {"client_reattach_s": round(took, 3),
            "start_to_client_reattach_s": round(time.monotonic() - started, 3)}


# ---------------------------------------------------------------- kernel memory
def kernel_bytes(pin_dir: Path) -> dict:
    """``bytes_memlock`` of every map pinned in ``pin_dir`` (the program's pin is not a map)."""
    maps = {}
    for path in sorted(pin_dir.iterdir()):
        out = subprocess.run(["bpftool", "map", "show", "pinned", str(path), "--json"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            continue  # the program, not a map
        info = json.loads(out.stdout)
        maps[path.name] = {"bytes_memlock": int(info.get("bytes_memlock", 0)),
                           "max_entries": info.get("max_entries")}
    if not maps:
        raise JvpnError(f"no pinned maps in {pin_dir}")
    return {"total": sum(m["bytes_memlock"] for m in maps.values()), "maps": maps,
            "per_session_maps": sum(maps[m]["bytes_memlock"] for m in SESSION_MAPS if m in maps)}


# ---------------------------------------------------------------- XDP
def xdp_beside(daemon, measure: Callable[[], dict]) -> dict:
    """``measure()``'s figures and the daemon's CPU seconds meanwhile (its
    work on the other core may slow the test runs)."""
    before = daemon.cpu_s()
    figures = measure()
    return {**figures, "daemon_cpu_during_xdp_s": round(daemon.cpu_s() - before, 3)}


# ---------------------------------------------------------------- the CLI
def sessions_json(lab: ScaleLab) -> dict:
    """`jvpn-xdp sessions --json` timed; one that fails is reported (with
    the seconds it took to fail), the other figures stay."""
    started = time.monotonic()
    out = lab.jvpn("sessions", "--json", timeout=start_timeout_s(lab.sessions),
                   capture_output=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = round(time.monotonic() - started, 3)
    if out.returncode != 0:
        why = (out.stderr or "").strip().splitlines()[-1:] or [f"exit {out.returncode}"]
        return {"sessions_json_s": None, "sessions_json_error": why[0],
                "sessions_json_failed_after_s": took}
    return {"sessions_json_s": took}


def daemon_pages(lab: ScaleLab) -> dict:
    """The daemon's side of `sessions --json`: the pages the CLI asks for
    (jvpn_cli/views.py SESSIONS_PAGE rows each as lists, kernel_rx off), asked through
    the operator socket with a longer timeout than the CLI's: the seconds of
    the whole listing and of its slowest page."""
    from jvpn import operator  # noqa: PLC0415

    path, slowest, cursor = lab.lab.run_dir() / SOCKET_NAME, 0.0, None
    started = time.monotonic()
    while True:
        asked = time.monotonic()
        more = {"cursor": cursor} if cursor else {}
        try:
            got = operator.call(path, "sessions", timeout_s=PAGE_TIMEOUT_S, limit=CLI_PAGE,
                                kernel_rx=False, columns=True, **more)
        except JvpnError as e:  # reported with the other figures, as sessions_json's
            return {"daemon_pages_s": None, "daemon_pages_error": str(e).splitlines()[0],
                    "daemon_pages_failed_after_s": round(time.monotonic() - started, 3)}
        slowest = max(slowest, time.monotonic() - asked)
        cursor = got.get("next") if isinstance(got, dict) else None
        if not cursor:
            break
    return {"daemon_pages_s": round(time.monotonic() - started, 3),
            "daemon_slowest_page_s": round(slowest, 3)}


# ---------------------------------------------------------------- the JSON
def assemble(sizes: list[int], by_size: dict[str, dict], restart: dict) -> dict:
    """The result: each size's figures (their XDP ratios measured side by
    side with the smallest size's lab, jvpn/bench/scale_xdp.py) and the
    restart."""
    return {"sizes": sizes, "by_size": by_size, "restart": restart,
            "method": "docs/benchmarks.md, section 'bench scale (issue 15)'"}
