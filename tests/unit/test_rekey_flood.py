"""Review R1 #8: a holder of the keys cannot rekey at will. The gateway
accepts a rekey only when it asked (FLAG_REKEY's predicate: old or worn
keys, the operator's request, expired keys); otherwise POLICY_DENY before
any X25519 or store write."""

from __future__ import annotations

from jvpn import wire
from kits.daemon_kit import events_of
from kits.rekey_kit import RekeyClient, gateway


def test_an_unasked_rekey_is_refused_before_any_work(tmp_path):
    gw, _clock = gateway(tmp_path, rekey_after_ms=120_000)
    c = RekeyClient(gw)
    made, writes = [], []
    real_eph, real_cas = gw.rekey.ephemeral, gw.store.cas
    gw.rekey.ephemeral = lambda: (made.append(1), real_eph())[1]
    gw.store.cas = lambda *a, **k: (writes.append(1), real_cas(*a, **k))[1]
    for _ in range(200):  # all inside one millisecond, no FLAG_REKEY ever sent
        msg, _eph = c.init(ask=False)
        [(reject, _)] = c.send(msg)
        _hdr, (_asked, _epoch, _switch, code, *_counter) = c.opened(reject)
        assert wire.REJECT_REASONS[code] == "POLICY_DENY"
    assert c.record().key_epoch == 0 and made == [] and writes == []
    denied = events_of(gw.events, "RekeyDenied")
    assert len(denied) == 200 and "not asked" in denied[0]["detail"]


def test_asked_by_age_or_by_the_operator_it_is_served(tmp_path):
    gw, clock = gateway(tmp_path, rekey_after_ms=120_000)
    c = RekeyClient(gw)
    clock.ms += 120_000  # the keys are old: the gateway flags its replies
    c.rekey(ask=False)
    assert c.record().key_epoch == 1
    c.rekey(ask=True)  # the operator's `jvpn-xdp rekey`
    assert c.record().key_epoch == 2
    msg, _eph = c.init(ask=False)  # epoch 2 is young, nobody asked
    c.send(msg)
    assert c.record().key_epoch == 2
