"""`jvpn-xdp detach` when the kernel refuses to take jvpn's program off
because an upper device has an XDP program (review R4): the link is a port
of a bridge that runs another tool's XDP program, so removing the link's
program fails with EEXIST although it is jvpn's. detach must say so in one
line and keep the pins and the record (they are what proves the program is
jvpn's); once the bridge's program is gone, detach removes it as usual.

A namespace pair of this test's own (jvpn/lab/netns.py, via the OneLink of
test_detach_foreign.py) with a veth pair and a bridge; no traffic."""

from __future__ import annotations

import pytest
from netns.test_detach_foreign import IFACE, OTHER_TOOL, link  # noqa: F401 - the fixture

from jvpn.gate import attach as gate_attach
from jvpn.gate import loader

pytestmark = pytest.mark.kernel

BRIDGE = "jvdub0"


def bridge_with_another_tools_xdp(link) -> None:  # noqa: F811 - the fixture's value
    """Put the link in a bridge and attach another tool's XDP program to the
    bridge: the link's upper device now has XDP."""
    link.net.run("gw", "ip", "link", "add", BRIDGE, "type", "bridge")
    link.net.run("gw", "ip", "link", "set", "dev", IFACE, "master", BRIDGE)
    link.net.run("gw", "ip", "link", "set", "dev", BRIDGE, "up")
    bpf, _fd = loader.load_plain(OTHER_TOOL)
    try:
        with link.net.inside("gw"):
            fn = bpf.load_func(b"xdp_main", loader._bcc().BPF.XDP)
            bpf.attach_xdp(BRIDGE.encode(), fn, gate_attach.MODES["generic"])
    finally:
        bpf.cleanup()  # the bridge holds its own reference to the program


def test_detach_refused_by_an_upper_devices_xdp_keeps_pins_and_records(link):  # noqa: F811
    r = link.cli("attach", IFACE, "--mode", "generic")
    assert r.returncode == 0, r.stderr
    ours = link.prog_id()
    bridge_with_another_tools_xdp(link)

    r = link.cli("detach", IFACE)
    err = " ".join(r.stderr.split())
    assert r.returncode != 0, err
    assert f"jvpn's XDP program (id {ours}) is still on the link" in err
    assert "upper device" in err and len(r.stderr.strip().splitlines()) == 1
    assert link.prog_id() == ours  # still filtering
    assert link.pin_dir.exists() and link.record.exists()  # what proves it is jvpn's

    link.net.run("gw", "ip", "link", "set", "dev", BRIDGE, "xdpgeneric", "off")
    r = link.cli("detach", IFACE)
    assert r.returncode == 0, r.stderr
    assert link.prog_id() is None
    assert not link.pin_dir.exists() and not link.record.exists()
