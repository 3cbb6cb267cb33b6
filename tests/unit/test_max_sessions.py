"""Issue 15: how many sessions a gateway holds (attach --max-sessions, the
config's MaxSessions), the refusal at that count, and the restart's one
pass over the store with batched element writes."""

from __future__ import annotations

import contextlib
import os

import pytest
from click.testing import CliRunner

from jvpn import keys
from jvpn.codes import Reason
from jvpn.config import ConfigError, load_gateway_config
from jvpn.errors import JvpnError
from jvpn.gate import abi
from jvpn.gate.batch import ElementBatch
from jvpn.gate.element import GateFull
from jvpn.gate.userspace import UserspaceGate
from jvpn.gateway.build import limit_sessions
from jvpn.gateway.capacity import SessionsFull, default_max_sessions
from jvpn.keys import derive_session_keys
from jvpn.session import Event, Transport, apply, new_session
from jvpn.store import StoreError
from jvpn.store.sqlite import SqliteStore
from jvpn_cli.main import cli
from kits.daemon_kit import CLIENT, AdmitAll, events_of, handshake, initiation, make_gateway

GW_KEY = keys.generate_private()
PEER = keys.public_from_private(keys.generate_private())


@pytest.fixture(autouse=True)
def _private_umask():
    old = os.umask(0o077)
    yield
    os.umask(old)


def _config(tmp_path, extra: str = "") -> str:
    (tmp_path / "peers.conf").write_text(
        f"[Peer]\nPublicKey = {keys.encode(PEER)}\nAllowedIPs = 10.99.0.2/32\n")
    path = tmp_path / "gw.conf"
    path.write_text(f"[Interface]\nPrivateKey = {keys.encode(GW_KEY)}\n"
                    f"Address = 10.99.0.1/24\nPeersFile = peers.conf\n{extra}")
    return path


# ------------------------------------------------------------ the options
def test_max_sessions_in_the_config(tmp_path):
    assert load_gateway_config(_config(tmp_path)).max_sessions is None  # the gate's capacity
    assert load_gateway_config(_config(tmp_path, "MaxSessions = 1000000\n")).max_sessions \
        == 1_000_000


@pytest.mark.parametrize("value", ["0", "4194305", "many"])
def test_a_max_sessions_out_of_range_is_one_line_naming_it(tmp_path, value):
    with pytest.raises(ConfigError) as e:
        load_gateway_config(_config(tmp_path, f"MaxSessions = {value}\n"))
    assert "\n" not in str(e.value) and "MaxSessions" in str(e.value)


