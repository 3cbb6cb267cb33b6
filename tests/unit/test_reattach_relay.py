"""Reattach convergence and the relay hijack, in process: the gateway's
control path behind the userspace gate's checks, a real jvpn.client.Client
(its control logic, over a simulated network), and an on-path attacker
that relays (issue 10 items 6 and 10).

The network: the client's socket is at ``client.at``; what it sends to the
gateway either arrives from there, or, while the attacker holds the path
(``net.hold``), lands in the attacker's hands instead. The gateway's
replies arrive at the client only if they are addressed to ``client.at``;
the rest reach the attacker (``net.attacker``)."""

from __future__ import annotations

import pytest

from jvpn import wire
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gateway.timers import due_timer
from jvpn.handshake import Assignment
from jvpn.session import State, Transport
from jvpn.tunnel import DataChannel
from kits.reattach_kit import EVIL, KEYS, NAT, NEW, OLD, SID, Harness

GW = ("192.0.2.1", 51900)


class Net:
    def __init__(self, h: Harness):
        self.h = h
        self.hold: list[bytes] | None = None  # the attacker drops the client's datagrams here
        self.attacker: list[bytes] = []  # gateway replies addressed to the attacker
        self.lost: list[bytes] = []
        self.lose: set[int] = set()  # types of gateway replies lost on the way to the client
        self.sent = 0  # datagrams the client sent
        self.client = None

    def from_client(self, msg: bytes, dst) -> None:
        assert dst == GW, "the client talks to its gateway only"
        self.sent += 1
        if self.hold is not None:
            self.hold.append(msg)
            return
        self.to_gateway(msg, self.client.at)

    def to_gateway(self, msg: bytes, src: Transport) -> None:
        """A datagram reaches the gateway from ``src``: the gate, then the daemon."""
        if not self.h.gate.admit(msg, (src.addr, src.port)):
            return
        for reply, to in self.h.handle(msg, src):
            if to == self.client.at and reply[0] not in self.lose:
                self.client.receive(reply, GW)
            elif to == self.client.at:
                self.lost.append(reply)
            else:
                self.attacker.append(reply)


class Sock:
    def __init__(self, net: Net):
        self.net = net

    def sendto(self, msg: bytes, dst) -> None:
        self.net.from_client(msg, dst)


def make_client(h: Harness, net: Net, at: Transport):
    from jvpn.client import Client  # noqa: PLC0415

    c = Client(private_key=b"\1" * 32, gateway_public=b"\2" * 32, endpoint=GW,
               events=EventLog("client", clock_ms=h.clock), clock_ms=h.clock)
    c.sock.close()
    c.sock = Sock(net)
    c.assignment = Assignment(SID, None, None)
    c.keys, c.channel = KEYS, DataChannel(KEYS, "client")
    c.at = at
    c.last_rx_ms = h.clock.ms
    net.client = c
    return c


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.store.close()


@pytest.fixture
def net(h):
    return Net(h)


def _security(h) -> list[str]:
    return [e["reason_code"] for e in h.events.recent if e["event_type"] == "SecurityEvent"]


def _opened(msg: bytes):
    hdr, fields = wire.open_control(msg, KEYS.reattach)
    assert hdr.tag_valid(KEYS.hdr_s2c)
    return hdr.type, fields


def _relay_hijack(h, net, client):
    """The attack of issue 10 item 6: the attacker holds the client's path,
    gets the client's request to the gateway from EVIL, relays the challenge
    to the client (spoofing the gateway), and the client's answer from EVIL."""
    net.hold = []
    client.start_reattach("moved")
    [request] = net.hold
    net.to_gateway(request, EVIL)
    [challenge] = net.attacker
    client.receive(challenge, GW)  # spoofed as the gateway's
    [_request, answer] = net.hold
    net.to_gateway(answer, EVIL)
    return answer


def test_relayed_path_response_is_undone_by_the_clients_retry(h, net):
    """The hijack succeeds for a moment (the attacker keeps the ACK); the
    client's retry of the same request from its real address makes the
    gateway validate that address and move the binding back."""
    client = make_client(h, net, NEW)
    _relay_hijack(h, net, client)
    assert h.record().binding == EVIL  # the relayed answer moved the binding
    net.hold = None  # the attacker lost its position (or stopped dropping)
    h.clock.ms += client.retry_ms + 1
    client.reattach_timers(h.clock.ms)
    rec = h.record()
    assert rec.binding == NEW and rec.state is State.ATTACHED
    assert client.pending is None and client.epoch == rec.epoch == 2
    assert "SEC_SESSION_FIXATION_ATTEMPT" in _security(h)
    assert h.reasons()[-1] == "REATTACH_ACCEPT"
    assert len(rec.switches_ms) == 2  # the move back is a switch: counted (churn bounds)


def test_clients_own_retry_during_the_pending_challenge_aborts_the_switch(h, net):
    """A relay slower than the client's retry: the same proven request from a
    second transport while its challenge is out is evidence of a relay; the
    switch is aborted and the binding never leaves the client's path."""
    client = make_client(h, net, NEW)
    net.hold = []
    client.start_reattach("moved")
    net.to_gateway(net.hold[0], EVIL)
    client.receive(net.attacker[0], GW)
    answer = net.hold[1]
    net.hold = None
    h.clock.ms += client.retry_ms + 1
    client.reattach_timers(h.clock.ms)  # the client's own copy arrives from NEW
    net.to_gateway(answer, EVIL)  # the relayed answer comes too late
    rec = h.record()
    assert rec.binding == OLD and rec.candidate is None
    assert "SEC_SESSION_FIXATION_ATTEMPT" in _security(h)
    assert "REATTACH_ACCEPT" not in h.reasons()
    # the client was told (authenticated) and converges with a new request
    h.clock.ms += client.retry_ms + 1
    client.reattach_timers(h.clock.ms)
    assert h.record().binding == NEW and client.pending is None
    assert client.epoch == h.record().epoch == 1


