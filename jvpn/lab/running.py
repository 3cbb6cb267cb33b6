"""What every lab that runs jvpn shares (TunnelLab: one gateway; ClusterLab:
two): the keys and the files all gateways and the client read, the client
process, the CLI inside a namespace, the logs, the event files, the hashed
stream through the tunnel, and tearing the XDP pins down. One implementation,
so a fix to one lab is a fix to both."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from jvpn import keys
from jvpn.lab.addresses import CLIENT_INNER, GW_INNER, INNER_PREFIX, PORT, STREAM_PORT
from jvpn.lab.netns import Lab
from jvpn.lab.stream import start_stream
from jvpn.lab.wait import wait_until


def read_jsonl(path: Path) -> list[dict]:
    """The events written so far (a line being written is left for later)."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def jvpn_env(pin_root: str, run_dir: Path) -> dict[str, str]:
    """The environment of one gateway's jvpn processes: its own BPF pin root
    and run dir (pinned maps live in one global bpffs)."""
    return {**os.environ, "JVPN_PIN_ROOT": pin_root, "JVPN_RUN_DIR": str(run_dir),
            "COLUMNS": "200"}


def lab_policy(max_switches_per_min: int = 30, switch_cooldown_ms: int = 0,
               transport_lost_ttl_ms: int = 15_000) -> str:
    """The lab's policy file: the seed's mandatory fields, switching bounds
    and the transport TTL (a session without transport ends) as asked."""
    return f"""version = 1
[session]
max_lifetime_ms = 3600000
transport_lost_ttl_ms = {transport_lost_ttl_ms}
[volatility]
loss_volatile_threshold = 0.2
[switching]
max_switches_per_min = {max_switches_per_min}
recovery_window_ms = 8000
switch_cooldown_ms = {switch_cooldown_ms}
[security]
reattach_proof_max_age_ms = 5000
"""


