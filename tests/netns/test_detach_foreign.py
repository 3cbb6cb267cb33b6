"""`jvpn-xdp detach` takes off the link only the XDP program jvpn pinned
(review R2): after someone took jvpn's program off and put their own filter
on, detach keeps theirs (warning with its id) and removes only jvpn's pins
and record; `status` says the link's program is not jvpn's. A record whose
mode is wrong still finds jvpn's program in the mode it runs in.

A namespace pair of this test's own (jvpn/lab/netns.py) with a veth pair; no
addresses, no traffic: only what is on the link is looked at."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from jvpn.gate import attach as gate_attach
from jvpn.gate import loader
from jvpn.gate.records import Attachment
from jvpn.lab.netns import Lab
from jvpn.lab.running import jvpn_env

pytestmark = pytest.mark.kernel

IFACE = "jvdf0"
OTHER_TOOL = """
#include <uapi/linux/bpf.h>
int xdp_main(struct xdp_md *ctx) { return XDP_PASS; }
"""


class OneLink:
    def __init__(self):
        self.net = Lab(("gw", "peer"))
        self.env = jvpn_env(str(self.net.pin_root()), self.net.run_dir("run"))
        self.pin_dir = self.net.pin_root() / IFACE
        self.record = self.net.run_dir("run") / f"{IFACE}.json"

    def up(self) -> None:
        self.net.up()
        self.net.veth("gw", IFACE, None, "peer", "jvdfp0", None)

    def down(self) -> None:
        self.net.down()
        shutil.rmtree(self.net.pin_root(), ignore_errors=True)
        shutil.rmtree(self.net.run_dir("run"), ignore_errors=True)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        r = subprocess.run(self.net.cmd("gw", *self.net.jvpn_cmd(*args)), env=self.env,
                           capture_output=True, text=True, timeout=300)
        assert "Traceback" not in r.stderr, r.stderr
        return r

    def prog_id(self) -> int | None:
        with self.net.inside("gw"):
            return gate_attach.xdp_prog_id(IFACE)

    def replace_with_another_tool(self) -> int:
        """Take jvpn's program off (as `ip link set ... xdp off` would) and
        attach another tool's: its id."""
        self.net.run("gw", "ip", "link", "set", "dev", IFACE, "xdpgeneric", "off")
        bpf, _fd = loader.load_plain(OTHER_TOOL)
        try:
            with self.net.inside("gw"):
                fn = bpf.load_func(b"xdp_main", loader._bcc().BPF.XDP)
                bpf.attach_xdp(IFACE, fn, gate_attach.MODES["generic"])
        finally:
            bpf.cleanup()  # the link holds its own reference to the program
        return self.prog_id()


@pytest.fixture
def link():
    lab = OneLink()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def test_detach_keeps_a_program_that_replaced_jvpns(link):
    r = link.cli("attach", IFACE, "--mode", "generic")
    assert r.returncode == 0, r.stderr
    ours = link.prog_id()
    theirs = link.replace_with_another_tool()
    assert theirs and theirs != ours

    row, = json.loads(link.cli("status", "--json").stdout)
    assert (row["prog_id"], row["pinned_prog_id"]) == (theirs, ours)
    text = " ".join(link.cli("status").stdout.split())
    assert f"the XDP program on the link (id {theirs}) is not jvpn's (id {ours})" in text
    assert "run `jvpn-xdp detach` to clean up" not in text

    r = link.cli("detach", IFACE)
    assert r.returncode == 0, r.stderr
    assert f"an XDP program (id {theirs}) is on {IFACE} and was kept" in " ".join(r.stderr.split())
    assert link.prog_id() == theirs  # the other tool keeps its filter
    assert not link.pin_dir.exists() and not link.record.exists()


def test_detach_finds_jvpns_program_in_the_mode_it_runs_in(link):
    """A record that names the wrong mode (edited, or an old version's):
    the pinned program is still found in the mode it really runs in."""
    r = link.cli("attach", IFACE, "--mode", "generic")
    assert r.returncode == 0, r.stderr
    raw = json.loads(link.record.read_text()) | {"mode": "native"}
    link.record.write_text(json.dumps(raw))
    assert Attachment(**raw).mode == "native"
    r = link.cli("detach", IFACE)
    assert r.returncode == 0, r.stderr
    assert link.prog_id() is None
    assert "was kept" not in r.stderr
    assert not link.pin_dir.exists()
