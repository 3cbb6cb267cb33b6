"""`bench handshake`: handshakes per second one gateway daemon core completes,
with and without cookies, and how long a legitimate client takes to complete
one while spoofed initiations arrive at the gate's admitted rate.

The daemon is the real one (jvpn/gateway/daemon.py: admission, Noise
responder, the SQLite store on disk, the session table, events to a file)
over an in-memory socket and TUN, in this process, pinned to one core when
the machine allows it. The client half is jvpn/handshake.py's Initiator and
the tunnel's data channel (the first data message confirms the session).

- throughput: the initiations (the client's work) are made first; the
  daemon's handling of them, then of the confirming messages, is timed
  (wall, and the process's CPU, the store's writer thread included; the
  daemon answers a handshake once its writes are durable, from the
  group commit's thread as `gateway up` runs it); a handshake is completed when its session
  is confirmed. Cookies forced on: each initiation first draws a cookie
  reply and is sent again with it, as the client does.
- flood: a sender thread paces initiations from random sources with a valid
  mac1 and no cookie (the gateway's public key is public) at the gate's
  global rate for initiations; the gate's checks (the reference model, as
  the XDP program) stand in front of the daemon; legitimate clients, one
  after another, each from its own address, handshake as jvpn's client does
  (a cookie reply is answered at once; an unanswered initiation is sent
  again after the client's backoff). Each of their initiations is traced:
  the gate's verdict on it and what answered it (``legit_initiations``, and
  one by one for the tries over 1 s: ``legit_slow_tries``), beside the
  gate's counters and the daemon's send drops.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import queue
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from jvpn import keys
from jvpn.backoff import Backoff
from jvpn.client_handshake import wait_after_cookie_ms
from jvpn.config import HANDSHAKE_BASE_MS, HANDSHAKE_CAP_MS
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.daemon import Gateway
from jvpn.handshake import HandshakeError, Initiator
from jvpn.policy import default_policy
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import DataChannel

LISTEN = ("192.0.2.1", 51820)
PEER_NET = ipaddress.IPv4Network("10.64.0.0/10")
COOKIES_ALWAYS = 0  # the admission's threshold: every initiation is "under load"
DEFAULT_THRESHOLD = 50  # the gateway config's HandshakesPerSecond default (jvpn/config.py)


class MemorySock:
    """The daemon's UDP socket in memory: ``deliver`` queues a datagram for
    its receive loop; what it sends to a watched address is queued there,
    everything else only counted."""

    def __init__(self):
        self.inbox: queue.Queue = queue.Queue()
        self.watched: dict[tuple[str, int], queue.Queue] = {}
        self.sent = 0

    def deliver(self, msg: bytes, src: tuple[str, int]) -> None:
        self.inbox.put((msg, src))

    def recvfrom(self, _n: int):
        item = self.inbox.get()
        if item is None:
            raise OSError(errno.EBADF, "closed")
        return item

    def sendto(self, msg: bytes, *args) -> int:
        dst = args[-1]  # (msg, dst) or (msg, flags, dst), as a socket's
        self.sent += 1
        box = self.watched.get(dst)
        if box is not None:
            box.put(msg)
        return len(msg)

    def sendmsg(self, _buffers, _ancdata, _flags, _dst):
        raise OSError(errno.EOPNOTSUPP, "no GSO here")

    def send_buffer_use(self) -> tuple[int, int]:
        return 0, 212_992  # nothing held: every send leaves at once

    def getsockname(self):
        return LISTEN

    def close(self) -> None:
        self.inbox.put(None)

    shutdown = lambda self, _how: self.close()  # noqa: E731


class NullTun:
    """The TUN: nothing comes from it (its loop is not run), writes vanish."""

    def read(self) -> bytes:
        raise OSError(errno.EBADF, "no TUN in this bench")

    def write(self, _packet: bytes) -> None:
        pass


class TracedGate(UserspaceGate):
    """The gate's reference model, noting its verdict on each datagram from
    a legitimate client's source (``is_legit``): the model's own verdict
    counters, read before and after, name it. Only the daemon's receive
    loop calls ``admit``: nothing else moves the counters in between."""

    def __init__(self, is_legit: Callable[[tuple], bool], **kw):
        super().__init__(**kw)
        self.is_legit = is_legit
        self.verdicts: dict[bytes, str] = {}

    def admit(self, msg, src) -> bool:
        if not self.is_legit(src):
            return super().admit(msg, src)
        before = [c[0] for c in self.model.counters[:abi.R_VERDICT_MAX]]
        passed = super().admit(msg, src)
        moved = [i for i, n in enumerate(before) if self.model.counters[i][0] != n]
        self.verdicts[msg] = abi.COUNTER_NAMES[moved[0]] if moved else "none"
        return passed


class KernelChecked(UserspaceGate):
    """The gate as the daemon sees it with XDP: what reaches the socket was
    checked in the kernel, so the daemon admits it (XdpGate.admit)."""

    def admit(self, msg, src) -> bool:
        return True


def pin_to_one_core() -> int | None:
    """This process on one core (the last it may use), as `taskset -c` would;
    None if the machine does not allow it."""
    try:
        core = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
    except (AttributeError, OSError):
        return None
    return core


class Rig:
    """A gateway daemon with ``peers`` configured peers, its store in ``state``."""

    def __init__(self, state: Path, peers: int, cookie_threshold: int, gate=None,
                 group_commit: bool = True):
        self.gw_private = keys.generate_private()
        self.gw_public = keys.public_from_private(self.gw_private)
        self.peer_keys = [keys.generate_private() for _ in range(peers)]
        inner = PEER_NET.hosts()
        address = ipaddress.IPv4Interface((next(inner), PEER_NET.prefixlen))
        configured = {keys.public_from_private(k): next(inner) for k in self.peer_keys}
        self.sock = MemorySock()
        self.gw = Gateway(private_key=self.gw_private, listen=LISTEN, address=address,
                          peers=configured, policy=default_policy(),
                          store=SqliteStore(state / "sessions.db"),
                          gate=gate if gate is not None else KernelChecked(),
                          events=EventLog("bench-gw", state / "events.jsonl"),
                          cookie_threshold_per_s=cookie_threshold, sock=self.sock,
                          tun=NullTun())
        if group_commit:  # as `gateway up` runs it (jvpn/gateway/build.py)
            self.gw.table.group_commit(self.gw.control, self.gw.incidents.report)

    def initiator(self, peer: int, cookie: bytes | None = None) -> Initiator:
        ini = Initiator(self.peer_keys[peer], self.gw_public)
        ini.cookie = cookie
        return ini

    def confirmed(self) -> int:
        return sum(1 for live in self.gw.sessions.values() if live.confirmed)

    def commits(self) -> int:
        """Store transactions the group commit made (0: each write its own)."""
        return self.gw.table.writes.commits

    def close(self) -> None:
        self.gw.table.writes.close()
        self.gw.store.close()


def source(i: int) -> tuple[str, int]:
    return (str(ipaddress.IPv4Address(0xC6120000 + i // 50_000)), 1024 + i % 50_000)


class Timed:
    """Wall and CPU seconds spent in the daemon's handling, summed. The
    process's CPU (every thread: the store's group-commit writer answers
    from its own), on the one core it is pinned to: nothing else of the
    bench runs while it is timed."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def run(self, fn: Callable[[], None]) -> None:
        w, c = time.perf_counter(), time.process_time()
        fn()
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c


