"""`gateway up`'s signals: SIGHUP reloads and never kills; SIGTERM stops;
several SIGHUPs while one reload runs make one more reload, not a queue."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from jvpn.gateway.signals import Signals


@pytest.fixture
def restored():
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_sighup_reloads_in_the_main_thread_and_sigterm_stops(restored):
    sig = Signals().install()
    reloads: list[str] = []

    def reload() -> None:
        reloads.append(threading.current_thread().name)
        if len(reloads) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            os.kill(os.getpid(), signal.SIGHUP)

    os.kill(os.getpid(), signal.SIGHUP)  # would end the process with the default action
    sig.run(reload)
    assert reloads == ["MainThread", "MainThread"] and sig.stop.is_set()


def test_a_stop_wins_over_a_pending_reload():
    sig = Signals()
    sig.request_reload()
    sig.request_stop()
    sig.run(lambda: pytest.fail("reloaded while stopping"))
