"""The gate's names and namespace identity on real links (review R2), each
test in namespaces of its own (jvpn/lab/netns.py), removed after:

- an interface whose name has a '.' (as a VLAN's, eth0.100), which bpffs refuses
  as a pin directory name: attach, status and detach work;
- two `jvpn-xdp attach` of one interface at once: one attaches, the other
  says it lost to it, and the winner's program and pins stay;
- a record whose inode is this namespace's but whose cookie is not (the
  kernel gave a gone namespace's inode to this one): never taken as ours.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from jvpn.gate import attach as gate_attach
from jvpn.gate import loader
from jvpn.lab.netns import Lab
from jvpn.lab.running import jvpn_env

pytestmark = pytest.mark.kernel

IFACE = "jvnm0"
VLAN = f"{IFACE}.100"  # bpffs takes no '.': its pin dir is jvnm0_2e100


class NamesLab:
    """Namespaces "a" and "b" joined by a veth pair (IFACE on both ends), a
    veth pair in a whose one end is named like a VLAN (VLAN), and a pin root
    and run dir of this lab's own."""

    def __init__(self):
        self.net = Lab(("a", "b"))
        self.env = jvpn_env(str(self.net.pin_root()), self.net.run_dir("run"))
        self.pin_root = Path(self.env["JVPN_PIN_ROOT"])
        self.run_dir = Path(self.env["JVPN_RUN_DIR"])

    def up(self) -> None:
        self.net.up()
        self.net.veth("a", IFACE, None, "b", IFACE, None)
        # a veth named as a VLAN would be (this kernel may have no 8021q module)
        self.net.run("a", "ip", "link", "add", VLAN, "type", "veth", "peer", "name", "jvnm1")
        for ifname in (VLAN, "jvnm1"):
            self.net.run("a", "ip", "link", "set", ifname, "up")

    def down(self) -> None:
        self.net.down()
        gate_attach.unpin(self.pin_root)
        subprocess.run(["rm", "-rf", str(self.run_dir)], check=False)

    def cli(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.net.cmd("a", *self.net.jvpn_cmd(*args)),
                              env=env or self.env, capture_output=True, text=True,
                              timeout=120)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.net.cmd("a", *self.net.jvpn_cmd(*args)), env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def prog_id(self, ifname: str) -> int | None:
        with self.net.inside("a"):
            return gate_attach.xdp_prog_id(ifname)


@pytest.fixture
def lab():
    nl = NamesLab()
    try:
        nl.up()
        yield nl
    finally:
        nl.down()


def test_a_dotted_interface_attaches_shows_and_detaches(lab):
    out = lab.cli("attach", VLAN, "--mode", "generic", "--json")
    assert out.returncode == 0, out.stderr
    att = json.loads(out.stdout)
    pins = lab.pin_root / "jvnm0_2e100"
    assert att["ifname"] == VLAN and att["pin_dir"] == str(pins)
    prog = lab.prog_id(VLAN)
    assert prog and loader.pinned_prog_id(pins) == prog
    assert (lab.run_dir / "jvnm0_2e100.json").exists()

    row, = json.loads(lab.cli("status", "--json").stdout)
    assert (row["ifname"], row["prog_id"], row["pinned"], row["elsewhere"]) == \
        (VLAN, prog, True, None)
    assert row["sessions"] == 0

    out = lab.cli("detach", VLAN)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"detached jvpn from {VLAN}; removed {pins}"
    assert lab.prog_id(VLAN) is None and not pins.exists()
    assert json.loads(lab.cli("status", "--json").stdout) == []


def test_a_pin_root_bpffs_refuses_is_named_as_such(lab):
    dotted = f"{lab.pin_root}.x"  # bpffs refuses the '.' in it
    env = {**lab.env, "JVPN_PIN_ROOT": dotted}
    out = lab.cli("attach", IFACE, "--mode", "generic", env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last == (f"error: cannot create {dotted}/{IFACE} (Operation not permitted): the bpf "
                    "filesystem refuses the name (it takes no name with a '.': choose a "
                    "--pin-root without one)"), last
    assert "mounted" not in out.stderr and lab.prog_id(IFACE) is None


def test_two_attaches_at_once_one_wins_the_other_says_so(lab):
    procs = [lab.start("attach", IFACE, "--mode", "generic") for _ in range(2)]
    outs = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _out, _err in outs)
    assert codes == [0, 1], outs
    _rc, _out, err = next(o for o in outs if o[0] == 1)
    last = err.strip().splitlines()[-1]
    assert last == (f"error: jvpn is already attached to {IFACE} (by another attach that "
                    "finished first)"), err
    assert "compil" not in err.lower()
    prog = lab.prog_id(IFACE)
    assert prog and loader.pinned_prog_id(lab.pin_root / IFACE) == prog  # the winner's, intact
    att = json.loads((lab.run_dir / f"{IFACE}.json").read_text())
    assert att["ifname"] == IFACE
    out = lab.cli("detach", IFACE)
    assert out.returncode == 0, out.stderr
    assert lab.prog_id(IFACE) is None


def test_our_inode_with_another_cookie_is_not_ours(lab):
    """As if a's namespace had died and a new one had got its inode: the
    record is a gone namespace's; the program on a's link is not touched."""
    out = lab.cli("attach", IFACE, "--mode", "generic", "--json")
    assert out.returncode == 0, out.stderr
    record = lab.run_dir / f"{IFACE}.json"
    att = json.loads(record.read_text())
    assert att["netns_inode"] > 0 and att["netns_cookie"] > 0
    att["netns_cookie"] += 1
    record.write_text(json.dumps(att))
    prog = lab.prog_id(IFACE)

    row, = json.loads(lab.cli("status", "--json").stdout)
    assert row["prog_id"] is None
    assert "that namespace is gone (this one has its inode now)" in row["elsewhere"]
    out = lab.cli("detach", IFACE)
    assert out.returncode == 1 and "that namespace is gone" in out.stderr, out.stderr
    assert lab.prog_id(IFACE) == prog and record.exists()
    line = lab.cli("attach", IFACE).stderr.strip().splitlines()[-1]
    assert "that namespace is gone" in line, line

    out = lab.cli("detach", IFACE, "--force")
    assert out.returncode == 0, out.stderr
    assert "its network namespace is gone (no link was touched)" in " ".join(out.stdout.split())
    assert lab.prog_id(IFACE) == prog  # not ours to remove (as far as the record can tell)
    assert not record.exists() and not (lab.pin_root / IFACE).exists()
