"""`sudo make demo` (the XDP stage of it) runs end to end and cleans up."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel


def test_xdp_demo_runs_and_cleans_up():
    out = subprocess.run([sys.executable, "-m", "jvpn.xdpdemo"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "from the bound transport: the gateway socket received 20" in out.stdout
    for line in out.stdout.splitlines():
        if "replays" in line or "forged" in line or "unknown session" in line:
            assert line.rstrip().endswith("received 0"), line
    assert "drop_unknown_session" in out.stdout and "300" in out.stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "jvpn-demo" not in netns
