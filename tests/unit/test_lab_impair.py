"""The uplink impairments of `bench failover` (jvpn/lab/impair.py): the nft
transactions they apply, and the table removed on the way out, after a
failure too (on a fake runner; tests/netns/test_impair_lab.py applies them)."""

from __future__ import annotations

import subprocess

import pytest

from jvpn.lab.addresses import UPLINK_ROUTER_IF
from jvpn.lab.impair import TABLE, Impairments, impairment_script


class Recorder:
    def __init__(self, fail_on: str | None = None):
        self.scripts: list[str] = []
        self.fail_on = fail_on

    def __call__(self, script: str) -> None:
        self.scripts.append(script)
        if self.fail_on and self.fail_on in script:
            raise subprocess.CalledProcessError(1, ["nft"], stderr="no such table")


def test_a_blackhole_drops_both_directions_on_the_router_port_of_the_uplink():
    text = impairment_script(UPLINK_ROUTER_IF["wifi"], 100)
    r1 = UPLINK_ROUTER_IF["wifi"]
    assert f"add table inet {TABLE}" in text
    assert "hook forward" in text and "policy accept" in text
    assert f'iifname "{r1}" drop' in text and f'oifname "{r1}" drop' in text
    assert "numgen" not in text
    # the chain is flushed first: a change replaces the uplink's rules, never adds to them
    assert text.index("flush chain") < text.index("add rule")


def test_random_loss_uses_numgen_and_none_leaves_an_empty_chain():
    lossy = impairment_script("r2", 30)
    assert lossy.count("numgen random mod 100 < 30 drop") == 2
    clean = impairment_script("r2", 0)
    assert "add rule" not in clean and "flush chain" in clean


@pytest.mark.parametrize("bad", [-1, 101])
def test_a_percentage_out_of_range_is_refused(bad):
    with pytest.raises(ValueError):
        impairment_script("r1", bad)


def test_the_table_goes_on_exit_even_after_a_failure():
    run = Recorder()
    with pytest.raises(RuntimeError), Impairments(run) as imp:
        imp.blackhole("lte")
        assert imp.active == {"lte": 100}
        raise RuntimeError("the benchmark failed mid-trial")
    assert run.scripts[-1] == f"delete table inet {TABLE}\n"
    assert imp.active == {}


def test_clear_forgets_the_uplink_and_nothing_made_removes_nothing():
    run = Recorder()
    imp = Impairments(run)
    imp.close()
    assert run.scripts == []  # never touched the router: nothing to remove
    imp.set("wifi", 5)
    imp.clear("wifi")
    assert imp.active == {}
    imp.close()
    imp.close()  # twice: once
    assert sum("delete table" in s for s in run.scripts) == 1


def test_a_namespace_already_gone_is_no_error_on_close():
    run = Recorder(fail_on="delete table")
    with Impairments(run) as imp:
        imp.blackhole("wifi")
    assert run.scripts[-1].startswith("delete table")
