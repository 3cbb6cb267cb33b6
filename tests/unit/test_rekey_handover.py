"""A cluster handover in the middle of a rekey (docs/protocol.md "Rekey",
cluster): the key ring travels in the store's secrets, a standby follows the
owner's rekey, and the next owner accepts both epochs until the overlap
ends, then only the new one. Two in-process gateways over one SQLite file
seen as a cluster store (leases by name; the test delivers the watch)."""

from __future__ import annotations

import time

import pytest

from jvpn import wire
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.store import GatewayGone
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import FLAG_KEY_PHASE
from kits.daemon_kit import AdmitAll, Clock, make_gateway
from kits.rekey_kit import RekeyClient, policy

NEW = ("198.51.100.7", 6000)


class FakeCluster(SqliteStore):
    """One gateway's view of a shared SQLite file as a ClusterStore."""

    lease_ttl_s = 2

    def __init__(self, path, lease: int, leases: dict[str, int]):
        super().__init__(path)
        self.lease_id, self.leases = lease, leases

    def cas(self, session_id, expected_version, new, alive=None, secrets=None) -> None:
        if alive is not None and self.leases.get(alive[0]) != alive[1]:
            raise GatewayGone(f"gateway {alive[0]} no longer holds lease {alive[1]}")
        super().cas(session_id, expected_version, new, secrets=secrets)

    def register_gateway(self, node_id: str, ttl_s: int = 2) -> int:
        return self.lease_id

    def lease_expired(self) -> bool:
        return False

    def lease_deadline(self) -> float:
        return time.monotonic() + 60

    def lease_valid(self, margin_s: float = 0.0) -> bool:
        return True

    def gateway_lease(self, node_id: str):
        return self.leases.get(node_id)

    def gateways(self) -> list[str]:
        return list(self.leases)

    def watch_sessions(self, on_record, stop) -> None:
        stop.wait()


@pytest.fixture
def pair(tmp_path):
    clock, leases = Clock(), {"gw-a": 101, "gw-b": 202}

    def gw(node: str, lease: int):
        return make_gateway(tmp_path, store=FakeCluster(tmp_path / "s.db", lease, leases),
                            gate=AdmitAll(), clock=clock, events=EventLog(node),
                            policy=policy(rekey_overlap_ms=2_000))

    return gw("gw-a", 101), gw("gw-b", 202), clock, leases


def test_a_handover_mid_rekey_gives_the_next_owner_both_epochs_then_the_new_one(pair):
    a, b, clock, leases = pair
    c = RekeyClient(a)
    b.follower.on_store_record(c.sid, c.record())  # the watch: a standby at b
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)  # committed at a: epoch 1, unconfirmed
    b.follower.on_store_record(c.sid, c.record())
    ring = c.stored_ring()
    assert b.table.standby[c.sid][0] == ring and ring.previous is not None  # both epochs
    c.finish(resp, eph)
    del leases["gw-a"]  # a dies before the client's first message under epoch 1
    c.gw = b
    [(challenge, to)] = c.send(c.reattach_request(seq=1), src=NEW)  # under epoch 1, at b
    assert to == NEW and c.record().owner == "gw-b"
    _hdr, (server_nonce, client_nonce) = c.opened(challenge)
    [(ack, _)] = c.send(c.control(abi.MSG_PATH_RESPONSE, server_nonce, client_nonce), src=NEW)
    assert c.opened(ack)[0].type == abi.MSG_REATTACH_ACK
    assert wire.parse_header(ack).flags & FLAG_KEY_PHASE  # confirmed at b: sealed under 1
    assert c.stored_ring().confirmed
    assert c.data(src=NEW) and c.data(keys=c.old, src=NEW)  # both epochs inside the overlap
    clock.ms += 2_000
    b.tick()
    b.tick()
    assert c.data(src=NEW) and not c.data(keys=c.old, src=NEW)  # only the new one after it
    assert c.stored_ring().previous is None

