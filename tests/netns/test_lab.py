"""The lab cleans up after a crashed run (namespaces of a dead owner), and
leaves a live owner's namespaces alone."""

import os
import subprocess

import pytest

from jvpn.lab.addresses import GW_IP
from jvpn.lab.netns import Lab, RoamingLab

pytestmark = pytest.mark.kernel


def _netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_stale_lab_of_a_dead_owner_is_removed_and_a_live_one_kept():
    dead = "jl4194300x0abc-gw"  # above pid_max: no such process
    live = f"jl{os.getpid()}x0abc-gw"
    for ns in (dead, live):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        Lab.cleanup_stale()
        names = _netns()
        assert dead not in names and live in names
    finally:
        for ns in (dead, live):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_lab_comes_up_and_goes_down_cleanly():
    lab = RoamingLab(with_attacker=True)
    with lab:
        out = lab.run("cl", "ping", "-c", "1", "-W", "2", GW_IP, check=False)
        assert out.returncode == 0  # client -> router -> gateway, inside the lab only
    assert lab.prefix not in _netns()
