"""The gate in the daemon, for hosts without XDP: the reference model is the gate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.element import session_element
from jvpn.gate.model import Model
from jvpn.keys import SessionKeys
from jvpn.replay import seed_floor
from jvpn.session import SessionRecord


class UserspaceGate:
    """The same checks as the XDP program, in the daemon (hosts without XDP):
    the reference model is the gate."""

    def __init__(self, config: GateConfig | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns):
        self.model = Model(config=(config or GateConfig()).to_abi())
        self.clock_ns = clock_ns
        self.checks_in_kernel = False
        self._lock = threading.Lock()

    def put(self, rec: SessionRecord, keys: SessionKeys, fence: int = 0,
            first: bool = False, c2s_floor: int = 0) -> None:
        with self._lock:
            sid = rec.session_id
            if first:
                old = self.model.runtime.get(sid)
                top = max(c2s_floor, old.replay_top if old is not None else 0)
                if top:
                    rt = self.model.runtime[sid] = self.model._rt_type()
                    seed_floor(rt, top, self.model.replay_bits)
            self.model.sessions[sid] = session_element(rec, keys, fence)

    def standby(self, rec: SessionRecord, keys: SessionKeys) -> None:
        with self._lock:
            self.model.sessions[rec.session_id] = session_element(rec, keys, remote=True)

    def remove(self, sid: int) -> None:
        with self._lock:
            self.model.sessions.pop(sid, None)
            self.model.runtime.pop(sid, None)

    def counter_top(self, sid: int) -> int:
        with self._lock:
            rt = self.model.runtime.get(sid)
            return int(rt.replay_top) if rt is not None else 0

    def ids(self) -> set[int]:
        return set(self.model.sessions)

    def event_reader(self):
        return None

    def detached(self) -> str | None:
        return None  # the checks run in this process: they cannot be taken away

    def publish_owners(self, node: str, lease: int, remote: dict[int, str]) -> None:
        pass  # no maps to describe

    def set_fence(self, token: int, deadline_ns: int) -> None:
        with self._lock:  # the model's clock is CLOCK_MONOTONIC too
            self.model.config.fence_token, self.model.config.fence_deadline_ns = (
                token, deadline_ns)

    def admit(self, msg: bytes, src: tuple[str, int]) -> bool:
        with self._lock:
            return abi.is_pass(self.model.run_message(msg, src[0], src[1], self.clock_ns()))

    def close(self) -> None:
        pass
