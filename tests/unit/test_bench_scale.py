"""`bench scale` (issue 15): the synthetic store a gateway restarts on (each
session restorable, its keys its own and the record's, its floor and
ceiling), the peers file that keeps each of them configured, the frames its
XDP figures are taken with, the JSON it prints, and its cleanup when a size
fails."""

from __future__ import annotations

import ipaddress

import pytest

from jvpn import keys as jkeys
from jvpn.bench import scale, scale_store
from jvpn.config import load_peers
from jvpn.errors import JvpnError
from jvpn.gate import abi
from jvpn.gate.config import GateConfig
from jvpn.gate.element import session_element
from jvpn.gate.model import Model
from jvpn.keys import ring_for
from jvpn.session import State
from jvpn.store.sqlite import SqliteStore

NOW_MS = 1_700_000_000_000
N = 250


@pytest.fixture
def written(tmp_path):
    seed = scale_store.Seed.new()
    store = SqliteStore(tmp_path / "state" / "sessions.db")
    done = []
    scale_store.write_sessions(store, seed, N, "gw-x", NOW_MS, progress=done.append, chunk=100)
    yield seed, store, done
    store.close()


def test_every_synthetic_session_is_restorable_with_its_own_keys(written):
    seed, store, done = written
    assert done == [100, 200, 250]  # one transaction per chunk
    stored = list(store.restorable(page=64))
    assert len(stored) == N and all(s.problem is None for s in stored)
    for s in stored:
        rec = s.record
        assert rec.state is State.ATTACHED and rec.owner == "gw-x" and rec.binding is not None
        ring = ring_for(rec, s.secrets)  # the ring a restart serves: the record's own
        assert ring.current == seed.session_keys(rec.session_id)
        assert (s.floor, s.ceiling) == (scale_store.FLOOR, (scale_store.CEILING, True))
    assert len({s.record.inner_addr for s in stored}) == N
    assert len({s.secrets for s in stored}) == N  # per-session keys, not one set shared


def test_the_peers_file_configures_each_sessions_peer(written, tmp_path):
    seed, store, _ = written
    scale_store.write_peers(tmp_path / "peers.conf", seed, N)
    peers = {jkeys.encode(p.public_key): str(p.inner)
             for p in load_peers(tmp_path / "peers.conf", ipaddress.IPv4Interface("10.0.0.1/8"))}
    records = [s.record for s in store.restorable()]
    assert {r.peer_key: r.inner_addr for r in records} == peers


def test_a_size_outside_the_inner_network_is_refused(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    with pytest.raises(ValueError):
        scale_store.write_sessions(store, scale_store.Seed.new(), 0, "gw-x", NOW_MS)
    with pytest.raises(ValueError):
        scale_store.write_sessions(store, scale_store.Seed.new(), scale_store.MAX_SESSIONS + 1,
                                   "gw-x", NOW_MS)
    store.close()


def test_the_data_frame_passes_the_sessions_element_and_an_unknown_id_does_not(written):
    """The frames the XDP figures are taken with, against the gate's model
    holding the element a restart writes for the stored session."""
    seed, store, _ = written
    stored = {s.record.session_id: s for s in store.restorable()}
    s = stored[scale_store.session_id(5)]
    model = Model(config=GateConfig(ports=[scale.PORT]).to_abi())
    model.sessions[s.record.session_id] = session_element(s.record, ring_for(s.record, s.secrets))
    assert model.run(scale.data_frame(seed, 5, counter=1234), now=10**9) == abi.R_PASS_DATA
    unknown = scale.data_frame(seed, 5, counter=1234, sid=scale_store.session_id(N + 7))
    assert model.run(unknown, now=10**9) == abi.R_DROP_UNKNOWN_SESSION


def _figures(valid: float, unknown: float) -> dict:
    return {"xdp_valid_ns": valid, "xdp_unknown_ns": unknown, "reconcile_s": 0.1}


def test_the_json_gives_each_size_and_its_xdp_ratios_to_the_smallest():
    out = scale.assemble([1000, 100_000], {"1000": _figures(200, 40),
                                           "100000": _figures(300, 50)}, {"sessions": 100_000})
    assert out["sizes"] == [1000, 100_000] and out["restart"] == {"sessions": 100_000}
    assert out["by_size"]["1000"]["xdp_valid_ratio"] == 1.0
    assert out["by_size"]["100000"]["xdp_valid_ratio"] == 1.5
    assert out["by_size"]["100000"]["xdp_unknown_ratio"] == 1.25


def test_a_missing_smallest_figure_gives_no_ratio():
    out = scale.assemble([1, 2], {"1": _figures(0, 40), "2": _figures(300, 80)}, {})
    assert out["by_size"]["2"]["xdp_valid_ratio"] is None
    assert out["by_size"]["2"]["xdp_unknown_ratio"] == 2.0


MADE: list[FailingLab] = []


class FailingLab:
    """A lab whose set-up or daemon start fails: it must still be torn down."""

    def __init__(self, sessions, _progress, fail_in: str):
        self.sessions, self.fail_in, self.downs = sessions, fail_in, 0
        MADE.append(self)

    def up(self):
        if self.fail_in == "up":
            raise KeyboardInterrupt  # Ctrl-C while attaching
        return self

    def start(self, _name):
        raise JvpnError("gateway start (empty): process exited")

    def down(self):
        self.downs += 1


@pytest.mark.parametrize("fail_in,error", [("up", KeyboardInterrupt), ("start", JvpnError)])
def test_a_size_that_fails_is_cleaned_up(fail_in, error):
    MADE.clear()
    with pytest.raises(error):
        scale.run_scale_bench([1000], lab_factory=lambda n, p: FailingLab(n, p, fail_in))
    assert [lab.downs for lab in MADE] == [1]


def test_the_labs_policy_keeps_the_silent_sessions_keys_for_the_whole_run(tmp_path):
    """With the product's 180 s reject_after_ms every synthetic session's
    keys expired minutes after the store was written: the 1M run measured
    1M KeyExpired ends during its listing, and its restart's client was
    refused unanswered. The lab's keys live as long as its sessions."""
    from jvpn.bench.scale_lab import scale_policy  # noqa: PLC0415
    from jvpn.policy import load_policy  # noqa: PLC0415

    path = tmp_path / "policy.toml"
    path.write_text(scale_policy())
    p = load_policy(path)
    assert p.reject_after_ms >= p.max_lifetime_ms >= 3_600_000
    assert p.heartbeat_volatile_ms == 300_000


def test_the_quiet_runs_get_ratios_of_their_own():
    """The XDP runs taken once the daemon is quiet (``quiet``) are compared
    with the smallest size's quiet runs, the first runs with its first."""
    small = {**_figures(200, 40), "quiet": _figures(100, 20)}
    big = {**_figures(400, 80), "quiet": _figures(120, 30)}
    out = scale.assemble([1000, 100_000], {"1000": small, "100000": big}, {})
    assert out["by_size"]["100000"]["xdp_valid_ratio"] == 2.0
    assert out["by_size"]["100000"]["quiet"]["xdp_valid_ratio"] == 1.2
    assert out["by_size"]["100000"]["quiet"]["xdp_unknown_ratio"] == 1.5
    assert out["by_size"]["1000"]["quiet"]["xdp_valid_ratio"] == 1.0
