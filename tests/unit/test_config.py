"""Config files (gateway, peers, client) and the keygen/pubkey commands. No
root: everything here is files in tmp_path and click's CliRunner."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from jvpn import keys
from jvpn.config import (
    HOOK_KEYS,
    ClientConfig,
    ConfigError,
    GatewayConfig,
    PeerConfig,
    load_client_config,
    load_gateway_config,
    load_peers,
)
from jvpn.errors import JvpnError
from jvpn.policy import default_policy
from jvpn_cli.main import cli

GW_PRIV = keys.generate_private()
ALICE = keys.public_from_private(keys.generate_private())
BOB = keys.public_from_private(keys.generate_private())
GW_ADDR = ipaddress.IPv4Interface("10.99.0.1/24")

POLICY = """version = 3
[session]
max_lifetime_ms = 3600000
transport_lost_ttl_ms = 15000
[volatility]
loss_volatile_threshold = 0.2
[switching]
max_switches_per_min = 30
recovery_window_ms = 8000
[security]
reattach_proof_max_age_ms = 5000
"""


def b64(key: bytes) -> str:
    return keys.encode(key)


def peers_text(*extra: str) -> str:
    return (f"# two peers\n[Peer]\nPublicKey = {b64(ALICE)}\nAllowedIP = 10.99.0.2/32\n"
            f"Name = alice\n\n[peer]\npublickey = {b64(BOB)}  # no name\n"
            f"allowedip = 10.99.0.3/32\n" + "".join(extra))


def gateway_text(**over: str | None) -> str:
    fields = {"PrivateKey": b64(GW_PRIV), "ListenPort": "51901", "Address": "10.99.0.1/24",
              "PeersFile": "peers.conf"}
    fields.update(over)
    body = "".join(f"{k} = {v}\n" for k, v in fields.items() if v is not None)
    return "[Interface]\n" + body


@pytest.fixture(autouse=True)
def _cli_env(tmp_path, monkeypatch):
    # the CLI group's --pin-root/--run-dir read these: keep the test off /run/jvpn
    monkeypatch.setenv("JVPN_PIN_ROOT", str(tmp_path / "pins"))
    monkeypatch.setenv("JVPN_RUN_DIR", str(tmp_path / "run"))


@pytest.fixture(autouse=True)
def _private_umask():
    # the files below hold keys: 0600, or the loader refuses them (tests/unit/test_files_keys.py)
    old = os.umask(0o077)
    yield
    os.umask(old)


# ---------------------------------------------------------------- good files

def test_gateway_config_loads_typed_values(tmp_path):
    (tmp_path / "peers.conf").write_text(peers_text())
    (tmp_path / "policy.toml").write_text(POLICY)
    cfg_path = tmp_path / "gw.conf"
    cfg_path.write_text(
        "# gateway\n\n[Interface]\n"
        f"PrivateKey = {b64(GW_PRIV)}   # inline comment\n"
        "ListenPort = 51901\nAddress = 10.99.0.1/24\nXdpInterface = eth0\n"
        "PeersFile = peers.conf\nPolicy = policy.toml\n"
        f"StateDir = {tmp_path / 'state'}\nNodeId = gw-a\nEventsFile = ev.jsonl\n")
    cfg = load_gateway_config(cfg_path)
    assert isinstance(cfg, GatewayConfig)
    assert cfg.private_key == GW_PRIV
    assert cfg.listen_port == 51901
    assert cfg.address == GW_ADDR
    assert cfg.xdp_interface == "eth0"
    assert cfg.peers == [
        PeerConfig(ALICE, ipaddress.IPv4Address("10.99.0.2"), "alice"),
        PeerConfig(BOB, ipaddress.IPv4Address("10.99.0.3"), b64(BOB)[:8]),
    ]
    assert cfg.policy.version == 3 and cfg.policy.max_switches_per_min == 30
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.node_id == "gw-a"
    assert cfg.events_file == tmp_path / "ev.jsonl"
    assert b64(GW_PRIV) not in repr(cfg) and repr(GW_PRIV) not in repr(cfg)


def test_gateway_defaults(tmp_path):
    (tmp_path / "peers.conf").write_text(peers_text())
    (tmp_path / "gw.conf").write_text(gateway_text(ListenPort=None))
    cfg = load_gateway_config(tmp_path / "gw.conf")
    assert cfg.listen_port == 51900
    assert cfg.xdp_interface is None
    assert cfg.policy == default_policy()
    assert cfg.state_dir == Path("/var/lib/jvpn")
    assert cfg.events_file == Path("/var/lib/jvpn/events.jsonl")
    assert cfg.node_id == socket.gethostname()


def test_relative_paths_are_relative_to_the_config_folder(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    (etc / "sub").mkdir(parents=True)
    (etc / "sub" / "peers.conf").write_text(peers_text())
    (etc / "pol.toml").write_text(POLICY)
    (etc / "gw.key").write_text(b64(GW_PRIV) + "\n")
    (etc / "gw.conf").write_text(gateway_text(
        PrivateKey=None, PrivateKeyFile="gw.key", PeersFile="sub/peers.conf",
        Policy="pol.toml", StateDir="state"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_gateway_config(Path("../etc/gw.conf"))
    assert cfg.private_key == GW_PRIV
    assert len(cfg.peers) == 2
    assert cfg.policy.version == 3
    assert cfg.state_dir.resolve() == etc / "state"
    assert cfg.events_file.resolve() == etc / "state" / "events.jsonl"


def test_load_peers_directly(tmp_path):
    (tmp_path / "peers.conf").write_text(peers_text())
    peers = load_peers(tmp_path / "peers.conf", GW_ADDR)
    assert [p.name for p in peers] == ["alice", b64(BOB)[:8]]
    assert all(isinstance(p.inner, ipaddress.IPv4Address) for p in peers)


def test_client_config_loads_typed_values(tmp_path):
    priv, gw_pub = keys.generate_private(), keys.public_from_private(GW_PRIV)
    (tmp_path / "c.conf").write_text(
        f"[Interface]\nPrivateKey = {b64(priv)}\nName = tun-home\n\n"
        f"[Peer]\nPublicKey = {b64(gw_pub)}\nEndpoint = 10.77.0.1:51900\n"
        "KeepaliveInterval = 0.3\n")
    cfg = load_client_config(tmp_path / "c.conf")
    assert cfg == ClientConfig(private_key=priv, tun_name="tun-home", gateway_public_key=gw_pub,
                               endpoint=("10.77.0.1", 51900), keepalive_ms=300)
    assert b64(priv) not in repr(cfg)


def test_client_defaults_and_ipv6_endpoint(tmp_path):
    (tmp_path / "c.conf").write_text(
        f"[Interface]\nPrivateKey = {b64(keys.generate_private())}\n"
        f"[Peer]\nPublicKey = {b64(ALICE)}\nEndpoint = [2001:db8::1]:51900\n")
    cfg = load_client_config(tmp_path / "c.conf")
    assert cfg.tun_name == "jvpn0"
    assert cfg.keepalive_ms == 500
    assert cfg.endpoint == ("2001:db8::1", 51900)


# ---------------------------------------------------------------- bad files

SHORT_KEY = keys.encode(b"\x01" * 16)
BAD_GATEWAY = [
    # (id, gateway.conf text, text of the other files, expected message parts)
    ("bad-base64", gateway_text(PrivateKey="not*base64"), {},
     ["gw.conf:2:", "PrivateKey", "not valid base64"]),
    ("short-key", gateway_text(PrivateKey=SHORT_KEY), {},
     ["gw.conf:2:", "PrivateKey", "32 bytes", "16"]),
    ("port-0", gateway_text(ListenPort="0"), {}, ["gw.conf:3:", "ListenPort", "out of range"]),
    ("port-70000", gateway_text(ListenPort="70000"), {},
     ["gw.conf:3:", "ListenPort", "70000", "out of range"]),
    ("port-word", gateway_text(ListenPort="http"), {}, ["gw.conf:3:", "ListenPort", "http"]),
    ("unknown-key", gateway_text(Colour="blue"), {}, ["gw.conf:6:", "Colour", "unknown key"]),
    ("unknown-section", gateway_text() + "[Peer]\n", {},
     ["gw.conf:6:", "[Peer]", "unknown section"]),
    ("duplicate-key", gateway_text() + "listenport = 1\n", {},
     ["gw.conf:6:", "ListenPort", "duplicate", "line 3"]),
    ("both-private-keys", gateway_text(PrivateKeyFile="gw.key"), {"gw.key": b64(GW_PRIV)},
     ["gw.conf:6:", "PrivateKeyFile", "exactly one", "line 2"]),
    ("no-private-key", gateway_text(PrivateKey=None), {},
     ["gw.conf:1:", "PrivateKey", "[Interface]", "missing"]),
    ("missing-address", gateway_text(Address=None), {},
     ["gw.conf:1:", "Address", "[Interface]", "missing"]),
    ("missing-peers-file", gateway_text(PeersFile=None), {},
     ["gw.conf:1:", "PeersFile", "[Interface]", "missing"]),
    ("address-without-prefix", gateway_text(Address="10.99.0.1"), {},
     ["gw.conf:4:", "Address", "prefix"]),
    ("address-ipv6", gateway_text(Address="fd00::1/64"), {}, ["gw.conf:4:", "Address"]),
    ("unreadable-peers-file", gateway_text(PeersFile="nope.conf"), {"peers.conf": None},
     ["gw.conf:5:", "PeersFile", "nope.conf", "No such file"]),
    ("key-file-bad", gateway_text(PrivateKey=None, PrivateKeyFile="gw.key"), {"gw.key": "xx"},
     ["gw.conf:5:", "PrivateKeyFile", "gw.key", "not valid base64"]),
    ("policy-out-of-range", gateway_text(Policy="policy.toml"),
     {"policy.toml": POLICY + "replay_window_size = 5\n"},
     ["policy.toml:12: security.replay_window_size:", "out of range", "gw.conf:6: Policy"]),
    ("policy-partial-file", gateway_text(Policy="policy.toml"),
     {"policy.toml": "[session]\ntransport_lost_ttl_ms = 99\n"},
     ["policy.toml:2: session.transport_lost_ttl_ms:", "out of range", "gw.conf:6: Policy"]),
    ("policy-missing", gateway_text(Policy="nope.toml"), {},
     ["gw.conf:6:", "Policy", "nope.toml"]),
    ("bad-xdp-interface", gateway_text(XdpInterface="a-very-long-ifname0"), {},
     ["gw.conf:6:", "XdpInterface", "15"]),
    ("line-without-equals", gateway_text() + "ListenPort 5\n", {}, ["gw.conf:6:", "Key = Value"]),
    ("key-before-section", "ListenPort = 5\n" + gateway_text(), {},
     ["gw.conf:1:", "ListenPort", "outside any section"]),
    ("empty-file", "# nothing\n", {}, ["gw.conf:", "[Interface]", "missing"]),
    # errors inside the peers file name the peers file and its line
    ("peer-bad-base64", gateway_text(), {"peers.conf": peers_text(
        "[Peer]\nPublicKey = %%%\nAllowedIP = 10.99.0.4/32\n")},
     ["peers.conf:11:", "PublicKey", "not valid base64"]),
    ("peer-short-key", gateway_text(), {"peers.conf": peers_text(
        f"[Peer]\nPublicKey = {SHORT_KEY}\nAllowedIP = 10.99.0.4/32\n")},
     ["peers.conf:11:", "PublicKey", "32 bytes"]),
    ("peer-outside-network", gateway_text(), {"peers.conf": peers_text(
        f"[Peer]\nPublicKey = {b64(GW_PRIV)}\nAllowedIP = 10.98.0.4/32\n")},
     ["peers.conf:12:", "AllowedIP", "10.98.0.4", "outside", "10.99.0.0/24"]),
    ("peer-slash-24", gateway_text(), {"peers.conf": peers_text(
        f"[Peer]\nPublicKey = {b64(GW_PRIV)}\nAllowedIP = 10.99.0.0/24\n")},
     ["peers.conf:12:", "AllowedIP", "/32", "/24"]),
    ("peer-gateway-address", gateway_text(), {"peers.conf": peers_text(
        f"[Peer]\nPublicKey = {b64(GW_PRIV)}\nAllowedIP = 10.99.0.1/32\n")},
     ["peers.conf:12:", "AllowedIP", "gateway"]),
    ("peer-duplicate-key", gateway_text(), {"peers.conf": peers_text(
        f"[Peer]\nPublicKey = {b64(ALICE)}\nAllowedIP = 10.99.0.4/32\n")},
     ["peers.conf:11:", "PublicKey", "duplicate", "line 3"]),
    ("peer-duplicate-allowed-ip", gateway_text(), {"peers.conf": peers_text(
        f"[Peer]\nPublicKey = {b64(GW_PRIV)}\nAllowedIP = 10.99.0.3/32\n")},
     ["peers.conf:12:", "AllowedIP", "10.99.0.3", "line 9"]),
    ("peer-missing-public-key", gateway_text(), {"peers.conf": peers_text(
        "[Peer]\nAllowedIP = 10.99.0.4/32\n")},
     ["peers.conf:10:", "PublicKey", "[Peer]", "missing"]),
    ("peer-missing-allowed-ip", gateway_text(), {"peers.conf": peers_text(
        f"[Peer]\nPublicKey = {b64(GW_PRIV)}\n")},
     ["peers.conf:10:", "AllowedIP", "[Peer]", "missing"]),
    ("peer-unknown-key", gateway_text(), {"peers.conf": peers_text("Endpoint = 1.2.3.4:5\n")},
     ["peers.conf:10:", "Endpoint", "unknown key"]),
    ("peer-unknown-section", gateway_text(), {"peers.conf": peers_text("[Interface]\n")},
     ["peers.conf:10:", "[Interface]", "unknown section"]),
]


@pytest.mark.parametrize("text,others,parts", [c[1:] for c in BAD_GATEWAY],
                         ids=[c[0] for c in BAD_GATEWAY])
def test_bad_gateway_configs(tmp_path, text, others, parts):
    files = {"peers.conf": peers_text(), **others}
    for name, content in files.items():
        if content is not None:
            (tmp_path / name).write_text(content)
    (tmp_path / "gw.conf").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(tmp_path / "gw.conf")
    message = str(exc.value)
    assert isinstance(exc.value, JvpnError)
    assert "\n" not in message
    assert message.startswith(str(tmp_path)), message
    for part in parts:
        assert part in message, (part, message)
    assert message.index(parts[0]) < 20 + len(str(tmp_path)), message  # the place comes first


def client_text(**over: str | None) -> str:
    iface = {"PrivateKey": b64(keys.generate_private()), "Name": "jvpn0"}
    peer = {"PublicKey": b64(ALICE), "Endpoint": "10.77.0.1:51900", "KeepaliveInterval": "0.5"}
    for k, v in over.items():
        (iface if k in iface or k in ("PrivateKeyFile", "DNS", *HOOK_KEYS) else peer)[k] = v
    lines = ["[Interface]"] + [f"{k} = {v}" for k, v in iface.items() if v is not None]
    lines += ["[Peer]"] + [f"{k} = {v}" for k, v in peer.items() if v is not None]
    return "\n".join(lines) + "\n"


BAD_CLIENT = [
    ("endpoint-no-port", client_text(Endpoint="10.77.0.1"), ["c.conf:6:", "Endpoint", "port"]),
    ("endpoint-not-a-name", client_text(Endpoint="gw_1.example:51900"),
     ["c.conf:6:", "Endpoint", "gw_1.example", "neither"]),
    ("endpoint-short-ipv4", client_text(Endpoint="10.1:51900"),
     ["c.conf:6:", "Endpoint", "10.1", "neither"]),
    ("endpoint-port-0", client_text(Endpoint="10.77.0.1:0"), ["c.conf:6:", "Endpoint", "port"]),
    ("endpoint-ipv6-unbracketed", client_text(Endpoint="2001:db8::1:51900"),
     ["c.conf:6:", "Endpoint"]),
    ("endpoint-bad-ipv6", client_text(Endpoint="[2001:zz::1]:51900"), ["c.conf:6:", "Endpoint"]),
    ("missing-public-key", client_text(PublicKey=None), ["c.conf:4:", "PublicKey", "[Peer]"]),
    ("missing-endpoint", client_text(Endpoint=None), ["c.conf:4:", "Endpoint", "[Peer]"]),
    ("keepalive-low", client_text(KeepaliveInterval="0.01"),
     ["c.conf:7:", "KeepaliveInterval", "out of range"]),
    ("keepalive-high", client_text(KeepaliveInterval="61"),
     ["c.conf:7:", "KeepaliveInterval", "out of range"]),
    ("keepalive-unit", client_text(KeepaliveInterval="500ms"),
     ["c.conf:7:", "KeepaliveInterval", "seconds"]),
    ("keepalive-sub-ms", client_text(KeepaliveInterval="0.0505"),
     ["c.conf:7:", "KeepaliveInterval", "3 decimals"]),
    ("persistent-keepalive-renamed", client_text(KeepaliveInterval=None,
                                                 PersistentKeepalive="25"),
     ["c.conf:7:", "PersistentKeepalive", "renamed to KeepaliveInterval", "seconds",
      "milliseconds"]),
    ("dns-garbage", client_text(DNS="10.99.0.1, bad name"),
     ["c.conf:4:", "DNS", "'bad name'", "neither"]),
    ("dns-empty-item", client_text(DNS="10.99.0.1,,corp.example"), ["c.conf:4:", "DNS"]),
    ("dns-option-injection", client_text(DNS="-x"), ["c.conf:4:", "DNS", "'-x'"]),
    ("hook-empty", client_text(PostUp=""), ["c.conf:4:", "PostUp", "empty"]),
    ("tun-name-long", client_text(Name="x" * 16), ["c.conf:3:", "Name", "15"]),
    ("tun-name-slash", client_text(Name="a/b"), ["c.conf:3:", "Name"]),
    ("both-private-keys", client_text(PrivateKeyFile="k"),
     ["c.conf:4:", "PrivateKeyFile", "exactly one"]),
    ("gateway-key-base64", client_text(PublicKey="!!"), ["c.conf:5:", "PublicKey", "base64"]),
    ("missing-peer-section", "[Interface]\nPrivateKey = " + b64(GW_PRIV) + "\n",
     ["c.conf:", "[Peer]", "missing"]),
    ("repeated-peer-section", client_text() + "[Peer]\n",
     ["c.conf:8:", "[Peer]", "repeated", "line 4"]),
]


@pytest.mark.parametrize("text,parts", [c[1:] for c in BAD_CLIENT],
                         ids=[c[0] for c in BAD_CLIENT])
def test_bad_client_configs(tmp_path, text, parts):
    (tmp_path / "c.conf").write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_client_config(tmp_path / "c.conf")
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.conf: cannot read: No such file"):
        load_client_config(tmp_path / "nope.conf")


# ---------------------------------------------------------------- keygen / pubkey

@pytest.fixture
def runner():
    return CliRunner()


def _public_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("public key: "), stderr
    return lines[0].removeprefix("public key: ")


def test_keygen_then_pubkey(runner):
    r = runner.invoke(cli, ["keygen"])
    assert r.exit_code == 0, r.output
    private = r.stdout.strip()
    assert len(keys.decode(private)) == 32
    public = _public_line(r.stderr)
    r2 = runner.invoke(cli, ["pubkey"], input=private + "\n")
    assert r2.exit_code == 0, r2.output
    assert r2.stdout.strip() == public
    assert public == b64(keys.public_from_private(keys.decode(private)))


def test_keygen_makes_different_keys(runner):
    a, b = (runner.invoke(cli, ["keygen"]).stdout for _ in range(2))
    assert a != b


def test_keygen_out_file_mode_0600_and_no_overwrite(runner, tmp_path):
    out = tmp_path / "gw.key"
    old_umask = os.umask(0o002)  # a permissive umask must not make the key readable
    try:
        r = runner.invoke(cli, ["keygen", "--out", str(out)])
    finally:
        os.umask(old_umask)
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    private = out.read_text().strip()
    assert _public_line(r.stderr) == b64(keys.public_from_private(keys.decode(private)))

    r = runner.invoke(cli, ["keygen", "--out", str(out)])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("error: ") and "--force" in r.stderr and str(out) in r.stderr
    assert out.read_text().strip() == private

    out.chmod(0o644)
    r = runner.invoke(cli, ["keygen", "--out", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert out.read_text().strip() != private
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_keygen_output_loads_as_private_key_file(runner, tmp_path):
    key = tmp_path / "c.key"
    assert runner.invoke(cli, ["keygen", "--out", str(key)]).exit_code == 0
    (tmp_path / "c.conf").write_text(client_text(PrivateKey=None, PrivateKeyFile="c.key"))
    cfg = load_client_config(tmp_path / "c.conf")
    assert cfg.private_key == keys.decode(key.read_text())


@pytest.mark.parametrize("stdin,why", [
    ("", "no private key"),
    ("not base64!\n", "not valid base64"),
    (b64(b"\x00" * 31) + "\n", "32 bytes"),
])
def test_pubkey_bad_input_is_one_line_error(runner, stdin, why):
    r = runner.invoke(cli, ["pubkey"], input=stdin)
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], r.stderr
    assert r.stdout == ""


def test_gateway_store_settings(tmp_path):
    from jvpn import keys as _keys
    from jvpn.config import ConfigError, load_gateway_config

    (tmp_path / "peers.conf").write_text("")
    (tmp_path / "cluster.key").write_text(_keys.encode(b"\x01" * 32))
    private = _keys.encode(bytes([2]) * 32)
    base = (f"[Interface]\nPrivateKey = {private}\nAddress = 10.99.0.1/24\n"
            "PeersFile = peers.conf\n")
    f = tmp_path / "gw.conf"
    f.write_text(base)
    assert load_gateway_config(f).store is None
    f.write_text(base + "Store = etcd://127.0.0.1:2379\nClusterKeyFile = cluster.key\n")
    cfg = load_gateway_config(f)
    assert cfg.store == ("127.0.0.1", 2379) and cfg.cluster_key == b"\x01" * 32
    assert cfg.lease_ttl_s == 3
    f.write_text(base + "Store = etcd://127.0.0.1:2379\nClusterKeyFile = cluster.key\n"
                 "LeaseTTL = 7\n")
    assert load_gateway_config(f).lease_ttl_s == 7
    for extra, needle in [("Store = etcd://127.0.0.1:2379\n", "ClusterKeyFile"),
                          ("Store = redis://x\n", "etcd://"),
                          ("ClusterKeyFile = cluster.key\n", "only meaningful"),
                          ("LeaseTTL = 5\n", "only meaningful"),
                          ("Store = etcd://127.0.0.1:2379\nClusterKeyFile = cluster.key\n"
                           "LeaseTTL = 1\n", "LeaseTTL")]:
        f.write_text(base + extra)
        with pytest.raises(ConfigError, match=needle):
            load_gateway_config(f)
