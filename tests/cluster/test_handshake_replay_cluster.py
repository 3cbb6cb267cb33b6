"""A recorded handshake initiation is not fresh at another gateway of the
cluster (issue 10 item 7): the timestamp one gateway accepted is claimed in
etcd, and every other gateway refuses it, changing nothing."""

from __future__ import annotations

import socket

import pytest

from jvpn import keys
from jvpn.codes import EventType, Reason
from jvpn.gate import abi
from jvpn.handshake import Initiator
from jvpn.lab.addresses import LOOPBACK
from jvpn.lab.wait import wait_until
from jvpn.tunnel import DataChannel

pytestmark = pytest.mark.kernel  # namespaces and TUN devices need root


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOPBACK, 0))
    s.settimeout(1.0)
    return s


def test_an_initiation_accepted_at_one_gateway_is_refused_at_the_other(cluster):
    c = cluster
    init = Initiator(c.client_key, keys.public_from_private(c.gw_key))
    recorded = init.initiation()
    with _udp() as client:
        client.sendto(recorded, (LOOPBACK, c.ports["gw-a"]))
        resp, _src = client.recvfrom(2048)
        assignment, session_keys = init.response(resp)
        client.sendto(DataChannel(session_keys, "client").seal(b"", abi.MSG_KEEPALIVE),
                      (LOOPBACK, c.ports["gw-a"]))
        a = c.gateways["gw-a"]
        wait_until(lambda: (live := a.table.get(assignment.session_id)) is not None
                   and getattr(live, "confirmed", True), "the session confirmed at gw-a")
    b = c.gateways["gw-b"]
    with _udp() as attacker:
        attacker.sendto(recorded, (LOOPBACK, c.ports["gw-b"]))
        with pytest.raises(TimeoutError):
            attacker.recvfrom(2048)  # no response, no cookie: nothing at all
    wait_until(lambda: b.events.has(EventType.HANDSHAKE_REJECTED, Reason.REPLAY_DETECTED),
               "gw-b refuses the replay")
    store = c.store()
    try:
        [rec] = store.list()
    finally:
        store.close()
    assert rec.session_id == assignment.session_id and rec.owner == "gw-a"
    assert not b.table.sessions
