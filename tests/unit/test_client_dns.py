"""DNS on the client (jvpn/client_dns.py): the resolv.conf backend on a temp
file (set, restore, a symlinked resolv.conf, the crash-safe backup), and
the commands the resolvectl and resolvconf backends run."""

from __future__ import annotations

import os
import subprocess

import pytest

from jvpn.client_dns import (
    DnsError,
    FileBackend,
    ResolvconfBackend,
    ResolvectlBackend,
    choose_backend,
    process_start,
)
from jvpn.config import ClientDns

ORIGINAL = "# from DHCP\nnameserver 192.0.2.53\nsearch home.example\noptions edns0\n"
DNS = ClientDns(servers=("10.99.0.1", "fd99::1"), search=("corp.example", "lab.example"))


@pytest.fixture
def conf(tmp_path):
    p = tmp_path / "resolv.conf"
    p.write_text(ORIGINAL)
    p.chmod(0o644)
    return p


def dead(_pid):
    return False


def test_set_then_restore(conf):
    b = FileBackend("jvpn7", DNS, conf, pid_alive=dead)
    b.apply()
    lines = conf.read_text().splitlines()
    assert lines[0].startswith(f"# jvpn-xdp client pid {os.getpid()} (start "
                               f"{process_start(os.getpid())}), TUN jvpn7")
    assert lines[1:] == ["nameserver 10.99.0.1", "nameserver fd99::1",
                         "search corp.example lab.example", "options edns0"]
    assert (conf.parent / "resolv.conf.jvpn-backup").read_text() == ORIGINAL
    assert oct(conf.stat().st_mode & 0o777) == oct(0o644)
    b.restore()
    assert conf.read_text() == ORIGINAL
    assert sorted(x.name for x in conf.parent.iterdir()) == ["resolv.conf"]


def test_search_domains_only_keep_the_previous_servers(conf):
    FileBackend("jvpn0", ClientDns(search=("corp.example",)), conf, pid_alive=dead).apply()
    assert conf.read_text().splitlines()[1:] == ["nameserver 192.0.2.53",
                                                 "search corp.example", "options edns0"]


def test_a_symlinked_resolv_conf_comes_back_as_the_same_link(tmp_path):
    target = tmp_path / "stub-resolv.conf"
    target.write_text(ORIGINAL)
    conf = tmp_path / "resolv.conf"
    conf.symlink_to(target)
    b = FileBackend("jvpn0", DNS, conf, pid_alive=dead)
    b.apply()
    assert not conf.is_symlink() and "nameserver 10.99.0.1" in conf.read_text()
    assert target.read_text() == ORIGINAL  # the resolver's own file is not written
    b.restore()
    assert conf.is_symlink() and os.readlink(conf) == str(target)


def test_a_crashed_runs_backup_is_put_back_first(conf):
    FileBackend("jvpn0", DNS, conf, pid_alive=dead).apply()  # ... and the process died
    other = ClientDns(servers=("10.99.0.9",))
    b = FileBackend("jvpn0", other, conf, pid_alive=dead)
    b.apply()
    assert b.recovered
    assert (conf.parent / "resolv.conf.jvpn-backup").read_text() == ORIGINAL
    assert "nameserver 10.99.0.9" in conf.read_text()
    b.restore()
    assert conf.read_text() == ORIGINAL


def test_a_crash_between_backup_and_rewrite_leaves_an_identical_backup(conf):
    (conf.parent / "resolv.conf.jvpn-backup").write_text(ORIGINAL)
    b = FileBackend("jvpn0", DNS, conf, pid_alive=dead)
    b.apply()
    assert not b.recovered
    b.restore()
    assert conf.read_text() == ORIGINAL


