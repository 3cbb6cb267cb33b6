"""SIGUSR1 (logrotate's postrotate, docs/service.md) while `gateway up` or
`client up` is still starting: remembered, never fatal. Its default action
ends the process, and a start can wait long: an etcd store that does not
answer (LeaseTTL), a config read from a FIFO (here: the simplest wait point
after the very first line of either command)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jvpn import keys
from jvpn.lab.addresses import HUNG_STORE_PORT, LOOPBACK
from jvpn.lab.netns import Lab
from jvpn.lab.running import jvpn_env, write_secret

pytestmark = pytest.mark.kernel

HUNG_STORE = f"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(({LOOPBACK!r}, {HUNG_STORE_PORT})); s.listen(); held = []
while True:
    held.append(s.accept()); print("accepted", flush=True)  # never answers
"""


def usr1_then_alive(proc: subprocess.Popen, settle: float = 1.5) -> bool:
    proc.send_signal(signal.SIGUSR1)
    time.sleep(settle)
    return proc.poll() is None


def wait_for(cond, what: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("command", ["gateway", "client"])
def test_usr1_while_reading_the_config_is_not_fatal(tmp_path, command):
    fifo = tmp_path / "cfg.conf"
    os.mkfifo(fifo, 0o600)  # open() for reading waits for a writer: the start waits
    env = jvpn_env(str(tmp_path / "pins"), tmp_path / "run")
    jvpn = Path(sys.executable).with_name("jvpn-xdp")
    proc = subprocess.Popen([str(jvpn), command, "up", "--config", str(fifo)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.5)  # python started, the command runs, open() blocks
        assert proc.poll() is None, proc.communicate()[0]
        assert usr1_then_alive(proc), f"killed by SIGUSR1: {proc.returncode}"
        with open(fifo, "w") as w:  # let it go on: a config it refuses, one line, exit 1
            w.write("not a config\n")
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 1, (proc.returncode, out)
        assert "Key = Value" in out and "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_usr1_while_the_store_does_not_answer_is_not_fatal(tmp_path):
    lab = Lab(("gw",)).up()
    try:
        write_secret(tmp_path / "cluster.key", keys.encode(os.urandom(32)) + "\n")
        peer = keys.encode(keys.public_from_private(keys.generate_private()))
        (tmp_path / "peers.conf").write_text(f"[Peer]\nPublicKey = {peer}\n"
                                             "AllowedIP = 10.98.0.2/32\n")
        write_secret(tmp_path / "gw.conf",
                     f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
                     "ListenPort = 51977\nAddress = 10.98.0.1/24\nPeersFile = peers.conf\n"
                     f"StateDir = {tmp_path / 'state'}\nNodeId = usr1\n"
                     f"Store = etcd://{LOOPBACK}:{HUNG_STORE_PORT}\nClusterKeyFile = cluster.key\n")
        store_log = tmp_path / "store.log"
        lab.spawn("gw", sys.executable, "-c", HUNG_STORE, log=store_log)
        time.sleep(0.5)
        env = jvpn_env(str(tmp_path / "pins"), tmp_path / "run")
        gw = lab.spawn("gw", *lab.jvpn_cmd("gateway", "up", "--config", str(tmp_path / "gw.conf"),
                                           "--tun", f"{lab.prefix[-8:]}u1"),
                       log=tmp_path / "gateway.log", env=env)
        wait_for(lambda: "accepted" in store_log.read_text(), "the gateway to reach the store")
        assert usr1_then_alive(gw), (gw.returncode, (tmp_path / "gateway.log").read_text())
    finally:
        lab.down()  # kills what it spawned
