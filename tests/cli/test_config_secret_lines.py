"""A mistyped line never echoes its rest into the error: `PrivateKey <key>`
(no '=' but the key's own base64 padding) used to be an "unknown key" whose
name was the whole key. The line goes to the terminal, `check --json` and
the journal, so every parser error shows only the line's leading word."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from jvpn import keys
from jvpn.config import ConfigError, load_client_config, load_gateway_config, shown_word
from jvpn_cli.main import cli

# ends in '=' padding, like every encoded 32-byte key: the separator the parser looks for
SECRET = keys.encode(keys.generate_private())
PEER = keys.encode(keys.public_from_private(keys.generate_private()))
SEPARATORS = [" ", ": ", ":", " := ", "\t", " - "]
# a key whose encoding starts with 36 letters (1 in ~2000 random keys starts with 12)
LETTERS_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij0123456+/A="


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("JVPN_PIN_ROOT", str(tmp_path / "pins"))
    monkeypatch.setenv("JVPN_RUN_DIR", str(tmp_path / "run"))
    old = os.umask(0o077)
    yield
    os.umask(old)


def gateway(tmp_path, line: str):
    (tmp_path / "peers.conf").write_text(f"[Peer]\nPublicKey = {PEER}\nAllowedIP = 10.99.0.2/32\n")
    p = tmp_path / "gw.conf"
    p.write_text(f"[Interface]\n{line}\nListenPort = 51900\nAddress = 10.99.0.1/24\n"
                 "PeersFile = peers.conf\n")
    return p


def client(tmp_path, line: str):
    p = tmp_path / "c.conf"
    p.write_text(f"[Interface]\n{line}\n[Peer]\nPublicKey = {PEER}\nEndpoint = 10.77.0.1:51900\n")
    return p


def assert_hidden(text: str) -> None:
    assert SECRET not in text and SECRET[:12] not in text, text


@pytest.mark.parametrize("sep", SEPARATORS)
@pytest.mark.parametrize("key", ["PrivateKey", "ClusterKey", "privatekey"])
def test_gateway_line_errors_never_show_the_rest_of_the_line(tmp_path, key, sep):
    p = gateway(tmp_path, f"{key}{sep}{SECRET}")
    with pytest.raises(ConfigError) as e:
        load_gateway_config(p)
    assert_hidden(str(e.value))
    assert f"gw.conf:2: {key}" in str(e.value) and "Key = Value" in str(e.value)
    for args in (["--config", str(p)], ["--config", str(p), "--json"]):
        r = CliRunner().invoke(cli, ["gateway", "check", *args])
        assert r.exit_code == 1 and "Traceback" not in r.output
        assert_hidden(r.output)


@pytest.mark.parametrize("sep", SEPARATORS)
def test_client_line_errors_never_show_the_rest_of_the_line(tmp_path, sep):
    p = client(tmp_path, f"PrivateKey{sep}{SECRET}")
    with pytest.raises(ConfigError) as e:
        load_client_config(p)
    assert_hidden(str(e.value))
    assert "c.conf:2: PrivateKey" in str(e.value)
    for args in (["--config", str(p)], ["--config", str(p), "--json"]):
        r = CliRunner().invoke(cli, ["client", "check", *args])
        assert r.exit_code == 1 and "Traceback" not in r.output
        assert_hidden(r.output)


@pytest.mark.parametrize("line", [f"[Interface] PrivateKey = {SECRET}", f"[{SECRET}]",
                                  f"{SECRET}", f"= {SECRET}", f"Private-Key = {SECRET}"])
def test_headers_and_keyless_lines_are_not_echoed_either(tmp_path, line):
    with pytest.raises(ConfigError) as e:
        load_gateway_config(gateway(tmp_path, line))
    assert_hidden(str(e.value))
    assert "gw.conf:2:" in str(e.value)


def test_a_mistyped_key_name_is_still_named():
    assert shown_word("Colour") == "Colour"
    assert shown_word("PrivateKey abc+/=") == "PrivateKey…"
    assert shown_word("x" * 100) == "…"  # not a name of ours: nothing of it
    assert shown_word("ClusterKey abc=") == "ClusterKey…"  # the start of ClusterKeyFile
    assert shown_word("+++") == "…"


def test_the_peers_file_shares_the_rule(tmp_path):
    p = gateway(tmp_path, f"PrivateKey = {keys.encode(keys.generate_private())}")
    (tmp_path / "peers.conf").write_text(f"[Peer]\nPublicKey {SECRET}\nAllowedIP = 10.99.0.2/32\n")
    with pytest.raises(ConfigError) as e:
        load_gateway_config(p)
    assert_hidden(str(e.value))
    assert "peers.conf:2: PublicKey…" in str(e.value)


@pytest.mark.parametrize("line", [LETTERS_FIRST, f"[{LETTERS_FIRST}]", f"x {LETTERS_FIRST}"])
def test_a_key_that_starts_with_many_letters_is_not_echoed_by_its_letters(tmp_path, line):
    with pytest.raises(ConfigError) as e:
        load_gateway_config(gateway(tmp_path, line))
    assert "ABCDEFGH" not in str(e.value) and "gw.conf:2:" in str(e.value), str(e.value)
