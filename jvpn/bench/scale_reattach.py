"""`bench scale`'s client after the restart: one synthetic session's client
moves to a new address and reattaches (docs/protocol.md "Reattach"), on
the wire: REATTACH_REQ, the gateway's PATH_CHALLENGE to the new address,
PATH_RESPONSE, REATTACH_ACK. The bench knows the session's keys (the
store's seed, jvpn/bench/scale_store.py); the messages are the ones the
tests' reattach harness seals (tests/kits/reattach_kit.py)."""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Callable

from jvpn import wire
from jvpn.bench import scale_store
from jvpn.errors import JvpnError
from jvpn.gate import abi
from jvpn.keys import SessionKeys
from jvpn.lab.netns import socket_in

# a request or response without an answer is sent again (a fresh counter); a
# busy daemon answers each copy: too eager a retry only adds replays to refuse
RETRY_S = 1.0
FIRST_COUNTER = 1 << 20  # above the stored ceiling and whatever the XDP runs used


class ReattachClient:
    """Session ``i``'s client, with a socket in namespace ``ns``."""

    def __init__(self, ns: str, seed: scale_store.Seed, i: int, gateway: tuple[str, int]):
        self.keys: SessionKeys = seed.session_keys(scale_store.session_id(i))
        self.gateway = gateway
        self.sock = socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.counters = itertools.count(FIRST_COUNTER)
        self.seqs = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def _seal(self, t: int, *fields) -> bytes:
        hdr = wire.Header(type=t, session_id=self.keys.session_id, counter=next(self.counters))
        return wire.seal_control(hdr, self.keys.hdr_c2s, self.keys.reattach, *fields)

    def _exchange(self, message: Callable[[], bytes], want: int, deadline: float) -> tuple:
        """Send ``message()`` (a new one every RETRY_S: a counter the gate
        has not seen) until a message of type ``want`` opens under the
        session's keys; its fields."""
        while time.monotonic() < deadline:
            self.sock.sendto(message(), self.gateway)
            self.sock.settimeout(RETRY_S)
            try:
                data, _ = self.sock.recvfrom(2048)
                hdr, fields = wire.open_control(data, self.keys.reattach)
            except (TimeoutError, wire.WireError):
                continue
            if hdr.type == abi.MSG_REATTACH_REJECT:
                raise JvpnError(f"the gateway refused the reattach: {fields}")
            if hdr.type == want:
                return fields
        raise JvpnError(f"no answer of type {want} to the reattach in time")

    def reattach(self, timeout_s: float = 60.0) -> float:
        """Seconds from the first request to the gateway's ACK."""
        started = time.monotonic()
        deadline = started + timeout_s
        seq = next(self.seqs)
        server_nonce, client_nonce = self._exchange(
            lambda: self._seal(abi.MSG_REATTACH_REQ, seq, time.time_ns() // 1_000_000,
                               os.urandom(16), 0), abi.MSG_PATH_CHALLENGE, deadline)
        self._exchange(lambda: self._seal(abi.MSG_PATH_RESPONSE, server_nonce, client_nonce),
                       abi.MSG_REATTACH_ACK, deadline)
        return time.monotonic() - started
