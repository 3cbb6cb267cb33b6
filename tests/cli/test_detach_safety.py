"""Review R2 of the gate's records and detach, without a kernel (pins and
records faked in tmp): interface names that would be the pin root or its
parent, records of a newer version or unreadable ones, and records written
only into a private run dir, never through a planted symlink."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from jvpn import ifname
from jvpn.files import UnsafeFile
from jvpn.gate import attach as gate_attach
from jvpn.gate import loader, netns, records
from jvpn.gate.paths import GatePaths
from jvpn_cli.main import cli


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """A pin root with two gates' pins and another tool's pins next to it."""
    bpf = tmp_path / "bpf"
    pins, run = bpf / "jvpn", tmp_path / "run"
    for d in (pins / "eth0", pins / "eth1", bpf / "other-tool"):
        d.mkdir(parents=True)
        (d / "map").write_text("a live map")
    monkeypatch.setenv("JVPN_PIN_ROOT", str(pins))
    monkeypatch.setenv("JVPN_RUN_DIR", str(run))
    return GatePaths(pins, run)


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(loader, "_bcc", lambda: object())
    monkeypatch.setattr(gate_attach, "xdp_prog_id", lambda _ifname: None)


def _everything(dirs: GatePaths) -> list[str]:
    root = dirs.pin_root.parent
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _raw_record(dirs: GatePaths, name: str = "eth0", inode: int | None = None, **extra):
    raw = {"ifname": name, "ifindex": 7, "mode": "generic", "ports": [51900],
           "pin_dir": str(dirs.pin_dir(name)), "replay_bits": 1024, "attached_at": 1.0,
           "netns_inode": netns.current_inode() if inode is None else inode,
           "netns_name": ""}
    raw.update(extra)
    dirs.run_dir.mkdir(mode=0o700, exist_ok=True)
    records.Attachment.path(name, dirs).write_text(json.dumps(raw))
    return raw


# ------------------------------------------------------------ interface names

@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "x" * 16, "eth 0", "a\0b", "a:b"])
def test_detach_of_a_name_that_is_no_interface_name_removes_nothing(dirs, as_root, bad):
    before = _everything(dirs)
    r = CliRunner().invoke(cli, ["detach", bad])
    assert r.exit_code == 1 and "Traceback" not in r.output
    line, = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and "interface name" in line
    assert _everything(dirs) == before
    r = CliRunner().invoke(cli, ["detach", bad, "--force"])
    assert r.exit_code == 1 and _everything(dirs) == before


@pytest.mark.parametrize("command", [["sessions"], ["stats"], ["attach"]])
def test_every_command_taking_an_interface_checks_its_name(dirs, as_root, command):
    for bad in ("", "..", "a/b"):
        r = CliRunner().invoke(cli, [*command, bad])
        assert r.exit_code == 1, r.output
        assert "interface name" in r.stderr, r.stderr


def test_gate_functions_check_the_name_themselves(dirs, as_root):
    before = _everything(dirs)
    calls = (lambda n: gate_attach.detach(n, dirs, force=True),
             lambda n: gate_attach.forget(n, dirs),
             lambda n: records.Attachment.load(n, dirs),
             lambda n: records.Owners.path(n, dirs))
    for bad in ("", ".", ".."):
        for call in calls:
            with pytest.raises(ifname.BadInterfaceName):
                call(bad)
    assert _everything(dirs) == before


def test_a_pin_dir_that_leads_out_of_the_pin_root_is_not_removed(dirs, as_root):
    """A symlink planted as PIN_ROOT/IFACE must not lead rmtree elsewhere."""
    shutil.rmtree(dirs.pin_dir("eth0"))
    dirs.pin_dir("eth0").symlink_to(dirs.pin_root.parent / "other-tool")
    _raw_record(dirs, "eth0")
    with pytest.raises(gate_attach.JvpnError, match="symlink"):
        gate_attach.detach("eth0", dirs)
    assert (dirs.pin_root.parent / "other-tool" / "map").exists()


def test_config_and_gate_share_the_check():
    assert ifname.problem("eth0.100") is None and ifname.problem("x" * 15) is None
    assert "at most 15" in ifname.problem("x" * 16)
    assert ifname.problem("a\0b") and ifname.problem("") and ifname.problem("..")


# ------------------------------------------------------------ records

def test_a_newer_versions_record_keeps_the_namespace_check(dirs, as_root):
    """One more key (a newer jvpn): still read, so another namespace's
    record is still refused, and its pins stay."""
    _raw_record(dirs, "eth0", inode=netns.current_inode() + 1, future_field=1)
    att = records.Attachment.load("eth0", dirs)
    assert att.netns_inode == netns.current_inode() + 1
    with pytest.raises(records.ForeignNamespace):
        gate_attach.detach("eth0", dirs)
    assert (dirs.pin_dir("eth0") / "map").exists()


def _garbage(_raw): return "{not json"
def _a_list(_raw): return "[]"
def _missing_key(raw): return json.dumps({k: v for k, v in raw.items() if k != "mode"})
def _wrong_type(raw): return json.dumps(raw | {"netns_inode": "1"})


@pytest.mark.parametrize("spoil", [_garbage, _a_list, _missing_key, _wrong_type])
def test_an_unreadable_record_never_touches_the_link(dirs, as_root, monkeypatch, spoil):
    """Garbage, a missing key, a wrong type: without --force refused (pins
    kept); with --force pins and record go, and no link is touched."""
    raw = _raw_record(dirs, "eth0", inode=netns.current_inode() + 1)  # not this namespace's
    records.Attachment.path("eth0", dirs).write_text(spoil(raw))
    touched = []
    monkeypatch.setattr(gate_attach, "_remove_program", lambda *a: touched.append(a))
    monkeypatch.setattr(gate_attach, "xdp_prog_id", lambda _ifname: 41)
    monkeypatch.setattr(gate_attach, "_interface_exists", lambda _ifname: True)
    r = CliRunner().invoke(cli, ["detach", "eth0"])
    assert r.exit_code == 1 and "detach --force eth0" in r.stderr
    assert "no link is touched" in " ".join(r.stderr.split())
    assert (dirs.pin_dir("eth0") / "map").exists()
    r = CliRunner().invoke(cli, ["detach", "eth0", "--force"])
    assert r.exit_code == 0, r.output
    assert "no link was touched" in " ".join(r.stdout.split())
    assert "an XDP program (id 41) is on eth0 and was kept" in " ".join(r.stderr.split())
    assert touched == [] and not dirs.pin_dir("eth0").exists()
    assert not records.Attachment.path("eth0", dirs).exists()
    assert (dirs.pin_dir("eth1") / "map").exists()


def test_pins_without_a_record_need_force(dirs, as_root, monkeypatch):
    monkeypatch.setattr(gate_attach, "_remove_program", lambda *a: pytest.fail("link touched"))
    r = CliRunner().invoke(cli, ["detach", "eth1"])
    assert r.exit_code == 1 and "no record" in r.stderr
    assert dirs.pin_dir("eth1").exists()
    assert CliRunner().invoke(cli, ["detach", "eth1", "--force"]).exit_code == 0
    assert not dirs.pin_dir("eth1").exists()


def test_a_record_naming_another_interface_is_unreadable(dirs):
    _raw_record(dirs, "eth0")
    raw = json.loads(records.Attachment.path("eth0", dirs).read_text()) | {"ifname": ".."}
    records.Attachment.path("eth0", dirs).write_text(json.dumps(raw))
    with pytest.raises(records.UnreadableRecord, match=r"names interface '\.\.'"):
        records.Attachment.load("eth0", dirs)


def _att(dirs: GatePaths) -> records.Attachment:
    return records.Attachment(ifname="eth0", ifindex=7, mode="generic", ports=[51900],
                              pin_dir=str(dirs.pin_dir("eth0")), replay_bits=1024,
                              attached_at=1.0, netns_inode=netns.current_inode())


def test_records_are_never_written_through_a_planted_symlink(dirs, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    dirs.run_dir.mkdir(mode=0o700)
    (dirs.run_dir / "eth0.tmp").symlink_to(victim)  # a leftover, or planted before 0700
    (dirs.run_dir / "eth0.owners.tmp").symlink_to(victim)
    _att(dirs).save(dirs)
    records.Owners(node="gw", lease=1, remote={}).save("eth0", dirs)
    assert victim.read_text() == "root's file\n"
    assert records.Attachment.load("eth0", dirs).ifname == "eth0"
    assert records.Owners.load("eth0", dirs).node == "gw"


def test_records_refuse_a_run_dir_others_may_write(dirs):
    dirs.run_dir.mkdir()
    os.chmod(dirs.run_dir, 0o777)
    with pytest.raises(UnsafeFile, match="writable by group or others"):
        _att(dirs).save(dirs)
    with pytest.raises(UnsafeFile, match="writable by group or others"):
        records.Owners(node="gw", lease=1, remote={}).save("eth0", dirs)
    assert list(dirs.run_dir.iterdir()) == []


def test_records_are_private(dirs):
    old = os.umask(0o022)
    try:
        _att(dirs).save(dirs)
        records.Owners(node="gw", lease=1, remote={}).save("eth0", dirs)
    finally:
        os.umask(old)
    assert oct(dirs.run_dir.stat().st_mode & 0o777) == "0o700"
    for p in (records.Attachment.path("eth0", dirs), records.Owners.path("eth0", dirs)):
        assert oct(p.stat().st_mode & 0o777) == "0o600"


def test_status_without_access_to_the_records_says_so(dirs, monkeypatch):
    """Not "nothing attached" when the records are root's and we are not."""
    _att(dirs).save(dirs)
    monkeypatch.setattr(os, "access", lambda *_a, **_k: False)
    r = CliRunner().invoke(cli, ["status"])
    assert r.exit_code == 1 and "nothing attached" not in r.output
    assert "run as root" in r.stderr
