"""A reload that fails, whatever the cause, is a refusal (one line, a
ReloadRefused event) or a reload that says per session what did not
happen; it never ends `gateway up`'s SIGHUP path. Regression tests of
review R1."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from unit.test_operator_actions import gateway, peer_configs, told, write_files

from jvpn.config import load_gateway_config
from jvpn.gateway.reload import Reloader, ReloadRefused
from jvpn.gateway.signals import Signals
from kits.daemon_kit import events_of, handshake

NESTED = "x = " + "[" * 2000 + "]" * 2000 + "\n"  # past the TOML parser's recursion limit


@pytest.fixture
def loaded(tmp_path):
    conf = write_files(tmp_path)
    cfg = load_gateway_config(conf)
    gw = gateway(tmp_path, cfg.policy)
    yield gw, conf, cfg
    gw.store.close()


def test_a_deeply_nested_policy_is_refused_and_sighup_goes_on(tmp_path, loaded, capsys):
    gw, conf, cfg = loaded
    said: list[str] = []
    r = Reloader(gw, conf, cfg, say=said.append)
    before = gw.policy
    write_files(tmp_path, extra=NESTED)  # an operator's bad edit
    sig = Signals()
    sig.request_reload()

    def reload_then_stop():
        r.reload_from_signal()
        sig.request_stop()

    sig.run(reload=reload_then_stop)  # returns: nothing raised
    assert capsys.readouterr().err == "" and gw.policy is before
    [ev] = events_of(gw.events, "ReloadRefused")
    assert "RecursionError" in ev["detail"] and "\n" not in ev["detail"]
    assert len(said) == 1 and said[0].startswith("jvpn gateway: reload refused")


def test_a_reload_that_raises_is_one_line_and_the_signal_loop_goes_on():
    sig = Signals()
    errors: list[str] = []
    calls = []

    def reload():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom\nsecond line")
        sig.request_stop()

    sig.request_reload()
    t = threading.Thread(target=sig.run, args=(reload,), kwargs={"on_error": errors.append})
    t.start()
    for _ in range(500):
        if errors or not t.is_alive():
            break
        t.join(0.01)
    sig.request_reload()
    t.join(5)
    assert not t.is_alive() and len(calls) == 2
    assert errors == ["jvpn gateway: reload failed: RuntimeError: boom second line"]


def test_an_apply_that_raises_before_changing_anything_is_a_refusal(loaded):
    gw, conf, cfg = loaded
    broken = dataclasses.replace(cfg, peers=[object()])  # not a peer: apply_config raises
    r = Reloader(gw, conf, cfg, load=lambda _path: broken, say=lambda _line: None)
    before = (gw.policy, gw.admission.peers)
    with pytest.raises(ReloadRefused, match="not applied: AttributeError"):
        r.reload()
    assert (gw.policy, gw.admission.peers) == before
    assert events_of(gw.events, "ReloadRefused") and not events_of(gw.events, "GatewayReloaded")


def test_a_session_whose_revocation_raises_is_named_and_the_others_are_revoked(loaded):
    gw, conf, cfg = loaded
    a, b = handshake(gw), handshake(gw, ("192.0.2.11", 6000), peer=1)
    real = gw.table.terminate

    def terminate(sid, *args, **kw):
        if sid == a.session_id:
            raise RuntimeError("not a StoreError")
        return real(sid, *args, **kw)

    gw.table.terminate = terminate
    r = Reloader(gw, conf, cfg, say=lambda _line: None,
                 load=lambda _path: dataclasses.replace(cfg, peers=[]))
    out = r.reload()
    assert out["revoked"] == [f"{b.session_id:016x}"] and told(gw, b) == ["PEER_REVOKED"]
    assert out["revoke_failed"] == [f"{a.session_id:016x}: not a StoreError"]
    [ev] = events_of(gw.events, "GatewayReloaded")
    assert ev["revoke_failed"] == out["revoke_failed"] and gw.admission.peers == {}
    gw.table.terminate = real
    gw.tick()  # retried
    assert a.session_id not in gw.sessions and told(gw, a) == ["PEER_REVOKED"]


def test_the_peers_stay_as_loaded_when_every_revocation_fails(loaded):
    """Applied is applied: the new peers file is the one in force even if the
    store refused every end (the report says which), never half of it."""
    gw, conf, cfg = loaded
    handshake(gw)
    gw.table.terminate = lambda *a, **kw: (_ for _ in ()).throw(OSError("disk"))
    r = Reloader(gw, conf, cfg, say=lambda _line: None,
                 load=lambda _path: dataclasses.replace(cfg, peers=peer_configs()[1:]))
    out = r.reload()
    assert out["removed"] == ["alice"] and len(out["revoke_failed"]) == 1
    assert list(gw.admission.peers) == [peer_configs()[1].public_key]


@pytest.mark.parametrize("edit", [
    dict(life='"abc"'), dict(life="[1]"), dict(life="{a=1}"), dict(life="9" * 400),
    dict(life="1e400"), dict(life="nan"), dict(life="true"), dict(life="-1"),
    dict(extra="[bogus]\nx=1\n"), dict(extra='replay_window_size = "x"\n'),
    dict(extra="replay_window_size = [[[1]]]\n"), dict(extra=NESTED),
    dict(peers_file="[Peer]\nPublicKey = !!!\nAllowedIPs = 10.99.0.2/32\n"),
    dict(peers_file="[Peer]\nPublicKey = " + "A" * 43 + "=\n"),
    dict(peers_file="[Peer]\x00\n"), dict(peers_file="\xff\xfe[Peer]"),
], ids=lambda edit: next(iter(edit)) + ":" + repr(next(iter(edit.values())))[:16])
def test_any_malformed_edit_is_a_one_line_refusal(tmp_path, loaded, edit):
    gw, conf, cfg = loaded
    r = Reloader(gw, conf, cfg, say=lambda _line: None)
    peers_file = edit.pop("peers_file", None)
    write_files(tmp_path, **edit)
    if peers_file is not None:
        (tmp_path / "peers.conf").write_bytes(peers_file.encode("latin-1"))
    before = (gw.policy, gw.admission.peers)
    with pytest.raises(ReloadRefused) as refused:
        r.reload()
    assert "\n" not in str(refused.value) and (gw.policy, gw.admission.peers) == before
