"""Issue 12, rough edges: one-line errors that name the setting (a port in
use, a StateDir that is a file, a busy TUN, an events file or a key path the
user may not use), `gateway down` without a device, and the gate's records
across network namespaces, without a kernel (records faked in tmp)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from jvpn import keys
from jvpn.config import load_gateway_config
from jvpn.errors import JvpnError
from jvpn.gate import attach as gate_attach
from jvpn.gate import inuse, loader, netns, records
from jvpn.gate.paths import GatePaths
from jvpn.gateway.listener import open_listener
from jvpn.gateway.start_errors import StartError, naming_settings
from jvpn.lab.running import write_secret
from jvpn.tunnel import TunBusy
from jvpn_cli.main import cli

IS_ROOT = os.geteuid() == 0
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    pins, run = tmp_path / "pins", tmp_path / "run"
    monkeypatch.setenv("JVPN_PIN_ROOT", str(pins))
    monkeypatch.setenv("JVPN_RUN_DIR", str(run))
    return GatePaths(pins, run)


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(loader, "_bcc", lambda: object())  # never reached: refused before


def one_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    line, = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


def _gateway_conf(tmp_path, state_dir, port: int = 51977, extra: str = ""):
    peer = keys.public_from_private(keys.generate_private())
    (tmp_path / "peers.conf").write_text(f"[Peer]\nPublicKey = {keys.encode(peer)}\n"
                                         "AllowedIP = 10.98.0.2/32\n")
    path = tmp_path / "gw.conf"
    write_secret(path, f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
                       f"ListenPort = {port}\nAddress = 10.98.0.1/24\nPeersFile = peers.conf\n"
                       f"StateDir = {state_dir}\nNodeId = t\n{extra}")
    return path


# ---------------------------------------------------------------- gateway up


def test_a_state_dir_that_is_a_file_names_the_key_and_line(tmp_path, dirs, as_root):
    state = tmp_path / "state"
    state.write_text("not a directory\n")
    conf = _gateway_conf(tmp_path, state)
    line = one_line(CliRunner().invoke(cli, ["gateway", "up", "--config", str(conf)]))
    assert line == f"error: {conf}:6: StateDir: {state}: {state} is not a directory"
    assert state.read_text() == "not a directory\n"


def test_a_port_in_use_names_listen_port(tmp_path):
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("0.0.0.0", 0))
    port = taken.getsockname()[1]
    conf = _gateway_conf(tmp_path, tmp_path / "state", port)
    cfg = load_gateway_config(conf)
    try:
        with pytest.raises(StartError) as e, naming_settings(cfg, "jvpn-gw"):
            open_listener("::", port, 1 << 16, None)
    finally:
        taken.close()
    assert str(e.value).startswith(f"{conf}:3: ListenPort: UDP [::]:{port} is already in use")


def test_a_default_port_in_use_says_it_is_the_default(tmp_path):
    conf = tmp_path / "gw.conf"
    _gateway_conf(tmp_path, tmp_path / "state")
    text = conf.read_text().replace("ListenPort = 51977\n", "")
    write_secret(conf, text)
    cfg = load_gateway_config(conf)
    from jvpn.gateway.listener import PortInUse  # noqa: PLC0415

    with pytest.raises(StartError) as e, naming_settings(cfg, "jvpn-gw"):
        raise PortInUse("UDP [::]:51820 is already in use by another process")
    assert str(e.value).startswith(f"{conf}: ListenPort (default): UDP")


def test_a_busy_tun_names_the_option(tmp_path):
    conf = _gateway_conf(tmp_path, tmp_path / "state")
    cfg = load_gateway_config(conf)
    with pytest.raises(StartError) as e, naming_settings(cfg, "jvbusy0"):
        raise TunBusy("TUN device jvbusy0 is busy: another process has it open")
    assert str(e.value).startswith("--tun jvbusy0: TUN device jvbusy0 is busy")


def test_an_events_file_error_names_events_file(tmp_path):
    conf = _gateway_conf(tmp_path, tmp_path / "state", extra="EventsFile = /x/ev.jsonl\n")
    cfg = load_gateway_config(conf)
    with pytest.raises(StartError) as e, naming_settings(cfg, "jvpn-gw"):
        raise PermissionError(13, "Permission denied", "/x/ev.jsonl")
    assert str(e.value) == f"{conf}:8: EventsFile: /x/ev.jsonl: Permission denied"


def test_other_os_errors_pass_unchanged(tmp_path):
    conf = _gateway_conf(tmp_path, tmp_path / "state")
    cfg = load_gateway_config(conf)
    with pytest.raises(OSError, match="elsewhere"), naming_settings(cfg, "jvpn-gw"):
        raise OSError(5, "Input/output error", "/elsewhere")


# ---------------------------------------------------------------- gateway down


@pytest.mark.skipif(not IS_ROOT, reason="gateway down needs root")
def test_gateway_down_without_a_device_removes_nothing():
    r = CliRunner().invoke(cli, ["gateway", "down", "--tun", "jvnone9"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "no TUN device jvnone9: nothing to remove"
    assert "removed" not in r.stdout


@pytest.mark.skipif(not IS_ROOT, reason="gateway down needs root")
def test_gateway_down_refuses_an_interface_that_is_no_tun():
    line = one_line(CliRunner().invoke(cli, ["gateway", "down", "--tun", "lo"]))
    assert line == "error: --tun lo: lo is not a TUN device: not removed"
    assert socket.if_nametoindex("lo")


# ---------------------------------------------------------------- no permission


def _as_nobody(*args: str) -> subprocess.CompletedProcess:
    code = "from jvpn_cli.main import main; main()"
    return subprocess.run([*NOBODY, sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.skipif(not IS_ROOT, reason="drops to nobody: needs root")
def test_events_without_permission_is_one_line(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "events.jsonl").write_text("{}\n")
    tmp_path.chmod(0o755)
    r = _as_nobody("events", "--file", str(state / "events.jsonl"))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (f"error: cannot read the events file {state / 'events.jsonl'} "
                                "(--file; EventsFile in the gateway config): permission denied: "
                                "run it as root (the StateDir is 0700)")


@pytest.mark.skipif(not IS_ROOT, reason="drops to nobody: needs root")
def test_keygen_without_permission_is_one_line(tmp_path):
    tmp_path.chmod(0o755)  # root's, not writable by nobody
    out = tmp_path / "k.key"
    r = _as_nobody("keygen", "--out", str(out))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (f"error: --out {out}: permission denied: cannot create the key "
                                f"file there (is {tmp_path} writable by you? sudo?)")
    assert not out.exists()


def test_keygen_into_a_missing_directory(tmp_path):
    out = tmp_path / "nope" / "k.key"
    line = one_line(CliRunner().invoke(cli, ["keygen", "--out", str(out)]))
    assert line == f"error: --out {out}: no such directory {out.parent}"


# ---------------------------------------------------------------- namespaces


def _record(paths: GatePaths, inode: int, name: str = "", ifname: str = "jvtest0"):
    att = records.Attachment(ifname=ifname, ifindex=99, mode="native", ports=[51900],
                             pin_dir=str(paths.pin_dir(ifname)), replay_bits=4096,
                             attached_at=time.time(), netns_inode=inode, netns_name=name)
    att.save(paths)
    return att


def test_a_record_keeps_its_namespace(dirs):
    here = netns.Netns.here()
    _record(dirs, here.inode, here.name)
    att = records.Attachment.load("jvtest0", dirs)
    assert (att.netns_inode, att.foreign()) == (here.inode, None)


def test_a_record_from_before_namespaces_is_read_as_ours(dirs):
    dirs.run_dir.mkdir(parents=True)
    old = {"ifname": "jvtest0", "ifindex": 99, "mode": "native", "ports": [51900],
           "pin_dir": str(dirs.pin_dir("jvtest0")), "replay_bits": 4096, "attached_at": 1.0,
           "note": ""}
    (dirs.run_dir / "jvtest0.json").write_text(json.dumps(old))
    att = records.Attachment.load("jvtest0", dirs)
    assert att.netns() is None and att.foreign() is None


def test_status_shows_another_namespaces_record_without_advice(dirs):
    _record(dirs, inode=1, name="")  # no namespace has inode 1
    r = CliRunner().invoke(cli, ["status", "--json"])
    row, = json.loads(r.stdout)
    assert row["prog_id"] is None and row["netns_inode"] == 1
    assert "jvtest0 is attached in network namespace (inode 1), not this one" in row["elsewhere"]
    text = CliRunner().invoke(cli, ["status"]).stdout
    assert "elsewhere" in text and "not this one" in text
    assert "run `jvpn-xdp detach` to clean up" not in text  # the live-record advice
    assert "detach --force jvtest0" in " ".join(text.split())  # its namespace looks gone


def test_detach_and_attach_refuse_another_namespaces_record(dirs, as_root, monkeypatch):
    _record(dirs, inode=1, name="far")  # no namespace has inode 1: it looks gone
    monkeypatch.setattr(gate_attach, "xdp_prog_id", lambda _ifname: None)
    monkeypatch.setattr(gate_attach, "require_interface", lambda _ifname: 7)
    line = one_line(CliRunner().invoke(cli, ["detach", "jvtest0"]))
    assert "jvtest0 is attached in network namespace far (inode 1), not this one" in line
    assert "it has no name and no process now" in line and "detach --force jvtest0" in line
    with pytest.raises(records.ForeignNamespace, match="give this namespace its own --pin-root"):
        gate_attach.attach("jvtest0", None, paths=dirs)
    assert records.Attachment.load("jvtest0", dirs).netns_name == "far"

    dirs.pin_dir("jvtest0").mkdir(parents=True)
    r = CliRunner().invoke(cli, ["detach", "jvtest0", "--force"])
    assert r.exit_code == 0, r.output
    assert " ".join(r.stdout.split()) == ("removed the record and pins of jvtest0: its network "
                                          "namespace is gone (no link was touched)")
    assert not records.Attachment.path("jvtest0", dirs).exists()
    assert not dirs.pin_dir("jvtest0").exists()


# ---------------------------------------------------------------- in use


def test_detach_is_refused_while_a_gateway_holds_the_gate(dirs, as_root, monkeypatch):
    here = netns.Netns.here()
    _record(dirs, here.inode, here.name)
    records.Owners(node="gw", lease=1, remote={}).save("jvtest0", dirs)
    monkeypatch.setattr(gate_attach, "_same_interface", lambda _ifname, _att: False)
    use = inuse.GateUse.hold("jvtest0", dirs)
    try:
        line = one_line(CliRunner().invoke(cli, ["detach", "jvtest0"]))
        assert f"a gateway uses the gate on jvtest0 (pid {os.getpid()}, started" in line
        assert "--force" in line
        assert records.Attachment.path("jvtest0", dirs).exists()
        r = CliRunner().invoke(cli, ["detach", "jvtest0", "--force"])
        assert r.exit_code == 0, r.output
        assert f"a gateway was using the gate (pid {os.getpid()}" in r.stderr
    finally:
        use.release()
    assert not records.Attachment.path("jvtest0", dirs).exists()
    assert not records.Owners.path("jvtest0", dirs).exists()
    assert oct(inuse.lock_path("jvtest0", dirs).stat().st_mode & 0o777) == "0o600"


def test_a_released_hold_lets_detach_go(dirs, as_root, monkeypatch):
    here = netns.Netns.here()
    _record(dirs, here.inode, here.name)
    monkeypatch.setattr(gate_attach, "_same_interface", lambda _ifname, _att: False)
    inuse.GateUse.hold("jvtest0", dirs).release()
    with pytest.raises(JvpnError, match="the gate on jvtest0 is being detached"), \
            inuse.exclusive("jvtest0", dirs):
        inuse.GateUse.hold("jvtest0", dirs)  # a gateway starting during a detach
    r = CliRunner().invoke(cli, ["detach", "jvtest0"])
    assert r.exit_code == 0, r.output
    assert "was using" not in r.stderr


def test_without_root_a_foreign_record_is_never_called_gone(dirs, monkeypatch):
    """A user cannot see other users' processes' namespaces: no "gone" claim."""
    rec = _record(dirs, inode=1)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert not rec.orphaned()
    assert rec.foreign().endswith("run this command as root to learn how to enter it")


def test_an_unreadable_record_can_be_detached(dirs, as_root, monkeypatch):
    """Its load error says "detach --force": then that must work, and touch
    no link (whose program and namespace it named cannot be told)."""
    dirs.run_dir.mkdir(parents=True)
    records.Attachment.path("jvtest0", dirs).write_text("{not json")
    monkeypatch.setattr(gate_attach, "xdp_prog_id", lambda _ifname: None)
    with pytest.raises(JvpnError, match=r"unreadable.*detach --force jvtest0"):
        records.Attachment.load("jvtest0", dirs)
    r = CliRunner().invoke(cli, ["detach", "jvtest0", "--force"])
    assert r.exit_code == 0, r.output
    assert "no link was touched" in " ".join(r.stdout.split())
    assert not records.Attachment.path("jvtest0", dirs).exists()


def test_a_gateway_refuses_a_gate_of_another_namespace(dirs):
    """Its maps are not ours to write: refused before anything is opened."""
    from jvpn.gate.kernel import XdpGate  # noqa: PLC0415

    _record(dirs, inode=1, name="far")
    with pytest.raises(records.ForeignNamespace, match="attached in network namespace far"):
        XdpGate("jvtest0", dirs)
    assert not inuse.lock_path("jvtest0", dirs).exists()  # not even the in-use lock


def test_an_unsafe_events_file_names_events_file(tmp_path):
    from jvpn.files import UnsafeFile  # noqa: PLC0415

    conf = _gateway_conf(tmp_path, tmp_path / "state", extra="EventsFile = /x/ev.jsonl\n")
    cfg = load_gateway_config(conf)
    with pytest.raises(StartError) as e, naming_settings(cfg, "jvpn-gw"):
        raise UnsafeFile("/x/ev.jsonl is a symlink: refused (remove it)")
    assert str(e.value) == f"{conf}:8: EventsFile: /x/ev.jsonl is a symlink: refused (remove it)"
