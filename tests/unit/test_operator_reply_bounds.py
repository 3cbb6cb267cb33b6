"""Review k20r6 of 1027292..7b87434: the CLI's side of the operator socket
(jvpn/operator.py ``call``), which every page of `sessions` goes through
(cli/views.py DaemonPages). The listing's bounds (k20r5 F3/F4) hold only
if each request ends, in one line: a hostile or broken daemon's single
reply must not hang the CLI nor end it in a traceback.

F1: a reply nested deeper than the stack: ``json.loads`` raises
RecursionError, not JSONDecodeError; ``_read_reply`` lets it out and the
command ends in a traceback (the daemon's side catches it:
jvpn/gateway/operator.py ``except (ValueError, RecursionError)``).

F2: the timeout is per ``recv`` (``sock.settimeout``), not per reply: a
daemon that sends a byte now and then, never the newline, holds one request
until MAX_REPLY_BYTES (256 MiB) have come, at any pace: a `sessions` (or
`health`, `top`) that never ends."""

from __future__ import annotations

import time
import types

import pytest

from jvpn import operator as operator_mod
from jvpn.errors import JvpnError

DEEP = b'{"ok": true, "result": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"


class _Sock:
    """A connected operator socket whose replies are ``recv``'s."""

    def __init__(self, recv):
        self.recv, self.timeout = recv, None

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        return False

    def settimeout(self, t):
        self.timeout = t

    def gettimeout(self):
        return self.timeout

    def connect(self, _path):
        pass

    def sendall(self, _data):
        pass


def _socket_module(recv):
    return types.SimpleNamespace(AF_UNIX=1, SOCK_STREAM=1, SOCK_CLOEXEC=0,
                                 socket=lambda *_a: _Sock(recv))


def test_a_reply_nested_deeper_than_the_stack_is_one_line(monkeypatch):
    chunks = iter([DEEP, b""])
    monkeypatch.setattr(operator_mod, "socket", _socket_module(lambda _n: next(chunks)))
    with pytest.raises(JvpnError):  # main: RecursionError (a traceback at the CLI)
        operator_mod.call("/run/jvpn/operator.sock", "sessions", limit=10)


class _TooLong(BaseException):
    """The test's own stop: the CLI still waiting long past its timeout."""


def test_a_reply_trickled_a_byte_a_second_ends_at_the_timeout(monkeypatch):
    """A byte a (fake) second: main waits 10 s per byte, not 10 s for the
    reply, so it is still reading after 600 s (here stopped then)."""
    clock = [time.monotonic()]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    waited = [0]

    def recv(_n):
        clock[0] += 1.0
        waited[0] += 1
        if waited[0] > 600:
            raise _TooLong(f"still reading after {waited[0]} s, timeout 10 s")
        return b" "

    monkeypatch.setattr(operator_mod, "socket", _socket_module(recv))
    with pytest.raises(JvpnError):
        operator_mod.call("/run/jvpn/operator.sock", "sessions", limit=10, timeout_s=10.0)
