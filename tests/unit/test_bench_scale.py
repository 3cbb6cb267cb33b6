"""`bench scale` (issue 15): the synthetic store a gateway restarts on (each
session restorable, its keys its own and the record's, its floor and
ceiling), the peers file that keeps each of them configured, the frames its
XDP figures are taken with, the JSON it prints, and its cleanup when a size
fails."""

from __future__ import annotations

import ipaddress

import pytest

from jvpn import keys as jkeys
from jvpn.bench import scale, scale_store, scale_xdp
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
    return {"xdp_valid_ns": valid, "xdp_unknown_ns": unknown}


class FakeSet:
    """A set whose test runs take the given ns, each call noted in ``log``."""

    def __init__(self, name, valid_ns, unknown_ns, log):
        self.name, self.valid_ns, self.unknown_ns, self.log = name, valid_ns, unknown_ns, log
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.closed = True

    def valid(self, k):
        self.log.append((self.name, "valid", k))
        return self.valid_ns

    def unknown(self):
        self.log.append((self.name, "unknown"))
        return self.unknown_ns


class FakeSubject:
    """Hands out FakeSets with these (valid, unknown) ns in turn."""

    def __init__(self, name, figures, log):
        self.name, self.figures, self.log, self.made = name, iter(figures), log, []

    def next_set(self):
        self.made.append(FakeSet(self.name, *next(self.figures), self.log))
        return self.made[-1]


def test_a_pairs_test_runs_alternate_call_by_call():
    """The reference's DATA packet k, then size N's, ...; then the unknown
    id's batches likewise: a slow moment of the machine falls on both."""
    log = []
    sets = [FakeSet("ref", 100, 20, log), FakeSet("big", 150, 30, log)]
    figures = scale_xdp.interleaved(sets)
    singles, batches = scale_xdp.VALID_SINGLES, scale_xdp.UNKNOWN_BATCHES
    assert log[:4] == [("ref", "valid", 0), ("big", "valid", 0),
                       ("ref", "valid", 1), ("big", "valid", 1)]
    assert log[2 * singles:] == [("ref", "unknown"), ("big", "unknown")] * batches
    assert len(log) == 2 * (singles + batches)
    assert figures == [_figures(100, 20), _figures(150, 30)]


def test_each_ratio_is_the_median_of_the_pairs_ratios_with_its_range():
    """The machine's speed moves between pairs (the reference doubles in
    the third): each pair's ratio is taken within the pair, the median of
    those is the figure, not a ratio of the two sides' medians."""
    log = []
    ref = FakeSubject("ref", [(100, 20), (100, 20), (200, 40), (100, 20), (100, 20)], log)
    big = FakeSubject("big", [(120, 20), (130, 30), (260, 80), (110, 30), (500, 20)], log)
    out = scale_xdp.paired(ref, big, pairs=5)
    assert out["xdp_pairs"] == 5
    assert out["xdp_valid_pair_ratios"] == [1.2, 1.3, 1.3, 1.1, 5.0]
    assert out["xdp_valid_ratio"] == 1.3 and out["xdp_valid_ratio_range"] == [1.1, 5.0]
    assert out["xdp_unknown_pair_ratios"] == [1.0, 1.5, 2.0, 1.5, 1.0]
    assert out["xdp_unknown_ratio"] == 1.5 and out["xdp_unknown_ratio_range"] == [1.0, 2.0]
    assert out["xdp_valid_ns"] == 130 and out["xdp_valid_ref_ns"] == 100
    assert out["xdp_unknown_ns"] == 30 and out["xdp_unknown_ref_ns"] == 20
    assert all(s.closed for s in ref.made + big.made)  # each set's program descriptor


def test_a_reference_figure_of_zero_gives_that_pair_no_ratio():
    log = []
    out = scale_xdp.paired(FakeSubject("ref", [(0, 20), (0, 20)], log),
                           FakeSubject("big", [(300, 40), (300, 60)], log), pairs=2)
    assert out["xdp_valid_ratio"] is None and out["xdp_valid_ratio_range"] is None
    assert out["xdp_unknown_ratio"] == 2.5 and out["xdp_unknown_pair_ratios"] == [2.0, 3.0]


