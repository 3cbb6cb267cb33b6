"""`gateway check` and `client check --events-file` judge an events file by
the very rule `up` opens it with (jvpn.files.check_own_file): a regular
file of root's (the daemons run as root) with one link, never a symlink;
whoever runs the check. No root needed to run these: files in tmp_path."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from jvpn import keys
from jvpn.files import UnsafeFile, open_private
from jvpn_cli.main import cli

GW_PUB = keys.encode(keys.public_from_private(keys.generate_private()))
OTHER_UID = 4242


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("JVPN_PIN_ROOT", str(tmp_path / "pins"))
    monkeypatch.setenv("JVPN_RUN_DIR", str(tmp_path / "run"))
    old = os.umask(0o077)
    yield
    os.umask(old)


@pytest.fixture
def client_conf(tmp_path):
    p = tmp_path / "c.conf"
    p.write_text(f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
                 f"[Peer]\nPublicKey = {GW_PUB}\nEndpoint = 192.0.2.1:51900\n")
    return p


def client_check(conf, events, *extra):
    return CliRunner().invoke(cli, ["client", "check", "--config", str(conf),
                                    "--events-file", str(events), *extra])


def test_client_check_takes_an_absent_or_root_owned_events_file(tmp_path, client_conf):
    assert client_check(client_conf, tmp_path / "new.jsonl").exit_code == 0
    if os.geteuid() == 0:
        (tmp_path / "e.jsonl").write_text("")
        r = client_check(client_conf, tmp_path / "e.jsonl")
        assert r.exit_code == 0, r.output


@pytest.mark.parametrize("kind", ["symlink", "two-links", "directory-parent"])
def test_client_check_refuses_what_client_up_would(tmp_path, client_conf, kind):
    target = tmp_path / "e.jsonl"
    if kind == "symlink":
        (tmp_path / "elsewhere").write_text("")
        target.symlink_to(tmp_path / "elsewhere")
        words = "symlink"
    elif kind == "two-links":
        (tmp_path / "elsewhere").write_text("")
        os.link(tmp_path / "elsewhere", target)
        words = "2 hard links" if os.geteuid() == 0 else "owned by uid"
    else:
        (tmp_path / "file").write_text("")
        target = tmp_path / "file" / "e.jsonl"
        words = "not a directory"
    r = client_check(client_conf, target)
    assert r.exit_code == 1 and "Traceback" not in r.output
    line = r.stderr.strip()
    assert line.startswith(f"error: --events-file {target}: ") and words in line, line
    out = json.loads(client_check(client_conf, target, "--json").stdout)
    assert out["valid"] is False and words in out["error"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_check_and_up_agree_on_the_owner_whoever_runs_the_check(tmp_path, client_conf,
                                                              monkeypatch):
    """A file of the calling user's is not root's: `up` (root) refuses it,
    so `check` run by that user must too (it used to trust the caller)."""
    f = tmp_path / "e.jsonl"
    f.write_text("")
    os.chown(f, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeFile) as up_says:  # what `client up` / `gateway up` (root) do
        open_private(f, os.O_WRONLY | os.O_APPEND)
    monkeypatch.setattr(os, "geteuid", lambda: OTHER_UID)  # `check` run by the file's owner
    r = client_check(client_conf, f)
    assert r.exit_code == 1 and str(up_says.value) in r.stderr, (r.stderr, up_says.value)
    gw = tmp_path / "gw.conf"
    (tmp_path / "peers.conf").write_text(f"[Peer]\nPublicKey = {GW_PUB}\n"
                                         "AllowedIP = 10.99.0.2/32\n")
    gw.write_text(f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
                  f"Address = 10.99.0.1/24\nPeersFile = peers.conf\nEventsFile = {f}\n")
    r = CliRunner().invoke(cli, ["gateway", "check", "--config", str(gw)])
    assert r.exit_code == 1 and str(up_says.value) in r.stderr, r.stderr
    assert f"{gw}:5: EventsFile: " in r.stderr
