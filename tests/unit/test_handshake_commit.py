"""A handshake's durable writes (issue 15): the claim, the record and the
first send-counter floor in one transaction, handshakes arriving together
group-committed, and the response only after its commit (docs/protocol.md
"A handshake's durable writes")."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from jvpn import keys
from jvpn.codes import Reason
from jvpn.gate import abi
from jvpn.gateway.new_session import FIRST_CEILING, FIRST_FLOOR
from jvpn.lab.wait import wait_until
from jvpn.store import StoreError
from jvpn.store import sqlite as sqlite_store
from jvpn.store.group_commit import GroupCommit
from jvpn.store.sqlite import SqliteStore
from jvpn.tunnel import DataChannel
from kits.daemon_kit import CLIENT, PEER_KEYS, Peer, initiation, make_gateway

STEPS = ("_claim", "_create", "_set_floor")


def _rejections(gw) -> list[str]:
    return [e["reason_code"] for e in gw.events.recent if e["event_type"] == "HandshakeRejected"]


def _answered(gw, ini, n: int) -> Peer:
    [(resp, to)] = gw.sock.sent[n:]
    assert to == CLIENT
    _a, session_keys = ini.response(resp)
    return Peer(session_keys, DataChannel(session_keys, "client"))


class CountingStore(SqliteStore):
    """Counts transactions and floor writes; ``fail_commit``: every group
    commit fails at its COMMIT (the ops ran, the transaction rolls back)."""

    def __init__(self, path):
        super().__init__(path)
        self.transactions = 0
        self.fail_commit = False

    def write_many(self, ops):
        self.transactions += 1
        if not self.fail_commit:
            return super().write_many(ops)
        with self._tx() as db:
            for op in ops:
                op(db)
            raise StoreError("session store commit failed: disk I/O error")


def test_one_transaction_then_the_response_and_the_first_counter_needs_no_write(tmp_path):
    store = CountingStore(tmp_path / "s.db")
    gw = make_gateway(tmp_path, store=store)
    floors: list[int] = []
    real = store.set_floor
    store.set_floor = lambda sid, floor: (floors.append(floor), real(sid, floor))
    ini = initiation()
    n = len(gw.sock.sent)
    gw.datapath.datagram(ini.initiation(), CLIENT)
    peer = _answered(gw, ini, n)
    assert store.transactions == 1  # claim, record and floor: one commit
    sid = peer.session_id
    assert store.get(sid) is not None and store.get_floor(sid) == FIRST_FLOOR
    assert store.last_initiation(keys.public_from_private(PEER_KEYS[0])) > 0  # claimed
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)  # confirms; a reply
    [(reply, _to)] = gw.sock.sent[n + 1:]
    counter = int.from_bytes(reply[16:24], "little")
    assert counter < store.get_floor(sid)  # used below the durable floor
    assert floors == []  # and that floor was the handshake's own
    store.close()


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_any_step_leaves_nothing_stored_and_nothing_answered(tmp_path, monkeypatch,
                                                                          step):
    store = SqliteStore(tmp_path / "s.db")
    gw = make_gateway(tmp_path, store=store)
    real = getattr(sqlite_store, step)

    def crash(*args):
        real(*args)  # the step's write happened, then the process "dies" before the next
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(sqlite_store, step, crash)
    ini = initiation()
    msg = ini.initiation()
    gw.datapath.datagram(msg, CLIENT)
    assert gw.sock.sent == [] and gw.sessions == {}
    assert store.list() == [] and _rejections(gw) == [Reason.HANDSHAKE_FAIL]
    assert store._db.execute("SELECT COUNT(*) FROM initiations").fetchone()[0] == 0
    assert store._db.execute("SELECT COUNT(*) FROM counter_floors").fetchone()[0] == 0
    monkeypatch.setattr(sqlite_store, step, real)
    gw.datapath.datagram(msg, CLIENT)  # nothing of it stood: the same initiation is fresh
    peer = _answered(gw, ini, 0)
    assert store.get(peer.session_id) is not None
    store.close()


def _group_gateway(tmp_path, store, **writer):
    gw = make_gateway(tmp_path, store=store)
    gw.table.group_commit(gw.control, gw.incidents.report)  # as `gateway up` does
    assert isinstance(gw.table.writes, GroupCommit)
    gw.table.writes.max_wait_s = writer.get("max_wait_s", gw.table.writes.max_wait_s)
    gw.table.writes.max_batch = writer.get("max_batch", gw.table.writes.max_batch)
    return gw


def test_handshakes_arriving_together_share_one_commit_answered_after_it(tmp_path):
    store = CountingStore(tmp_path / "s.db")
    # one attempt per peer at a time (jvpn/gateway/capacity.py): the kit's two peers
    gw = _group_gateway(tmp_path, store, max_wait_s=10.0, max_batch=2)
    inis = [initiation(i) for i in range(2)]
    gw.datapath.datagram(inis[0].initiation(), (CLIENT[0], 6000))
    assert gw.sock.sent == [] and store.list() == []  # queued: nothing answered yet
    gw.datapath.datagram(inis[1].initiation(), (CLIENT[0], 6001))  # the batch is full
    wait_until(lambda: len(gw.sock.sent) == 2, "two responses", 10)
    assert store.transactions == 1 and gw.table.writes.commits == 1
    assert len(store.list()) == 2 and len(gw.sessions) == 2
    for (resp, _to), ini in zip(sorted(gw.sock.sent, key=lambda s: s[1][1]), inis, strict=True):
        _a, session_keys = ini.response(resp)  # each its own
        assert store.get(session_keys.session_id) is not None
    gw.table.writes.close()
    store.close()


def test_a_failed_commit_fails_every_handshake_of_it_and_answers_none(tmp_path):
    store = CountingStore(tmp_path / "s.db")
    store.fail_commit = True
    gw = _group_gateway(tmp_path, store, max_wait_s=10.0, max_batch=2)
    msgs = [initiation(i).initiation() for i in range(2)]  # one attempt per peer at a time
    for i, msg in enumerate(msgs):
        gw.datapath.datagram(msg, (CLIENT[0], 6000 + i))
    wait_until(lambda: len(_rejections(gw)) == 2, "two refusals", 10)
    assert gw.sock.sent == [] and gw.sessions == {} and gw.table.pending_new == 0
    assert store.transactions == 1 and gw.table.writes.commits == 0
    assert store.list() == []
    assert store._db.execute("SELECT COUNT(*) FROM initiations").fetchone()[0] == 0
    store.fail_commit = False  # the store is back: the same initiations are fresh
    for i, msg in enumerate(msgs):
        gw.datapath.datagram(msg, (CLIENT[0], 6000 + i))
    wait_until(lambda: len(gw.sock.sent) == 2, "two responses", 10)
    gw.table.writes.close()
    store.close()


def test_one_failing_handshake_of_a_batch_fails_alone(tmp_path, monkeypatch):
    store = SqliteStore(tmp_path / "s.db")
    gw = _group_gateway(tmp_path, store, max_wait_s=10.0, max_batch=2)
    ids = iter([7, 7])  # the second id is taken by the first: AlreadyExists, in the batch
    gw.controlpath.randbits = lambda _bits: next(ids)
    gw.datapath.datagram(initiation(0).initiation(), (CLIENT[0], 6000))
    gw.datapath.datagram(initiation(1).initiation(), (CLIENT[0], 6001))
    wait_until(lambda: len(gw.sock.sent) + len(_rejections(gw)) == 2, "both handled", 10)
    assert [to for _m, to in gw.sock.sent] == [(CLIENT[0], 6000)]
    assert _rejections(gw) == [Reason.HANDSHAKE_FAIL] and list(gw.sessions) == [7]
    assert store._db.execute("SELECT COUNT(*) FROM initiations").fetchone()[0] == 1
    gw.table.writes.close()
    store.close()


def test_a_replayed_initiation_is_refused_across_a_restart_with_group_commit(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    gw = _group_gateway(tmp_path, store)
    ini = initiation()
    msg = ini.initiation()
    gw.datapath.datagram(msg, CLIENT)
    wait_until(lambda: len(gw.sock.sent) == 1, "the response", 10)
    gw.datapath.datagram(msg, ("198.51.100.66", 4444))  # a replay, same process
    gw.table.writes.close()
    assert len(gw.sock.sent) == 1 and _rejections(gw) == [Reason.REPLAY_DETECTED]
    store.close()
    store = SqliteStore(tmp_path / "s.db")
    again = _group_gateway(tmp_path, store)  # memory gone, store kept
    again.datapath.datagram(msg, ("198.51.100.66", 4444))
    wait_until(lambda: _rejections(again), "the refusal", 10)
    again.table.writes.close()
    assert again.sock.sent == [] and _rejections(again) == [Reason.REPLAY_DETECTED]
    assert again.sessions == {}
    store.close()


def test_a_stopped_writer_refuses_at_once_and_answers_what_was_queued(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    gw = _group_gateway(tmp_path, store, max_wait_s=10.0, max_batch=100)
    gw.datapath.datagram(initiation().initiation(), CLIENT)
    closing = threading.Thread(target=gw.table.writes.close)
    closing.start()
    closing.join(10)
    assert len(gw.sock.sent) == 1 and len(store.list()) == 1  # queued: committed, answered
    gw.datapath.datagram(initiation(1).initiation(), CLIENT)
    assert len(gw.sock.sent) == 1 and _rejections(gw) == [Reason.HANDSHAKE_FAIL]
    store.close()


# ------------------------------------------------------------ the confirmation
CONFIRM_STEPS = ("_cas", "_raise_ceiling")


def _ceilings(store) -> int:
    return store._db.execute("SELECT COUNT(*) FROM replay_ceilings").fetchone()[0]


def _handshake(gw, peer: int = 0, src=CLIENT) -> Peer:
    ini = initiation(peer, gw.clock_ms)  # stamped by the gateway's clock
    n = len(gw.sock.sent)
    gw.datapath.datagram(ini.initiation(), src)
    wait_until(lambda: len(gw.sock.sent) > n, "the response", 10)
    [(resp, _to)] = gw.sock.sent[n:]
    _a, session_keys = ini.response(resp)
    return Peer(session_keys, DataChannel(session_keys, "client"))


def test_the_confirmation_and_the_first_ceiling_are_one_transaction(tmp_path):
    store = CountingStore(tmp_path / "s.db")
    gw = make_gateway(tmp_path, store=store)
    raised: list[int] = []
    real = store.raise_replay_ceiling
    store.raise_replay_ceiling = lambda sid, c: (raised.append(c), real(sid, c))
    peer = _handshake(gw)
    n = len(gw.sock.sent)
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    assert store.transactions == 2  # the handshake's, the confirmation's
    assert raised == []  # the first message needed no ceiling write of its own
    sid = peer.session_id
    assert store.get(sid)[0].confirmed and gw.sessions[sid].confirmed
    assert store.get_replay_ceiling(sid) == (FIRST_CEILING, False)
    [(reply, _to)] = gw.sock.sent[n:]  # the keepalive was delivered: answered
    assert int.from_bytes(reply[16:24], "little") < store.get_floor(sid)
    store.close()


@pytest.mark.parametrize("step", CONFIRM_STEPS)
def test_a_failed_confirmation_delivers_nothing_and_the_next_message_retries(tmp_path,
                                                                             monkeypatch, step):
    store = SqliteStore(tmp_path / "s.db")
    gw = make_gateway(tmp_path, store=store)
    peer = _handshake(gw)
    sid = peer.session_id
    real = getattr(sqlite_store, step)

    def crash(*args):
        real(*args)
        raise sqlite3.OperationalError("disk I/O error")
    monkeypatch.setattr(sqlite_store, step, crash)
    n = len(gw.sock.sent)
    gw.datapath.datagram(peer.seal(b"\x45" + bytes(19)), CLIENT)  # data: not delivered
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)  # not answered
    assert gw.tun.written == [] and gw.sock.sent[n:] == []
    assert not gw.sessions[sid].confirmed and gw.table.for_inner(gw.sessions[sid].inner) is None
    assert not store.get(sid)[0].confirmed and _ceilings(store) == 0  # nothing of it stood
    monkeypatch.setattr(sqlite_store, step, real)
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    assert gw.sessions[sid].confirmed and len(gw.sock.sent) == n + 1  # answered now
    assert store.get_replay_ceiling(sid) == (FIRST_CEILING, False)
    store.close()


def test_the_first_messages_wait_for_the_confirmation_commit(tmp_path):
    store = CountingStore(tmp_path / "s.db")
    gw = _group_gateway(tmp_path, store, max_wait_s=0.0, max_batch=100)
    peer = _handshake(gw)
    sid = peer.session_id
    writes = gw.table.writes
    writes.max_wait_s, writes.max_batch = 10.0, 2  # the next commit: when two are queued
    n = len(gw.sock.sent)
    for _ in range(2):  # the first message (its confirmation queued) and one more
        gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    assert gw.sock.sent[n:] == [] and not gw.sessions[sid].confirmed
    assert not store.get(sid)[0].confirmed
    gw.datapath.datagram(initiation(1).initiation(), (CLIENT[0], 7000))  # the second write
    wait_until(lambda: len(gw.sock.sent) >= n + 3, "the commit, then both replies", 10)
    assert gw.sessions[sid].confirmed and store.get(sid)[0].confirmed
    replies = [to for _m, to in gw.sock.sent[n:]]
    assert replies.count(CLIENT) == 2  # both keepalives answered, after the commit
    writes.close()
    store.close()


def test_a_restart_between_the_response_and_the_first_message_strands_nobody(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    gw = _group_gateway(tmp_path, store)
    peer = _handshake(gw)
    gw.table.writes.close()
    store.close()  # a crash: nothing settled
    store = SqliteStore(tmp_path / "s.db")
    again = make_gateway(tmp_path, store=store)
    again.reconcile()
    live = again.sessions[peer.session_id]
    assert live.blind_epoch is None and not live.confirmed  # nothing was delivered
    assert store.get_floor(peer.session_id) == FIRST_FLOOR  # the counters resume above it
    again.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    [(reply, _to)] = again.sock.sent
    assert live.confirmed and int.from_bytes(reply[16:24], "little") >= FIRST_FLOOR
    store.close()


class CeilingFailsOnce(SqliteStore):
    """A store whose writes a subclass changes: each write on its own (etcd's way)."""

    fail = False

    def raise_replay_ceiling(self, session_id, ceiling):
        if self.fail:
            self.fail = False
            raise StoreError("etcd put replay/...: request timed out")
        super().raise_replay_ceiling(session_id, ceiling)


def test_one_write_at_a_time_a_failed_ceiling_leaves_the_confirmation_to_retry(tmp_path):
    store = CeilingFailsOnce(tmp_path / "s.db")
    assert not store.folds_handshake
    gw = make_gateway(tmp_path, store=store)
    peer = _handshake(gw)
    sid = peer.session_id
    store.fail = True
    n = len(gw.sock.sent)
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)
    assert gw.sock.sent[n:] == [] and not store.get(sid)[0].confirmed  # nothing stood
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)  # the retry confirms
    assert gw.sessions[sid].confirmed and store.get(sid)[0].confirmed
    assert len(gw.sock.sent) == n + 1
    assert store.get_replay_ceiling(sid) == (FIRST_CEILING, False)
    store.close()


