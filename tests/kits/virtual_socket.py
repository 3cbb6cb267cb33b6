"""The receiving half of a client's UDP socket on a virtual clock, shared by
the handshake tests that deliver answers late (test_capacity_answerable.py,
test_client_handshake_slow_answers.py): ``pending`` holds (arrival time,
datagram); a receive waits up to its timeout, moving ``now`` on."""

from __future__ import annotations


class VirtualSocket:
    source: tuple[str, int]  # where every datagram comes from
    now = 0.0
    timeout: float | None = None

    def __init__(self) -> None:
        self.pending: list[tuple[float, bytes]] = []

    def settimeout(self, t) -> None:
        self.timeout = t

    def recvfrom(self, _size: int):
        self.pending.sort(key=lambda p: p[0])
        if self.pending and self.pending[0][0] <= self.now + (self.timeout or 0):
            at, msg = self.pending.pop(0)
            self.now = max(self.now, at)
            return msg, self.source
        self.now += self.timeout or 0
        raise TimeoutError

    def setsockopt(self, *_a) -> None:
        pass

    def shutdown(self, _how) -> None:
        pass

    def close(self) -> None:
        pass