def test_lost_ack_is_sent_again_without_a_new_switch(h, net):
    """Item 10a: one lost REATTACH_ACK; the client's retry gets the ACK of
    that switch again (authenticated), no second switch happens, and the
    client's next real move still follows."""
    client = make_client(h, net, NEW)
    net.lose = {abi.MSG_REATTACH_ACK}
    client.start_reattach("moved")
    assert h.record().binding == NEW and h.record().epoch == 1 and client.pending is not None
    net.lose = set()
    before = h.record()
    h.clock.ms += client.retry_ms + 1
    client.reattach_timers(h.clock.ms)
    assert h.record() == before  # nothing changed: the ACK of that switch, again
    assert client.pending is None and client.epoch == 1
    h.clock.ms += h.policy.switch_cooldown_ms
    client.at = NAT
    client.start_reattach("NAT rebinding")
    assert h.record().binding == NAT and client.epoch == h.record().epoch == 2


def test_lost_challenge_is_sent_again(h, net):
    client = make_client(h, net, NEW)
    net.lose = {abi.MSG_PATH_CHALLENGE}
    client.start_reattach("moved")
    net.lose = set()
    h.clock.ms += client.retry_ms + 1
    client.reattach_timers(h.clock.ms)
    assert h.record().binding == NEW and client.pending is None and client.epoch == 1


def test_consumed_request_whose_switch_failed_is_refused_and_the_client_moves_on(h, net):
    """The challenge lapsed (DEGRADED): a retry of that sequence is told
    REPLAY_DETECTED (authenticated), and the client converges with a new one."""
    client = make_client(h, net, NEW)
    net.lose = {abi.MSG_PATH_CHALLENGE}
    client.start_reattach("moved")
    h.clock.ms += h.policy.recovery_window_ms + 100  # the challenge lapses
    h.control.expire_challenges()
    assert h.record().state is State.DEGRADED
    net.lose = set()
    client.reattach_timers(h.clock.ms)  # same sequence: refused, told
    assert h.reasons()[-1] == "REPLAY_DETECTED" and client.pending is None
    h.clock.ms += client.retry_ms + 1
    client.reattach_timers(h.clock.ms)  # a new request
    assert h.record().binding == NEW and h.record().state is State.ATTACHED
    assert client.epoch == h.record().epoch == 1


def test_two_uplinks_loser_is_told_ownership_conflict(h, net):
    """Item 10b: two proven requests from two transports at once; the second
    gets an authenticated OWNERSHIP_CONFLICT (seed: explicit rejection)."""
    a, b = h.request(), h.request()
    [(_challenge, to_a)] = h.handle(a, NEW)
    [(reject, to_b)] = h.handle(b, NAT)
    assert to_a == NEW and to_b == NAT
    t, (seq, reason, epoch) = _opened(reject)
    assert t == abi.MSG_REATTACH_REJECT and wire.REJECT_REASONS[reason] == "OWNERSHIP_CONFLICT"
    assert epoch == 0  # only a stale epoch is told the current one
    assert seq == wire.REATTACH_REQ.unpack_from(b, abi.HDR_LEN)[0]
    assert h.record().binding == OLD


def test_successful_reattach_refreshes_last_traffic(h):
    """Item 10c: a proven switch is traffic from the client; the session
    must not flip back to VOLATILE (and switch again) right after it."""
    h.clock.ms += h.policy.heartbeat_volatile_ms + 500  # the client was quiet
    [(challenge, _)] = h.handle(h.request(), NEW)
    h.handle(h.answer(challenge), NEW)
    assert h.record().state is State.ATTACHED
    live = h.table.get(SID)
    assert due_timer(h.record(), live.last_rx_ms, h.clock.ms + 15, h.policy) is None


def test_client_takes_control_only_from_its_gateway(h, net):
    """QUIC's rule: a challenge from any other address than the gateway's is
    ignored (the answer would go to the gateway anyway, never to the sender)."""
    client = make_client(h, net, NEW)
    net.hold = []
    client.start_reattach("moved")
    net.to_gateway(net.hold.pop(), EVIL)
    [challenge] = net.attacker
    client.receive(challenge, (EVIL.addr, EVIL.port))  # from the attacker's own address
    assert net.hold == [] and net.sent == 1  # no answer at all
    assert h.record().binding == OLD


def test_a_copy_of_the_clients_retry_from_elsewhere_changes_nothing(h, net):
    """The retry's fresh header counter is what makes it the key holder's:
    a copy of it (a replay past any gate window) is refused, silently."""
    client = make_client(h, net, NEW)
    net.lose = {abi.MSG_REATTACH_ACK}
    client.start_reattach("moved")
    net.lose, net.hold = set(), []
    h.clock.ms += client.retry_ms + 1
    client.reattach_timers(h.clock.ms)
    [retry] = net.hold
    net.hold = None
    net.to_gateway(retry, NEW)  # the ACK again
    before = h.record()
    assert h.handle(retry, EVIL) == []  # the copy, past the gate
    assert h.record() == before and h.reasons()[-1] == "REPLAY_DETECTED"
