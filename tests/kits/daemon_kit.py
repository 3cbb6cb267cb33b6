"""An in-process gateway daemon (jvpn/gateway/daemon.py, its real wiring)
over a fake UDP socket and a fake TUN: datagrams in, datagrams and inner
packets out, no root and no network. Faults are injected through fakes of
the store, the gate and the socket."""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import queue
from collections.abc import Callable
from dataclasses import dataclass

from jvpn import keys
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.daemon import Gateway
from jvpn.handshake import Initiator
from jvpn.keys import SessionKeys
from jvpn.lab.wait import wait_until
from jvpn.policy import default_policy
from jvpn.session import Transport
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import DataChannel

GW_KEY = keys.generate_private()
GW_PUB = keys.public_from_private(GW_KEY)
PEER_KEYS = [keys.generate_private() for _ in range(2)]
PEER_INNER = [ipaddress.IPv4Address("10.99.0.2"), ipaddress.IPv4Address("10.99.0.3")]
ADDRESS = ipaddress.IPv4Interface("10.99.0.1/24")
LISTEN = ("127.0.0.1", 51820)
CLIENT = ("192.0.2.10", 5555)


class Inbox:
    """What a loop reads: ``deliver`` queues an item; ``settle`` waits until
    the loop handled every item delivered so far (it is back for the next)."""

    def __init__(self):
        self.inbox: queue.Queue = queue.Queue()
        self.delivered = self.fetched = self.handled = 0
        self.fail_read: int | None = None  # an errno reading fails with (a broken device)

    def _put(self, item) -> None:
        self.delivered += 1
        self.inbox.put(item)

    def _next(self):
        self.handled = self.fetched  # every item fetched before was handled
        if self.fail_read is not None:
            raise OSError(self.fail_read, "fake read failure")
        item = self.inbox.get()
        if item is None:
            raise OSError(errno.EBADF, "closed")
        self.fetched += 1
        return item

    def settle(self, timeout_s: float = 5.0) -> None:
        want = self.delivered
        wait_until(lambda: self.handled >= want, f"{type(self).__name__}'s loop to catch up",
                   timeout_s, interval=0.002)

    def close(self) -> None:
        self.inbox.put(None)


class FakeSock(Inbox):
    """A UDP socket: sendto keeps what was sent, and fails as Linux does for
    port 0 (EINVAL) or as ``fail_sends`` says."""

    def __init__(self):
        super().__init__()
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.attempts: list[tuple[str, int]] = []  # every destination tried, failed or not
        self.fail_sends: int | None = None  # an errno every send fails with

    def deliver(self, msg: bytes, src: tuple[str, int]) -> None:
        self._put((msg, src))

    def recvfrom(self, _n: int):
        return self._next()

    def sendto(self, msg: bytes, *args) -> int:
        """``sendto(msg, dst)`` or ``sendto(msg, flags, dst)``, as a socket's."""
        dst = args[-1]
        self.attempts.append(dst)
        if dst[1] == 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        if self.fail_sends is not None:
            raise OSError(self.fail_sends, "fake send failure")
        self.sent.append((msg, dst))
        return len(msg)

    def sendmsg(self, buffers, ancdata, _flags, dst):
        raise OSError(errno.EOPNOTSUPP, "no GSO here")

    def send_buffer_use(self) -> tuple[int, int]:
        """(bytes held, buffer size): as SIOCOUTQ and SO_SNDBUF say (jvpn/gateway/sending.py)."""
        return 0, 212_992

    def getsockname(self):
        return LISTEN

    def shutdown(self, _how) -> None:
        self.close()


class FakeTun(Inbox):
    def __init__(self):
        super().__init__()
        self.written: list[bytes] = []

    def deliver(self, packet: bytes) -> None:
        self._put(packet)

    def read(self) -> bytes:
        return self._next()

    def write(self, packet: bytes) -> None:
        self.written.append(packet)


class AdmitAll(UserspaceGate):
    """As the XDP gate is seen from the daemon: the kernel checked, the daemon
    admits what its socket receives (XdpGate.admit)."""

    def admit(self, msg, src) -> bool:
        return True


