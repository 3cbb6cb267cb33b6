"""The operator's actions on a running gateway, end to end in namespaces and
through the CLI: terminate a session (and a peer's), the client exits
naming the reason; mark a session for a rekey; revoke a peer by editing the peers file and sending
SIGHUP; reload a bad policy (refused, the old one stays) and a good one (it
applies to the live session); drain; and SIGTERM's time."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

from jvpn import keys
from jvpn.lab.addresses import GW_INNER, GW_IP, OTHER_PEER_INNER
from jvpn.lab.tunnel import TunnelLab
from kits.threat_kit import answered_initiation

pytestmark = pytest.mark.kernel


@pytest.fixture
def tl(tmp_path):
    t = TunnelLab(tmp_path).up()
    yield t
    t.down()


def cli(tl, *args: str):
    return tl.jvpn_in("gw", tl.env, *args, timeout=30)


def sessions(tl) -> list[dict]:
    return tl.cli_json("sessions", "gw0")["gw0"]


def events(tl, event_type: str) -> list[dict]:
    return [e for e in tl.gateway_events() if e["event_type"] == event_type]


def client_ended(tl, reason: str) -> None:
    """The client exits non-zero, its last line naming ``reason``."""
    tl.wait(lambda: tl.client.poll() is not None, f"client exit ({reason})")
    assert tl.client.returncode != 0
    assert reason in (tl.tmp / "client.log").read_text()


def gateway_alive(tl) -> None:
    assert tl.gateway.poll() is None, tl.logs()


def test_terminate_a_session_then_a_peer_the_client_exits_naming_the_reason(tl):
    [s] = sessions(tl)
    out = cli(tl, "terminate", s["session_id"])
    assert out.returncode == 0 and s["session_id"] in out.stdout, out.stderr
    client_ended(tl, "OPERATOR_TERMINATED")
    assert sessions(tl) == []  # the binding left the map at once
    [ended] = events(tl, "SessionTerminated")
    assert (ended["session_id"], ended["reason_code"]) == (s["session_id"], "OPERATOR_TERMINATED")
    tl.start_client()
    [s2] = sessions(tl)
    out = cli(tl, "terminate", "--peer", "alice", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"peer": "alice", "terminated": [s2["session_id"]],
                                      "failed": []}
    client_ended(tl, "OPERATOR_TERMINATED")
    out = cli(tl, "terminate", "00000000000000aa")
    assert out.returncode == 1 and "no session 00000000000000aa" in out.stderr


def test_revoke_a_peer_by_editing_the_peers_file_and_sighup(tl):
    other = keys.public_from_private(keys.generate_private())
    peers = tl.tmp / "peers.conf"
    peers.write_text(f"[Peer]\nPublicKey = {keys.encode(other)}\n"
                     f"AllowedIP = {OTHER_PEER_INNER}/32\nName = bob\n")
    tl.gateway.send_signal(signal.SIGHUP)
    client_ended(tl, "PEER_REVOKED")
    gateway_alive(tl)  # SIGHUP reloads, it does not kill
    [reloaded] = events(tl, "GatewayReloaded")
    assert reloaded["removed"] == ["alice"] and len(reloaded["revoked"]) == 1
    assert [e["reason_code"] for e in events(tl, "SessionTerminated")] == ["PEER_REVOKED"]
    assert sessions(tl) == []
    assert answered_initiation(tl, "cl", GW_IP) is None  # the revoked key gets no session
    assert [e["detail"] for e in events(tl, "HandshakeRejected")][-1:] == ["unknown_peer"]


def test_a_bad_policy_is_refused_and_a_good_one_applies_to_the_live_session(tl):
    policy = tl.tmp / "policy.toml"
    good = policy.read_text()
    policy.write_text(good.replace("max_lifetime_ms = 3600000", "max_lifetime_ms = 5"))
    out = cli(tl, "gateway", "reload")
    assert out.returncode == 1
    assert re.search(r"policy.toml:\d+: session.max_lifetime_ms: 5 is out of range .*"
                     r"gateway.conf:\d+: Policy", out.stderr), out.stderr
    assert events(tl, "ReloadRefused") and not events(tl, "GatewayReloaded")
    gateway_alive(tl)
    assert tl.lab.run("cl", "ping", "-c", "1", "-W", "2", GW_INNER, check=False).returncode == 0
    # a good one: the live session's silence limit drops below its 0.3 s keepalives
    assert not [e for e in events(tl, "SessionStateChange") if e["new_state"] == "VOLATILE"]
    policy.write_text(good.replace("[volatility]\n", "[volatility]\nheartbeat_volatile_ms = 100\n"))
    out = cli(tl, "gateway", "reload", "--json")
    assert out.returncode == 0 and '"heartbeat_volatile_ms"' in out.stdout, out.stderr
    tl.wait(lambda: [e for e in events(tl, "SessionStateChange") if e["new_state"] == "VOLATILE"],
            "the reloaded heartbeat bound applied to the live session", timeout=10)


def test_drain_refuses_a_new_handshake_while_the_session_keeps_passing_traffic(tl):
    out = cli(tl, "drain")
    assert out.returncode == 0 and "draining" in out.stdout, out.stderr
    assert answered_initiation(tl, "cl", GW_IP) is None
    assert events(tl, "HandshakeRejected")[-1]["reason_code"] == "DRAINING"
    assert tl.lab.run("cl", "ping", "-c", "3", "-i", "0.2", "-W", "2", GW_INNER,
                      check=False).returncode == 0
    assert len(sessions(tl)) == 1
    assert cli(tl, "drain", "--off").returncode == 0
    assert answered_initiation(tl, "cl", GW_IP) is not None


def test_rekey_marks_the_live_session_through_the_cli_and_refuses_an_unknown_one(tl):
    """The CLI, the daemon's socket and its table, for real. The exchange
    that follows (the gateway's flag, the client's request) is not this
    test's: once it runs, the mark is already gone and the epoch moved."""
    [s] = sessions(tl)
    out = cli(tl, "rekey", s["session_id"], "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"rekey_requested": [s["session_id"]],
                                      "key_epoch": s["key_epoch"], "state": s["state"]}
    [after] = sessions(tl)
    assert after["session_id"] == s["session_id"]  # the same session, whatever follows
    assert after["rekey_requested"] or after["key_epoch"] > s["key_epoch"]
    out = cli(tl, "rekey", "--peer", "alice")
    assert out.returncode == 0 and f"of peer alice: {s['session_id']}" in out.stdout, out.stderr
    out = cli(tl, "rekey", "00000000000000aa")
    assert out.returncode == 1
    assert out.stderr.strip() == "error: no session 00000000000000aa on this gateway"
    gateway_alive(tl)
    assert tl.client.poll() is None  # a rekey ends nothing


def test_sigterm_stops_the_gateway_in_well_under_a_second(tl):
    time.sleep(0.5)  # an idle tunnel: the case a blocking TUN read held for 2 s
    t0 = time.monotonic()
    tl.gateway.send_signal(signal.SIGTERM)
    tl.gateway.wait(timeout=10)
    took = time.monotonic() - t0
    print(f"SIGTERM to exit: {took:.3f} s")
    assert tl.gateway.returncode == 0 and took < 1.5
    assert events(tl, "GatewayStopped")
