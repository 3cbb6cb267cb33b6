"""Review R1 #2: a holder of epoch E's keys (a core dump, a backup) who
spoofs the bound address cannot replace the client's committed, unconfirmed
E+1 with a new ephemeral: refused REPLAY_DETECTED, nothing changes, and
SecurityKeyCompromiseSuspected names it. The client's own older attempt
delivered late stays a plain replay."""

from __future__ import annotations

from jvpn import wire
from kits.daemon_kit import events_of
from kits.rekey_kit import RekeyClient, gateway


def reason(c: RekeyClient, out) -> str:
    [(msg, _)] = out
    _hdr, (_asked, _epoch, _switch, code, *_counter) = c.opened(msg)
    return wire.REJECT_REASONS[code]


def test_a_second_ephemeral_for_the_committed_epoch_replaces_nothing(tmp_path):
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)  # the real client's attempt, committed
    committed = c.stored_ring()
    evil, _evil_eph = c.init(ask=False)  # epoch 0's keys, a new ephemeral, a higher counter
    assert reason(c, c.send(evil)) == "REPLAY_DETECTED"
    assert c.stored_ring() == committed and c.live().keys == committed
    [ev] = events_of(gw.events, "SecurityKeyCompromiseSuspected")
    assert ev["key_epoch"] == 1
    c.finish(resp, eph)
    assert c.data()  # the real client's epoch 1 is the gateway's


def test_an_older_attempt_delivered_late_is_a_plain_replay(tmp_path):
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    old, _old_eph = c.init()  # held back by the path
    msg, eph = c.init(ask=False)
    [(resp, _)] = c.send(msg)
    assert reason(c, c.send(old)) == "REPLAY_DETECTED"
    assert events_of(gw.events, "SecurityKeyCompromiseSuspected") == []
    c.finish(resp, eph)
    assert c.data()
