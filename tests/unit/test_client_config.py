"""The client config's issue-11 keys: DNS, the hooks, Endpoint host names
(resolved with an injected resolver) and KeepaliveInterval in seconds."""

from __future__ import annotations

import socket

import pytest

from jvpn import keys
from jvpn.config import ClientDns, ClientHooks, ConfigError, load_client_config, resolve_host

GW_PUB = keys.encode(keys.public_from_private(keys.generate_private()))


def write(tmp_path, interface: str = "", peer: str = "", endpoint="10.77.0.1:51900"):
    p = tmp_path / "c.conf"
    p.write_text(f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
                 f"{interface}[Peer]\nPublicKey = {GW_PUB}\nEndpoint = {endpoint}\n{peer}")
    p.chmod(0o600)  # it holds the private key
    return p


def no_resolver(host, port):
    raise AssertionError(f"an address literal was sent to the resolver: {host}")


def test_dns_lines_split_into_servers_and_search_domains(tmp_path):
    p = write(tmp_path, "DNS = 10.99.0.1, fd99::1, corp.example\n"
                        "dns = 10.99.0.2,lab.example.\n")
    cfg = load_client_config(p, resolve=no_resolver)
    assert cfg.dns == ClientDns(servers=("10.99.0.1", "fd99::1", "10.99.0.2"),
                                search=("corp.example", "lab.example."))


def test_no_dns_no_hooks_by_default(tmp_path):
    cfg = load_client_config(write(tmp_path), resolve=no_resolver)
    assert cfg.dns == ClientDns() and cfg.hooks == ClientHooks()
    assert cfg.endpoint_name is None


def test_hooks_are_kept_per_kind_in_file_order(tmp_path):
    p = write(tmp_path, "PostDown = echo d1\nPreUp = echo a1 %i\nPostUp = echo b1\n"
                        "preup = echo a2 | tee x\nPreDown = echo c1\nPostDown = echo d2 > y\n"
                        "PreUp = printf '%s=%s' a b\n")
    h = load_client_config(p, resolve=no_resolver).hooks
    assert h.pre_up == ("echo a1 %i", "echo a2 | tee x", "printf '%s=%s' a b")
    assert (h.post_up, h.pre_down, h.post_down) == (("echo b1",), ("echo c1",),
                                                    ("echo d1", "echo d2 > y"))


@pytest.mark.parametrize("value,ms", [("0.5", 500), ("25", 25_000), ("0.05", 50), ("60", 60_000),
                                      ("1.25", 1250)])
def test_keepalive_interval_is_in_seconds(tmp_path, value, ms):
    p = write(tmp_path, peer=f"KeepaliveInterval = {value}\n")
    assert load_client_config(p, resolve=no_resolver).keepalive_ms == ms


def test_keepalive_default_is_half_a_second(tmp_path):
    assert load_client_config(write(tmp_path), resolve=no_resolver).keepalive_ms == 500


def test_persistent_keepalive_is_refused_not_reinterpreted(tmp_path):
    p = write(tmp_path, peer="PersistentKeepalive = 25\n")
    with pytest.raises(ConfigError) as exc:
        load_client_config(p, resolve=no_resolver)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:6: PersistentKeepalive: renamed to KeepaliveInterval"), msg
    assert "\n" not in msg


def test_endpoint_host_name_is_resolved_once_with_its_port(tmp_path):
    calls = []

    def resolver(host, port):
        calls.append((host, port))
        return "10.77.0.1"

    p = write(tmp_path, endpoint="vpn.example.com:51901")
    cfg = load_client_config(p, resolve=resolver)
    assert calls == [("vpn.example.com", 51901)]
    assert cfg.endpoint == ("10.77.0.1", 51901) and cfg.endpoint_name == "vpn.example.com"


@pytest.mark.parametrize("endpoint,address", [("10.77.0.1:51900", "10.77.0.1"),
                                              ("[2001:db8::1]:51900", "2001:db8::1")])
def test_address_literals_are_not_resolved(tmp_path, endpoint, address):
    cfg = load_client_config(write(tmp_path, endpoint=endpoint), resolve=no_resolver)
    assert cfg.endpoint == (address, 51900) and cfg.endpoint_name is None


@pytest.mark.parametrize("failure", [socket.gaierror(-2, "Name or service not known"),
                                     "not-an-address"])