class HeldWrites:
    """The table's writer, its writes queued until ``release`` (as a group
    commit's are, behind a slow batch)."""

    def __init__(self, writes):
        self.writes, self.held = writes, []

    def handshake(self, w, done) -> None:
        self.held.append(lambda: self.writes.handshake(w, done))

    def confirm(self, base, new, ceiling, done) -> None:
        self.held.append(lambda: self.writes.confirm(base, new, ceiling, done))

    def release(self) -> None:
        held, self.held = self.held, []
        for write in held:
            write()

    def close(self) -> None:
        self.writes.close()


class FailingDeletes(SqliteStore):
    fail_delete = False

    def delete(self, session_id, expected_version=None):
        if self.fail_delete:
            raise StoreError("session store unavailable")
        super().delete(session_id, expected_version)


def test_a_session_forgotten_while_its_confirmation_is_queued_leaves_no_record(tmp_path):
    """expire_unconfirmed forgets it, the store refuses the delete, then the
    queued confirmation commits the next version: the retried delete still
    removes the record (review C item 6; a restart would restore it)."""
    from jvpn.config import UNCONFIRMED_TTL_MS  # noqa: PLC0415
    from kits.daemon_kit import Clock  # noqa: PLC0415

    store, clock = FailingDeletes(tmp_path / "s.db"), Clock()
    gw = make_gateway(tmp_path, store=store, clock=clock)
    peer = _handshake(gw)
    sid = peer.session_id
    gw.table.writes = held = HeldWrites(gw.table.writes)
    gw.datapath.datagram(peer.seal(b"", abi.MSG_KEEPALIVE), CLIENT)  # its confirmation: queued
    assert held.held and not store.get(sid)[0].confirmed
    store.fail_delete = True
    clock.ms += UNCONFIRMED_TTL_MS + 1
    gw.controlpath.expire_unconfirmed()
    assert sid not in gw.table.sessions and store.get(sid) is not None  # the delete: refused
    store.fail_delete = False
    held.release()  # the confirmation commits the next version
    assert store.get(sid)[0].confirmed
    gw.table.retry_deletes()
    gw.table.retry_deletes()
    assert store.get(sid) is None, "the confirmed record outlives its session"
    store.close()


def test_a_handshake_queued_across_a_reload_that_removed_its_peer_is_not_answered(tmp_path):
    """Admitted under the old peers, its writes queued; the reload revokes
    the sessions it sees (not this one, not made yet): when the writes land
    the peer is checked again, the record goes, nothing is answered."""
    from test_operator_actions import gateway, peer_configs  # noqa: PLC0415

    gw = gateway(tmp_path)
    gw.table.writes = held = HeldWrites(gw.table.writes)
    n = len(gw.sock.sent)
    gw.datapath.datagram(initiation(0, gw.clock_ms).initiation(), CLIENT)
    assert held.held and len(gw.sock.sent) == n  # queued, unanswered
    gw.apply_config(peer_configs()[1:], gw.policy)  # peer 0 removed
    held.release()
    assert len(gw.sock.sent) == n, "answered after its peer was removed"
    assert not gw.table.sessions
    assert gw.store.list() == []  # the written record went
    assert _rejections(gw)[-1] == "PEER_REVOKED"
    gw.store.close()
