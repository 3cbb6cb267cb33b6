"""`jvpn-xdp terminate`, `drain` and `gateway reload` talk to the running
gateway's operator socket: their arguments are checked first, and without a
daemon they say so in one line."""

from __future__ import annotations

from click.testing import CliRunner

from jvpn_cli.main import cli


def test_terminate_needs_exactly_one_target(tmp_path):
    r = CliRunner().invoke(cli, ["--run-dir", str(tmp_path), "terminate"])
    assert r.exit_code == 2 and "SESSION_ID or --peer" in r.output
    r = CliRunner().invoke(cli, ["--run-dir", str(tmp_path), "terminate", "ab", "--peer", "x"])
    assert r.exit_code == 2


def test_without_a_daemon_each_command_says_so_in_one_line(tmp_path):
    for args in (["terminate", "00000000000000ab"], ["drain"], ["drain", "--off"],
                 ["gateway", "reload"], ["terminate", "--peer", "alice", "--json"]):
        r = CliRunner().invoke(cli, ["--run-dir", str(tmp_path), *args])
        assert r.exit_code == 1, args
        assert "no gateway daemon answers on" in r.output and str(tmp_path) in r.output
