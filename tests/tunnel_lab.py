"""A running jvpn in the lab, for end-to-end tests: XDP attached to the
gateway's uplink, the gateway daemon and the client agent as separate
processes in their namespaces, and helpers to run TCP streams through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from jvpn import keys
from jvpn.lab import GW_IP, Lab
from jvpn.maps import unpin

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


class TunnelLab:
    def __init__(self, tmp: Path, *, policy: str = "", nat: bool = False, xdp: bool = True):
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
        (t / "policy.toml").write_text(policy or """version = 1
[session]
max_lifetime_ms = 3600000
transport_lost_ttl_ms = 15000
[volatility]
loss_volatile_threshold = 0.2
[switching]
max_switches_per_min = 30
recovery_window_ms = 8000
switch_cooldown_ms = 0
[security]
reattach_proof_max_age_ms = 5000
""")
        xdp_line = "XdpInterface = gw0\n" if self.xdp_on else ""
        (t / "gateway.conf").write_text(
            f"[Interface]\nPrivateKey = {keys.encode(gp)}\nListenPort = {PORT}\n"
            f"Address = {GW_INNER}/24\n{xdp_line}PeersFile = peers.conf\nPolicy = policy.toml\n"
            f"StateDir = {t / 'state'}\nNodeId = gw-a\n")
        (t / "client.conf").write_text(
            f"[Interface]\nPrivateKey = {keys.encode(cp)}\nName = jvpn0\n"
            f"[Peer]\nPublicKey = {keys.encode(self.gw_pub)}\nEndpoint = {GW_IP}:{PORT}\n"
            "PersistentKeepalive = 300\n")

    # ------------------------------------------------------------ lifecycle
    def up(self) -> TunnelLab:
        self.lab.up()
        try:
            if self.nat:
                self.lab.nat_on()
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
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{what}: process exited\n{self.logs()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for name in ("gateway.log", "client.log"):
            p = self.tmp / name
            if p.exists():
                out.append(f"--- {name}\n{p.read_text()[-3000:]}")
        return "\n".join(out)

    def down(self) -> None:
        try:
            if self.xdp_on:
                subprocess.run(self.lab.cmd("gw", *self.lab.jvpn_cmd("detach", "gw0")),
                               capture_output=True, env=self.env, timeout=30)
        finally:
            self.lab.down()
            unpin(Path(self.env["JVPN_PIN_ROOT"]))

    # ------------------------------------------------------------ observations
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
        sink_out, src_out = self.tmp / f"sink{port}.json", self.tmp / f"source{port}.json"
        sink = subprocess.Popen(self.lab.cmd("gw", sys.executable, "-u", "-c", SINK, GW_INNER,
                                             str(port), str(sink_out)),
                                stdout=subprocess.PIPE, text=True)
        self.lab.procs.append(sink)
        assert sink.stdout.readline().strip() == "listening"
        src = subprocess.Popen(self.lab.cmd("cl", sys.executable, "-c", SOURCE, GW_INNER,
                                            str(port), str(nbytes), str(seconds), str(src_out)),
                               stderr=subprocess.PIPE, text=True)
        self.lab.procs.append(src)

        def finish(timeout: float = 120):
            err = src.communicate(timeout=timeout)[1]
            sink.wait(timeout=30)
            assert src.returncode == 0, f"stream failed: {err}\n{self.logs()}"
            return json.loads(src_out.read_text()), json.loads(sink_out.read_text())

        return finish
