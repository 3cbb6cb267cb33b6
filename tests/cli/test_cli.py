"""The jvpn-xdp CLI without a kernel: help, argument checks, and the one-line
errors for no root, no bcc, no interface and nothing attached. Root and bcc
are faked where a test needs to get past them; nothing here touches BPF."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

import click
import pytest
from click.testing import CliRunner

from jvpn.errors import BccMissing, NotAttached
from jvpn.gate import attach as gate_attach
from jvpn.gate import loader, records
from jvpn_cli import app as app_mod
from jvpn_cli.main import cli, main

COMMANDS = ["attach", "detach", "status", "sessions", "stats"]
NEEDS_ROOT = [["attach", "lo"], ["detach", "lo"], ["sessions"], ["stats"], ["sessions", "lo"],
              ["stats", "lo"], ["stats", "--json"]]


@pytest.fixture(autouse=True)
def dirs(tmp_path, monkeypatch):
    """Pin root and run dir in tmp, through the environment variables the
    CLI's --pin-root/--run-dir options read (the labs set them the same way)."""
    pins, run = tmp_path / "pins", tmp_path / "run"
    monkeypatch.setenv("JVPN_PIN_ROOT", str(pins))
    monkeypatch.setenv("JVPN_RUN_DIR", str(run))
    return pins, run


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)


@pytest.fixture
def fake_bcc(monkeypatch):
    """bcc 'present' for the checks that come before any map access."""
    monkeypatch.setattr(loader, "_bcc", lambda: object())


@pytest.fixture
def not_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


def _record(run_dir, ifname="jvtest0", pin_dir="/nonexistent/pins/jvtest0"):
    att = records.Attachment(ifname=ifname, ifindex=99, mode="generic", ports=[51900, 4000],
                          pin_dir=pin_dir, replay_bits=4096, attached_at=time.time(),
                          note="native mode refused by the driver (test)")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"{ifname}.json").write_text(json.dumps(asdict(att)))
    return att


def _one_error_line(result, *needles):
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0]
    return lines[0]


# ---------------------------------------------------------------- help


def test_group_help_lists_commands_and_global_options(runner):
    r = runner.invoke(cli, ["--help"])
    assert r.exit_code == 0
    for c in COMMANDS:
        assert c in r.output
    for opt in ("--pin-root", "--run-dir", "JVPN_PIN_ROOT", "JVPN_RUN_DIR", "/sys/fs/bpf/jvpn",
                "/run/jvpn"):
        assert opt in r.output


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_help(runner, command):
    r = runner.invoke(cli, [command, "--help"])
    assert r.exit_code == 0, r.output
    assert f" {command} [OPTIONS]" in r.output
    assert cli.commands[command].get_short_help_str()


@pytest.mark.parametrize("command,options", [
    ("attach", ["--port", "--mode", "native", "generic", "51900", "--json", "--handshake-rate",
                "--control-rate", "--session-control-rate"]),
    ("status", ["--json"]),
    ("sessions", ["--json", "IFACE"]),
    ("stats", ["--json", "--all", "IFACE"]),
    ("detach", ["IFACE"]),
])
def test_help_names_the_options(runner, command, options):
    r = runner.invoke(cli, [command, "--help"])
    for o in options:
        assert o in r.output


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("ports,needle", [
    (["0"], "0 is not in the range 1<=x<=65535"),
    (["65536"], "65536 is not in the range 1<=x<=65535"),
    (["http"], "'http' is not a valid integer"),
    (["1", "2", "3", "4", "5"], "at most 4 ports, got 5"),
    (["7", "7"], "port 7 is given twice"),
])
def test_attach_bad_port(runner, ports, needle):
    args = ["attach", "lo"]
    for p in ports:
        args += ["--port", p]
    r = runner.invoke(cli, args)
    assert r.exit_code == 2
    assert "Invalid value for '--port'" in r.output
    assert needle in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("option", ["--handshake-rate", "--control-rate",
                                    "--session-control-rate"])
def test_attach_bad_rate(runner, option):
    r = runner.invoke(cli, ["attach", "lo", option, "-1"])
    assert r.exit_code == 2
    assert f"Invalid value for '{option}'" in r.output
    assert "Traceback" not in r.output


def test_attach_rates_reach_the_gate_config(runner, as_root, fake_bcc, monkeypatch):
    """Issue 10 item 3: the handshake and the authenticated control budgets
    are separate settings of the gate."""
    seen = {}

    def fake_attach(iface, config, mode, options=None, paths=None, progress=None):
        seen["config"] = config
        raise NotAttached("stop here (test)")

    monkeypatch.setattr(app_mod.App, "require_bpffs", lambda _self: None)
    monkeypatch.setattr(gate_attach, "attach", fake_attach)
    runner.invoke(cli, ["attach", "lo", "--handshake-rate", "100", "--control-rate", "300",
                        "--session-control-rate", "5", "--session-probe-rate", "4",
                        "--probe-rate", "5000"])
    cfg = seen["config"]
    assert (cfg.global_control_pps, cfg.authed_control_pps, cfg.session_control_pps,
            cfg.session_probe_pps, cfg.global_probe_pps) == (100, 300, 5, 4, 5000)
    raw = cfg.to_abi()
    assert raw.global_interval_ns == 10_000_000 and raw.authed_interval_ns == 3_333_333
    assert raw.session_control_interval_ns == 200_000_000
    assert raw.session_probe_interval_ns == 250_000_000
    assert raw.global_probe_interval_ns == 200_000