def test_a_name_that_does_not_resolve_is_one_line_naming_it(tmp_path, failure):
    def resolver(host, port):
        if isinstance(failure, Exception):
            raise failure
        return failure

    p = write(tmp_path, endpoint="nowhere.invalid:51900")
    with pytest.raises(ConfigError) as exc:
        load_client_config(p, resolve=resolver)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:5: Endpoint: host name 'nowhere.invalid' does not resolve")
    assert "\n" not in msg


@pytest.mark.parametrize("answer", ["0.0.0.0", "127.0.0.1", "::1", "::", "224.0.0.251",
                                    "255.255.255.255", "169.254.1.1", "fe80::1",
                                    "ff02::1", "::ffff:127.0.0.1"])
def test_a_name_resolving_to_no_remote_host_is_refused(tmp_path, answer):
    """A hostile or broken DNS answer for the Endpoint name (this host, a
    multicast group, nowhere) was taken as the gateway: the client sent its
    handshakes (and with a loopback answer, to whatever local user binds the
    port)."""
    p = write(tmp_path, endpoint="vpn.example.com:51900")
    with pytest.raises(ConfigError) as exc:
        load_client_config(p, resolve=lambda h, port: answer)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:5: Endpoint: host name 'vpn.example.com' resolves to "), msg
    assert "not a gateway" in msg and "\n" not in msg


def test_the_default_resolver_reads_the_system_resolver():
    assert resolve_host("localhost", 51900) in ("127.0.0.1", "::1")


# ---------------------------------------------------------------- OrphanTimeout (issue 12)
def test_orphan_timeout_defaults_to_the_gateways_default_ttl_and_a_margin(tmp_path):
    from jvpn.policy import Policy  # noqa: PLC0415

    cfg = load_client_config(write(tmp_path), resolve=no_resolver)
    assert cfg.orphan_timeout_ms == 20_000 > Policy().transport_lost_ttl_ms


def test_orphan_timeout_is_in_seconds(tmp_path):
    p = write(tmp_path, peer="OrphanTimeout = 6.5\n")
    assert load_client_config(p, resolve=no_resolver).orphan_timeout_ms == 6_500


@pytest.mark.parametrize("peer,words", [
    ("OrphanTimeout = 1\n", "out of range [2, 86400]"),
    ("OrphanTimeout = soon\n", "not a number of seconds"),
    ("KeepaliveInterval = 2\nOrphanTimeout = 5\n", "shorter than 4 KeepaliveIntervals"),
])
def test_a_bad_orphan_timeout_is_one_line_naming_it(tmp_path, peer, words):
    p = write(tmp_path, peer=peer)
    with pytest.raises(ConfigError) as exc:
        load_client_config(p, resolve=no_resolver)
    msg = str(exc.value)
    assert f"{p}:" in msg and ": OrphanTimeout: " in msg and words in msg and "\n" not in msg


def test_a_long_keepalive_lengthens_the_default_orphan_timeout(tmp_path):
    p = write(tmp_path, peer="KeepaliveInterval = 10\n")
    assert load_client_config(p, resolve=no_resolver).orphan_timeout_ms == 40_000


def test_policy_is_read_relative_to_the_config_file(tmp_path):
    (tmp_path / "policy.toml").write_text("[switching]\nswitch_cooldown_ms = 250\n")
    (tmp_path / "policy.toml").chmod(0o644)
    cfg = load_client_config(write(tmp_path, interface="Policy = policy.toml\n"))
    assert cfg.policy.switch_cooldown_ms == 250


def test_no_policy_is_the_default_policy(tmp_path):
    from jvpn.policy import default_policy

    assert load_client_config(write(tmp_path)).policy == default_policy()


def test_a_bad_policy_is_one_line_naming_the_policy_files_line(tmp_path):
    (tmp_path / "policy.toml").write_text("[switching]\n\nswitch_cooldown_ms = -5\n")
    (tmp_path / "policy.toml").chmod(0o644)
    with pytest.raises(ConfigError) as e:
        load_client_config(write(tmp_path, interface="Policy = policy.toml\n"))
    msg = str(e.value)
    assert "\n" not in msg and f"{tmp_path / 'policy.toml'}:3" in msg
    assert "Policy" in msg
