"""`jvpn-xdp gateway check` and `client check`: the effective configuration
with each value's source, secrets never printed, the first error as one
line naming file, line and key, and nothing created or opened. No root:
files in tmp_path and click's CliRunner."""

from __future__ import annotations

import json
import os
import socket

import pytest
from click.testing import CliRunner

from jvpn import keys
from jvpn.config import _GATEWAY
from jvpn.policy import SPEC
from jvpn_cli.main import cli

GW_PRIV = keys.generate_private()
GW_PUB = keys.encode(keys.public_from_private(GW_PRIV))
ALICE_PRIV = keys.generate_private()
ALICE = keys.encode(keys.public_from_private(ALICE_PRIV))


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("JVPN_PIN_ROOT", str(tmp_path / "pins"))
    monkeypatch.setenv("JVPN_RUN_DIR", str(tmp_path / "run"))
    old = os.umask(0o077)  # key files must be 0600 (jvpn.files)
    yield
    os.umask(old)


@pytest.fixture
def etc(tmp_path):
    (tmp_path / "gw.key").write_text(keys.encode(GW_PRIV) + "\n")
    (tmp_path / "peers.conf").write_text(
        f"[Peer]\nPublicKey = {ALICE}\nAllowedIPs = 10.99.0.2/32, 192.168.50.0/24\n"
        "Name = alice\n")
    (tmp_path / "policy.toml").write_text("[switching]\nmax_switches_per_min = 4\n")
    (tmp_path / "gw.conf").write_text(
        "[Interface]\nPrivateKeyFile = gw.key\nAddress = 10.99.0.1/24\n"
        "PeersFile = peers.conf\nPolicy = policy.toml\nStateDir = state\nListenPort = 51999\n")
    return tmp_path


def check(*args: str, cmd: str = "gateway"):
    return CliRunner().invoke(cli, [cmd, "check", *args])


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0][len("error: "):]