class Clock:
    def __init__(self, ms: int = 1_700_000_000_000):
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def make_gateway(tmp_path, *, store=None, gate=None, events=None, clock=None,
                 cookie_threshold_per_s: int = 50, policy=None, sock=None, **extra) -> Gateway:
    peers = {keys.public_from_private(k): a for k, a in zip(PEER_KEYS, PEER_INNER, strict=True)}
    return Gateway(private_key=GW_KEY, listen=LISTEN, address=ADDRESS, peers=peers,
                   policy=policy or default_policy(),
                   store=store if store is not None else SqliteStore(tmp_path / "s.db"),
                   gate=gate if gate is not None else UserspaceGate(),
                   events=events if events is not None else EventLog("gw-test"),
                   clock_ms=clock, cookie_threshold_per_s=cookie_threshold_per_s,
                   sock=sock if sock is not None else FakeSock(), tun=FakeTun(), **extra)


_WITHIN_MS = itertools.count(1)  # initiations stamped in one virtual millisecond


def client_clock_ns(clock_ms: Callable[[], int]) -> Callable[[], int]:
    """A client's Noise timestamps by the test's clock (the gateway's: the
    two agree, as synchronized clocks do), each newer than the one before
    while that clock does not go back (a count of nanoseconds within its
    millisecond). Not the real clock: a gateway on a virtual clock (Clock,
    2023) would date the session three years before its own initiation."""
    return lambda: clock_ms() * 1_000_000 + next(_WITHIN_MS)


def initiation(peer: int = 0, clock_ms: Callable[[], int] | None = None) -> Initiator:
    """The peer's initiator, its timestamps by ``clock_ms`` (the gateway's
    clock: pass a virtual one, a gateway refuses initiations a day ahead
    of its clock); the real clock without one."""
    if clock_ms is None:
        return Initiator(PEER_KEYS[peer], GW_PUB)
    return Initiator(PEER_KEYS[peer], GW_PUB, clock_ns=client_clock_ns(clock_ms))


@dataclass
class Peer:
    """The client end of a session: its keys and its data channel."""

    keys: SessionKeys
    channel: DataChannel

    @property
    def session_id(self) -> int:
        return self.keys.session_id

    def seal(self, payload: bytes, msg_type: int = abi.MSG_DATA, flags: int = 0) -> bytes:
        return self.channel.seal(payload, msg_type, flags)

    def seal_packet(self, packet: bytes) -> list[bytes]:
        return self.channel.seal_packet(packet)

    def next_counter(self) -> int:
        return self.channel.next_counter()


def handshake(gw: Gateway, src: tuple[str, int] = CLIENT, peer: int = 0) -> Peer:
    """A real handshake through the daemon's dispatch, stamped by the
    gateway's clock."""
    ini = initiation(peer, gw.clock_ms)
    n = len(gw.sock.sent)
    gw.datapath.datagram(ini.initiation(), src)
    [(resp, to)] = gw.sock.sent[n:]
    assert to == src
    _assignment, session_keys = ini.response(resp)
    return Peer(session_keys, DataChannel(session_keys, "client"))


def ipv4(src: ipaddress.IPv4Address, dst: str = "10.99.0.1", payload: bytes = b"x" * 20) -> bytes:
    """A well-formed IPv4 packet (checksum not computed: nothing here checks it)."""
    total = 20 + len(payload)
    return (bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes(4) + bytes([64, 17, 0, 0])
            + src.packed + ipaddress.IPv4Address(dst).packed + payload)


def events_of(log: EventLog, event_type: str) -> list[dict]:
    return [e for e in log.recent if e["event_type"] == event_type]


def transport(src: tuple[str, int]) -> Transport:
    return Transport(*src)


def load_gateway_files(tmp_path, extra: str = ""):
    """A gateway config (peer 0 in its peers file) with ``extra`` lines in
    [Interface], written 0600 and loaded as `gateway up` loads it."""
    from jvpn.config import load_gateway_config  # noqa: PLC0415

    old = os.umask(0o077)
    try:
        (tmp_path / "peers.conf").write_text(
            f"[Peer]\nPublicKey = {keys.encode(keys.public_from_private(PEER_KEYS[0]))}\n"
            "AllowedIPs = 10.99.0.2/32\n")
        (tmp_path / "gw.conf").write_text(
            f"[Interface]\nPrivateKey = {keys.encode(GW_KEY)}\nListenPort = 51901\n"
            f"Address = 10.99.0.1/24\nPeersFile = peers.conf\n{extra}")
    finally:
        os.umask(old)
    return load_gateway_config(tmp_path / "gw.conf")
