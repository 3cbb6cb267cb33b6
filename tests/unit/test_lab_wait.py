"""The harness's one wait helper (jvpn/lab/wait.py), on a fake clock."""

from __future__ import annotations

import pytest

from jvpn.lab.wait import WaitTimeout, wait_until


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


class Exited:
    def poll(self):
        return 1


def test_returns_the_time_it_took():
    clock, calls = FakeClock(), []
    took = wait_until(lambda: calls.append(1) or len(calls) >= 3, "three polls", 10,
                      interval=0.5, clock=clock, sleep=clock.sleep)
    assert took == 1.0 and len(calls) == 3


def test_times_out_with_what_and_the_logs():
    clock = FakeClock()
    with pytest.raises(WaitTimeout, match="timed out waiting for the thing\nlog tail"):
        wait_until(lambda: False, "the thing", 2, logs=lambda: "log tail", clock=clock,
                   sleep=clock.sleep)
    assert 102.0 <= clock.now < 102.1  # gave up once the timeout had passed


def test_fails_early_when_the_process_exited():
    clock = FakeClock()
    with pytest.raises(AssertionError, match="gateway start: process exited"):
        wait_until(lambda: False, "gateway start", 30, proc=Exited(), clock=clock,
                   sleep=clock.sleep)
    assert clock.now == 100.0
