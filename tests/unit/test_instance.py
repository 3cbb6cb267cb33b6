"""Issue 10 item 15, double starts: a second gateway on the same state
directory or the same UDP port (in the same network namespace) is refused
with one line naming the holder; a crashed holder (SIGKILL) blocks nobody;
the lock files are the daemon's alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jvpn.gateway.instance import InstanceLock, InstanceTaken

CONFIG_A, CONFIG_B = "/etc/jvpn/a.conf", "/etc/jvpn/b.conf"


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return tmp_path / "run"


def _acquire(tmp_path: Path, run_dir: Path, state: str, port: int,
             config: str = CONFIG_A) -> InstanceLock:
    return InstanceLock.acquire(state_dir=tmp_path / state, port=port, config_path=config,
                                run_dir=run_dir)


def _refusal(tmp_path, run_dir, state, port) -> str:
    with pytest.raises(InstanceTaken) as exc:
        _acquire(tmp_path, run_dir, state, port, CONFIG_B)
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def test_second_gateway_on_the_same_state_dir_is_refused_naming_the_holder(tmp_path, run_dir):
    with _acquire(tmp_path, run_dir, "state", 51900):
        message = _refusal(tmp_path, run_dir, "state", 51901)
    assert f"pid {os.getpid()}" in message and CONFIG_A in message, message
    assert str(tmp_path / "state") in message and "started" in message, message


def test_second_gateway_on_the_same_port_is_refused_naming_the_holder(tmp_path, run_dir):
    with _acquire(tmp_path, run_dir, "state-a", 51900):
        message = _refusal(tmp_path, run_dir, "state-b", 51900)
        assert f"pid {os.getpid()}" in message and CONFIG_A in message, message
        assert "UDP port 51900" in message, message
        # the refused attempt let go of what it had taken (state-b)
        _acquire(tmp_path, run_dir, "state-b", 51901).release()


def test_release_frees_both_and_clears_the_holder(tmp_path, run_dir):
    lock = _acquire(tmp_path, run_dir, "state", 51900)
    files = lock.paths
    lock.release()
    assert all(p.read_text() == "" for p in files)
    _acquire(tmp_path, run_dir, "state", 51900, CONFIG_B).release()


def test_lock_files_are_0600_name_the_holder_and_others_cannot_open_them(tmp_path, run_dir):
    old = os.umask(0)
    try:
        lock = _acquire(tmp_path, run_dir, "state", 51900)
    finally:
        os.umask(old)
    with lock:
        assert len(lock.paths) == 2
        for path in lock.paths:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            holder = json.loads(path.read_text())
            assert holder["pid"] == os.getpid() and holder["config"] == CONFIG_A
            if os.geteuid() == 0 and shutil.which("setpriv"):
                # uid 65534 cannot open it (a shared flock would block every start)
                out = subprocess.run(
                    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     "/usr/bin/python3", "-c", f"open({str(path)!r})"],
                    capture_output=True, text=True)
                assert out.returncode != 0 and "Permission denied" in out.stderr, out


_HOLD = """
import sys, time
from pathlib import Path
from jvpn.gateway.instance import InstanceLock
InstanceLock.acquire(state_dir=Path(sys.argv[1]), port=51900, config_path="/crash.conf",
                     run_dir=Path(sys.argv[2]))
print("held", flush=True)
time.sleep(60)
"""


def _hold_in_child(state: Path, run_dir: Path, *prefix: str) -> subprocess.Popen:
    child = subprocess.Popen([*prefix, sys.executable, "-c", _HOLD, str(state), str(run_dir)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_crashed_holder_does_not_block_a_new_start(tmp_path, run_dir):
    child = _hold_in_child(tmp_path / "state", run_dir)
    try:
        message = _refusal(tmp_path, run_dir, "state", 51900)
        assert f"pid {child.pid}" in message and "/crash.conf" in message, message
    finally:
        child.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the flock
        child.wait()
    _acquire(tmp_path, run_dir, "state", 51900).release()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root to make a network namespace")
def test_the_same_port_in_another_network_namespace_is_another_port(tmp_path, run_dir):
    with _acquire(tmp_path, run_dir, "state-a", 51900):
        child = _hold_in_child(tmp_path / "state-b", run_dir, "unshare", "--net")
        child.kill()
        child.wait()
