"""The CLI's side of the gateway's operator socket (jvpn/gateway/operator.py):
one request, one reply, or one line saying why not."""

from __future__ import annotations

import errno
import json
import socket
import time
from pathlib import Path

from jvpn.errors import JvpnError

MAX_REPLY_BYTES = 256 << 20  # a million sessions' identities fit
DEFAULT_TIMEOUT_S = 10.0
# a reload or a terminate waits for the store, once per session it ends:
# `gateway reload` and `terminate` wait this long (--timeout) by default
ACTION_TIMEOUT_S = 60.0
ACTIONS = ("terminate", "rekey", "drain", "reload")  # operations that change the gateway


class NoDaemon(JvpnError):
    """Nothing answers on the operator socket: no gateway daemon runs there."""


class OperatorError(JvpnError):
    """The daemon refused the operation; the message is its one line."""


def call(path: str | Path, op: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, **args) -> object:
    """The result of operation ``op`` (arguments as JSON values)."""
    path = Path(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout_s)
        _connect(sock, path)
        try:
            sock.sendall((json.dumps({**args, "op": op}) + "\n").encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before our request was read (its reply is already queued)
        reply = _read_reply(sock, path, op, time.monotonic() + timeout_s, timeout_s)
    if reply.get("ok") is True:
        return reply.get("result")
    raise OperatorError(str(reply.get("error") or f"{op}: refused without a reason"))


def _connect(sock: socket.socket, path: Path) -> None:
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        raise NoDaemon(f"no gateway daemon answers on {path}: is `jvpn-xdp gateway up` "
                       "running (with this run dir, or --socket = its ControlSocket)?") from None
    except PermissionError:
        raise JvpnError(f"{path}: permission denied: the operator socket is root's "
                        "(run with sudo)") from None
    except TimeoutError:
        raise JvpnError(f"{path}: the gateway daemon did not accept within "
                        f"{sock.gettimeout():g} s") from None
    except OSError as e:
        if e.errno == errno.ENOTSOCK or e.errno == errno.ECONNREFUSED:
            raise NoDaemon(f"{path} is not a live operator socket") from None
        raise


def _read_reply(sock: socket.socket, path: Path, op: str, deadline: float,
                timeout_s: float) -> dict:
    """The reply, whole by ``deadline`` (monotonic): a timeout per read
    would let a reply trickled a byte at a time hold the caller for ever
    (review k20r6 F2)."""
    chunks, size = [], 0
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if chunk.endswith(b"\n"):
                break
            if size > MAX_REPLY_BYTES:
                raise JvpnError(f"{path}: reply larger than {MAX_REPLY_BYTES} bytes")
    except TimeoutError:
        # the daemon does not stop an operation when we stop waiting for it
        still = (f": the {op} may still complete (see `jvpn-xdp events`; a longer "
                 "--timeout waits for it)" if op in ACTIONS else "")
        raise JvpnError(f"{path}: the gateway daemon did not answer within "
                        f"{timeout_s:g} s{still}") from None
    except ConnectionResetError:
        if not chunks:
            raise JvpnError(f"{path}: the gateway daemon closed the connection without "
                            "an answer") from None
    if chunks and not chunks[-1].endswith(b"\n"):
        raise JvpnError(f"{path}: the gateway daemon closed the connection mid-reply "
                        f"(after {size} bytes)")
    try:
        reply = json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # k20r6 F1: nested
        raise JvpnError(f"{path}: the reply is not JSON (is this a jvpn gateway?)") from None
    if not isinstance(reply, dict):
        raise JvpnError(f"{path}: the reply is not a JSON object")
    return reply
