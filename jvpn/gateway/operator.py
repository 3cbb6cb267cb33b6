"""The operator interface of a running gateway: a Unix stream socket.

`jvpn-xdp sessions`, `terminate`, `rekey`, `drain`, `health`, `gateway
reload` ask the daemon through it (the CLI side is jvpn/operator.py; the
operations are in jvpn/gateway/operations.py). One request per connection:
one JSON object on one line, ``{"op": NAME, ...arguments}``; one reply
line, ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "one
line"}``.

Who may ask: root (and the daemon's own user) only. Three locks, each
enough alone: the socket file is created 0600 (the umask is narrowed around
bind(2), so no window exists where it is looser), it lives in a directory
only we may write (jvpn.files.private_dir: nobody can swap it for one of
theirs), and every connection's peer credentials (SO_PEERCRED) are checked
before its request is read. A request is bounded in size and time: a
stuck or slow client holds the one serving thread for at most
``IO_TIMEOUT_S``, and nothing it sends changes anything before the handler,
which validates its arguments, runs.

A socket file left by a crashed daemon is replaced; one a live daemon
answers on is not (``SocketInUse``, naming the key to change).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from jvpn.errors import JvpnError
from jvpn.files import UnsafeFile, private_dir

SOCKET_NAME = "gateway.sock"
MAX_REQUEST_BYTES = 64 << 10
IO_TIMEOUT_S = 2.0
# A reply's send waits this long for the client to read: a page of 10,000
# sessions is megabytes, and a reader paused for 2 s (a loaded machine, its
# collector) was cut off mid-reply (`bench scale` at 1M: "the reply is not
# JSON"). Only root may connect: a root client can hold the operator thread
# this long, never a user.
REPLY_SEND_S = 30.0
ACCEPT_POLL_S = 0.25  # how soon the serving thread notices a stop
_UCRED = struct.Struct("3i")  # pid, uid, gid

Handler = Callable[[dict], object]


class SocketInUse(JvpnError):
    """Another live daemon answers on the operator socket's path."""


class Refused(JvpnError):
    """An operation's refusal: its one line goes back to the operator as is."""


def default_path(run_dir: Path) -> Path:
    return Path(run_dir) / SOCKET_NAME


class OperatorServer:
    def __init__(self, path: Path, handlers: dict[str, Handler], *,
                 report: Callable[[str, BaseException], None] | None = None,
                 allowed_uids: tuple[int, ...] | None = None):
        """``report(where, exc)``: an unexpected handler error (the operator
        gets one line, the daemon's incidents the details)."""
        self.path = Path(path)
        self.handlers = handlers
        self.report = report or (lambda _where, _exc: None)
        self.allowed_uids = allowed_uids if allowed_uids is not None else (0, os.geteuid())
        self._sock: socket.socket | None = None
        self._inode: int | None = None

    # ------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Bind and listen; SocketInUse or UnsafeFile (one line) if not ours to take."""
        private_dir(self.path.parent)
        self._clear_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)  # created 0600: no window where it is looser
        try:
            sock.bind(str(self.path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)  # whatever umask a caller's thread raced in
        sock.listen(16)
        sock.settimeout(ACCEPT_POLL_S)
        self._sock, self._inode = sock, os.stat(self.path).st_ino

    def serve(self, stop: threading.Event) -> None:
        """The serving loop (one thread): until ``stop`` is set. Nothing a
        client sends, and no error of accept(2) (EMFILE, ECONNABORTED...),
        ends it: an operator's bad line must not stop the gateway."""
        sock = self._sock
        assert sock is not None, "open() first"
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError as e:
                if stop.is_set() or sock.fileno() < 0:
                    return  # closed by close(): stopping
                self.report("operator", e)
                stop.wait(ACCEPT_POLL_S)  # out of descriptors: no busy loop
                continue
            with conn:
                try:
                    self.serve_one(conn)
                except Exception as e:  # noqa: BLE001 - one connection, contained
                    self.report("operator", e)

    def close(self) -> None:
        """Stop answering and remove the socket file, if it is still ours."""
        if self._sock is None:
            return
        self._sock.close()
        self._sock = None
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    # ------------------------------------------------------------ one request
    def serve_one(self, conn: socket.socket) -> None:
        """One request, read within IO_TIMEOUT_S in all (not per recv: a
        client dripping a byte at a time is cut off too), and its reply."""
        conn.settimeout(IO_TIMEOUT_S)
        try:
            uid = self._peer_uid(conn)
            if uid not in self.allowed_uids:
                reply = _refusal(f"uid {uid} may not use the operator socket (root only)")
            else:
                reply = self._answer(_read_request(conn, time.monotonic() + IO_TIMEOUT_S))
            conn.settimeout(REPLY_SEND_S)
            conn.sendall((json.dumps(reply, default=str) + "\n").encode())
        except (OSError, ValueError):
            return  # a client that went away, timed out or sent garbage: nothing changed

    def _answer(self, request: dict | str) -> dict:
        if isinstance(request, str):
            return _refusal(request)
        op = request.get("op")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return _refusal(f"unknown operation {op!r} (known: {known})")
        try:
            return {"ok": True, "result": handler(request)}
        except JvpnError as e:
            return _refusal(str(e))
        except Exception as e:  # noqa: BLE001 - the daemon goes on; the operator gets one line
            self.report(f"operator:{op}", e)
            return _refusal(f"{op} failed inside the daemon ({type(e).__name__}): "
                            "see the events file (DaemonError)")

    @staticmethod
    def _peer_uid(conn: socket.socket) -> int:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        return _UCRED.unpack(raw)[1]

    def _clear_stale(self) -> None:
        """A socket file a crashed daemon left is removed; a live one is not."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise UnsafeFile(f"{self.path} exists and is not a socket: remove it, or set "
                             "ControlSocket to another path")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except OSError as e:
            if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                # EAGAIN (its backlog is full), a timeout...: someone listens
                raise SocketInUse(f"{self.path}: a process listens on this operator socket "
                                  f"but does not answer ({e.strerror or e}): stop it, or give "
                                  "this gateway its own ControlSocket") from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # nobody listens: a crashed daemon's
            return
        finally:
            probe.close()
        raise SocketInUse(f"{self.path}: another gateway daemon answers on this operator "
                          "socket: stop it, or give this gateway its own ControlSocket")


def _read_request(conn: socket.socket, deadline: float) -> dict | str:
    """The request object, or the one-line reason it is not one."""
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"request not complete within {IO_TIMEOUT_S:g} s"
        conn.settimeout(left)
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            return f"request not complete within {IO_TIMEOUT_S:g} s"
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            return f"request larger than {MAX_REQUEST_BYTES} bytes"
    line = data.split(b"\n", 1)[0]
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON; nesting deeper than the stack
        return "request is not one JSON object on one line"
    if not isinstance(request, dict):
        return "request is not a JSON object"
    return request


def _refusal(line: str) -> dict:
    return {"ok": False, "error": " ".join(str(line).split())}