def test_max_sessions_above_the_gate_is_a_start_error_below_it_the_budget():
    gate = UserspaceGate()
    with pytest.raises(JvpnError) as e:
        limit_sessions(gate, gate.capacity + 1)
    assert "\n" not in str(e.value) and f"--max-sessions {gate.capacity + 1}" in str(e.value)
    limit_sessions(gate, 10)
    assert gate.max_sessions == 10
    limit_sessions(gate, None)  # absent: the capacity less a headroom for re-handshakes
    assert gate.max_sessions == default_max_sessions(gate.capacity) == gate.capacity - (
        gate.capacity // 64)


def test_by_default_a_peer_re_handshaking_at_max_sessions_still_gets_an_element(tmp_path):
    """Review B #3 with the default MaxSessions: the maps keep room for the
    one session over MaxSessions a re-handshaking peer takes."""
    assert default_max_sessions(65_536) == 64_512 and default_max_sessions(1) == 1
    assert default_max_sessions(1024) < 1024


@pytest.mark.parametrize("value", ["100", "4194305"])
def test_attach_max_sessions_outside_its_range_is_one_line(tmp_path, value):
    got = CliRunner().invoke(cli, ["--pin-root", str(tmp_path / "p"), "--run-dir",
                                   str(tmp_path / "r"), "attach", "lo", "--max-sessions", value])
    assert got.exit_code != 0
    lines = [ln for ln in got.output.splitlines() if ln.strip()]
    assert any("--max-sessions" in ln and "1024" in ln for ln in lines), got.output


# ------------------------------------------------------------ the refusal
def test_a_handshake_at_max_sessions_is_refused_counted_and_the_gateway_goes_on(tmp_path):
    gate = AdmitAll()
    gate.max_sessions = 1
    gw = make_gateway(tmp_path, gate=gate)
    handshake(gw, peer=0)
    n = len(gw.sock.sent)
    gw.datapath.datagram(initiation(1).initiation(), ("192.0.2.11", 5556))
    assert gw.sock.sent[n:] == []  # no response: no session
    [refused] = [e for e in events_of(gw.events, "HandshakeRejected")
                 if e["reason_code"] == Reason.GATEWAY_FULL]
    assert "MaxSessions (1)" in refused["detail"]
    assert len(gw.table.sessions) == 1 and len(gw.store.list()) == 1
    gate.max_sessions = 2  # the same gateway, room again: served
    handshake(gw, src=("192.0.2.11", 5557), peer=1)
    assert len(gw.table.sessions) == 2


class FullGate(AdmitAll):
    """A gate whose maps are full although the count says otherwise (another
    writer's elements): the kernel's E2BIG, as XdpGate raises it."""

    def put(self, *a, **k):
        raise GateFull("the sessions map is full (2 elements)")


def test_a_full_map_refuses_the_handshake_and_leaves_nothing(tmp_path):
    gw = make_gateway(tmp_path, gate=FullGate())
    gw.datapath.datagram(initiation(0).initiation(), CLIENT)
    assert gw.table.sessions == {} and gw.store.list() == []  # the stored record went too
    [refused] = events_of(gw.events, "HandshakeRejected")
    assert refused["reason_code"] == Reason.GATEWAY_FULL
    assert not [e for e in gw.events.recent if e["event_type"] == "DaemonError"]


def test_sessions_full_is_a_store_error_with_its_reason():
    assert issubclass(SessionsFull, StoreError) and SessionsFull.reason == Reason.GATEWAY_FULL


# ------------------------------------------------------------ one pass, batches
def _store_with(path, n: int) -> tuple[SqliteStore, list[int]]:
    store = SqliteStore(path)
    sids = [(1 << 63) + 5, 3] + [1000 + i for i in range(n - 2)]  # a "negative" id too
    for i, sid in enumerate(sids):
        rec, _tr = apply(new_session(sid, 1, owner="gw-test"), Event.ATTACH_OK, 1,
                         binding=Transport("192.0.2.1", 1000 + i))
        store.create(rec.with_(inner_addr="10.99.0.2"), derive_session_keys(
            sid, bytes([i % 256]) * 32, b"\x06" * 32, b"\x07" * 32).pack())
        store.set_floor(sid, 100 + i)
        if i % 2:
            store.raise_replay_ceiling(sid, 50 + i)
    return store, sids


def test_restorable_pages_hold_every_record_with_its_floor_and_ceiling(tmp_path):
    store, sids = _store_with(tmp_path / "s.db", 7)
    got = list(store.restorable(page=2))
    assert sorted(s.record.session_id for s in got) == sorted(sids)
    for s in got:
        assert (s.record, s.secrets) == store.get(s.record.session_id)
        assert s.floor == store.get_floor(s.record.session_id)
        assert s.ceiling == store.get_replay_ceiling(s.record.session_id)


def test_restorable_skips_an_unreadable_record_and_reports_it(tmp_path):
    store, sids = _store_with(tmp_path / "s.db", 4)
    store._db.execute("UPDATE sessions SET record='{' WHERE session_id=3")
    seen = []
    store.on_unreadable = lambda key, why: seen.append(key)
    assert sorted(s.record.session_id for s in store.restorable(page=1)) == \
        sorted(x for x in sids if x != 3)
    assert seen == [f"{3:016x}"]


class CountingMaps:
    def __init__(self):
        self.calls: list[int] = []

    def list_sessions(self):
        return []

    def put_sessions(self, items):
        self.calls.append(len(items))


def test_element_batch_writes_in_batches_and_raises_floors_it_holds():
    maps = CountingMaps()
    batch = ElementBatch(maps, flush_every=3)
    for sid in range(1, 8):
        batch.put(sid, abi.Session(ctl_floor=1))
    batch.raise_floor(7, 9)  # pending: the write to come carries it
    assert batch.old(7).ctl_floor == 9
    batch.flush()
    assert maps.calls == [3, 3, 1] and batch.flushed == 7
    batch.raise_floor(7, 5)  # a floor only rises
    assert batch.old(7).ctl_floor == 9
    batch.raise_floor(7, 4, "probe_floor")  # the probes' own (issue 14)
    assert (batch.old(7).probe_floor, batch.old(7).ctl_floor) == (4, 9)


class BatchingGate(AdmitAll):
    """A userspace gate that records which element writes came in a batch."""

    def __init__(self):
        super().__init__()
        self.in_batch, self.batched_puts, self.single_puts = False, 0, 0

    @contextlib.contextmanager
    def batched(self):
        self.in_batch = True
        try:
            yield
        finally:
            self.in_batch = False

    def _write(self, *a, **k):  # put and standby (a session restored blind) alike
        if self.in_batch:
            self.batched_puts += 1
        else:
            self.single_puts += 1
        super()._write(*a, **k)


def test_reconcile_restores_every_stored_session_through_the_batch(tmp_path):
    store, sids = _store_with(tmp_path / "s.db", 300)
    floors = {sid: store.get_floor(sid) for sid in sids}
    gate = BatchingGate()
    gw = make_gateway(tmp_path, store=store, gate=gate)
    gw.reconcile(progress_every=100)
    assert set(gw.table.sessions) == set(sids)
    assert gate.ids() == set(sids)
    assert (gate.batched_puts, gate.single_puts) == (300, 0)
    [done] = events_of(gw.events, "Reconciled")
    assert done["sessions"] == 300
    for sid in sids:  # the floor read in the pass: counters resume above it
        assert gw.table.sessions[sid].channel.next_counter() >= floors[sid] > 0


def test_reconcile_of_more_sessions_than_max_sessions_fails_the_start(tmp_path):
    """Serving 6 of 10 would orphan 4 (ours in the store, no element, never
    expired): the start fails, naming both counts, and removes nothing."""
    store, _ = _store_with(tmp_path / "s.db", 10)
    gate = BatchingGate()
    gate.max_sessions = 6
    gw = make_gateway(tmp_path, store=store, gate=gate)
    with pytest.raises(JvpnError) as e:
        gw.reconcile()
    assert "\n" not in str(e.value)
    assert "10 sessions" in str(e.value) and "MaxSessions (6)" in str(e.value)
    assert len(store.list()) == 10 and events_of(gw.events, "Reconciled") == []
    gate.max_sessions = 10  # raised: every one served
    gw = make_gateway(tmp_path, store=store, gate=gate)
    gw.reconcile()
    assert len(gw.table.sessions) == 10
