"""The client's hooks (jvpn/client_hooks.py) and the order of its setup and
teardown steps (jvpn/client_lifecycle.py), with real hooks (/bin/sh) that
append to a temp file, a real resolv.conf backend on a temp file and a
stand-in for the agent."""

from __future__ import annotations

import pytest

from jvpn.client_dns import FileBackend
from jvpn.client_hooks import HookFailed, run_hooks
from jvpn.client_lifecycle import Lifecycle, Step, Stopped, client_steps
from jvpn.config import ClientConfig, ClientDns, ClientHooks

ORIGINAL = "nameserver 192.0.2.53\n"


class Agent:
    """What the steps use of jvpn.client.Client: up and down, logged."""

    def __init__(self, log):
        self.log = log

    def up(self):
        with open(self.log, "a") as f:
            f.write("tunnel up\n")

    def down(self):
        with open(self.log, "a") as f:
            f.write("tunnel down\n")


@pytest.fixture
def env(tmp_path):
    log, conf = tmp_path / "log", tmp_path / "resolv.conf"
    conf.write_text(ORIGINAL)
    return log, conf


def hook(log, word, conf=None):
    """A hook that logs ``word`` and %i, and whether DNS is set right now."""
    dns = f"$(grep -q 10.99.0.1 {conf} && echo dns-set || echo dns-unset)" if conf else ""
    return f"echo {word} %i {dns} >> {log}"


def steps(log, conf, **hooks):
    cfg = ClientConfig(private_key=b"k" * 32, tun_name="tun-x", gateway_public_key=b"g" * 32,
                       endpoint=("10.77.0.1", 51900), keepalive_ms=500,
                       dns=ClientDns(("10.99.0.1",), ("corp.example",)), hooks=ClientHooks(**hooks))
    dns = FileBackend(cfg.tun_name, cfg.dns, conf, pid_alive=lambda _p: False)
    return client_steps(cfg, Agent(log), dns)


def lines(log):
    return [" ".join(x.split()) for x in log.read_text().splitlines()]


def test_hooks_run_in_order_with_the_tun_name(tmp_path):
    log = tmp_path / "log"
    run_hooks("PreUp", [f"echo one %i >> {log}", f"echo two '%i' >> {log}"], "jvpn0")
    assert lines(log) == ["one jvpn0", "two jvpn0"]


def test_the_tun_name_never_becomes_shell_syntax(tmp_path):
    log = tmp_path / "log"
    run_hooks("PostUp", [f"echo %i >> {log}"], "a;touch${IFS}x")
    assert lines(log) == ["a;touch${IFS}x"]
    assert not (tmp_path / "x").exists()


def test_a_failing_hook_stops_the_rest_and_names_itself(tmp_path):
    log = tmp_path / "log"
    with pytest.raises(HookFailed) as exc:
        run_hooks("PostUp", [f"echo 1 >> {log}", "exit 3", f"echo 3 >> {log}"], "jvpn0")
    assert str(exc.value) == "PostUp hook 2 of 3 ('exit 3') failed with exit status 3"
    assert lines(log) == ["1"]


def test_up_and_down_run_every_step_in_order(env):
    log, conf = env
    life = Lifecycle(steps(log, conf, pre_up=(hook(log, "PreUp1", conf), hook(log, "PreUp2")),
                           post_up=(hook(log, "PostUp", conf),),
                           pre_down=(hook(log, "PreDown", conf),),
                           post_down=(hook(log, "PostDown", conf),)), _no_report)
    life.up()
    assert "nameserver 10.99.0.1" in conf.read_text()
    life.down()
    life.down()  # once only
    assert lines(log) == ["PreUp1 tun-x dns-unset", "PreUp2 tun-x", "tunnel up",
                          "PostUp tun-x dns-set", "PreDown tun-x dns-set", "tunnel down",
                          "PostDown tun-x dns-unset"]
    assert conf.read_text() == ORIGINAL


def test_a_failing_post_up_aborts_and_undoes_what_was_set_up(env):
    log, conf = env
    life = Lifecycle(steps(log, conf, pre_up=(hook(log, "PreUp"),),
                           post_up=(hook(log, "PostUp"), "false"),
                           pre_down=(hook(log, "PreDown"),),
                           post_down=(hook(log, "PostDown", conf),)), _no_report)
    with pytest.raises(HookFailed, match="PostUp hook 2 of 2"):
        life.up()
    # PreDown pairs with a PostUp that completed; PostDown with the PreUp that did
    assert lines(log) == ["PreUp tun-x", "tunnel up", "PostUp tun-x", "tunnel down",
                          "PostDown tun-x dns-unset"]
    assert conf.read_text() == ORIGINAL
    assert not (conf.parent / "resolv.conf.jvpn-backup").exists()


def test_a_failing_pre_up_touches_nothing(env):
    log, conf = env
    life = Lifecycle(steps(log, conf, pre_up=("exit 1",), post_down=(hook(log, "PostDown"),)),
                     _no_report)
    with pytest.raises(HookFailed, match="PreUp hook 1 of 1"):
        life.up()
    assert not log.exists() and conf.read_text() == ORIGINAL


def test_a_failing_pre_down_is_reported_and_teardown_goes_on(env):
    log, conf = env
    reports = []
    life = Lifecycle(steps(log, conf, pre_down=("exit 2",), post_down=(hook(log, "PostDown"),)),
                     lambda step, e: reports.append((step, str(e))))
    life.up()
    life.down()
    assert reports == [("PostUp/PreDown", "PreDown hook 1 of 1 ('exit 2') failed with exit "
                                          "status 2")]
    assert lines(log) == ["tunnel up", "tunnel down", "PostDown tun-x"]
    assert conf.read_text() == ORIGINAL


def test_a_signal_while_coming_up_undoes_what_was_set_up(env):
    log, conf = env
    stop = []
    s = steps(log, conf, post_down=(hook(log, "PostDown"),))
    s[1] = Step(s[1].name, lambda: (Agent(log).up(), stop.append(1)), s[1].undo)  # then a signal
    life = Lifecycle(s, _no_report, stopping=lambda: bool(stop))
    with pytest.raises(Stopped):
        life.up()
    assert lines(log) == ["tunnel up", "tunnel down", "PostDown tun-x"]
    assert conf.read_text() == ORIGINAL  # DNS never set


def _no_report(step, e):
    raise AssertionError(f"unexpected teardown failure in {step}: {e}")


def test_sighup_stops_the_client_through_its_teardown():
    """A client started in a terminal gets SIGHUP when the terminal or its SSH
    session goes away. Left at its default, SIGHUP killed the client with
    nothing undone (DNS into a dead tunnel; resolvconf's -x entry kept)."""
    import os
    import signal

    from jvpn.client_lifecycle import Signals

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    stops = []
    try:
        s = Signals(lambda: stops.append(1))
        os.kill(os.getpid(), signal.SIGHUP)
        assert s.stopped.is_set() and stops == [1]
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def test_a_report_that_fails_does_not_skip_the_other_undos(env):
    """After a SIGHUP from a closed terminal, printing the report of a failed
    undo raises (EIO on the dead tty): the undos after it (DNS put back, the
    tunnel's routes removed) were skipped."""
    log, conf = env
    life = Lifecycle(steps(log, conf, pre_down=("exit 2",), post_down=(hook(log, "PostDown"),)),
                     lambda step, e: (_ for _ in ()).throw(OSError(5, "Input/output error")))
    life.up()
    life.down()
    assert lines(log) == ["tunnel up", "tunnel down", "PostDown tun-x"]
    assert conf.read_text() == ORIGINAL