def test_gateway_check_prints_every_key_with_its_source(etc):
    r = check("--config", str(etc / "gw.conf"), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    rows = {row["key"]: row for row in report["interface"]}
    every = set(_GATEWAY["Interface"]) - {"PrivateKey"}
    assert every <= set(rows), every - set(rows)
    gw = str(etc / "gw.conf")
    assert rows["ListenPort"] == {"key": "ListenPort", "value": 51999, "source": f"{gw}:7"}
    assert rows["PathMTU"]["source"] == "default" and rows["PathMTU"]["value"] == 1500
    assert rows["NodeId"]["value"] == socket.gethostname()
    assert rows["PublicKey"]["value"] == GW_PUB
    assert rows["StateDir"]["value"] == str(etc / "state")
    assert rows["ControlSocket"]["value"] == str(etc / "run" / "gateway.sock")  # the run dir's
    assert report["peers"] == [{"name": "alice", "public_key": ALICE, "source":
                                f"{etc / 'peers.conf'}:1",
                                "allowed_ips": ["10.99.0.2/32", "192.168.50.0/24"]}]
    fields = {row["key"]: row for row in report["policy"]["fields"]}
    assert set(fields) == {f.key for f in SPEC} | {"version"}
    assert fields["switching.max_switches_per_min"]["value"] == 4
    assert fields["switching.max_switches_per_min"]["source"] == f"{etc / 'policy.toml'}:2"
    assert fields["session.max_lifetime_ms"]["source"] == "default"


def test_gateway_check_text_never_prints_a_secret(etc):
    inline = (etc / "gw.conf").read_text().replace(
        "PrivateKeyFile = gw.key", f"PrivateKey = {keys.encode(GW_PRIV)}")
    (etc / "gw.conf").write_text(inline)
    r = check("--config", str(etc / "gw.conf"))
    assert r.exit_code == 0, r.output
    assert keys.encode(GW_PRIV) not in r.output
    assert f"# PublicKey = {GW_PUB}" in r.stdout
    assert "PrivateKey = (inline, not shown)" in r.stdout
    assert "max_switches_per_min = 4" in r.stdout and "policy.toml:2" in r.stdout
    assert "ListenPort = 51999" in r.stdout and "PathMTU = 1500" in r.stdout


def test_gateway_check_opens_and_creates_nothing(etc, monkeypatch):
    """No root needed, no state directory made, no socket opened."""
    monkeypatch.setattr(os, "geteuid", lambda: 4242)  # not root; the files are ours or root's
    monkeypatch.setattr(socket, "socket", lambda *a, **k: pytest.fail("a socket was opened"))
    r = check("--config", str(etc / "gw.conf"))
    assert r.exit_code == 0, r.output
    assert not (etc / "state").exists()
    assert not (etc / "run").exists()


@pytest.mark.parametrize("name,files,needles", [
    ("policy-line", {"policy.toml": "[switching]\nmax_switches_per_min = 0\n"},
     ["policy.toml:2: switching.max_switches_per_min:", "out of range", "gw.conf:5: Policy"]),
    ("policy-unknown", {"policy.toml": "\n[security]\nreplay_windw = 1\n"},
     ["policy.toml:3: security.replay_windw: unknown field"]),
    ("peers-line", {"peers.conf": f"[Peer]\nPublicKey = {ALICE}\nAllowedIPs = 10.99.0.1/32\n"},
     ["peers.conf:3: AllowedIPs:", "gateway's own address"]),
    ("key-file", {"gw.key": "not a key\n"}, ["gw.conf:2: PrivateKeyFile:", "gw.key"]),
    ("state-dir-is-a-file", {"state": "x"}, ["gw.conf:6: StateDir:", "not a directory"]),
])
def test_gateway_check_stops_at_the_first_error_naming_file_line_and_key(etc, name, files,
                                                                           needles):
    for fname, text in files.items():
        (etc / fname).write_text(text)
    r = check("--config", str(etc / "gw.conf"))
    line = one_error_line(r)
    assert line.startswith(str(etc)), line
    for needle in needles:
        assert needle in line, (needle, line)
    assert r.stdout == ""


def test_gateway_check_json_reports_the_error(etc):
    (etc / "policy.toml").write_text("[session]\nmax_lifetime_ms = 1\n")
    r = check("--config", str(etc / "gw.conf"), "--json")
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert out["valid"] is False and out["error"].startswith(f"{etc / 'policy.toml'}:2: ")


def test_gateway_check_refuses_an_events_file_symlink(etc):
    (etc / "state").mkdir(mode=0o700)
    (etc / "state" / "events.jsonl").symlink_to(etc / "elsewhere")
    line = one_error_line(check("--config", str(etc / "gw.conf")))
    assert line.startswith(f"{etc / 'gw.conf'}: EventsFile (default): ") and "symlink" in line


def test_gateway_check_refuses_a_state_dir_others_may_write(etc):
    (etc / "state").mkdir()
    os.chmod(etc / "state", 0o777)
    line = one_error_line(check("--config", str(etc / "gw.conf")))
    assert "gw.conf:6: StateDir:" in line and "chmod 700" in line


def test_gateway_check_warns_of_a_missing_xdp_interface(etc):
    with open(etc / "gw.conf", "a") as f:
        f.write("XdpInterface = jvnope0\n")
    r = check("--config", str(etc / "gw.conf"))
    assert r.exit_code == 0, r.output
    assert "warning: " in r.stderr and "gw.conf:8: XdpInterface: no interface jvnope0" in r.stderr


def test_client_check(tmp_path):
    (tmp_path / "c.key").write_text(keys.encode(ALICE_PRIV) + "\n")
    (tmp_path / "c.conf").write_text(
        "[Interface]\nPrivateKeyFile = c.key\nDNS = 10.99.0.1\nPostUp = echo a, b\n"
        "PostUp = true\n[Peer]\n"
        f"PublicKey = {GW_PUB}\nEndpoint = 192.0.2.1:51900\n")
    r = check("--config", str(tmp_path / "c.conf"), "--json", cmd="client")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)["keys"]
    rows = {row["key"]: row for row in listed}
    assert [(x["value"], x["source"]) for x in listed if x["key"] == "PostUp"] == [
        ("echo a, b", f"{tmp_path / 'c.conf'}:4"), ("true", f"{tmp_path / 'c.conf'}:5")]
    assert rows["Name"] == {"key": "Name", "value": "jvpn0", "source": "default"}
    assert rows["Endpoint"]["value"] == "192.0.2.1:51900"
    assert rows["Endpoint"]["source"] == f"{tmp_path / 'c.conf'}:8"
    assert rows["PublicKey"]["value"] == GW_PUB
    assert rows["KeepaliveInterval"]["value"] == 0.5
    text = check("--config", str(tmp_path / "c.conf"), cmd="client")
    assert text.exit_code == 0 and keys.encode(ALICE_PRIV) not in text.output
    assert f"# PublicKey = {ALICE}" in text.stdout and "[Peer]" in text.stdout
    (tmp_path / "c.conf").write_text((tmp_path / "c.conf").read_text() + "MTU = 5\n")
    line = one_error_line(check("--config", str(tmp_path / "c.conf"), cmd="client"))
    assert line.startswith(f"{tmp_path / 'c.conf'}:9: ")
