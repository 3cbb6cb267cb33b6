"""`jvpn-xdp terminate`, `rekey`, `drain` and `gateway reload` talk to the running
gateway's operator socket: their arguments are checked first, and without a
daemon they say so in one line."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner

from jvpn.gateway.operator import OperatorServer
from jvpn.gateway.terminate import NotServedHere
from jvpn_cli.main import cli


@pytest.mark.parametrize("command", ["terminate", "rekey"])
def test_terminate_and_rekey_need_exactly_one_target(tmp_path, command):
    r = CliRunner().invoke(cli, ["--run-dir", str(tmp_path), command])
    assert r.exit_code == 2 and "SESSION_ID or --peer" in r.output
    r = CliRunner().invoke(cli, ["--run-dir", str(tmp_path), command, "ab", "--peer", "x"])
    assert r.exit_code == 2


def test_without_a_daemon_each_command_says_so_in_one_line(tmp_path):
    for args in (["terminate", "00000000000000ab"], ["drain"], ["drain", "--off"],
                 ["gateway", "reload"], ["terminate", "--peer", "alice", "--json"],
                 ["rekey", "00000000000000ab"], ["rekey", "--peer", "alice", "--json"]):
        r = CliRunner().invoke(cli, ["--run-dir", str(tmp_path), *args])
        assert r.exit_code == 1, args
        assert "no gateway daemon answers on" in r.output and str(tmp_path) in r.output


# ---------------------------------------------------------------- against a daemon's socket
@pytest.fixture
def daemon(tmp_path):
    """daemon(handlers) -> the operator socket's path (a server with these handlers)."""
    running = []

    def start(handlers):
        server = OperatorServer(tmp_path / "run" / f"gw{len(running)}.sock", handlers)
        server.open()
        stop = threading.Event()
        thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
        thread.start()
        running.append((server, stop, thread))
        return str(server.path)

    yield start
    for server, stop, thread in running:
        stop.set()
        server.close()
        thread.join(2)


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


RELOADED = {"added": [], "removed": ["alice"], "changed": [], "renamed": [],
            "policy_changed": [], "revoked": ["00000000000000bb"],
            "revoke_failed": ["00000000000000aa: store unavailable"]}


def test_a_reload_whose_revocation_the_store_refused_exits_1_in_one_line(daemon):
    path = daemon({"reload": lambda _req: RELOADED})
    r = invoke("gateway", "reload", "--socket", path)
    assert r.exit_code == 1 and "reloaded: removed alice" in r.output
    [line] = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert "1 revocation(s) failed, the store refused" in line and "00000000000000aa" in line
    r = invoke("gateway", "reload", "--socket", path, "--json")
    assert r.exit_code == 1 and '"revoke_failed"' in r.output  # the details stay in the JSON
    ok = daemon({"reload": lambda _req: {**RELOADED, "revoke_failed": []}})
    assert invoke("gateway", "reload", "--socket", ok).exit_code == 0


def test_a_terminate_the_store_refused_exits_1_in_one_line(daemon):
    result = {"peer": "alice", "terminated": ["00000000000000bb"],
              "failed": ["00000000000000aa: store unavailable", "00000000000000cc: timeout"]}
    path = daemon({"terminate": lambda _req: result})
    r = invoke("terminate", "--peer", "alice", "--socket", path)
    assert r.exit_code == 1 and "terminated 1 session(s) of peer alice" in r.output
    [line] = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert "2 session(s) not terminated" in line and "1 more (--json)" in line
    ok = daemon({"terminate": lambda _req: {**result, "failed": []}})
    assert invoke("terminate", "--peer", "alice", "--socket", ok).exit_code == 0


def test_a_reload_slower_than_the_timeout_may_still_complete_and_says_so(daemon):
    done = threading.Event()
    path = daemon({"reload": lambda _req: done.wait(5) and RELOADED})
    r = invoke("gateway", "reload", "--socket", path, "--timeout", "0.3")
    done.set()
    assert r.exit_code == 1
    assert "did not answer within 0.3 s: the reload may still complete" in r.output
    assert "--timeout" in invoke("terminate", "--help").output


# ---------------------------------------------------------------- rekey
def test_rekey_asks_the_daemon_and_says_which_sessions_will_rekey(daemon):
    asked = []

    def rekey(req):
        asked.append(req)
        return {"rekey_requested": ["00000000000000ab"], "key_epoch": 3, "state": "ATTACHED"}

    path = daemon({"rekey": rekey})
    r = invoke("rekey", "ab", "--socket", path)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == ("rekey requested for 1 session(s): 00000000000000ab "
                                "(key epoch 3, ATTACHED)")
    assert asked == [{"op": "rekey", "session": "ab"}]
    r = invoke("rekey", "ab", "--socket", path, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["key_epoch"] == 3
    recovering = daemon({"rekey": lambda _req: {**rekey(_req), "state": "RECOVERING"}})
    r = invoke("rekey", "ab", "--socket", recovering)
    assert "(key epoch 3, RECOVERING: it starts once the reattach is done)" in r.output


def test_rekey_of_a_peer_exits_1_when_a_session_was_not_marked(daemon):
    result = {"peer": "alice", "rekey_requested": ["00000000000000bb"],
              "failed": ["00000000000000aa: awaits its revocation"]}
    path = daemon({"rekey": lambda _req: result})
    r = invoke("rekey", "--peer", "alice", "--socket", path)
    assert r.exit_code == 1 and "rekey requested for 1 session(s) of peer alice" in r.output
    [line] = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert "1 session(s) not marked for a rekey: 00000000000000aa: awaits its revocation" in line
    ok = daemon({"rekey": lambda _req: {**result, "failed": [], "rekey_requested": []}})
    r = invoke("rekey", "--peer", "alice", "--socket", ok)
    assert r.exit_code == 0 and "0 session(s) of peer alice: none served here" in r.output


def test_a_rekey_the_daemon_refuses_is_one_error_line_naming_the_owner(daemon):
    def refuse(_req):
        raise NotServedHere("session 00000000000000ab is owned by gateway 'gw-b': rekey it "
                            "there (the operator socket of that gateway)")

    path = daemon({"rekey": refuse})
    r = invoke("rekey", "00000000000000ab", "--socket", path)
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        "error: session 00000000000000ab is owned by gateway 'gw-b': rekey it there "
        "(the operator socket of that gateway)"]
