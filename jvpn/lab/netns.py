"""The lab: network namespaces and veth pairs for tests, the demo and the
benchmarks. Every address exists only inside namespaces the lab created.

    client ns                 router ns                 gateway ns
    wifi 10.77.1.2/24 ---- r1 10.77.1.254/24
    lte  10.77.2.2/24 ---- r2 10.77.2.254/24 (fwd) r0 10.77.0.254/24 ---- gw0 10.77.0.1/24
    (attacker ns: atk 10.77.3.2/24 ---- r3 10.77.3.254/24)

The client has two uplinks; the one with the lower metric carries the route to
the gateway, so taking "wifi" down moves the client to "lte" (a new source
address), exactly like a phone leaving Wi-Fi. Namespace names carry a prefix
unique to the lab instance; ``Lab.cleanup_stale`` removes what a crashed run
left (only labs whose owning process is gone).
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from jvpn import keys
from jvpn.gate import abi
from jvpn.lab import frames

GW_IP, ROUTER_GW_IP = "10.77.0.1", "10.77.0.254"
WIFI_IP, LTE_IP, ATTACKER_IP = "10.77.1.2", "10.77.2.2", "10.77.3.2"
NS_PATTERN = re.compile(r"^jl(\d+)x[0-9a-f]{4}-(gw|rt|cl|atk|gwb|svc)$")


def socket_in(ns: str, *args) -> socket.socket:
    """A socket created inside network namespace ``ns`` (a socket keeps the
    namespace it was created in; only this thread switches, and back)."""
    from pyroute2.netns import popns, pushns  # noqa: PLC0415

    pushns(ns)
    try:
        return socket.socket(*args)
    finally:
        popns()


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


@dataclass
class Lab:
    prefix: str = field(default_factory=lambda: f"jl{os.getpid()}x{uuid.uuid4().hex[:4]}")
    with_attacker: bool = True
    procs: list = field(default_factory=list)
    extra_roles: tuple = ()  # more (empty) namespaces, wired by the caller (jvpn/clusterlab.py)

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    @property
    def roles(self) -> list[str]:
        return (["gw", "rt", "cl"] + (["atk"] if self.with_attacker else [])
                + list(self.extra_roles))

    # ------------------------------------------------------------ build / tear down
    def up(self) -> Lab:
        self.cleanup_stale()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        for role in self.roles:
            sh("ip", "netns", "add", self.ns(role))
            self.run(role, "ip", "link", "set", "lo", "up")
        self._veth("gw", "gw0", f"{GW_IP}/24", "rt", "r0", f"{ROUTER_GW_IP}/24")
        self._veth("cl", "wifi", f"{WIFI_IP}/24", "rt", "r1", "10.77.1.254/24")
        self._veth("cl", "lte", f"{LTE_IP}/24", "rt", "r2", "10.77.2.254/24")
        if self.with_attacker:
            self._veth("atk", "atk0", f"{ATTACKER_IP}/24", "rt", "r3", "10.77.3.254/24")
            self.run("atk", "ip", "route", "add", "default", "via", "10.77.3.254")
        self.run("rt", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.run("gw", "ip", "route", "add", "default", "via", ROUTER_GW_IP)
        self.run("cl", "ip", "route", "add", "default", "via", "10.77.1.254", "dev", "wifi",
                 "metric", "10")
        self.run("cl", "ip", "route", "add", "default", "via", "10.77.2.254", "dev", "lte",
                 "metric", "20")

    def _veth(self, a_role, a_if, a_ip, b_role, b_if, b_ip) -> None:
        sh("ip", "link", "add", a_if, "netns", self.ns(a_role), "type", "veth", "peer", b_if,
           "netns", self.ns(b_role))
        for role, ifname, ip in ((a_role, a_if, a_ip), (b_role, b_if, b_ip)):
            self.run(role, "ip", "addr", "add", ip, "dev", ifname)
            self.run(role, "ip", "link", "set", ifname, "up")

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
        for role in self.roles:
            sh("ip", "netns", "del", self.ns(role), check=False)

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()

    @staticmethod
    def cleanup_stale() -> None:
        out = sh("ip", "netns", "list", check=False).stdout
        for line in out.splitlines():
            name = line.split()[0] if line.strip() else ""
            m = NS_PATTERN.match(name)
            if m and not Path(f"/proc/{m.group(1)}").exists():
                sh("ip", "netns", "del", name, check=False)

    # ------------------------------------------------------------ running things
    def cmd(self, role: str, *args: str) -> list[str]:
        # nsenter, not `ip netns exec`: the latter remounts /sys and hides bpffs
        return ["nsenter", f"--net=/run/netns/{self.ns(role)}", *args]

    def run(self, role: str, *args: str, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
        return sh(*self.cmd(role, *args), check=check, timeout=timeout)

    def spawn(self, role: str, *args: str, log: Path | None = None, **kw) -> subprocess.Popen:
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by Popen
        p = subprocess.Popen(self.cmd(role, *args), stdout=out, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def socket(self, role: str, *args) -> socket.socket:
        return socket_in(self.ns(role), *args)

    def jvpn(self, role: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(role, str(Path(sys.executable).with_name("jvpn-xdp")), *args, **kw)

    def jvpn_cmd(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).with_name("jvpn-xdp")), *args]

    def link(self, role: str, ifname: str, state: str) -> None:
        self.run(role, "ip", "link", "set", ifname, state)

    # ------------------------------------------------------------ NAT
    def nat_on(self, uplinks: tuple[str, ...] = ("wifi", "lte"),
               outs: tuple[str, ...] = ("r0",)) -> None:
        """The router masquerades the client's traffic on these uplinks
        towards the gateway(s) (router ports ``outs``) with random source
        ports (nftables), as a carrier NAT would."""
        nets = {"wifi": "10.77.1.0/24", "lte": "10.77.2.0/24"}
        lines = "\n".join(f'    oifname "{o}" ip saddr {nets[u]} masquerade random'
                          for o in outs for u in uplinks)
        rules = f"""table ip jvpnlab {{
  chain post {{
    type nat hook postrouting priority 100;
{lines}
  }}
}}
"""
        subprocess.run(self.cmd("rt", "nft", "-f", "-"), input=rules, text=True, check=True,
                       capture_output=True, timeout=30)

    def nat_rebind(self) -> None:
        """Forget the NAT mappings: the next packet gets a new source port."""
        self.run("rt", "conntrack", "-D", "-p", "udp", check=False)


# ---------------------------------------------------------------- jvpn running in the lab

GW_INNER, CLIENT_INNER = "10.99.0.1", "10.99.0.2"
PORT = 51900

SINK = r"""
import hashlib, json, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
open(sys.argv[3], "w").write(json.dumps({"bytes": n, "sha256": h.hexdigest()}))
"""

SOURCE = r"""
import hashlib, json, random, socket, sys, time
total, seconds = int(sys.argv[3]), float(sys.argv[4])
rng = random.Random(7); h = hashlib.sha256()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
chunk = 16384; sent = 0; pause = seconds / (total / chunk)
while sent < total:
    b = rng.randbytes(min(chunk, total - sent)); s.sendall(b); h.update(b); sent += len(b)
    time.sleep(pause)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
