"""Lifecycle and security events: one JSON object per line.

Base fields (the preview's event format): ts_ms, event_type, session_id,
reason_code, node_id, policy_version, and transport_id / version where they
apply. The XDP program's sampled security events join the same stream
(event_type "XdpSecurityDrop"). Quiet by default: nothing per packet.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from jvpn.files import PRIVATE_DIR_MODE, open_private


def sid_hex(session_id: int | None) -> str | None:
    return None if session_id is None else f"{session_id:016x}"


class EventLog:
    def __init__(self, node_id: str, path: Path | None = None, *, policy_version: int = 0,
                 echo: TextIO | None = None, clock_ms: Callable[[], int] | None = None):
        self.node_id = node_id
        self.policy_version = policy_version
        self.path = Path(path) if path else None
        self._echo = echo
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._file = None
        if self.path:
            self._file = _open_events_file(self.path)
        self.recent: list[dict] = []  # bounded in-memory tail, for tests and the demo
        # a full disk (ENOSPC, EFBIG) must not end the thread that reports:
        # failed writes are counted; the gateway's timer reports them elsewhere
        self.write_failures, self.last_write_error = 0, ""

    def emit(self, event_type: str, reason_code: str, session_id: int | None = None,
             transport=None, version: int | None = None, **extra) -> dict:
        ev = {"ts_ms": self._clock_ms(), "event_type": event_type,
              "session_id": sid_hex(session_id), "reason_code": reason_code,
              "node_id": self.node_id, "policy_version": self.policy_version}
        if transport is not None:
            ev["transport_id"] = str(transport)
        if version is not None:
            ev["version"] = version
        ev.update({k: (str(v) if not isinstance(v, (int, float, str, bool, type(None), list))
                       else v) for k, v in extra.items()})
        line = json.dumps(ev, sort_keys=True)
        with self._lock:
            for out in (self._file, self._echo):
                if out is None:
                    continue
                try:
                    out.write(line + "\n")
                except (OSError, ValueError) as e:
                    self.write_failures += 1
                    self.last_write_error = str(e)
            self.recent.append(ev)
            del self.recent[:-1000]
        return ev

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


def _open_events_file(path: Path) -> TextIO:
    """Append-only, line-buffered, 0600 from creation (jvpn.files): the
    events name sessions and clients' addresses. A symlink or another user's
    file in its place is refused: root must not append where it points."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    fd = open_private(path, os.O_WRONLY | os.O_APPEND)
    return os.fdopen(fd, "a", buffering=1)


def follow(path: Path, from_start: bool = True, poll_s: float = 0.2,
           stop: Callable[[], bool] = lambda: False):
    """Yield event dicts from a JSON-lines file, then keep following it."""
    with open(path) as f:
        if not from_start:
            f.seek(0, 2)
        while not stop():
            line = f.readline()
            if not line:
                time.sleep(poll_s)
                continue
            try:
                yield json.loads(line)
            except ValueError:
                continue
