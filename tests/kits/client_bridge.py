"""The real client (jvpn.client.Client, every mixin) wired to the in-process
gateway of kits/daemon_kit.py: what the client sends goes through the
gateway's gate and dispatch at once; what the gateway sends waits in the
client's inbox until ``pump`` delivers it. One clock for both."""

from __future__ import annotations

from collections import deque

from jvpn.client import Client
from jvpn.events import EventLog
from jvpn.keys import public_from_private
from kits.daemon_kit import CLIENT, GW_KEY, LISTEN, PEER_KEYS


class BridgeSocket:
    def __init__(self, bridge: Bridge):
        self.bridge = bridge

    def sendto(self, msg: bytes, dst) -> int:
        assert tuple(dst) == LISTEN
        self.bridge.to_gateway(msg)
        return len(msg)

    def recvfrom(self, _size: int):
        if not self.bridge.inbox:
            raise TimeoutError
        return self.bridge.inbox.popleft()

    def settimeout(self, _t) -> None:
        pass

    def shutdown(self, _how) -> None:
        pass

    def close(self) -> None:
        pass


class FakeTun:
    def __init__(self):
        self.written: list[bytes] = []

    def write(self, packet: bytes) -> None:
        self.written.append(packet)

    def close(self) -> None:
        pass


class Bridge:
    def __init__(self, gw, clock, peer: int = 0):
        self.gw, self.inbox = gw, deque()
        self.online = True  # False: both directions are lost on the way
        self.events = EventLog("client-test", clock_ms=clock)
        self.client = Client(private_key=PEER_KEYS[peer],
                             gateway_public=public_from_private(GW_KEY), endpoint=LISTEN,
                             events=self.events, clock_ms=clock,
                             socket_factory=lambda: BridgeSocket(self))
        self.client.handshake(attempts=1)
        self.client.tun = FakeTun()

    def to_gateway(self, msg: bytes) -> None:
        n = len(self.gw.sock.sent)
        if self.online:
            self.gw.datapath.datagram(msg, CLIENT)
        self.collect(n)

    def collect(self, since: int) -> None:
        """What the gateway sent to the client since ``since`` (its socket's
        list), into the client's inbox."""
        for msg, to in self.gw.sock.sent[since:]:
            if self.online and tuple(to) == CLIENT:
                self.inbox.append((msg, LISTEN))

    def pump(self) -> int:
        """Deliver the inbox (and whatever the answers bring) to the client."""
        n = 0
        while self.inbox:
            msg, src = self.inbox.popleft()
            self.client.receive(msg, src)
            n += 1
        return n

    def tick(self) -> None:
        """The gateway's timers; what they sent reaches the client's inbox."""
        n = len(self.gw.sock.sent)
        self.gw.tick()
        self.collect(n)
