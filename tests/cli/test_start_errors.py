"""Errors after the files loaded name the key and the config file that set
it (or that it is the default there), not a bare errno: the events file, the
store, the client's --events-file, the client's FwMark, Endpoint and
AllowedIPs failures. The gateway cases stop before any socket or TUN is
opened (the events file comes first), so they need no namespace; root is
faked where the command checks for it."""

from __future__ import annotations

import ipaddress
import os

import pytest
from click.testing import CliRunner

from jvpn import keys
from jvpn.client import ClientError, marked, tun_addresses
from jvpn.client_dns import DnsError
from jvpn.client_hooks import HookFailed, run_hooks
from jvpn.config import load_client_config, load_gateway_config
from jvpn.config_sources import StartError, keyed, naming
from jvpn.files import UnsafeFile
from jvpn.gate.paths import GatePaths
from jvpn.gateway import build
from jvpn.gateway.build import build_gateway, claim_instance
from jvpn.gateway.operator import SocketInUse
from jvpn.handshake import Assignment
from jvpn_cli.main import cli

GW_PRIV = keys.generate_private()
GW_PUB = keys.encode(keys.public_from_private(GW_PRIV))
PEER = keys.encode(keys.public_from_private(keys.generate_private()))


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("JVPN_PIN_ROOT", str(tmp_path / "pins"))
    monkeypatch.setenv("JVPN_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # past `require_root`; nothing here needs it
    old = os.umask(0o077)
    yield
    os.umask(old)


def gateway_conf(tmp_path, *extra: str):
    (tmp_path / "peers.conf").write_text(f"[Peer]\nPublicKey = {PEER}\nAllowedIPs = "
                                         "10.99.0.2/32\n")
    (tmp_path / "gw.conf").write_text(
        f"[Interface]\nPrivateKey = {keys.encode(GW_PRIV)}\nAddress = 10.99.0.1/24\n"
        f"PeersFile = peers.conf\nStateDir = state\nListenPort = 51977\n"
        + "".join(f"{line}\n" for line in extra))
    return tmp_path / "gw.conf"


def test_gateway_up_names_an_events_file_that_cannot_be_created(tmp_path):
    (tmp_path / "plain").write_text("a file, not a folder\n")
    conf = gateway_conf(tmp_path, "EventsFile = plain/events.jsonl")
    r = CliRunner().invoke(cli, ["gateway", "up", "--config", str(conf)])
    assert r.exit_code == 1, r.output
    line = r.stderr.strip()
    assert line.startswith(f"error: {conf}:7: EventsFile: {tmp_path}/plain/events.jsonl: "), line
    assert line.endswith(f"{tmp_path}/plain is not a directory"), line
    assert "\n" not in line and "Errno" not in line


def test_a_default_events_file_is_named_as_the_default(tmp_path):
    conf = gateway_conf(tmp_path)
    cfg = load_gateway_config(conf)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "events.jsonl").mkdir()  # a folder where the file goes
    paths = GatePaths(tmp_path / "pins", tmp_path / "run")
    with claim_instance(cfg, conf, paths), pytest.raises(StartError) as err:
        build_gateway(cfg, tun_name="jvnever0", paths=paths)
    assert str(err.value).startswith(f"{conf}: EventsFile (default): "), err.value


def test_an_unreachable_etcd_store_is_named(tmp_path):
    (tmp_path / "cluster.key").write_text(keys.encode(keys.generate_private()) + "\n")
    conf = gateway_conf(tmp_path, "Store = etcd://127.0.0.1:1", "ClusterKeyFile = cluster.key")
    cfg = load_gateway_config(conf)
    with pytest.raises(StartError) as err:
        build_gateway(cfg, tun_name="jvnever0", paths=GatePaths(tmp_path / "p", tmp_path / "r"))
    assert str(err.value).startswith(f"{conf}:7: Store: etcd://127.0.0.1:1: "), err.value


def client_conf(tmp_path, endpoint="192.0.2.1:51900", *extra: str):
    (tmp_path / "c.conf").write_text(
        f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
        + "".join(f"{line}\n" for line in extra)
        + f"[Peer]\nPublicKey = {GW_PUB}\nEndpoint = {endpoint}\n")
    return tmp_path / "c.conf"


