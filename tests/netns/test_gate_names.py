"""The gate's names and namespace identity on real links (review R2), each
test in namespaces of its own (jvpn/lab/netns.py), removed after:

- an interface whose name has a '.' (as a VLAN's, eth0.100), which bpffs refuses
  as a pin directory name: attach, status and detach work;
- two `jvpn-xdp attach` of one interface at once: one attaches, the other
  says it lost to it, and the winner's program and pins stay;
- a record whose inode is this namespace's but whose cookie is not (the
  kernel gave a gone namespace's inode to this one): never taken as ours,
  forged, and for real (a namespace held until one gets a gone one's inode).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


# ---------------------------------------------------------------- a real inode reuse

OTHER_TOOL = """
import sys
from bcc import BPF
b = BPF(text="int other_tool(struct xdp_md *ctx) { return XDP_PASS; }")
b.attach_xdp(sys.argv[1], b.load_func("other_tool", BPF.XDP), 1 << 1)
"""


def _netns_inode(pid: int, ours: int, timeout: float = 10) -> int:
    """The namespace inode of ``pid`` once `unshare` has made its own."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        if inode != ours:
            return inode
        time.sleep(0.02)
    raise AssertionError(f"unshare (pid {pid}) made no network namespace")


def _namespace_with_inode(target: int, held: list[subprocess.Popen]) -> subprocess.Popen | None:
    """A new namespace (held by a sleeping process) that got inode ``target``:
    the kernel hands out the lowest free one, so lower free ones are held
    until ``target`` comes; a higher one means it is not free (yet)."""
    ours = os.stat("/proc/self/ns/net").st_ino
    for _ in range(80):
        p = subprocess.Popen(["unshare", "--net", "sleep", "300"])
        inode = _netns_inode(p.pid, ours)
        if inode == target:
            return p
        if inode < target:
            held.append(p)
            continue
        p.kill()
        p.wait()
        time.sleep(0.25)  # the gone namespace is freed by a kernel worker, a little later
    return None


def test_a_namespace_that_got_a_gone_ones_inode_is_not_taken_for_it(lab):
    """The R2 repro, for real: jvpn attached in namespace A, A dies, B gets
    A's inode and has another tool's XDP program on an interface of that
    name. From B, the record is a gone namespace's: detach is refused, and
    --force forgets it without touching B's link."""
    env, tool = lab.env, [sys.executable, "-c", OTHER_TOOL, IFACE]
    held: list[subprocess.Popen] = []
    b = None
    try:
        for _attempt in range(3):  # another test's namespace may take the inode first
            gone = _attach_in_a_namespace_that_dies(lab)
            b = _namespace_with_inode(gone["netns_inode"], held)
            if b is not None:
                break
            out = lab.cli("detach", IFACE, "--force")  # from a: its namespace is gone
            assert out.returncode == 0, out.stderr
        assert b is not None, f"no new namespace got inode {gone['netns_inode']} back"
        in_b = ["nsenter", "--target", str(b.pid), "--net"]
        subprocess.run([*in_b, "sh", "-c", VETH], check=True, timeout=30)
        subprocess.run([*in_b, *tool], check=True, capture_output=True, timeout=120)
        prog = _prog_in(in_b)
        assert prog

        row, = json.loads(_cli(in_b, env, "status", "--json").stdout)
        assert row["netns_inode"] == gone["netns_inode"] and row["prog_id"] is None
        assert "that namespace is gone (this one has its inode now)" in row["elsewhere"]
        out = _cli(in_b, env, "detach", IFACE)
        assert out.returncode == 1 and "that namespace is gone" in out.stderr, out.stderr
        assert _prog_in(in_b) == prog
        out = _cli(in_b, env, "detach", IFACE, "--force")
        assert out.returncode == 0, out.stderr
        assert "no link was touched" in " ".join(out.stdout.split())
        assert _prog_in(in_b) == prog  # the other tool's program is still there
        assert not (lab.run_dir / f"{IFACE}.json").exists()
        assert not (lab.pin_root / IFACE).exists()
    finally:
        for p in [*held, *([b] if b else [])]:
            p.kill()
            p.wait()


VETH = f"ip link add {IFACE} type veth peer name jvnm9 && ip link set {IFACE} up"


def _attach_in_a_namespace_that_dies(lab: NamesLab) -> dict:
    """jvpn attached in an unnamed namespace that ends with the command."""
    a = subprocess.run(["unshare", "--net", "sh", "-c",
                        f"{VETH} && {' '.join(lab.net.jvpn_cmd())} attach {IFACE} "
                        "--mode generic --json"],
                       env=lab.env, capture_output=True, text=True, timeout=180)
    assert a.returncode == 0, a.stderr
    return json.loads(a.stdout)


def _cli(in_ns: list[str], env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*in_ns, *Lab.jvpn_cmd(*args)], env=env, capture_output=True,
                          text=True, timeout=120)


def _prog_in(in_ns: list[str]) -> int | None:
    out = subprocess.run([*in_ns, "ip", "-d", "-j", "link", "show", IFACE], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    xdp = json.loads(out)[0].get("xdp") or {}
    return (xdp.get("prog") or {}).get("id")