def test_the_smallest_size_is_its_own_reference():
    log = []
    out = scale_xdp.solo(FakeSubject("small", [(200, 40), (100, 50), (300, 30)], log), sets=3)
    assert out == {"xdp_pairs": 0, "xdp_valid_ns": 200, "xdp_unknown_ns": 40,
                   "xdp_valid_ratio": 1.0, "xdp_unknown_ratio": 1.0}
    assert scale_xdp.solo(FakeSubject("z", [(0, 40)], log), sets=1)["xdp_valid_ratio"] is None


def test_each_set_takes_a_fresh_session_and_never_a_used_counter():
    """A set sends 1,000 DATA packets of one session: the next set takes
    the next session (its packet burst untouched), and once every session
    had a turn, counters above the ones the last round used."""
    subject = scale_xdp.XdpSubject("pins", "seed", 4, make_set=lambda *a: a[3:])
    taken = [subject.next_set() for _ in range(6)]
    first, step = scale_xdp.FIRST_COUNTER, scale_xdp.VALID_SINGLES
    assert taken == [(2, first), (3, first), (0, first + step), (1, first + step),
                     (2, first + step), (3, first + step)]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_the_smallest_sizes_sets_take_sessions_they_hold(n):
    """Review k20rall F3: `--sizes 1` and `2` are accepted, and the old quiet
    set sent session n // 2 + 1's packets, a session those stores lack."""
    subject = scale_xdp.XdpSubject("pins", "seed", n, make_set=lambda *a: a[3])
    assert all(0 <= subject.next_set() < n for _ in range(4 * n + 20))


def test_the_json_keeps_each_sizes_figures():
    small, big = {**_figures(200, 40), "xdp_valid_ratio": 1.0}, _figures(300, 50)
    out = scale.assemble([1000, 100_000], {"1000": small, "100000": big}, {"sessions": 100_000})
    assert out["sizes"] == [1000, 100_000] and out["restart"] == {"sessions": 100_000}
    assert out["by_size"] == {"1000": small, "100000": big}


class RecordedLab:
    """A lab that notes its steps in ``log``."""

    def __init__(self, sessions, log, fail_measure=False):
        self.sessions, self.log, self.fail_measure = sessions, log, fail_measure
        self.pin_dir, self.seed = f"pins-{sessions}", "seed"

    def up(self):
        self.log.append(("up", self.sessions))

    def stop(self, timeout_s):
        self.log.append(("stop", self.sessions))

    def down(self):
        self.log.append(("down", self.sessions))


def test_the_smallest_lab_stays_up_as_the_reference_of_each_larger_one():
    log = []

    def measure(lab, _progress, subject, reference):
        log.append(("measure", lab.sessions, reference and reference.n))
        assert subject.pin_dir == lab.pin_dir and subject.n == lab.sessions
        return _figures(1, 1)

    out = scale.run_scale_bench([100_000, 1000, 20_000],
                                lab_factory=lambda n, _p: RecordedLab(n, log), measure=measure,
                                restart_of=lambda lab, _p: {"at": lab.sessions})
    assert log == [("up", 1000), ("measure", 1000, None), ("stop", 1000),
                   ("up", 20_000), ("measure", 20_000, 1000), ("down", 20_000),
                   ("up", 100_000), ("measure", 100_000, 1000), ("down", 100_000),
                   ("down", 1000)]
    assert out["restart"] == {"at": 100_000} and out["sizes"] == [1000, 20_000, 100_000]


def test_a_larger_size_that_fails_takes_the_reference_lab_down_too():
    log = []

    def measure(lab, _progress, _subject, reference):
        if reference is not None:
            raise JvpnError("gateway start (state): process exited")
        return _figures(1, 1)

    with pytest.raises(JvpnError):
        scale.run_scale_bench([1000, 2000], lab_factory=lambda n, _p: RecordedLab(n, log),
                              measure=measure)
    assert [e for e in log if e[0] == "down"] == [("down", 2000), ("down", 1000)]


MADE: list[FailingLab] = []


class FailingLab:
    """A lab whose set-up or daemon start fails: it must still be torn down."""

    def __init__(self, sessions, _progress, fail_in: str):
        self.sessions, self.fail_in, self.downs = sessions, fail_in, 0
        self.pin_dir, self.seed = "pins", "seed"
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