def test_a_stale_backup_after_someone_else_rewrote_the_file_is_refused(conf):
    backup = conf.parent / "resolv.conf.jvpn-backup"
    backup.write_text("nameserver 198.51.100.1\n")
    with pytest.raises(DnsError) as exc:
        FileBackend("jvpn0", DNS, conf, pid_alive=dead).apply()
    msg = str(exc.value)
    assert str(backup) in msg and str(conf) in msg and "\n" not in msg
    assert conf.read_text() == ORIGINAL and backup.read_text() == "nameserver 198.51.100.1\n"


def test_dns_set_by_a_running_client_is_not_taken_over(conf):
    FileBackend("jvpn0", DNS, conf).apply()
    me = f"pid {os.getpid()} (start {process_start(os.getpid())})"
    assert me in conf.read_text()
    ours = conf.read_text().replace(me, f"pid 1 (start {process_start(1)})")  # pid 1 is alive
    conf.write_text(ours)
    with pytest.raises(DnsError, match="another running jvpn client"):
        FileBackend("jvpn1", DNS, conf).apply()
    assert conf.read_text() == ours


def test_a_reused_pid_is_not_a_running_client(conf):
    """The marker's pid alone: after a power loss, the crashed client's pid is
    reused after boot by some daemon (or any local user forks until he holds
    it), and every later `client up` with DNS was refused as 'another
    running jvpn client'. The marker now names the process start too."""
    FileBackend("jvpn0", DNS, conf).apply()  # ... then a crash
    me = f"pid {os.getpid()} (start {process_start(os.getpid())})"
    conf.write_text(conf.read_text().replace(me, "pid 1 (start 0-0:12345)"))  # another pid 1
    b = FileBackend("jvpn1", ClientDns(servers=("10.99.0.9",)), conf)
    b.apply()
    assert b.recovered and "nameserver 10.99.0.9" in conf.read_text()
    b.restore()
    assert conf.read_text() == ORIGINAL


def test_restore_without_a_backup_says_so(conf):
    with pytest.raises(DnsError, match="jvpn-backup is gone"):
        FileBackend("jvpn0", DNS, conf).restore()


class Recorder:
    def __init__(self, returncode=0):
        self.calls, self.returncode = [], returncode

    def __call__(self, argv, **kw):
        self.calls.append((argv, kw.get("input")))
        return subprocess.CompletedProcess(argv, self.returncode, "", "no such link\n")


def test_resolvectl_sets_the_link_and_reverts_it():
    run = Recorder()
    b = ResolvectlBackend("jvpn0", DNS, run)
    b.apply()
    b.restore()
    assert [c[0] for c in run.calls] == [
        ["resolvectl", "dns", "jvpn0", "10.99.0.1", "fd99::1"],
        ["resolvectl", "domain", "jvpn0", "corp.example", "lab.example", "~."],
        ["resolvectl", "revert", "jvpn0"]]


@pytest.mark.parametrize("dns,domain", [
    (ClientDns(servers=("10.99.0.1",)), ["~."]),
    (ClientDns(search=("corp.example",)), ["corp.example"]),  # no servers here: not all names
])
def test_resolvectl_sends_every_query_to_the_tunnel_servers(dns, domain):
    """DNS leak: without the routing domain ~., systemd-resolved also asks the
    uplink's servers (a link with servers and no routing domain is a default
    route for DNS), in clear, around a full tunnel. resolvconf -x and the file
    backend are exclusive; resolvectl now is too."""
    run = Recorder()
    ResolvectlBackend("jvpn0", dns, run).apply()
    assert [c[0] for c in run.calls][-1] == ["resolvectl", "domain", "jvpn0", *domain]


def test_resolvconf_adds_an_exclusive_entry_and_deletes_it():
    run = Recorder()
    b = ResolvconfBackend("jvpn0", DNS, run)
    b.apply()
    b.restore()
    assert run.calls == [
        (["resolvconf", "-a", "jvpn0", "-m", "0", "-x"],
         "nameserver 10.99.0.1\nnameserver fd99::1\nsearch corp.example lab.example\n"),
        (["resolvconf", "-d", "jvpn0", "-f"], None)]