open(sys.argv[5], "w").write(json.dumps({"bytes": sent, "sha256": h.hexdigest()}))
"""


def lab_policy(max_switches_per_min: int = 30, switch_cooldown_ms: int = 0) -> str:
    """The lab's policy file: the seed's mandatory fields, switching bounds as asked."""
    return f"""version = 1
[session]
max_lifetime_ms = 3600000
transport_lost_ttl_ms = 15000
[volatility]
loss_volatile_threshold = 0.2
[switching]
max_switches_per_min = {max_switches_per_min}
recovery_window_ms = 8000
switch_cooldown_ms = {switch_cooldown_ms}
[security]
reattach_proof_max_age_ms = 5000
"""


class TunnelLab:
    def __init__(self, tmp: Path, *, policy: str = "", nat: bool | tuple = False,
                 xdp: bool = True, gateway_extra: str = ""):
        self.gateway_extra = gateway_extra
        self.tmp = Path(tmp)
        self.lab = Lab()
        self.nat, self.xdp_on = nat, xdp
        self.env = {**os.environ, "JVPN_PIN_ROOT": f"/sys/fs/bpf/jvpnt3-{uuid.uuid4().hex[:8]}",
                    "JVPN_RUN_DIR": str(self.tmp / "run"), "COLUMNS": "200"}
        self.events_file = self.tmp / "state" / "events.jsonl"
        self.client_events = self.tmp / "client-events.jsonl"
        self._write_configs(policy)
        self.gateway = self.client = None

    def _write_configs(self, policy: str) -> None:
        gp, cp = keys.generate_private(), keys.generate_private()
        self.gw_pub = keys.public_from_private(gp)
        t = self.tmp
        (t / "peers.conf").write_text(
            f"[Peer]\nPublicKey = {keys.encode(keys.public_from_private(cp))}\n"
            f"AllowedIP = {CLIENT_INNER}/32\nName = alice\n")
        (t / "policy.toml").write_text(policy or lab_policy())
        xdp_line = "XdpInterface = gw0\n" if self.xdp_on else ""
        (t / "gateway.conf").write_text(
            f"[Interface]\nPrivateKey = {keys.encode(gp)}\nListenPort = {PORT}\n"
            f"Address = {GW_INNER}/24\n{xdp_line}PeersFile = peers.conf\nPolicy = policy.toml\n"
            f"StateDir = {t / 'state'}\nNodeId = gw-a\n{self.gateway_extra}")
        (t / "client.conf").write_text(
            f"[Interface]\nPrivateKey = {keys.encode(cp)}\nName = jvpn0\n"
            f"[Peer]\nPublicKey = {keys.encode(self.gw_pub)}\nEndpoint = {GW_IP}:{PORT}\n"
            "PersistentKeepalive = 300\n")
        for name in ("gateway.conf", "client.conf"):  # inline private keys: 0600 or refused
            os.chmod(t / name, 0o600)

    # ------------------------------------------------------------ lifecycle
    def up(self) -> TunnelLab:
        self.lab.up()
        try:
            if self.nat:
                self.lab.nat_on(*([self.nat] if isinstance(self.nat, tuple) else []))
            if self.xdp_on:
                out = subprocess.run(
                    self.lab.cmd("gw", *self.lab.jvpn_cmd("attach", "gw0", "--port", str(PORT))),
                    capture_output=True, text=True, env=self.env, timeout=60)
                assert out.returncode == 0, out.stderr
            self.start_gateway()
            self.start_client()
        except BaseException:
            self.down()
            raise
        return self

    def start_gateway(self) -> None:
        self.gateway = self.lab.spawn(
            "gw", *self.lab.jvpn_cmd("gateway", "up", "--config", str(self.tmp / "gateway.conf")),
            log=self.tmp / "gateway.log", env=self.env)
        self._wait(lambda: self.events_file.exists() and "GatewayStarted" in
                   self.events_file.read_text(), "gateway start", self.gateway)

    def stop_gateway(self) -> None:
        self.gateway.terminate()
        self.gateway.wait(timeout=10)

    def start_client(self) -> None:
        self.client = self.lab.spawn(
            "cl", *self.lab.jvpn_cmd("client", "up", "--config", str(self.tmp / "client.conf"),
                                     "--events-file", str(self.client_events)),
            log=self.tmp / "client.log", env=self.env)
        self._wait(lambda: CLIENT_INNER in self.lab.run("cl", "ip", "-4", "addr", "show",
                                                         check=False).stdout,
                   "client tunnel", self.client)

    def _wait(self, cond, what: str, proc=None, timeout: float = 30) -> None:
        wait_until(cond, what, proc, timeout, self.logs)

    def logs(self) -> str:
        out = []
        for name in ("gateway.log", "client.log"):
            p = self.tmp / name
            if p.exists():
                out.append(f"--- {name}\n{p.read_text()[-3000:]}")
        return "\n".join(out)

    def down(self) -> None:
        from jvpn.gate.attach import unpin  # noqa: PLC0415 - bcc only when a lab runs

        try:
            if self.xdp_on:
                subprocess.run(self.lab.cmd("gw", *self.lab.jvpn_cmd("detach", "gw0")),
                               capture_output=True, env=self.env, timeout=30)
        finally:
            self.lab.down()
            unpin(Path(self.env["JVPN_PIN_ROOT"]))

    # ------------------------------------------------------------ observations
    def victim(self):
        """(session id, SessionKeys) of the client's session, from the store."""
        from jvpn.keys import SessionKeys  # noqa: PLC0415
        from jvpn.store.sqlite import SqliteStore  # noqa: PLC0415

        store = SqliteStore(self.tmp / "state" / "sessions.db")
        try:
            [rec] = store.list()
            _rec, raw = store.get(rec.session_id)
        finally:
            store.close()
        return rec.session_id, SessionKeys.unpack(raw), {"bound": str(rec.binding)}

    def gateway_events(self) -> list[dict]:
        if not self.events_file.exists():
            return []
        return [json.loads(line) for line in self.events_file.read_text().splitlines() if line]

    def client_event_list(self) -> list[dict]:
        if not self.client_events.exists():
            return []
        return [json.loads(line) for line in self.client_events.read_text().splitlines() if line]

    def cli_json(self, *args: str):
        out = subprocess.run(self.lab.cmd("gw", *self.lab.jvpn_cmd(*args, "--json")),
                             capture_output=True, text=True, env=self.env, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def stream(self, nbytes: int, seconds: float, port: int = 5001):
        """Start a TCP stream client -> gateway inner address; returns a
        function that waits for it and returns (sent, received)."""
        return start_stream(self.lab, ("gw", GW_INNER), nbytes, seconds, port, self.tmp,
                            self.logs)


def wait_until(cond, what: str, proc=None, timeout: float = 30, logs=lambda: "") -> None:
    """Poll ``cond`` until true; fail early if ``proc`` exited, with the logs."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited\n{logs()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{logs()}")


def start_stream(lab: Lab, sink: tuple[str, str], nbytes: int, seconds: float, port: int,
                 tmp: Path, logs=lambda: ""):
    """A TCP stream from the client namespace to ``sink`` = (role, address)
    (a sink there hashes what arrives); returns a function that waits for it
    and returns (sent, received), each {"bytes", "sha256"}."""
    sink_out, src_out = tmp / f"sink{port}.json", tmp / f"source{port}.json"
    role, addr = sink
    listener = subprocess.Popen(lab.cmd(role, sys.executable, "-u", "-c", SINK, addr, str(port),
                                        str(sink_out)), stdout=subprocess.PIPE, text=True)
    lab.procs.append(listener)
    assert listener.stdout.readline().strip() == "listening"
    src = subprocess.Popen(lab.cmd("cl", sys.executable, "-c", SOURCE, addr, str(port),
                                   str(nbytes), str(seconds), str(src_out)),
                           stderr=subprocess.PIPE, text=True)
    lab.procs.append(src)

    def finish(timeout: float = 120):
        err = src.communicate(timeout=timeout)[1]
        listener.wait(timeout=30)
        assert src.returncode == 0, f"stream failed: {err}\n{logs()}"
        return json.loads(src_out.read_text()), json.loads(sink_out.read_text())

    return finish


# ---------------------------------------------------------------- the attacker

SOL_PACKET, PACKET_VNET_HDR = 263, 15


class Capture:
    """AF_PACKET in namespace ``ns`` (one interface, or all), each frame
    behind a virtio-net header (PACKET_VNET_HDR: it says how a GSO batch is
    cut); a thread calls ``on_frame(raw, meta)`` for each one, sent or
    received (meta[2] is the packet type)."""

    def __init__(self, ns: str, on_frame, ifname: str | None = None):
        self.sock = socket_in(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        if ifname is not None:
            self.sock.bind((ifname, 0))
        self.sock.settimeout(0.1)
        self.on_frame = on_frame
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw, meta = self.sock.recvfrom(70000)
            except (TimeoutError, OSError):
                continue
            self.on_frame(raw, meta)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(timeout=2)
        self.sock.close()


def mac_of(lab: Lab, role: str, ifname: str) -> bytes:
    """The MAC address of ``ifname`` in ``role``'s namespace (for injected frames)."""
    out = lab.run(role, "ip", "-j", "link", "show", ifname).stdout
    return bytes.fromhex(json.loads(out)[0]["address"].replace(":", ""))


def udp_messages(raw: bytes) -> tuple[tuple[str, int], list[bytes]] | None:
    """(source transport, jvpn messages) of one frame captured with a
    virtio-net header (PACKET_VNET_HDR) if it is IPv4/UDP to our port; a GSO
    batch (several messages in one skb, as the client sends them) is cut the
    way the header says."""
    gso_type, gso_size = raw[1], struct.unpack_from("=H", raw, 4)[0]
    ip = raw[10 + 14:]
    if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0xF) * 4
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    if dport != PORT:
        return None
    payload = ip[ihl + 8:]
    step = gso_size if gso_type and gso_size else len(payload)
    return ((socket.inet_ntoa(ip[12:16]), sport),
            [payload[i:i + step] for i in range(0, len(payload), step)])


