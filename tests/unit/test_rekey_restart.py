"""Review R1 #1: the gateway's answer to a committed rekey survives a restart
(it is kept with the key ring in the store's secrets value): the client's
re-send gets the same RESP, not a second epoch over the one it took, and its
late re-send after the confirmation is not a second key holder."""

from __future__ import annotations

from dataclasses import replace

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.keys import KeyRing
from jvpn.rekey_answer import RekeyAnswer
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import AdmitAll, events_of, make_gateway
from kits.rekey_kit import RekeyClient, gateway, policy


def restart(c: RekeyClient, tmp_path, clock) -> None:
    c.gw = make_gateway(tmp_path, store=SqliteStore(tmp_path / "s.db"), gate=AdmitAll(),
                        clock=clock, policy=policy())
    c.gw.reconcile()


def test_a_resend_across_a_restart_gets_the_same_answer(tmp_path):
    gw, clock = gateway(tmp_path)
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)  # committed; the RESP is delayed on the path
    resend, _ = c.init(eph=eph, new_epoch=1, ask=False)  # the client's 1 s re-send
    committed = c.stored_ring()
    restart(c, tmp_path, clock)  # before the confirmation
    [(again, to)] = c.send(resend)
    assert to == c.src and c.opened(again)[0].type == abi.MSG_REKEY_RESP
    assert c.opened(again)[1] == c.opened(resp)[1]  # the same answer, nothing derived
    assert c.stored_ring() == committed
    c.finish(resp, eph)  # the delayed RESP arrives: the client switches
    assert c.data() and c.stored_ring().confirmed
    assert events_of(c.gw.events, "SecurityKeyCompromiseSuspected") == []


def test_a_late_resend_after_a_restart_is_not_a_second_key_holder(tmp_path):
    gw, clock = gateway(tmp_path)
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    resend, _ = c.init(eph=eph, new_epoch=1, ask=False)  # crossed the answer
    restart(c, tmp_path, clock)
    c.finish(resp, eph)
    assert c.data()  # epoch 1 confirmed on the restarted gateway
    [(reject, _)] = c.send(resend)  # the client's own re-send, delivered late
    _hdr, (_asked, _epoch, _switch, reason, *_counter) = c.opened(reject)
    assert wire.REJECT_REASONS[reason] == "REPLAY_DETECTED"
    assert events_of(c.gw.events, "SecurityKeyCompromiseSuspected") == []


def test_the_answer_is_stored_with_the_ring_until_the_overlap_ends(tmp_path):
    gw, clock = gateway(tmp_path, rekey_overlap_ms=1_000)
    c = RekeyClient(gw)
    c.rekey()
    ring = c.stored_ring()
    assert ring.confirmed and ring.answer is not None and ring.answer.new_epoch == 1
    clock.ms += 1_000
    gw.tick()
    assert c.stored_ring().previous is None and c.stored_ring().answer is None


def _answer(epoch: int) -> RekeyAnswer:
    return RekeyAnswer(epoch, 0, 7, 5_000, 1, 2, 3, b"c" * 32, b"g" * 32, b"m" * 32)


def test_a_ring_packs_its_answer_and_older_values_still_load(tmp_path):
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    c.rekey()
    ring = c.stored_ring()
    assert KeyRing.unpack(ring.pack()) == ring
    bare = KeyRing(ring.current, ring.previous, ring.confirmed)  # a ring of before R1
    assert KeyRing.unpack(bare.pack()) == bare
    assert KeyRing.unpack(ring.current.pack()).epoch == 0  # a version-1 value
    with pytest.raises(ValueError):
        KeyRing.unpack(ring.pack()[:-1])
    with pytest.raises(ValueError):  # an answer belongs to the current epoch of an overlap
        KeyRing(ring.current, answer=_answer(ring.epoch))
    with pytest.raises(ValueError):
        replace(ring, answer=_answer(ring.epoch + 1))