ANSWER_BOUND_S = 60.0  # the longest the bench waits for the daemon's answers of one run


def _answers(rig: Rig, msgs: list[bytes], timed: Timed) -> list[bytes | None]:
    """The daemon's reply to each message, from source(i) (timed), in order."""
    boxes = [queue.Queue() for _ in msgs]
    rig.sock.watched = {source(i): box for i, box in enumerate(boxes)}
    handle = rig.gw.datapath.datagram

    answers: list[bytes | None] = [None] * len(msgs)

    def all_of_them():
        for i, msg in enumerate(msgs):
            handle(msg, source(i))
        # answered once durable, maybe from the store's writer thread: wait (bounded)
        deadline = time.monotonic() + ANSWER_BOUND_S
        for i, box in enumerate(boxes):
            try:
                answers[i] = box.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                continue
    timed.run(all_of_them)
    return answers


def throughput(rig: Rig, n: int, cookies: bool) -> dict:
    """``n`` handshakes, one per peer: completed (confirmed) per second of
    the daemon's wall time and of its CPU."""
    timed = Timed()
    inis = [rig.initiator(i) for i in range(n)]
    msgs = [ini.initiation() for ini in inis]
    if cookies:  # each first draws a cookie reply; the client sends again with it
        for ini, reply in zip(inis, _answers(rig, msgs, timed), strict=True):
            ini.consume_cookie(reply)
        inis = [rig.initiator(i, ini.cookie) for i, ini in enumerate(inis)]
        msgs = [ini.initiation() for ini in inis]
    confirms = []
    for ini, reply in zip(inis, _answers(rig, msgs, timed), strict=True):
        _assignment, session_keys = ini.response(reply)
        confirms.append(DataChannel(session_keys, "client").seal(b"", abi.MSG_KEEPALIVE))
    _answers(rig, confirms, timed)
    done = rig.confirmed()
    return {"completed": done, "wall_s": round(timed.wall, 3), "cpu_s": round(timed.cpu, 3),
            "store_commits": rig.commits(),
            "per_s": round(done / timed.wall) if timed.wall else None,
            "per_cpu_s": round(done / timed.cpu) if timed.cpu else None}


