"""One gateway (with or without the XDP gate) and a client running in the
roaming lab (:class:`jvpn.lab.netns.Lab`): the tunnel the threat tests, the
demo and the single-gateway benchmarks use."""

from __future__ import annotations

import uuid
from pathlib import Path

from jvpn.lab.addresses import GW_IP, GW_IP6, PORT, ROUTER_GW_IF
from jvpn.lab.netns import RoamingLab
from jvpn.lab.running import RunningLab, jvpn_env, lab_policy, read_jsonl


class TunnelLab(RunningLab):
    log_names = ("gateway.log", "client.log")

    def __init__(self, tmp: Path, *, policy: str = "", nat: bool | tuple = False,
                 xdp: bool = True, gateway_extra: str = "", client_extra: str = "",
                 endpoint: str | None = None, client_wrap: tuple[str, ...] = (),
                 extra_roles: tuple[str, ...] = (), ipv6: bool = False,
                 keepalive_s: float = 0.3):
        """``extra_roles``: more namespaces, empty; the test wires them.
        ``ipv6``: the lab's links carry IPv6 too and the client's Endpoint
        is, by default, the gateway's IPv6 address (the outer path is IPv6;
        ``nat`` masquerades IPv4 only)."""
        super().__init__(tmp, RoamingLab(extra_roles=extra_roles, ipv6=ipv6), nat=nat, xdp=xdp)
        if endpoint is None:
            endpoint = f"[{GW_IP6}]" if ipv6 else GW_IP
        self.client_wrap = client_wrap
        self.gateway_extra = gateway_extra
        self.env = jvpn_env(f"/sys/fs/bpf/jvpnt3-{uuid.uuid4().hex[:8]}", self.tmp / "run")
        self.events_file = self.tmp / "state" / "events.jsonl"
        self.write_shared_configs(policy or lab_policy(), endpoint, client_extra, keepalive_s)
        self.write_gateway_conf(self.tmp / "gateway.conf", self.tmp / "state", "gw-a",
                                self.gateway_extra)
        self.gateway = None

    # ------------------------------------------------------------ lifecycle
    def up(self, before_client=None) -> TunnelLab:
        """``before_client()`` runs once the gateway is up (the demo's
        attacker starts listening there, to record the client's handshake)."""
        self.lab.up()
        try:
            self.nat_on((ROUTER_GW_IF,))
            if self.xdp_on:
                out = self.jvpn_in("gw", self.env, "attach", "gw0", "--port", str(PORT))
                assert out.returncode == 0, out.stderr
            self.start_gateway()
            if before_client is not None:
                before_client()
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

    def client_env(self) -> dict:
        return self.env

    def down(self) -> None:
        try:
            if self.xdp_on:
                # --force: the gateway may still run (it holds the gate); it goes next
                self.jvpn_in("gw", self.env, "detach", "gw0", "--force", timeout=30)
        finally:
            self.lab.down()
            self.unpin(self.env["JVPN_PIN_ROOT"])

    # ------------------------------------------------------------ observations
    def victim(self):
        """(session id, SessionKeys) of the client's session, from the store."""
        from jvpn.keys import ring_for  # noqa: PLC0415
        from jvpn.store.sqlite import SqliteStore  # noqa: PLC0415

        store = SqliteStore(self.tmp / "state" / "sessions.db")
        try:
            [rec] = store.list()
            rec, raw = store.get(rec.session_id)
        finally:
            store.close()
        # any secrets version: the current epoch's keys of a rekeyed session too
        return rec.session_id, ring_for(rec, raw).current, {"bound": str(rec.binding)}

    def gateway_events(self) -> list[dict]:
        return read_jsonl(self.events_file)

    def cli_json(self, *args: str):
        return self.cli_json_in("gw", self.env, *args)