def rekey_policy(rekey_after_ms: int, reject_after_ms: int | None = None,
                 rekey_overlap_ms: int | None = None, **lab) -> str:
    """The lab's policy with a short key lifetime (issue 13, docs/protocol.md
    "Rekey"): a rekey every ``rekey_after_ms``; the keys are refused at
    ``reject_after_ms`` (default: 1.5 x, at least 2 s more: a loaded lab
    machine must not expire them by accident); the previous epoch is kept
    ``rekey_overlap_ms`` after the confirmation (default: a tenth, at most
    the product's 5 s). ``lab``: :func:`lab_policy`'s arguments."""
    reject = reject_after_ms or rekey_after_ms + max(rekey_after_ms // 2, 2_000)
    overlap = rekey_overlap_ms if rekey_overlap_ms is not None else min(rekey_after_ms // 10,
                                                                        5_000)
    return (lab_policy(**lab) + f"[keys]\nrekey_after_ms = {rekey_after_ms}\n"
            f"reject_after_ms = {reject}\nrekey_overlap_ms = {overlap}\n")


class RunningLab:
    """Base of the labs that run jvpn processes in a :class:`Lab`.

    A subclass sets ``log_names`` (files in ``tmp`` shown when a wait fails)
    and ``stream_sink`` ((role, address) the test stream ends at), and says
    which environment the client runs with (:meth:`client_env`)."""

    log_names: tuple[str, ...] = ()
    stream_sink: tuple[str, str] = ("gw", GW_INNER)
    client_wrap: tuple[str, ...] = ()  # a command prefix for the client (private_etc.PrivateEtc)

    def __init__(self, tmp: Path, lab: Lab, *, nat: bool | tuple = False, xdp: bool = True):
        self.tmp, self.lab = Path(tmp), lab
        self.nat, self.xdp_on = nat, xdp
        self.client_events = self.tmp / "client-events.jsonl"
        self.client: subprocess.Popen | None = None
        self.gw_private, self.client_private = keys.generate_private(), keys.generate_private()
        self.gw_pub = keys.public_from_private(self.gw_private)

    # ------------------------------------------------------------ configs
    def write_shared_configs(self, policy: str, endpoint: str, client_extra: str = "",
                             keepalive_s: float = 0.3) -> None:
        """The peers file and the policy every gateway reads, and the client's
        config (``client_extra``: more [Interface] lines; ``endpoint``: an
        address or a host name; ``keepalive_s``: its KeepaliveInterval). The
        client reads the gateways' policy too, as docs/protocol.md
        "Transport selection" asks: its switch bounds are theirs."""
        t = self.tmp
        (t / "peers.conf").write_text(
            f"[Peer]\nPublicKey = {keys.encode(keys.public_from_private(self.client_private))}"
            f"\nAllowedIP = {CLIENT_INNER}/32\nName = alice\n")
        (t / "policy.toml").write_text(policy)
        write_secret(t / "client.conf",
            f"[Interface]\nPrivateKey = {keys.encode(self.client_private)}\nName = jvpn0\n"
            f"Policy = policy.toml\n{client_extra}"
            f"[Peer]\nPublicKey = {keys.encode(self.gw_pub)}\nEndpoint = {endpoint}:{PORT}\n"
            f"KeepaliveInterval = {keepalive_s}\n")

    def write_gateway_conf(self, path: Path, state_dir: Path, node_id: str,
                           extra: str = "") -> None:
        write_secret(path, self.gateway_conf(state_dir, node_id, extra))

    def gateway_conf(self, state_dir: Path, node_id: str, extra: str = "") -> str:
        """One gateway's config; every gateway has the same static key."""
        xdp_line = "XdpInterface = gw0\n" if self.xdp_on else ""
        return (f"[Interface]\nPrivateKey = {keys.encode(self.gw_private)}\nListenPort = {PORT}\n"
                f"Address = {GW_INNER}/{INNER_PREFIX}\n{xdp_line}PeersFile = peers.conf\n"
                f"Policy = policy.toml\nStateDir = {state_dir}\nNodeId = {node_id}\n{extra}")

    def nat_on(self, outs: tuple[str, ...]) -> None:
        """The carrier NAT when the lab was asked for one (True, or the uplinks it covers)."""
        if self.nat:
            self.lab.nat_on(*([self.nat] if isinstance(self.nat, tuple) else []), outs=outs)

    # ------------------------------------------------------------ processes
    def jvpn_in(self, role: str, env: dict, *args: str,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """``jvpn-xdp args`` inside ``role``'s namespace, with a gateway's environment."""
        return subprocess.run(self.lab.cmd(role, *self.lab.jvpn_cmd(*args)), capture_output=True,
                              text=True, env=env, timeout=timeout)

    def cli_json_in(self, role: str, env: dict, *args: str):
        out = self.jvpn_in(role, env, *args, "--json", timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def client_env(self) -> dict:
        raise NotImplementedError

    def start_client(self) -> subprocess.Popen:
        self.client = self.lab.spawn(
            "cl", *self.client_wrap,
            *self.lab.jvpn_cmd("client", "up", "--config", str(self.tmp / "client.conf"),
                               "--events-file", str(self.client_events)),
            log=self.tmp / "client.log", env=self.client_env())
        self.wait(lambda: CLIENT_INNER in self.lab.run("cl", "ip", "-4", "addr", "show",
                                                        check=False).stdout,
                  "client tunnel", proc=self.client)
        return self.client

    @staticmethod
    def unpin(pin_root: str) -> None:
        from jvpn.gate.attach import unpin  # noqa: PLC0415 - bcc only when a lab runs

        unpin(Path(pin_root))

    # ------------------------------------------------------------ observations
    def wait(self, cond, what: str, timeout: float = 30.0, *, proc=None) -> float:
        """:func:`jvpn.lab.wait.wait_until`, failing with this lab's logs."""
        return wait_until(cond, what, timeout, proc=proc, logs=self.logs)

    def logs(self) -> str:
        out = []
        for name in self.log_names:
            p = self.tmp / name
            if p.exists():
                out.append(f"--- {name}\n{p.read_text()[-3000:]}")
        return "\n".join(out)

    def client_event_list(self) -> list[dict]:
        return read_jsonl(self.client_events)

    def stream(self, nbytes: int, seconds: float, port: int = STREAM_PORT):
        """A TCP stream from the client through the tunnel to ``stream_sink``;
        returns a function that waits for it and returns (sent, received)."""
        return start_stream(self.lab, self.stream_sink, nbytes, seconds, port, self.tmp,
                            self.logs)


def write_secret(path: Path, text: str) -> None:
    """A file holding a private key: 0600 from its creation (the config
    loader refuses key files others may read)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write(text)