class Flood:
    """Initiations with a valid mac1 and no cookie, from random sources, paced
    at ``pps``, into the daemon's socket until stopped."""

    def __init__(self, rig: Rig, pps: float, kinds: int = 16):
        spoofers = [Initiator(keys.generate_private(), rig.gw_public) for _ in range(kinds)]
        self.msgs = [s.initiation() for s in spoofers]
        self.rig, self.pps, self.sent = rig, pps, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-flood", daemon=True)

    def _run(self) -> None:
        rnd = random.Random(7)
        start = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - start) * self.pps)
            while self.sent < due:
                src = (str(ipaddress.IPv4Address(rnd.getrandbits(32) | 0x01000000)),
                       rnd.randrange(1024, 65536))
                self.rig.sock.deliver(self.msgs[self.sent % len(self.msgs)], src)
                self.sent += 1
            time.sleep(0.001)

    def __enter__(self) -> Flood:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.elapsed = time.monotonic() - self.started


# The legitimate clients' sources: one address per try, from the benchmarking
# range (RFC 2544), beside the throughput runs' 198.18.0.0/16. One client
# handshaking 60 times a second from one address is over the gate's budget
# per source (20/s, burst 10: GateConfig.source_control_*) by design, and a
# bench that did so measured that budget, not the flood (docs/benchmarks.md,
# "A legitimate client under the flood (k18flood)").
LEGIT_NET = ipaddress.IPv4Network("198.19.0.0/16")


def legit_source(i: int) -> tuple[str, int]:
    return (str(LEGIT_NET[1 + i % (LEGIT_NET.num_addresses - 2)]), 40000)


def is_legit(src: tuple) -> bool:
    return ipaddress.ip_address(src[0]) in LEGIT_NET


def legit_handshake(rig: Rig, src: tuple[str, int], bound_s: float = 10.0,
                    sent: list[tuple[bytes, dict]] | None = None) -> float | None:
    """One handshake of peer 0 from ``src`` as jvpn's client makes it: ms
    from its first initiation to the response that opens (None: none
    within ``bound_s``).
    ``sent``: each initiation with a note of it (when, with a cookie's mac2
    or not, the daemon's queue ahead of it, what answered it)."""
    box: queue.Queue = queue.Queue()
    rig.sock.watched = {src: box}
    wait, cookie, start = Backoff(HANDSHAKE_BASE_MS, HANDSHAKE_CAP_MS), None, time.monotonic()
    sent = sent if sent is not None else []
    attempt, resend_wait_ms = 0, None  # after a cookie: the resend's wait, as the client's
    while time.monotonic() - start < bound_s:
        ini = rig.initiator(0, cookie)
        msg = ini.initiation()
        note = {"at_ms": round((time.monotonic() - start) * 1000, 1), "mac2": cookie is not None,
                "queued": rig.sock.inbox.qsize(), "answer": None}
        sent.append((msg, note))
        rig.sock.deliver(msg, src)
        sent_at, wait_ms = time.monotonic(), wait.delay_ms(attempt)
        if resend_wait_ms is not None:
            wait_ms, resend_wait_ms = min(wait_ms, resend_wait_ms), None
        deadline = sent_at + wait_ms / 1000
        attempt += 1
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = box.get(timeout=min(left, bound_s))
            except queue.Empty:
                break
            if reply[0] == abi.MSG_COOKIE_REPLY:
                try:
                    ini.consume_cookie(reply)
                except HandshakeError:  # an earlier attempt's, late: ignored, as the client does
                    continue
                cookie, note["answer"] = ini.cookie, "cookie"
                resend_wait_ms = wait_after_cookie_ms(int((time.monotonic() - sent_at) * 1000))
                break  # at once, with the cookie
            try:
                _a, session_keys = ini.response(reply)
            except HandshakeError:
                continue
            took = (time.monotonic() - start) * 1000
            note["answer"] = "response"
            rig.sock.deliver(DataChannel(session_keys, "client").seal(b"", abi.MSG_KEEPALIVE),
                             src)
            return round(took, 2)
    return None


SLOW_MS = 1_000  # the bound: a try slower than this is traced in the JSON


