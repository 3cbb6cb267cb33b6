"""Review R1 #5, #6, #7: store failures after the commit, and stored values
that do not match their record. The overlap ends in memory and the element
first (the store write is retried each tick); a refused confirmation write
is tried at most once per 100 ms and tallied, not one event per packet; a
stored ring that is not the record's (another session's, an older epoch's)
is never served."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from jvpn.gate import abi
from jvpn.keys import KeyRing, ring_for
from jvpn.store import StoreError
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import AdmitAll, events_of, make_gateway
from kits.rekey_kit import RekeyClient, gateway, policy


def refuse(*_a, **_k):
    raise StoreError("store unavailable (injected)")


def test_the_overlap_ends_on_time_while_the_store_refuses(tmp_path, monkeypatch):
    gw, clock = gateway(tmp_path, rekey_overlap_ms=2_000)
    c = RekeyClient(gw)
    c.rekey()
    monkeypatch.setattr(gw.store, "cas", refuse)
    clock.ms += 2_000
    gw.tick()
    assert c.live().keys.previous is None
    assert gw.gate.model.sessions[c.sid].key_phases == 0b10  # only epoch 1's phase
    assert not c.data(keys=c.old)  # epoch 0 refused at once
    assert c.stored_ring().previous is not None  # the store still holds it
    clock.ms += 1_000
    gw.tick()  # refused again: tried again
    monkeypatch.undo()
    clock.ms += 1_000
    gw.tick()
    assert c.stored_ring().previous is None and c.stored_ring().epoch == 1
    assert c.data()
    assert len(events_of(gw.events, "KeyRotated")) == 2


def test_a_refused_confirmation_write_is_not_tried_per_packet(tmp_path, monkeypatch):
    gw, clock = gateway(tmp_path)
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    c.finish(resp, eph)
    calls = []

    def counting(*_a, **_k):
        calls.append(1)
        raise StoreError("store unavailable (injected)")

    monkeypatch.setattr(gw.store, "cas", counting)
    for _ in range(100):
        c.data()
    assert len(calls) == 1
    clock.ms += 100
    c.data()
    assert len(calls) == 2
    errs = [e for e in events_of(gw.events, "DaemonError") if e.get("where") == "rekey-confirm"]
    assert len(errs) == 1  # the incidents tally: the rest counted for the next report


def _restart(c: RekeyClient, tmp_path, clock):
    c.gw = make_gateway(tmp_path, store=SqliteStore(tmp_path / "s.db"), gate=AdmitAll(),
                        clock=clock, policy=policy())
    c.gw.reconcile()


def _store_secrets(tmp_path, value: bytes) -> None:
    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("UPDATE sessions SET secrets=?", (value,))
    db.commit()
    db.close()


def _unreadable(gw) -> list:
    return [e for e in events_of(gw.events, "DaemonError")
            if e["reason_code"] == "STORE_RECORD_UNREADABLE"]


def test_a_stored_ring_of_an_older_epoch_is_not_served_at_restart(tmp_path):
    gw, clock = gateway(tmp_path, rekey_overlap_ms=1_000)
    c = RekeyClient(gw)
    epoch0 = c.ring.current.pack()  # the handshake's value (a backup's)
    c.rekey()
    clock.ms += 1_000
    gw.tick()
    assert c.stored_ring().previous is None and c.record().key_epoch == 1
    _store_secrets(tmp_path, epoch0)
    _restart(c, tmp_path, clock)
    assert c.gw.table.get(c.sid) is None and c.sid not in c.gw.gate.model.sessions
    [ev] = _unreadable(c.gw)
    assert "epoch 0" in ev["detail"]


def test_a_stored_ring_of_another_session_is_not_served_at_restart(tmp_path):
    gw, clock = gateway(tmp_path)
    c = RekeyClient(gw)
    foreign = KeyRing(replace(c.stored_ring().current, session_id=c.sid ^ 0x5A5A)).pack()
    _store_secrets(tmp_path, foreign)
    _restart(c, tmp_path, clock)
    assert c.gw.table.get(c.sid) is None
    assert len(_unreadable(c.gw)) == 1


def test_ring_for_takes_only_the_records_own_epoch(tmp_path):
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    rec, raw = gw.store.get(c.sid)
    assert ring_for(rec, raw).epoch == 0
    for bad in (rec.with_(key_epoch=1), rec.with_(session_id=rec.session_id + 1)):
        try:
            ring_for(bad, raw)
        except ValueError:
            continue
        raise AssertionError("a mismatched ring was taken")


NEW = ("198.51.100.7", 4242)


def test_a_rolled_back_stored_ring_opens_no_reattach(tmp_path):
    """A holder of epoch 0's keys (a backup) who also rolls the store's value
    back to them cannot reattach the session while it runs under epoch 1."""
    gw, clock = gateway(tmp_path, rekey_overlap_ms=1_000)
    c = RekeyClient(gw)
    epoch0 = c.ring.current.pack()
    c.rekey()
    clock.ms += 1_000
    gw.tick()
    _store_secrets(tmp_path, epoch0)
    out = c.send(c.reattach_request(seq=1, keys=c.old), src=NEW)
    assert all(msg[0] != abi.MSG_PATH_CHALLENGE for msg, _to in out)
    assert c.record().binding.addr != NEW[0]


def test_a_standby_takes_no_ring_that_is_not_its_records(tmp_path):
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    rec = c.record()
    foreign = KeyRing(replace(c.stored_ring().current, session_id=c.sid ^ 1)).pack()
    _store_secrets(tmp_path, foreign)
    gw.table.drop_local(c.sid)
    gw.table.stand_by(rec.with_(owner="gw-b"))
    assert c.sid not in gw.table.standby
    [ev] = [e for e in _unreadable(gw) if e.get("where") == "standby"]
    assert "session" in ev["detail"]


def test_ring_for_takes_no_answer_made_after_its_record(tmp_path):
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    c.rekey()
    rec, raw = gw.store.get(c.sid)
    ring = ring_for(rec, raw)
    late = replace(ring, answer=replace(ring.answer, prev_keys_ms=rec.keys_ms + 1))
    try:
        ring_for(rec, late.pack())
    except ValueError:
        return
    raise AssertionError("an answer from after the record was taken")
