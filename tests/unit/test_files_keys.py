"""Issue 10 item 16, secrets the operator provides: a private key, a cluster
key or a config file with an inline key that group or others may read, or
that another user owns, is refused at load with one line naming the file and
the fix. Config files others may write are refused too (they name the keys)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jvpn import keys
from jvpn.config import ConfigError, load_client_config, load_gateway_config

GW_PRIV = keys.generate_private()
CLUSTER_KEY = b"\x07" * 32
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture(autouse=True)
def _private_umask():
    old = os.umask(0o077)  # every file a test writes starts 0600; each test loosens its own
    yield
    os.umask(old)


def _gateway(tmp: Path, *, key_file: bool = True, cluster: bool = False) -> Path:
    (tmp / "peers.conf").write_text("")
    (tmp / "gw.key").write_text(keys.encode(GW_PRIV) + "\n")
    (tmp / "cluster.key").write_text(keys.encode(CLUSTER_KEY) + "\n")
    key_line = "PrivateKeyFile = gw.key\n" if key_file else f"PrivateKey = {keys.encode(GW_PRIV)}\n"
    store = "Store = etcd://127.0.0.1:2379\nClusterKeyFile = cluster.key\n" if cluster else ""
    conf = tmp / "gw.conf"
    conf.write_text(f"[Interface]\n{key_line}Address = 10.99.0.1/24\nPeersFile = peers.conf\n"
                    + store)
    return conf


def _client(tmp: Path) -> Path:
    conf = tmp / "c.conf"
    conf.write_text(f"[Interface]\nPrivateKey = {keys.encode(keys.generate_private())}\n"
                    f"[Peer]\nPublicKey = {keys.encode(keys.public_from_private(GW_PRIV))}\n"
                    "Endpoint = 10.77.0.1:51900\n")
    return conf


def _refused(load, conf: Path, culprit: Path, fix: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load(conf)
    message = str(exc.value)
    assert "\n" not in message, message
    assert str(culprit) in message and fix in message, message
    return message


def test_private_files_load(tmp_path):
    conf = _gateway(tmp_path, cluster=True)
    (tmp_path / "gw.key").chmod(0o400)
    cfg = load_gateway_config(conf)
    assert cfg.private_key == GW_PRIV and cfg.cluster_key == CLUSTER_KEY


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602], ids=oct)
def test_private_key_file_open_to_group_or_others_is_refused(tmp_path, mode):
    conf = _gateway(tmp_path)
    key = tmp_path / "gw.key"
    key.chmod(mode)
    message = _refused(load_gateway_config, conf, key, f"chmod 600 {key}")
    assert "PrivateKeyFile" in message and f"{mode:04o}" in message


@pytest.mark.parametrize("mode", [0o644, 0o640], ids=oct)
def test_cluster_key_file_open_to_group_or_others_is_refused(tmp_path, mode):
    conf = _gateway(tmp_path, cluster=True)
    key = tmp_path / "cluster.key"
    key.chmod(mode)
    assert "ClusterKeyFile" in _refused(load_gateway_config, conf, key, f"chmod 600 {key}")


def test_config_with_inline_private_key_readable_by_others_is_refused(tmp_path):
    conf = _gateway(tmp_path, key_file=False)
    load_gateway_config(conf)  # 0600: fine
    conf.chmod(0o644)
    assert "PrivateKey" in _refused(load_gateway_config, conf, conf, f"chmod 600 {conf}")
    client = _client(tmp_path)
    load_client_config(client)
    client.chmod(0o640)
    _refused(load_client_config, client, client, f"chmod 600 {client}")


def test_config_without_inline_key_may_be_readable_but_not_writable(tmp_path):
    conf = _gateway(tmp_path)
    conf.chmod(0o644)
    (tmp_path / "peers.conf").chmod(0o644)
    load_gateway_config(conf)  # no secret in them: readable is fine
    conf.chmod(0o664)
    _refused(load_gateway_config, conf, conf, f"chmod go-w {conf}")
    conf.chmod(0o644)
    (tmp_path / "peers.conf").chmod(0o646)  # others could add a peer
    peers = tmp_path / "peers.conf"
    _refused(load_gateway_config, conf, peers, f"chmod go-w {peers}")
    peers.chmod(0o644)
    policy = tmp_path / "policy.toml"
    policy.write_text("version = 1\n")
    policy.chmod(0o664)  # the group could raise the churn bounds
    with conf.open("a") as fh:
        fh.write("Policy = policy.toml\n")
    _refused(load_gateway_config, conf, policy, f"chmod go-w {policy}")


@needs_root
def test_key_file_owned_by_another_user_is_refused(tmp_path):
    conf = _gateway(tmp_path, cluster=True)
    for name in ("gw.key", "cluster.key"):
        key = tmp_path / name
        os.chown(key, NOBODY, NOBODY)  # mode 0600, but uid 65534 can read and rewrite it
        message = _refused(load_gateway_config, conf, key, f"chown root {key}")
        assert str(NOBODY) in message
        os.chown(key, 0, 0)
    load_gateway_config(conf)


@needs_root
def test_symlinked_key_is_judged_by_the_file_it_points_to(tmp_path):
    conf = _gateway(tmp_path)
    real = tmp_path / "real.key"
    (tmp_path / "gw.key").rename(real)
    (tmp_path / "gw.key").symlink_to(real)  # e.g. a Kubernetes secret mount: allowed
    assert load_gateway_config(conf).private_key == GW_PRIV
    real.chmod(0o644)
    _refused(load_gateway_config, conf, tmp_path / "gw.key", "chmod 600")
    real.chmod(0o600)
    os.chown(real, NOBODY, NOBODY)  # a link into a file another user controls
    _refused(load_gateway_config, conf, tmp_path / "gw.key", "chown root")


def test_keygen_force_never_writes_through_a_link_or_into_anothers_file(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from jvpn_cli.main import cli

    # the CLI group writes these into os.environ; monkeypatch puts them back
    monkeypatch.setenv("JVPN_PIN_ROOT", str(tmp_path / "pins"))
    monkeypatch.setenv("JVPN_RUN_DIR", str(tmp_path / "run"))

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.link(victim, tmp_path / "gw.key")  # a hard link planted where the key will go
    r = CliRunner().invoke(cli, ["keygen", "--out", str(tmp_path / "gw.key"), "--force"])
    assert r.exit_code == 1 and "hard links" in r.stderr, r.output
    assert victim.read_text() == "precious\n"
    if os.geteuid() == 0:
        other = tmp_path / "other.key"
        other.write_text("x\n")
        os.chown(other, NOBODY, NOBODY)  # its owner could read the new key
        r = CliRunner().invoke(cli, ["keygen", "--out", str(other), "--force"])
        assert r.exit_code == 1 and f"uid {NOBODY}" in r.stderr, r.output
        assert other.read_text() == "x\n"


def _client_with_policy(tmp: Path, where: Path) -> tuple[Path, Path]:
    where.mkdir(parents=True, exist_ok=True)
    policy = where / "policy.toml"
    policy.write_text("[transport]\nprobe_interval_ms = 2000\n")
    conf = _client(tmp)
    text = conf.read_text().replace("[Peer]", f"Policy = {policy}\n[Peer]")
    conf.write_text(text)
    return conf, policy


def test_client_policy_in_a_directory_others_may_write_is_refused(tmp_path):
    """Another user who may write the directory could swap the policy file
    (and so the bounds it sets) for one of theirs; a sticky directory keeps
    them from renaming or removing a file they do not own."""
    shared = tmp_path / "shared"
    conf, _policy = _client_with_policy(tmp_path, shared)
    assert load_client_config(conf).policy.probe_interval_ms == 2000
    shared.chmod(0o777)
    message = _refused(load_client_config, conf, shared, f"chmod go-w {shared}")
    assert "Policy" in message
    shared.chmod(0o1777)
    assert load_client_config(conf).policy.probe_interval_ms == 2000


def test_client_policy_under_a_directory_others_may_write_is_refused(tmp_path):
    """Not only the policy's own directory: anyone who may write one above
    it could rename the whole branch away and put another in its place
    (review r14b #5)."""
    shared = tmp_path / "shared"
    conf, _policy = _client_with_policy(tmp_path, shared / "deeper")
    assert load_client_config(conf).policy.probe_interval_ms == 2000
    shared.chmod(0o777)
    assert "Policy" in _refused(load_client_config, conf, shared, f"chmod go-w {shared}")


def test_a_policy_replaced_before_its_directories_were_checked_is_refused(tmp_path,
                                                                         monkeypatch):
    """The file read must still be the one at its checked path: one swapped
    in between the open and the directory checks is refused."""
    from jvpn import files  # noqa: PLC0415

    conf, policy = _client_with_policy(tmp_path, tmp_path / "mine")
    real_stat = os.stat

    def swapped(path, *a, **kw):
        if str(path) == str(policy):  # the re-stat after the checks: another inode now
            other = tmp_path / "other"
            other.write_text("x\n")
            return real_stat(other)
        return real_stat(path, *a, **kw)

    monkeypatch.setattr(files.os, "stat", swapped)
    with pytest.raises(ConfigError, match="replaced while it was read"):
        load_client_config(conf)


@needs_root
def test_client_policy_in_a_directory_another_user_owns_is_refused(tmp_path):
    conf, policy = _client_with_policy(tmp_path, tmp_path / "theirs")
    os.chown(policy.parent, NOBODY, NOBODY)
    assert str(NOBODY) in _refused(load_client_config, conf, policy.parent, "chown root")


def test_client_policy_is_checked_on_the_file_it_reads(tmp_path, monkeypatch):
    """No window between the check and the read: a file swapped in after a
    stat of the path (a group-writable one, with other bounds) is never
    the one read."""
    conf, policy = _client_with_policy(tmp_path, tmp_path / "etc")
    loose = tmp_path / "loose.toml"
    loose.write_text("[transport]\nprobe_interval_ms = 100\n")
    loose.chmod(0o666)
    real_stat = os.stat

    def stat_then_swap(path, *a, **kw):
        st = real_stat(path, *a, **kw)
        if Path(path) == policy and loose.exists():
            loose.rename(policy)
        return st
    monkeypatch.setattr(os, "stat", stat_then_swap)
    assert load_client_config(conf).policy.probe_interval_ms == 2000