def under_flood(rig: Rig, pps: float, tries: int) -> dict:
    """``tries`` legitimate handshakes (one after another) while the flood
    runs; each slow one's initiations with the gate's verdict on each."""
    loop = threading.Thread(target=rig.gw.datapath.udp_loop, name="bench-udp", daemon=True)
    loop.start()
    traces: list[list[tuple[bytes, dict]]] = [[] for _ in range(tries)]
    try:
        with Flood(rig, pps) as flood:
            time.sleep(1.0)  # the flood's steady state: the gate's burst spent, cookies on
            took = [legit_handshake(rig, legit_source(i), sent=traces[i]) for i in range(tries)]
    finally:
        rig.gw._stop.set()
        rig.sock.close()
        loop.join(timeout=5)
    done = sorted(t for t in took if t is not None)
    return {"legit_ms": took, "p50": round(statistics.median(done), 2) if done else None,
            "max": done[-1] if len(done) == len(took) else None,
            "not_completed": len(took) - len(done),
            "flood_pps_sent": round(flood.sent / flood.elapsed),
            **legit_trace(rig, took, traces)}


def legit_trace(rig: Rig, took: list[float | None], traces: list) -> dict:
    """The legitimate client's initiations by kind and the gate's verdict
    (all tries), the slow tries' initiations one by one, and the counters
    that could name any other drop: the gate's verdicts, the daemon's send
    drops."""
    gate = rig.gw.gate
    verdicts = getattr(gate, "verdicts", {})
    kinds: dict[str, int] = {}
    for trace in traces:
        for msg, note in trace:
            note["gate"] = verdicts.get(msg, "not reached")
            key = f"{'mac2' if note['mac2'] else 'first'} {note['gate']} -> {note['answer']}"
            kinds[key] = kinds.get(key, 0) + 1
    slow = {str(i): [note for _m, note in traces[i]] for i, t in enumerate(took)
            if t is None or t > SLOW_MS}
    counters = gate.read_counters()
    return {"legit_initiations": kinds, "legit_slow_tries": slow,
            "gate_counters": {k: v["packets"] for k, v in counters.items() if v["packets"]},
            "send_drops": rig.gw.sender.counts()}


def run_handshake_bench(handshakes: int = 2000, tries: int = 10,
                        progress: Callable[[str], None] = lambda _: None,
                        flood_pps: float | None = None) -> dict:
    core = pin_to_one_core()
    flood_pps = flood_pps if flood_pps is not None else GateConfig().global_control_pps
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="jvpn-bench-hs-", dir="/var/tmp") as d:
        for name, threshold, cookies in (("plain", DEFAULT_THRESHOLD * 10**6, False),
                                         ("cookie", COOKIES_ALWAYS, True)):
            progress(f"{handshakes} handshakes, cookies {'on' if cookies else 'off'}")
            rig = Rig(Path(d) / name, handshakes, threshold)
            try:
                out[name] = throughput(rig, handshakes, cookies)
            finally:
                rig.close()
        progress(f"a legitimate client under a flood of {flood_pps:g}/s")
        rig = Rig(Path(d) / "flood", 1, DEFAULT_THRESHOLD, gate=TracedGate(is_legit))
        try:
            flood = under_flood(rig, flood_pps, tries)
        finally:
            rig.close()
    return summary(out["plain"], out["cookie"], flood, flood_pps, core, handshakes)


def summary(plain: dict, cookie: dict, flood: dict, flood_pps: float, core: int | None,
            handshakes: int) -> dict:
    return {"handshakes_per_s": plain["per_s"], "handshakes_per_s_cookie": cookie["per_s"],
            "handshakes_per_cpu_s": plain["per_cpu_s"],
            "handshakes_per_cpu_s_cookie": cookie["per_cpu_s"],
            "legit_under_flood_ms": {"p50": flood["p50"], "max": flood["max"]},
            "flood_pps": flood_pps, "flood_pps_sent": flood["flood_pps_sent"],
            "legit_not_completed": flood["not_completed"],
            "legit_per_try_ms": flood["legit_ms"],
            "legit_initiations": flood["legit_initiations"],
            "legit_slow_tries": flood["legit_slow_tries"],
            "flood_gate_counters": flood["gate_counters"], "flood_send_drops": flood["send_drops"],
            "runs": {"plain": plain, "cookie": cookie}, "handshakes": handshakes,
            "pinned_core": core,
            "method": "in-process gateway daemon (real admission, Noise, SQLite store on "
                      "/var/tmp, session table, events file) over an in-memory socket; "
                      "completed = session confirmed by the client's first data message; "
                      "per_s over the daemon's wall time, per_cpu_s over the process's CPU "
                      "(one core; the store's group-commit writer included); "
                      "flood: random sources, valid mac1, no cookie, paced at the gate's "
                      "global initiation rate, through the gate's checks (userspace model)"}