def test_a_failing_command_is_one_line():
    with pytest.raises(DnsError) as exc:
        ResolvectlBackend("jvpn0", DNS, Recorder(returncode=1)).apply()
    assert "resolvectl dns jvpn0" in str(exc.value) and "no such link" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_the_backend_is_chosen_at_run_time(tmp_path):
    resolved = tmp_path / "resolve"
    resolved.mkdir()

    def pick(resolved_dir, tools):
        return choose_backend("jvpn0", DNS, resolv_conf=tmp_path / "r", resolved_dir=resolved_dir,
                              which=lambda t: f"/usr/bin/{t}" if t in tools else None).name

    assert pick(resolved, {"resolvectl", "resolvconf"}) == "resolvectl"
    assert pick(tmp_path / "absent", {"resolvectl", "resolvconf"}) == "resolvconf"
    assert pick(resolved, {"resolvconf"}) == "resolvconf"
    assert pick(tmp_path / "absent", set()) == "file"


def test_resolvectl_is_all_or_nothing():
    class FailSecond(Recorder):
        def __call__(self, argv, **kw):
            self.returncode = 1 if argv[1] == "domain" else 0
            return super().__call__(argv, **kw)

    run = FailSecond()
    with pytest.raises(DnsError, match="resolvectl domain"):
        ResolvectlBackend("jvpn0", DNS, run).apply()
    assert [c[0][1] for c in run.calls] == ["dns", "domain", "revert"]


def test_a_resolv_conf_that_cannot_be_written_is_one_line_and_leaves_no_backup(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.mkdir()  # a directory: the rename over it fails
    with pytest.raises(DnsError) as exc:
        FileBackend("jvpn0", DNS, conf, pid_alive=dead).apply()
    assert str(conf) in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "resolv.conf.jvpn-backup").exists()


def test_a_failed_in_place_write_puts_the_previous_file_back(conf, monkeypatch):
    """A bind-mounted resolv.conf is rewritten in place (truncated, then
    written). A write that failed half way (ENOSPC, EIO) left it truncated,
    and the backup, the only copy of the user's DNS config, was deleted."""
    import errno  # noqa: PLC0415

    from jvpn import client_dns  # noqa: PLC0415

    real_replace = os.replace

    def busy(src, dst):
        if str(dst) == str(conf):
            raise OSError(errno.EBUSY, "Device or resource busy")
        real_replace(src, dst)

    calls = []

    def half_write(path, data):
        calls.append(data)
        if len(calls) == 1:  # the rewrite fails half way; putting back works
            path.write_bytes(data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        path.write_bytes(data)

    monkeypatch.setattr(client_dns.os, "replace", busy)
    monkeypatch.setattr(client_dns, "_write_in_place", half_write)
    with pytest.raises(DnsError, match="No space left"):
        FileBackend("jvpn0", DNS, conf, pid_alive=dead).apply()
    assert conf.read_text() == ORIGINAL
    assert not (conf.parent / "resolv.conf.jvpn-backup").exists()


def test_a_failed_write_that_cannot_be_undone_keeps_the_backup(conf, monkeypatch):
    import errno  # noqa: PLC0415

    from jvpn import client_dns  # noqa: PLC0415

    real_replace = os.replace

    def busy(src, dst):
        if str(dst) == str(conf):
            raise OSError(errno.EBUSY, "Device or resource busy")
        real_replace(src, dst)

    def broken(path, data):
        path.write_bytes(data[:10])
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(client_dns.os, "replace", busy)
    monkeypatch.setattr(client_dns, "_write_in_place", broken)
    with pytest.raises(DnsError, match="jvpn-backup"):
        FileBackend("jvpn0", DNS, conf, pid_alive=dead).apply()
    assert (conf.parent / "resolv.conf.jvpn-backup").read_text() == ORIGINAL
