"""The lab of `bench scale` (issue 15): one namespace with a veth pair, the
gate attached to its gateway end with room for N sessions, and the gateway
daemon run as a process (`jvpn-xdp gateway up`) on a store of N synthetic
sessions (jvpn/bench/scale_store.py), or on an empty one (the baseline of
its memory). Everything it makes goes in :meth:`ScaleLab.down`, which the
bench calls on every way out (an error, Ctrl-C)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from jvpn import keys as jkeys
from jvpn.bench import scale_store
from jvpn.errors import JvpnError
from jvpn.lab.addresses import GW_IP, PORT, ROUTER_GW_IP
from jvpn.lab.netns import Lab
from jvpn.lab.running import jvpn_env, lab_policy, write_secret
from jvpn.lab.wait import wait_until
from jvpn.store.sqlite import SqliteStore

NODE_ID = "gw-scale"
IFACE = "gw0"
GATE_MIN_SESSIONS = 1024  # attach --max-sessions' lower bound (abi.MAX_SESSIONS_RANGE)


def scale_policy() -> str:
    """The lab's policy, heartbeats missed for the longest the policy allows
    (5 min) before a session is VOLATILE: the synthetic sessions' clients
    are silent, and N sessions going VOLATILE at once is a storm of store
    writes (batched: jvpn/bench/storm.py measures it) that would be
    measured instead of the idle gateway (``state_changes`` in the JSON
    says whether any happened). The keys live for the max_lifetime (an
    hour) for the same reason: with the product's 180 s reject_after_ms,
    silent clients never rekeying, every synthetic session's keys expired
    minutes after the store was written -- 1M KeyExpired terminations
    during the listing, and the restart's client refused unanswered (keys
    past reject_after_* prove nothing, docs/protocol.md)."""
    return (lab_policy().replace("[volatility]\n",
                                 "[volatility]\nheartbeat_volatile_ms = 300000\n")
            + SCALE_KEYS)


SCALE_KEYS = "[keys]\nrekey_after_ms = 3000000\nreject_after_ms = 3600000\n"


def start_timeout_s(sessions: int) -> float:
    """How long a start may take: the peers file and the store grow with N
    (a loaded 2-core machine: generous, still bounded)."""
    return 120 + sessions / 1_000


class Daemon:
    """One `gateway up` process and its events file."""

    def __init__(self, proc: subprocess.Popen, events: Path, offset: int):
        self.proc, self.events, self.offset = proc, events, offset
        self.started = time.monotonic()

    def events_of(self, event_type: str) -> list[dict]:
        """The ``event_type`` events this process wrote (lines after ``offset``)."""
        if not self.events.exists():
            return []
        out = []
        with open(self.events, "rb") as f:
            f.seek(self.offset)
            for line in f.read().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("event_type") == event_type:
                    out.append(ev)
        return out

    def event(self, event_type: str) -> dict | None:
        """The first ``event_type`` this process wrote."""
        got = self.events_of(event_type)
        return got[0] if got else None

    def rss(self) -> int:
        """The daemon's RSS (nsenter execs it: the Popen's pid is the daemon)."""
        return psutil.Process(self.proc.pid).memory_info().rss

    def cpu_s(self) -> float:
        """The daemon's CPU seconds so far (user and system, all its threads)."""
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def wait_quiet(self, window_s: float = 0.5, share: float = 0.05,
                   at_most_s: float = 60.0) -> float:
        """Seconds until the daemon used under ``share`` of a core over one
        ``window_s`` (its work after a restore or a listing done), at most
        ``at_most_s``: the XDP test runs then measure the program, not the
        daemon beside it on a two-core machine."""
        start = time.monotonic()
        while time.monotonic() - start < at_most_s:
            before = self.cpu_s()
            time.sleep(window_s)
            if self.cpu_s() - before < share * window_s:
                break
        return round(time.monotonic() - start, 3)


