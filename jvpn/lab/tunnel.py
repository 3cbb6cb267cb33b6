"""jvpn running in the lab: a gateway (with or without the XDP gate) and a
client in :class:`jvpn.lab.netns.Lab`'s namespaces, their configs, logs and
events."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

from jvpn import keys
from jvpn.lab.addresses import CLIENT_INNER, GW_INNER, GW_IP, INNER_PREFIX, PORT, STREAM_PORT
from jvpn.lab.netns import Lab
from jvpn.lab.stream import start_stream
from jvpn.lab.wait import wait_until


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
            f"Address = {GW_INNER}/{INNER_PREFIX}\n{xdp_line}PeersFile = peers.conf\n"
            "Policy = policy.toml\n"
            f"StateDir = {t / 'state'}\nNodeId = gw-a\n{self.gateway_extra}")
        (t / "client.conf").write_text(
            f"[Interface]\nPrivateKey = {keys.encode(cp)}\nName = jvpn0\n"
            f"[Peer]\nPublicKey = {keys.encode(self.gw_pub)}\nEndpoint = {GW_IP}:{PORT}\n"
            "PersistentKeepalive = 300\n")

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
        self.wait(lambda: self.events_file.exists() and "GatewayStarted" in
                   self.events_file.read_text(), "gateway start", proc=self.gateway)

    def stop_gateway(self) -> None:
        self.gateway.terminate()
        self.gateway.wait(timeout=10)

    def start_client(self) -> None:
        self.client = self.lab.spawn(
            "cl", *self.lab.jvpn_cmd("client", "up", "--config", str(self.tmp / "client.conf"),
                                     "--events-file", str(self.client_events)),
            log=self.tmp / "client.log", env=self.env)
        self.wait(lambda: CLIENT_INNER in self.lab.run("cl", "ip", "-4", "addr", "show",
                                                         check=False).stdout,
                   "client tunnel", proc=self.client)

    def wait(self, cond, what: str, timeout: float = 30.0, *, proc=None) -> float:
        """:func:`jvpn.lab.wait.wait_until`, failing with this lab's logs."""
        return wait_until(cond, what, timeout, proc=proc, logs=self.logs)

    def logs(self) -> str:
        out = []
        for name in ("gateway.log", "client.log"):
            p = self.tmp / name
            if p.exists():
                out.append(f"--- {name}\n{p.read_text()[-3000:]}")
        return "\n".join(out)

    def down(self) -> None:
        from jvpn.gate.maps import unpin  # noqa: PLC0415 - bcc only when a lab runs

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

    def stream(self, nbytes: int, seconds: float, port: int = STREAM_PORT):
        """Start a TCP stream client -> gateway inner address; returns a
        function that waits for it and returns (sent, received)."""
        return start_stream(self.lab, ("gw", GW_INNER), nbytes, seconds, port, self.tmp,
                            self.logs)


