"""Namespace-safe gate management (issue 12): pins and run records are keyed
by interface name, names are per network namespace, and the bpffs pin root
and the run dir are shared. A record made in namespace A is never acted on
from namespace B; `detach` refuses while a gateway uses the gate, and with
--force the gateway notices and stops with its one line.

Each test makes namespaces of its own (jvpn/lab/netns.py) and removes them."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from jvpn.gate import attach as gate_attach
from jvpn.lab.addresses import PORT
from jvpn.lab.netns import Lab
from jvpn.lab.running import jvpn_env
from jvpn.lab.tunnel import TunnelLab

pytestmark = pytest.mark.kernel

IFACE = "jvns0"  # one name, in both namespaces (the two ends of one veth pair)


class TwoNamespaces:
    """Namespaces "a" and "b", each with an interface named IFACE, and one
    pin root and run dir that both see (as on a real host: bpffs and /run
    are not per network namespace)."""

    def __init__(self):
        self.net = Lab(("a", "b"))
        self.env = jvpn_env(str(self.net.pin_root()), self.net.run_dir("run"))
        self.run_dir = Path(self.env["JVPN_RUN_DIR"])
        self.pin_dir = Path(self.env["JVPN_PIN_ROOT"]) / IFACE

    def up(self) -> None:
        self.net.up()
        self.net.veth("a", IFACE, None, "b", IFACE, None)

    def down(self) -> None:
        self.net.down()
        gate_attach.unpin(Path(self.env["JVPN_PIN_ROOT"]))
        subprocess.run(["rm", "-rf", str(self.run_dir)], check=False)

    def cli(self, role: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.net.cmd(role, *self.net.jvpn_cmd(*args)), env=self.env,
                              capture_output=True, text=True, timeout=120)

    def error(self, role: str, *args: str) -> str:
        r = self.cli(role, *args)
        assert r.returncode == 1, r
        assert "Traceback" not in r.stderr and r.stdout == ""
        line, = r.stderr.strip().splitlines()
        assert line.startswith("error: ")
        return line

    def prog_id(self, role: str) -> int | None:
        with self.net.inside(role):
            return gate_attach.xdp_prog_id(IFACE)


@pytest.fixture
def two():
    lab = TwoNamespaces()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def test_a_record_of_another_namespace_is_refused_there(two):
    out = two.cli("a", "attach", IFACE, "--json")
    assert out.returncode == 0, out.stderr
    att = json.loads(out.stdout)
    ns_a = two.net.ns("a")
    assert att["netns_name"] == ns_a and att["netns_inode"] > 0
    prog = two.prog_id("a")
    assert prog and two.prog_id("b") is None
    record = (two.run_dir / f"{IFACE}.json").read_text()

    # status from b: the record is a's; no program id read here, no advice to detach
    row, = json.loads(two.cli("b", "status", "--json").stdout)
    assert row["prog_id"] is None and row["netns_name"] == ns_a
    assert f"nsenter --net=/run/netns/{ns_a}" in row["elsewhere"]
    text = two.cli("b", "status").stdout
    assert "not this one" in text and "detach" not in text

    # detach from b (with or without --force) and attach of b's own IFACE: refused
    for args in (("detach", IFACE), ("detach", IFACE, "--force"), ("attach", IFACE)):
        line = two.error("b", *args)
        assert f"attached in network namespace {ns_a}" in line, line
        assert f"nsenter --net=/run/netns/{ns_a}" in line, line
    assert two.prog_id("a") == prog and two.prog_id("b") is None
    assert (two.run_dir / f"{IFACE}.json").read_text() == record
    assert (two.pin_dir / "prog").exists()

    # in a: the record is its own
    row, = json.loads(two.cli("a", "status", "--json").stdout)
    assert row["prog_id"] == prog and row["elsewhere"] is None
    out = two.cli("a", "detach", IFACE)
    assert out.returncode == 0, out.stderr
    assert two.prog_id("a") is None and not two.pin_dir.exists()
    assert not (two.run_dir / f"{IFACE}.json").exists()


def test_native_refused_is_one_clean_note(two):
    """lo has no native XDP: the note is one line without bcc's stderr or b'lo'."""
    out = two.cli("a", "attach", "lo", "--json")
    assert out.returncode == 0, out.stderr
    att = json.loads(out.stdout)
    assert att["mode"] == "generic"
    assert "b'" not in att["note"] and "lo: Operation not supported" in att["note"]
    assert out.stderr.strip() == f"warning: {att['note']}"  # and nothing from bcc
    out = two.cli("a", "detach", "lo")
    assert out.returncode == 0 and out.stderr == "", out.stderr


@pytest.fixture
def gateway(tmp_path):
    """A gateway running on the attached gate (no client)."""
    tl = TunnelLab(tmp_path)
    tl.lab.up()
    try:
        out = tl.jvpn_in("gw", tl.env, "attach", "gw0", "--port", str(PORT))
        assert out.returncode == 0, out.stderr
        tl.start_gateway()
        yield tl
    finally:
        tl.down()