def test_attach_bad_mode(runner):
    r = runner.invoke(cli, ["attach", "lo", "--mode", "offload"])
    assert r.exit_code == 2
    assert "Invalid value for '--mode'" in r.output


# ---------------------------------------------------------------- root / bcc


@pytest.mark.parametrize("args", NEEDS_ROOT, ids=" ".join)
def test_needs_root(runner, not_root, args):
    _one_error_line(runner.invoke(cli, args), "root")


def test_root_is_checked_before_bcc(runner, not_root, monkeypatch):
    def no_bcc():
        raise BccMissing("bcc is not importable (test)")

    monkeypatch.setattr(loader, "_bcc", no_bcc)
    _one_error_line(runner.invoke(cli, ["stats"]), "root")


@pytest.mark.parametrize("args", [["stats"], ["sessions"], ["attach", "lo"], ["detach", "lo"]],
                         ids=" ".join)
def test_bcc_missing(runner, as_root, monkeypatch, args):
    def no_bcc():
        raise BccMissing("bcc is not importable (Debian package python3-bpfcc): test")

    monkeypatch.setattr(loader, "_bcc", no_bcc)
    _one_error_line(runner.invoke(cli, args), "bcc is not importable", "python3-bpfcc")


def test_main_prints_one_line_and_exits_1(not_root, capsys):
    with pytest.raises(SystemExit) as e:
        main(["stats", "--json"])
    assert e.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and "root" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_main_error_line_escapes_control_characters(capsys):
    """A path (or any text) in the error cannot add a line or a NUL to it."""
    with pytest.raises(SystemExit) as e:
        main(["gateway", "check", "--config", "no\x01such\n<0>forged\x1b[2J"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n")
    assert "no\\x01such\\n<0>forged\\x1b[2J" in err and "\x1b" not in err


def test_main_keyboard_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(_paths):
        raise KeyboardInterrupt

    monkeypatch.setattr(records.Attachment, "all", staticmethod(interrupted))
    with pytest.raises(SystemExit) as e:
        main(["status"])
    assert e.value.code == 130
    assert "Traceback" not in capsys.readouterr().err


def test_main_help_exits_0(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "Usage: jvpn-xdp" in capsys.readouterr().out


# ---------------------------------------------------------------- nothing attached


def test_status_json_empty(runner):
    r = runner.invoke(cli, ["status", "--json"])
    assert r.exit_code == 0
    assert json.loads(r.stdout) == []
    assert r.stdout.strip() == "[]"


def test_status_empty(runner):
    r = runner.invoke(cli, ["status"])
    assert r.exit_code == 0
    assert "nothing attached" in r.stdout


@pytest.mark.parametrize("args", [["stats"], ["stats", "--json"], ["sessions"],
                                  ["sessions", "--json"]], ids=" ".join)
def test_nothing_attached(runner, as_root, fake_bcc, dirs, args):
    line = _one_error_line(runner.invoke(cli, args), "not attached to any interface")
    assert str(dirs[1]) in line


@pytest.mark.parametrize("command", ["stats", "sessions"])
def test_named_interface_not_attached(runner, as_root, fake_bcc, command):
    _one_error_line(runner.invoke(cli, [command, "lo"]), "jvpn is not attached to lo")


@pytest.mark.parametrize("args", [["stats", "jvnosuch0"], ["sessions", "jvnosuch0"],
                                  ["detach", "jvnosuch0"], ["attach", "jvnosuch0"]],
                         ids=" ".join)
def test_no_such_interface(runner, as_root, fake_bcc, args):
    _one_error_line(runner.invoke(cli, args), "no such network interface", "jvnosuch0")


def test_detach_not_attached(runner, as_root, fake_bcc):
    _one_error_line(runner.invoke(cli, ["detach", "lo"]), "not attached to lo")


def test_attach_refuses_a_pin_root_off_bpffs(runner, as_root, fake_bcc, dirs):
    _one_error_line(runner.invoke(cli, ["attach", "lo"]), str(dirs[0]),
                    "not on a bpf filesystem")


# ---------------------------------------------------------------- records, no kernel


def test_status_shows_a_record_without_root(runner, not_root, dirs):
    att = _record(dirs[1])
    r = runner.invoke(cli, ["status", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 1
    row = rows[0]
    assert row["ifname"] == att.ifname and row["mode"] == "generic"
    assert row["ports"] == [51900, 4000]
    assert row["pin_dir"] == att.pin_dir and row["pinned"] is False
    assert row["prog_id"] is None
    assert row["sessions"] is None and "gone" in row["sessions_error"]
    assert row["attached_at"] == pytest.approx(att.attached_at)
    assert row["note"] == att.note

    r = runner.invoke(cli, ["status"])
    assert r.exit_code == 0
    assert att.ifname in r.stdout and "51900,4000" in r.stdout
    assert "no XDP program on the link" in r.stdout
    assert "native mode refused" in r.stdout


def test_global_run_dir_option_wins_over_env(runner, tmp_path):
    other = tmp_path / "elsewhere"
    _record(other, ifname="jvother0")
    r = runner.invoke(cli, ["--run-dir", str(other), "status", "--json"])
    assert r.exit_code == 0
    assert [row["ifname"] for row in json.loads(r.stdout)] == ["jvother0"]
    assert os.environ["JVPN_RUN_DIR"] != str(other)  # an option, not a change to the env


def test_the_cli_never_writes_the_environment(runner, tmp_path):
    before = dict(os.environ)
    r = runner.invoke(cli, ["--pin-root", str(tmp_path / "p"), "--run-dir", str(tmp_path / "r"),
                            "status", "--json"])
    assert r.exit_code == 0, r.output
    assert dict(os.environ) == before


def test_env_vars_reach_the_paths_through_the_options(dirs):
    ctx = cli.make_context("jvpn-xdp", ["status"])
    assert ctx.obj is None and ctx.params["pin_root"] == str(dirs[0])
    assert ctx.params["run_dir"] == str(dirs[1])


def test_stats_of_a_record_whose_pins_are_gone(runner, as_root, fake_bcc, dirs):
    _record(dirs[1], pin_dir=str(dirs[0] / "jvtest0"))
    _one_error_line(runner.invoke(cli, ["stats", "jvtest0"]), "no jvpn maps pinned")


# ---------------------------------------------------------------- helpers


def test_mount_fstype():
    assert app_mod.mount_fstype("/proc") == "proc"
    assert app_mod.mount_fstype("/proc/self/does/not/exist") == "proc"


def test_session_id_hex():
    assert app_mod.session_id_hex(7) == "0000000000000007"
    assert app_mod.session_id_hex(2**64 - 1) == "f" * 16


def test_bench_group_registered_when_present():
    import importlib.util

    if importlib.util.find_spec("jvpn_cli.bench") is None:
        assert "bench" not in cli.commands
    else:
        assert isinstance(cli.commands["bench"], click.Command)


# ---------------------------------------------------------------- events


def test_events_follow_keeps_following_across_a_rotation(tmp_path):
    """`jvpn-xdp events --follow` is tail -F: the gateway's EventLog rotates
    its file at EventsMaxBytes (issue 10 item 4), and the follower goes on
    with the new file without losing a line."""
    import subprocess
    import sys
    import threading

    from jvpn.events import EventLog

    f = tmp_path / "events.jsonl"
    log = EventLog("gw", f, max_bytes=1024, keep=1)
    log.emit("X", "N", version=0)
    exe = os.path.join(os.path.dirname(sys.executable), "jvpn-xdp")
    proc = subprocess.Popen([exe, "events", "--file", str(f), "--follow", "--json"],
                            stdout=subprocess.PIPE, text=True)
    seen: list[int] = []
    reader = threading.Thread(target=lambda: seen.extend(
        json.loads(line)["version"] for line in proc.stdout))
    reader.start()
    try:
        for i in range(1, 40):  # about six rotations, at most one between two reads
            if i % 4 == 0:
                deadline = time.monotonic() + 10
                while len(seen) < i and time.monotonic() < deadline:
                    time.sleep(0.005)
            log.emit("X", "N", version=i)
        deadline = time.monotonic() + 10
        while len(seen) < 40 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=10)
        log.close()
    assert (tmp_path / "events.jsonl.1").exists()
    assert seen == list(range(40))


def test_events_short_form_shows_a_summary_count(runner, tmp_path):
    from jvpn.events import EventLog
    from jvpn.session import Transport

    f, now = tmp_path / "events.jsonl", [0]
    log = EventLog("gw", f, clock_ms=lambda: now[0], summary_interval_ms=1_000)
    for port in (1, 2, 3):
        log.emit_unauthenticated("HandshakeRejected", "HANDSHAKE_FAIL", Transport("10.0.0.1", port))
    now[0] = 1_000
    log.flush()
    log.close()
    r = runner.invoke(cli, ["events", "--file", str(f)])
    assert r.exit_code == 0, r.output
    assert "HandshakeRejected" in r.output and "count=3 sources=1" in r.output
