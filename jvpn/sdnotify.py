"""systemd's readiness protocol (sd_notify(3)), without a dependency.

A service of ``Type=notify`` says when it is ready, reloading or stopping
by sending one datagram of ``KEY=VALUE`` lines to the Unix socket named by
``$NOTIFY_SOCKET``: a path, or an abstract address written with a leading
``@``. Without that variable (not run by systemd) every function here does
nothing, so the daemons call them unconditionally.

A failed send never stops the daemon: systemd then times the start out
itself (``TimeoutStartSec``), which says more than a crash would.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` (e.g. ``"READY=1"``) as one datagram; True if sent."""
    address = _address((os.environ if env is None else env).get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    payload = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(payload)
    except OSError as e:
        log.warning("could not notify systemd (%s): %s", " ".join(fields), e.strerror or e)
        return False
    return True


def _address(value: str) -> str | None:
    """The socket address: a path, or ``@name`` = the abstract ``\\0name``.
    Anything else (empty, vsock:...) is not for us."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def notify_ready(status: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """The service is up (again, after a reload): ``READY=1``."""
    return notify("READY=1", *_status(status), env=env)


def notify_reloading(status: str | None = None, env: Mapping[str, str] | None = None,
                     monotonic_ns=time.monotonic_ns) -> bool:
    """A reload began: ``RELOADING=1`` with ``MONOTONIC_USEC`` (systemd
    matches it to the reload request); call :func:`notify_ready` when done,
    whether the reload was applied or refused."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_ns() // 1000}", *_status(status),
                  env=env)


def notify_stopping(status: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """The service is stopping: ``STOPPING=1``."""
    return notify("STOPPING=1", *_status(status), env=env)


def notify_status(status: str, env: Mapping[str, str] | None = None) -> bool:
    """A line for ``systemctl status``: ``STATUS=...``."""
    return notify(*_status(status), env=env)


def _status(text: str | None) -> tuple[str, ...]:
    # one line: a newline would start another KEY=VALUE field
    return () if text is None else ("STATUS=" + " ".join(text.splitlines()),)