def test_detach_refuses_while_a_gateway_uses_the_gate(gateway):
    tl = gateway
    run_dir = Path(tl.env["JVPN_RUN_DIR"])
    owners = run_dir / "gw0.owners.json"
    tl.wait(owners.exists, "the gateway's owners document")

    out = tl.jvpn_in("gw", tl.env, "detach", "gw0")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    line, = out.stderr.strip().splitlines()
    # nsenter execs the gateway: its pid is the process's
    assert "a gateway uses the gate on gw0" in line and f"pid {tl.gateway.pid}" in line, line
    assert tl.gateway.poll() is None
    with tl.lab.inside("gw"):
        assert gate_attach.xdp_prog_id("gw0")
    assert (run_dir / "gw0.json").exists() and owners.exists()

    out = tl.jvpn_in("gw", tl.env, "detach", "gw0", "--force")
    assert out.returncode == 0, out.stderr
    assert "a gateway was using the gate" in out.stderr
    assert not (run_dir / "gw0.json").exists() and not owners.exists()
    rc = tl.gateway.wait(timeout=10)
    assert rc == 1
    last = (tl.tmp / "gateway.log").read_text().strip().splitlines()[-1]
    assert last.startswith("error: the XDP gate is gone"), last
    tl.xdp_on = False  # nothing left to detach at tear-down


def test_a_stopped_gateway_lets_detach_go(gateway):
    """The hold is the gateway's flock: gone with the process, even a SIGKILLed one."""
    tl = gateway
    tl.gateway.kill()
    tl.gateway.wait(timeout=10)
    out = tl.jvpn_in("gw", tl.env, "detach", "gw0")
    assert out.returncode == 0, out.stderr
    assert "was using" not in out.stderr
    tl.xdp_on = False


def _gateway_conf(tmp_path: Path, port: int) -> Path:
    from jvpn import keys  # noqa: PLC0415
    from jvpn.lab.running import write_secret  # noqa: PLC0415

    peer = keys.public_from_private(keys.generate_private())
    (tmp_path / "peers.conf").write_text(f"[Peer]\nPublicKey = {keys.encode(peer)}\n"
                                         "AllowedIP = 10.98.0.2/32\n")
    path = tmp_path / "gw.conf"
    write_secret(path, f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
                       f"ListenPort = {port}\nAddress = 10.98.0.1/24\nPeersFile = peers.conf\n"
                       f"StateDir = {tmp_path / 'state'}\nNodeId = t\n")
    return path


def test_gateway_up_names_a_busy_tun_and_a_taken_port(two, tmp_path):
    """In a namespace of its own: the real gateway start, not a fake."""
    from jvpn.tunnel import Tun  # noqa: PLC0415

    conf = _gateway_conf(tmp_path, PORT)
    with two.net.inside("a"):
        busy = Tun("jvbusy0")  # held open by this process: the gateway cannot have it
    try:
        line = two.error("a", "gateway", "up", "--config", str(conf), "--tun", "jvbusy0")
    finally:
        busy.close()
    assert line.startswith("error: --tun jvbusy0: TUN device jvbusy0 is busy"), line

    taken = two.net.socket("a", socket.AF_INET, socket.SOCK_DGRAM)
    try:
        taken.bind(("0.0.0.0", PORT))
        line = two.error("a", "gateway", "up", "--config", str(conf), "--tun", "jvfree0")
    finally:
        taken.close()
    assert line.startswith(f"error: {conf}:3: ListenPort: UDP [::]:{PORT} is already in use"), \
        line

    # (the port is taken before the TUN is made: no device was left behind)
    # a device is removed once; then there is nothing to remove
    two.net.run("a", "ip", "tuntap", "add", "jvfree0", "mode", "tun")
    out = two.cli("a", "gateway", "down", "--tun", "jvfree0")
    assert out.returncode == 0 and out.stdout.strip() == "removed jvfree0", out
    out = two.cli("a", "gateway", "down", "--tun", "jvfree0")
    assert out.returncode == 0, out
    assert out.stdout.strip() == "no TUN device jvfree0: nothing to remove"


def test_a_record_of_a_namespace_that_is_gone(two):
    """Its namespace deleted, a record blocks the name everywhere: detach
    --force removes its record and pins, and touches no link here."""
    gone = Lab(("c",))
    gone.up()
    try:
        gone.run("c", "ip", "link", "add", IFACE, "type", "veth", "peer", "name", "jvns0p")
        gone.run("c", "ip", "link", "set", IFACE, "up")
        out = subprocess.run(gone.cmd("c", *gone.jvpn_cmd("attach", IFACE)),
                             env=two.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    finally:
        gone.down()
    assert (two.run_dir / f"{IFACE}.json").exists() and two.pin_dir.exists()

    line = two.error("a", "detach", IFACE)
    assert "it has no name and no process now" in line, line
    assert "attach" in two.error("a", "attach", IFACE)  # the name is still taken
    out = two.cli("a", "detach", IFACE, "--force")
    assert out.returncode == 0, out.stderr
    assert "its network namespace is gone" in " ".join(out.stdout.split())
    assert not (two.run_dir / f"{IFACE}.json").exists() and not two.pin_dir.exists()
    out = two.cli("a", "attach", IFACE)  # a's own interface of that name, now free
    assert out.returncode == 0, out.stderr
    assert two.cli("a", "detach", IFACE).returncode == 0


def test_client_up_names_its_busy_tun(gateway):
    """The client's TUN is chosen by its config's Name: the error says so."""
    from jvpn.tunnel import Tun  # noqa: PLC0415

    tl = gateway
    conf = tl.tmp / "client.conf"
    with tl.lab.inside("cl"):
        busy = Tun("jvpn0")  # the lab client's Name, held open by this process
    try:
        out = subprocess.run(
            tl.lab.cmd("cl", *tl.lab.jvpn_cmd("client", "up", "--config", str(conf))),
            env=tl.env, capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {conf}:3: Name: TUN device jvpn0 is busy"), out.stderr