class ScaleLab:
    def __init__(self, sessions: int, progress=lambda _p: None):
        self.sessions, self.progress = sessions, progress
        self.tmp = Path(tempfile.mkdtemp(prefix="jvpn-scale-"))
        self.lab = Lab(("gw", "cl"))
        self.env = jvpn_env(str(self.lab.pin_root()), self.lab.run_dir())
        self.seed = scale_store.Seed.new()
        self.now_ms = time.time_ns() // 1_000_000
        self.daemon: Daemon | None = None
        self.attached = False

    @property
    def pin_dir(self) -> Path:
        return self.lab.pin_root() / IFACE

    def state_dir(self, name: str) -> Path:
        return self.tmp / name

    # ------------------------------------------------------------ set up
    def up(self) -> ScaleLab:
        self.lab.up()
        self.lab.veth("gw", IFACE, f"{GW_IP}/24", "cl", "cl0", f"{ROUTER_GW_IP}/24")
        self.progress(f"{self.sessions}: peers file")
        scale_store.write_peers(self.tmp / "peers.conf", self.seed, self.sessions)
        (self.tmp / "policy.toml").write_text(scale_policy())
        self.gw_private = jkeys.generate_private()
        for name in ("empty", "state"):
            write_secret(self.tmp / f"{name}.conf", self._conf(self.state_dir(name)))
        self._attach()
        return self

    def _conf(self, state_dir: Path) -> str:
        return (f"[Interface]\nPrivateKey = {jkeys.encode(self.gw_private)}\n"
                f"ListenPort = {PORT}\nAddress = 10.0.0.1/8\nXdpInterface = {IFACE}\n"
                f"PeersFile = peers.conf\nPolicy = policy.toml\nStateDir = {state_dir}\n"
                f"NodeId = {NODE_ID}\nMaxSessions = {self.capacity}\n")

    @property
    def capacity(self) -> int:
        return max(self.sessions, GATE_MIN_SESSIONS)

    def _attach(self) -> None:
        self.progress(f"{self.sessions}: attach --max-sessions {self.capacity}")
        out = self.jvpn("attach", IFACE, "--port", str(PORT), "--max-sessions",
                        str(self.capacity), timeout=300)
        if out.returncode != 0:
            raise JvpnError(f"attach failed: {_last_line(out.stderr)}")
        self.attached = True

    def fill_store(self) -> float:
        """The synthetic sessions in the store the daemon will start on; seconds taken."""
        started = time.monotonic()
        store = SqliteStore(self.state_dir("state") / "sessions.db")
        try:
            scale_store.write_sessions(
                store, self.seed, self.sessions, NODE_ID, self.now_ms,
                progress=lambda done: self.progress(f"{self.sessions}: store {done}"))
        finally:
            store.close()
        return round(time.monotonic() - started, 2)

    # ------------------------------------------------------------ the daemon
    def start(self, name: str) -> Daemon:
        """`gateway up` on state dir ``name``; returns once it is serving."""
        events = self.state_dir(name) / "events.jsonl"
        offset = events.stat().st_size if events.exists() else 0
        proc = self.lab.spawn("gw", *self.lab.jvpn_cmd("gateway", "up", "--config",
                                                      str(self.tmp / f"{name}.conf")),
                              log=self.tmp / f"{name}.log", env=self.env)
        self.daemon = Daemon(proc, events, offset)
        self.progress(f"{self.sessions}: gateway start ({name})")
        wait_until(lambda: self.daemon.event("GatewayStarted"), f"gateway start ({name})",
                   start_timeout_s(self.sessions), proc=proc, logs=lambda: self._log(name),
                   interval=0.02)
        return self.daemon

    def stop(self, timeout_s: float = 30) -> tuple[float, bool]:
        """SIGTERM; (seconds until the daemon exited, True), or SIGKILL after
        ``timeout_s`` and (``timeout_s``, False): a clean stop settles every
        session's replay ceiling, one store transaction each (StandbyWrites.
        settle_all), which grows with N."""
        d, self.daemon = self.daemon, None
        if d is None or d.proc.poll() is not None:
            return 0.0, True
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait(timeout=30)
            return timeout_s, False
        return round(time.monotonic() - started, 3), True

    def jvpn(self, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        return subprocess.run(self.lab.cmd("gw", *self.lab.jvpn_cmd(*args)), text=True,
                              env=self.env, timeout=timeout, **kw)

    def _log(self, name: str) -> str:
        p = self.tmp / f"{name}.log"
        return p.read_text()[-2000:] if p.exists() else ""

    # ------------------------------------------------------------ tear down
    def down(self) -> None:
        """Daemon stopped, gate detached, namespace, pins and files removed
        (each step tried whatever the one before did)."""
        try:
            try:
                self.stop(timeout_s=10)  # a cleanup: not worth N settle writes
            finally:
                if self.attached:
                    self.jvpn("detach", IFACE, "--force", timeout=60)
        finally:
            self.lab.down()
            from jvpn.gate.attach import unpin  # noqa: PLC0415 - bcc only when a lab runs

            unpin(self.lab.pin_root())
            shutil.rmtree(self.lab.run_dir(), ignore_errors=True)
            shutil.rmtree(self.tmp, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [x for x in (text or "").strip().splitlines() if x.strip()]
    return lines[-1] if lines else "no output"