class Sniffer:
    """The attacker's view of the client's traffic: a mirror of the router's
    client-side ports (AF_PACKET in the router namespace)."""

    def __init__(self, lab):
        self.captured: dict[int, list[tuple[bytes, tuple[str, int]]]] = {}
        self._cap = Capture(lab.ns("rt"), self._frame)

    def _frame(self, raw: bytes, meta) -> None:
        got = udp_messages(raw) if meta[0] in ("r1", "r2") else None
        for msg in got[1] if got else ():
            if len(msg) >= abi.HDR_LEN:
                self.captured.setdefault(msg[0], []).append((msg, got[0]))

    def stop(self) -> None:
        self._cap.stop()



class Attacker:
    """Sends from the attacker's namespace (its own address) or injects
    spoofed frames on the segment in front of the gateway."""

    def __init__(self, lab: Lab):
        self.lab = lab

    def _mac(self, role: str, ifname: str) -> bytes:
        return mac_of(self.lab, role, ifname)

    def send(self, msgs: list[bytes], spoof: tuple[str, int] | None = None) -> None:
        """From the attacker's own address (its namespace), or with a spoofed
        source injected as Ethernet frames on the segment in front of the
        gateway (the router's gateway-side port: behind the carrier NAT, and
        below any IP stack that would rewrite the packet)."""
        if spoof is None:
            with self.lab.socket("atk", socket.AF_INET, socket.SOCK_DGRAM) as s:
                for m in msgs:
                    s.sendto(m, (GW_IP, PORT))
            return
        head = self._mac("gw", "gw0") + self._mac("rt", "r0") + b"\x08\x00"
        with self.lab.socket("rt", socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind(("r0", 0))
            for m in msgs:
                s.send(head + frames.ipv4(spoof[0], GW_IP, 17, frames.udp(spoof[1], PORT, m)))

