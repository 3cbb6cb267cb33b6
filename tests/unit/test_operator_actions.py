"""Operator actions on a running gateway, in process (the real daemon over a
fake socket and TUN): terminate a session or a peer's sessions, drain, and
a reload's peers and policy (revocation), and the Reloader's validation."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from jvpn import keys, wire
from jvpn.config import PeerConfig
from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.daemon import Gateway
from jvpn.gateway.operator_actions import UnknownPeer
from jvpn.gateway.reload import Reloader, ReloadRefused
from jvpn.gateway.terminate import NotServedHere
from jvpn.policy import default_policy
from jvpn.session import Event
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import (
    ADDRESS,
    CLIENT,
    GW_KEY,
    LISTEN,
    PEER_INNER,
    PEER_KEYS,
    Clock,
    FakeSock,
    FakeTun,
    events_of,
    handshake,
    initiation,
    ipv4,
)

NAMES = ("alice", "bob")


def peer_configs() -> list[PeerConfig]:
    return [PeerConfig(keys.public_from_private(k), a, n)
            for k, a, n in zip(PEER_KEYS, PEER_INNER, NAMES, strict=True)]


def gateway(tmp_path, policy=None) -> Gateway:
    return Gateway(private_key=GW_KEY, listen=LISTEN, address=ADDRESS,
                   peers={p.public_key: p for p in peer_configs()},
                   policy=policy or default_policy(), store=SqliteStore(tmp_path / "s.db"),
                   gate=UserspaceGate(), events=EventLog("gw-test"), clock_ms=Clock(),
                   sock=FakeSock(), tun=FakeTun())


@pytest.fixture
def gw(tmp_path):
    g = gateway(tmp_path)
    yield g
    g.store.close()


def told(gw, peer) -> list[str]:
    """The TERMINATE reasons the gateway sent to ``peer`` (authenticated under its keys)."""
    out = []
    for msg, _to in gw.sock.sent:
        if msg[0] == abi.MSG_TERMINATE and wire.parse_header(msg).session_id == peer.session_id:
            _hdr, (reason,) = wire.open_control(msg, peer.keys.reattach)
            out.append(wire.TERMINATE_REASONS[reason])
    return out


def ended(gw) -> list[tuple[str, str]]:
    return [(e["session_id"], e["reason_code"]) for e in events_of(gw.events, "SessionTerminated")]


# ---------------------------------------------------------------- terminate
def test_terminate_removes_the_binding_tells_the_client_and_names_the_reason(gw):
    peer = handshake(gw)
    sid = peer.session_id
    gw.terminate_session(sid)
    assert sid not in gw.sessions and sid not in gw.gate.ids() and gw.store.get(sid) is None
    assert told(gw, peer) == ["OPERATOR_TERMINATED"]
    assert ended(gw) == [(f"{sid:016x}", "OPERATOR_TERMINATED")]
    n = len(gw.tun.written)
    gw.datapath.datagram(peer.seal(ipv4(PEER_INNER[0])), CLIENT)  # its data goes nowhere now
    assert len(gw.tun.written) == n


def test_terminate_of_an_unknown_or_remote_session_changes_nothing(gw):
    peer = handshake(gw)
    with pytest.raises(NotServedHere, match="no session 0000000000000001"):
        gw.terminate_session(1)
    remote = dataclasses.replace(gw.sessions[peer.session_id].record, session_id=7, owner="gw-b")
    gw.table.stand_by(remote, peer.keys)
    with pytest.raises(NotServedHere, match="owned by gateway 'gw-b'"):
        gw.terminate_session(7)
    assert peer.session_id in gw.sessions and not told(gw, peer)


def test_terminate_peer_by_name_or_key_ends_that_peers_sessions_only(gw):
    a, b = handshake(gw), handshake(gw, ("192.0.2.11", 6000), peer=1)
    out = gw.terminate_peer("alice")
    assert out == {"peer": "alice", "terminated": [f"{a.session_id:016x}"], "failed": []}
    assert told(gw, a) == ["OPERATOR_TERMINATED"] and not told(gw, b)
    assert gw.terminate_peer(keys.encode(keys.public_from_private(PEER_KEYS[1])))[
        "terminated"] == [f"{b.session_id:016x}"]
    with pytest.raises(UnknownPeer, match="no peer 'carol'"):
        gw.terminate_peer("carol")


def test_terminate_peer_names_the_peers_sessions_another_gateway_owns(gw):
    """Not served here, so not ended here: each is in ``failed`` naming its
    owner (the CLI exits 1), as `rekey --peer` does."""
    a = handshake(gw)
    remote = dataclasses.replace(gw.sessions[a.session_id].record, session_id=7, owner="gw-b")
    gw.table.stand_by(remote, a.keys)
    out = gw.terminate_peer("alice")
    assert out == {"peer": "alice", "terminated": [f"{a.session_id:016x}"],
                   "failed": ["0000000000000007: owned by gateway 'gw-b': terminate it there"]}
    assert 7 in gw.table.standby  # the owner's session: untouched here


def test_table_terminate_is_the_seeds_operator_transition(gw):
    peer = handshake(gw)
    rec = gw.table.terminate(peer.session_id, Event.PEER_REVOKED, detail="x")
    assert rec.state.name == "TERMINATED" and rec.binding is None
    assert told(gw, peer) == ["PEER_REVOKED"]


# ---------------------------------------------------------------- drain
def test_drain_refuses_new_sessions_silently_and_keeps_the_existing_one(gw):
    a = handshake(gw)
    assert gw.drain(True) == {"draining": True, "sessions": 1}
    n = len(gw.sock.sent)
    gw.datapath.datagram(initiation(1).initiation(), ("192.0.2.11", 6000))
    assert len(gw.sock.sent) == n and len(gw.sessions) == 1  # no answer, no session
    assert events_of(gw.events, "HandshakeRejected")[-1]["reason_code"] == "DRAINING"
    gw.datapath.datagram(a.seal(ipv4(PEER_INNER[0])), CLIENT)
    assert gw.tun.written[-1] == ipv4(PEER_INNER[0])  # the existing session passes data
    gw.drain(False)
    handshake(gw, ("192.0.2.11", 6000), peer=1)  # admitted again
    assert [e["draining"] for e in events_of(gw.events, "DrainChanged")] == [True, False]


# ---------------------------------------------------------------- a reload's peers and policy
def test_a_removed_peer_is_revoked_and_its_key_refused_afterwards(gw):
    a, b = handshake(gw), handshake(gw, ("192.0.2.11", 6000), peer=1)
    out = gw.apply_config([peer_configs()[1]], gw.policy)
    assert out.removed == ["alice"] and out.revoked == [f"{a.session_id:016x}"]
    assert told(gw, a) == ["PEER_REVOKED"] and not told(gw, b)
    assert b.session_id in gw.sessions
    n = len(gw.sock.sent)
    gw.datapath.datagram(initiation(0).initiation(), CLIENT)
    assert len(gw.sock.sent) == n and not gw.table.sessions_at(PEER_INNER[0].packed)


def test_changed_addresses_revoke_a_rename_does_not(gw):
    a, b = handshake(gw), handshake(gw, ("192.0.2.11", 6000), peer=1)
    alice, bob = peer_configs()
    moved = dataclasses.replace(alice, subnets=(ipaddress.ip_network("192.168.50.0/24"),))
    out = gw.apply_config([moved, dataclasses.replace(bob, name="robert")], gw.policy)
    assert out.changed == ["alice"] and out.renamed == ["robert"]
    assert told(gw, a) == ["PEER_REVOKED"] and not told(gw, b)
    assert gw.find_peer("robert")[1].name == "robert"


def test_a_reloaded_policy_drives_the_timers_of_existing_sessions(gw):
    handshake(gw)
    short = dataclasses.replace(gw.policy, max_lifetime_ms=1000)
    out = gw.apply_config(peer_configs(), short)
    assert out.policy_changed == ["max_lifetime_ms"] and out.revoked == []
    gw.table.confirm(next(iter(gw.sessions.values())))
    gw.clock_ms.ms += 1001
    gw.tick()
    assert not gw.sessions and ended(gw)[-1][1] == "TTL_SESSION_EXPIRED"


# ---------------------------------------------------------------- the Reloader
GW_CONF = """[Interface]
PrivateKey = {key}
ListenPort = {port}
Address = 10.99.0.1/24
PeersFile = peers.conf
Policy = policy.toml
StateDir = state
NodeId = gw-test
"""
POLICY = """version = 1
[session]
max_lifetime_ms = {life}
transport_lost_ttl_ms = 15000
[volatility]
loss_volatile_threshold = 0.2
[switching]
max_switches_per_min = 30
recovery_window_ms = 8000
switch_cooldown_ms = 0
[security]
reattach_proof_max_age_ms = 5000
{extra}"""


def write_files(tmp_path, *, port=51820, life=3600000, peers=None, extra=""):
    peers = peer_configs() if peers is None else peers
    conf = tmp_path / "gw.conf"
    conf.touch(mode=0o600)
    conf.write_text(GW_CONF.format(key=keys.encode(GW_KEY), port=port))
    (tmp_path / "peers.conf").write_text("".join(
        f"[Peer]\nPublicKey = {keys.encode(p.public_key)}\nAllowedIPs = {p.inner}/32\n"
        f"Name = {p.name}\n" for p in peers))
    (tmp_path / "policy.toml").write_text(POLICY.format(life=life, extra=extra))
    return conf


@pytest.fixture
def reloader(tmp_path):
    from jvpn.config import load_gateway_config  # noqa: PLC0415

    conf = write_files(tmp_path)
    cfg = load_gateway_config(conf)
    g = gateway(tmp_path, cfg.policy)
    said: list[str] = []
    yield Reloader(g, conf, cfg, say=said.append), said
    g.store.close()


class Notified(list):
    def notify_reloading(self, status: str) -> None:
        self.append("RELOADING=1")

    def notify_ready(self, status: str) -> None:
        self.append("READY=1")


def test_a_bad_policy_is_refused_and_the_old_one_stays(tmp_path, reloader):
    r, said = reloader
    r.notify = Notified()
    before = r.gw.policy
    write_files(tmp_path, life=-5)
    where = r"policy.toml:3: session.max_lifetime_ms: .*named by .*gw.conf:6: Policy"
    with pytest.raises(ReloadRefused, match=where):
        r.reload()
    assert r.gw.policy is before and "reload refused" in said[-1]
    assert r.notify == ["RELOADING=1", "READY=1"]  # systemd hears the end of a refusal too
    [ev] = events_of(r.gw.events, "ReloadRefused")
    assert ev["reason_code"] == "CONFIG_INVALID" and "max_lifetime_ms" in ev["detail"]


def test_a_restart_only_key_is_refused_by_name(tmp_path, reloader):
    r, _said = reloader
    write_files(tmp_path, port=51999)
    with pytest.raises(ReloadRefused, match="ListenPort: changed, and only a restart"):
        r.reload()
    write_files(tmp_path, extra="replay_window_size = 256\n")
    with pytest.raises(ReloadRefused, match="replay_window_size"):
        r.reload()


def test_a_good_reload_applies_peers_and_policy_and_says_so(tmp_path, reloader):
    r, said = reloader
    a = handshake(r.gw)
    write_files(tmp_path, life=120000, peers=peer_configs()[1:])
    out = r.reload()
    assert out["removed"] == ["alice"] and out["policy_changed"] == ["max_lifetime_ms"]
    assert r.gw.policy.max_lifetime_ms == 120000 and told(r.gw, a) == ["PEER_REVOKED"]
    assert "removed alice" in said[-1]
    [ev] = events_of(r.gw.events, "GatewayReloaded")
    assert ev["revoked"] == [f"{a.session_id:016x}"]
    assert r.reload()["removed"] == []  # the reloaded configuration is the base now


def test_a_peer_removed_while_the_gateway_was_down_is_revoked_at_start(tmp_path):
    first = gateway(tmp_path)
    a = handshake(first)
    first.table.confirm(first.sessions[a.session_id])
    first.store.close()
    again = Gateway(private_key=GW_KEY, listen=LISTEN, address=ADDRESS,
                    peers={p.public_key: p for p in peer_configs()[1:]},
                    policy=default_policy(), store=SqliteStore(tmp_path / "s.db"),
                    gate=UserspaceGate(), events=EventLog("gw-test"), clock_ms=Clock(),
                    sock=FakeSock(), tun=FakeTun())
    again.start()
    try:
        assert not again.sessions and again.store.get(a.session_id) is None
        assert told(again, a) == ["PEER_REVOKED"]
    finally:
        again.stop()
        again.store.close()


def test_the_operator_socket_validates_then_acts(tmp_path):
    from jvpn import operator as client  # noqa: PLC0415

    path = tmp_path / "run" / "gateway.sock"
    g = Gateway(private_key=GW_KEY, listen=LISTEN, address=ADDRESS,
                peers={p.public_key: p for p in peer_configs()}, policy=default_policy(),
                store=SqliteStore(tmp_path / "s.db"), gate=UserspaceGate(),
                events=EventLog("gw-test"), clock_ms=Clock(), sock=FakeSock(), tun=FakeTun(),
                operator_socket=path)
    g.start()
    try:
        a = handshake(g)
        for bad, why in [({}, "exactly one"), ({"session": "zz"}, "not a session id"),
                         ({"session": "1", "peer": "alice"}, "exactly one")]:
            with pytest.raises(client.OperatorError, match=why):
                client.call(path, "terminate", **bad)
        with pytest.raises(client.OperatorError, match="'on' must be"):
            client.call(path, "drain", on="yes")
        with pytest.raises(client.OperatorError, match="not started from a config file"):
            client.call(path, "reload")
        assert a.session_id in g.sessions and not g.draining
        assert client.call(path, "drain", on=True)["draining"] and g.draining
        got = client.call(path, "terminate", session=f"{a.session_id:016x}")
        assert got["terminated"] == [f"{a.session_id:016x}"] and told(g, a) == [
            "OPERATOR_TERMINATED"]
    finally:
        g.stop()
        g.store.close()