def test_client_up_names_an_events_file_option_that_cannot_be_opened(tmp_path):
    (tmp_path / "plain").write_text("x")
    conf = client_conf(tmp_path)
    r = CliRunner().invoke(cli, ["client", "up", "--config", str(conf), "--events-file",
                                 str(tmp_path / "plain" / "ev.jsonl")])
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == (f"error: --events-file {tmp_path}/plain/ev.jsonl: "
                                f"{tmp_path}/plain is not a directory")


def test_an_endpoint_inside_the_assigned_network_names_the_endpoint_line(tmp_path):
    cfg = load_client_config(client_conf(tmp_path, "10.99.0.7:51900"))
    a = Assignment(1, ipaddress.IPv4Interface("10.99.0.2/24"), ipaddress.IPv4Address("10.99.0.1"))
    with pytest.raises(ClientError) as err:
        tun_addresses(a, False, cfg.endpoint[0])
    line = keyed(cfg.sources, err.value)
    assert line.startswith(f"{tmp_path / 'c.conf'}:5: Endpoint: the gateway's endpoint"), line


def test_a_refused_mark_names_fwmark_given_or_default(tmp_path):
    class Refusing:
        def setsockopt(self, *_):
            raise PermissionError(1, "Operation not permitted")

        def close(self):
            pass

    with pytest.raises(ClientError) as err:
        marked(Refusing, 0x4a56)()
    given = load_client_config(client_conf(tmp_path, "192.0.2.1:51900", "FwMark = 0x4a56"))
    assert keyed(given.sources, err.value).startswith(
        f"{tmp_path / 'c.conf'}:3: FwMark: cannot mark the outer socket")
    default = load_client_config(client_conf(tmp_path))
    assert keyed(default.sources, err.value).startswith(
        f"{tmp_path / 'c.conf'}: FwMark (default): cannot mark")


def test_dns_and_hook_failures_name_the_file_and_line(tmp_path):
    cfg = load_client_config(client_conf(tmp_path, "192.0.2.1:51900", "DNS = 10.99.0.1",
                                         "PreUp = true", "PreUp = false"))
    assert keyed(cfg.sources, DnsError("DNS: resolvectl dns jvpn0 10.99.0.1 failed")) == (
        f"{tmp_path / 'c.conf'}:3: DNS: resolvectl dns jvpn0 10.99.0.1 failed")
    with pytest.raises(HookFailed) as err:
        run_hooks("PreUp", ["true", "false"], "jvpn0")
    assert keyed(cfg.sources, err.value) == (
        f"{tmp_path / 'c.conf'}:5: PreUp hook 2 of 2 ('false') failed with exit status 1")


def test_an_error_that_names_its_key_already_is_not_named_twice(tmp_path):
    cfg = load_gateway_config(gateway_conf(tmp_path))
    already = StartError(f"{tmp_path / 'gw.conf'}:5: StateDir: {tmp_path}/state is a file")
    with pytest.raises(StartError) as err, naming(cfg.sources, "StateDir", cfg.state_dir):
        raise already
    assert err.value is already
    with pytest.raises(StartError) as err, naming(cfg.sources, "StateDir", cfg.state_dir):
        raise PermissionError(13, "Permission denied", str(cfg.state_dir))
    assert str(err.value) == (f"{tmp_path / 'gw.conf'}:5: StateDir: {cfg.state_dir}: "
                              "Permission denied")


@pytest.mark.parametrize("raised,named", [
    (SocketInUse("/r/gateway.sock: another gateway daemon answers on this operator socket"),
     True),
    (UnsafeFile("/r/gateway.sock exists and is not a socket: remove it"), True),
    (OSError(98, "Address already in use"), False),  # the UDP port's: not the socket's
])
def test_operator_socket_failures_name_control_socket(tmp_path, monkeypatch, raised, named):
    """Gateway() opens the UDP socket, the TUN and the operator socket; only
    the operator socket's own errors are named ControlSocket (a fake Gateway
    here: the real one would open a TUN on this host)."""
    conf = gateway_conf(tmp_path, f"ControlSocket = {tmp_path}/ctl/gateway.sock")
    cfg = load_gateway_config(conf)

    def fake_gateway(**kw):
        kw["events"].close()
        kw["store"].close()
        raise raised

    monkeypatch.setattr(build, "Gateway", fake_gateway)
    with pytest.raises(Exception) as err:
        build.build_gateway(cfg, tun_name="jvnever0",
                            paths=GatePaths(tmp_path / "p", tmp_path / "r"))
    if named:
        assert str(err.value).startswith(f"{conf}:7: ControlSocket: {tmp_path}/ctl/gateway.sock: ")
    else:
        assert err.value is raised
