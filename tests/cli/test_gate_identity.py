"""Gate records and names (review R2): the namespace cookie next to the
inode (the kernel reuses namespace inodes), interface names bpffs refuses
(eth0.100), and two attaches of one name at once."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import threading
import time

import pytest
from click.testing import CliRunner

from jvpn.errors import AlreadyAttached
from jvpn.gate import attach as gate_attach
from jvpn.gate import attachlock, ifnames, netns, records
from jvpn.gate.paths import GatePaths
from jvpn_cli.main import cli

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    pins, run = tmp_path / "pins", tmp_path / "run"
    monkeypatch.setenv("JVPN_PIN_ROOT", str(pins))
    monkeypatch.setenv("JVPN_RUN_DIR", str(run))
    return GatePaths(pins, run)


def _record(paths: GatePaths, ns: netns.Netns, ifname: str = "jvtest0") -> records.Attachment:
    att = records.Attachment(ifname=ifname, ifindex=99, mode="native", ports=[51900],
                             pin_dir=str(paths.pin_dir(ifname)), replay_bits=4096,
                             attached_at=time.time(), netns_inode=ns.inode,
                             netns_name=ns.name, netns_cookie=ns.cookie)
    att.save(paths)
    return att


# ---------------------------------------------------------------- cookie


def test_identity_is_inode_and_cookie_where_both_have_one():
    a = netns.Netns(7, cookie=3)
    assert a.same(netns.Netns(7, cookie=3))
    assert not a.same(netns.Netns(7, cookie=4))  # the inode of a gone namespace, reused
    assert not a.same(netns.Netns(8, cookie=3))
    assert a.same(netns.Netns(7)) and netns.Netns(7).same(a)  # no cookie: the inode decides


def test_here_has_a_cookie_and_a_record_keeps_it(dirs):
    here = netns.Netns.here()
    assert here.cookie > 0  # Linux >= 5.14
    assert netns.current_cookie() == here.cookie
    _record(dirs, here)
    att = records.Attachment.load("jvtest0", dirs)
    assert att.netns_cookie == here.cookie and att.foreign() is None


def test_a_record_without_a_cookie_is_compared_by_inode(dirs):
    here = netns.Netns.here()
    _record(dirs, netns.Netns(here.inode, here.name))
    assert records.Attachment.load("jvtest0", dirs).foreign() is None


@pytest.mark.skipif(not IS_ROOT, reason="reading another namespace's cookie needs root")
def test_our_inode_with_another_cookie_is_a_gone_namespace(dirs, monkeypatch):
    """A record of a namespace that died, whose inode this one got: status
    and detach treat it as gone, never as ours; --force forgets it and
    touches no link here."""
    here = netns.Netns.here()
    _record(dirs, netns.Netns(here.inode, "", here.cookie + 1))
    dirs.pin_dir("jvtest0").mkdir(parents=True)

    def never(*_args):
        raise AssertionError("a link of this namespace was touched")

    monkeypatch.setattr(gate_attach, "_remove_program", never)
    r = CliRunner().invoke(cli, ["status", "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    row, = json.loads(r.stdout)
    assert row["prog_id"] is None
    assert "that namespace is gone (this one has its inode now)" in row["elsewhere"]
    r = CliRunner().invoke(cli, ["detach", "jvtest0"])
    assert r.exit_code == 1 and "that namespace is gone" in r.stderr, r.output
    assert records.Attachment.path("jvtest0", dirs).exists()

    r = CliRunner().invoke(cli, ["detach", "jvtest0", "--force"])
    assert r.exit_code == 0, r.output
    assert "its network namespace is gone (no link was touched)" in " ".join(r.stdout.split())
    assert not records.Attachment.path("jvtest0", dirs).exists()
    assert not dirs.pin_dir("jvtest0").exists()


@pytest.mark.skipif(not IS_ROOT, reason="reading another namespace's cookie needs root")
def test_a_live_namespace_with_the_inode_but_not_the_cookie_is_not_named():
    here = netns.Netns.here()
    assert netns.pid_in(here.inode, here.cookie) is not None
    assert netns.pid_in(here.inode, here.cookie + 1) is None
    assert netns.name_of(here.inode, cookie=here.cookie + 1) == ""


# ---------------------------------------------------------------- names


def test_names_bpffs_refuses_are_encoded_reversibly_and_without_collisions():
    seen: dict[str, str] = {}
    for n in range(1, 6):
        for chars in itertools.product("a._2eF", repeat=n):
            name = "".join(chars)
            enc = ifnames.encode(name)
            assert "." not in enc and ifnames.decode(enc) == name
            assert seen.setdefault(enc, name) == name, (name, seen[enc])
    assert ifnames.encode("eth0.100") == "eth0_2e100"
    for name in ("eth0", "gw_0", "jvgw0", "veth_x1"):  # what jvpn always used stays
        assert ifnames.encode(name) == name
    assert GatePaths("/p", "/r").pin_dir("eth0.100") == GatePaths("/p", "/r").pin_root / \
        "eth0_2e100"


def test_dotted_names_have_records_of_their_own(dirs):
    here = netns.Netns.here()
    for name in ("x", "x.owners", "eth0.100", "eth0_2e100"):
        _record(dirs, here, ifname=name)
    records.Owners(node="gw", lease=1, remote={}).save("x", dirs)
    listed = sorted(a.ifname for a in records.Attachment.all(dirs))
    assert listed == ["eth0.100", "eth0_2e100", "x", "x.owners"]
    assert records.Attachment.load("x.owners", dirs).ifname == "x.owners"
    assert records.Owners.load("x", dirs).node == "gw"
    assert records.Owners.load("x.owners", dirs) is None
    assert len({dirs.pin_dir(n) for n in listed}) == 4


# ---------------------------------------------------------------- concurrent attach


def test_the_second_of_two_attaches_waits_and_is_refused(dirs, monkeypatch):
    """The loser never compiles nor touches the winner's pins."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(gate_attach, "require_interface", lambda _ifname: 7)
    monkeypatch.setattr(gate_attach, "xdp_prog_id", lambda _ifname: 42)  # the winner's

    def never(*_args, **_kw):
        raise AssertionError("the loser compiled")

    monkeypatch.setattr(gate_attach, "Program", never)
    stages: list[str] = []
    failed: list[BaseException] = []

    def loser():
        try:
            gate_attach.attach("jvtest0", None, paths=dirs, progress=stages.append)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            failed.append(e)

    with attachlock.exclusive("jvtest0", dirs, lambda: None) as waited:
        assert not waited
        t = threading.Thread(target=loser)
        t.start()
        deadline = time.monotonic() + 10
        while not stages and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stages == ["waiting for another attach of jvtest0 to finish"]
        assert t.is_alive()  # it waits for the winner
        _record(dirs, netns.Netns.here())  # the winner's record
    t.join(10)
    err, = failed
    assert isinstance(err, AlreadyAttached)
    assert str(err) == "jvpn is already attached to jvtest0 (by another attach that " \
                       "finished first)"
    lock = attachlock.lock_path("jvtest0", dirs)
    assert oct(lock.stat().st_mode & 0o777) == "0o600"
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it after
    finally:
        os.close(fd)
