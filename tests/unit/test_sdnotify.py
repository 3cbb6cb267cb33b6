"""jvpn/sdnotify.py: readiness datagrams to $NOTIFY_SOCKET, as systemd reads them."""

import os
import socket
import uuid

import pytest

from jvpn import logs, sdnotify


def _listener(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(address)
    s.settimeout(2)
    return s


def _fields(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_with_status_reaches_a_path_socket(tmp_path):
    path = str(tmp_path / "notify")
    with _listener(path) as sock:
        assert sdnotify.notify_ready("up on :51900\nsecond line", env={"NOTIFY_SOCKET": path})
        assert _fields(sock) == ["READY=1", "STATUS=up on :51900 second line"]


def test_abstract_addresses_are_written_with_an_at_sign():
    name = f"jvpn-test-{uuid.uuid4().hex}"
    with _listener("\0" + name) as sock:
        assert sdnotify.notify_stopping(env={"NOTIFY_SOCKET": "@" + name})
        assert _fields(sock) == ["STOPPING=1"]


def test_reloading_carries_the_monotonic_time_in_microseconds(tmp_path):
    path = str(tmp_path / "notify")
    with _listener(path) as sock:
        sdnotify.notify_reloading(env={"NOTIFY_SOCKET": path}, monotonic_ns=lambda: 5_000_123)
        assert _fields(sock) == ["RELOADING=1", "MONOTONIC_USEC=5000"]


@pytest.mark.parametrize("value", [None, "", "@", "relative/path", "vsock:2:9"])
def test_nothing_is_sent_without_a_usable_socket(value):
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    assert sdnotify.notify_ready(env=env) is False


def test_a_socket_nobody_listens_on_is_a_warning_not_an_error(tmp_path, capsys):
    logs.setup("info", env={})  # as `jvpn-xdp` does
    gone = str(tmp_path / "gone")
    assert sdnotify.notify_ready(env={"NOTIFY_SOCKET": gone}) is False
    assert capsys.readouterr().err.startswith("warning: could not notify systemd (READY=1): ")


def test_the_process_environment_is_the_default(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    with _listener(path) as sock:
        assert sdnotify.notify_status("draining")
        assert _fields(sock) == ["STATUS=draining"]
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not os.environ.get("NOTIFY_SOCKET") and sdnotify.notify_ready() is False
