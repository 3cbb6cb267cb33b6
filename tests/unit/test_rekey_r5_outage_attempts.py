"""Review R5 #1: a store outage during a rekey must not use up the epoch's
max_rekey_attempts. The bound counts distinct client ephemerals per epoch (a
re-send counts once), an attempt whose commit the store refused and did not
apply is taken back, and DEGRADED by expiry starts the count afresh. A
re-send during the outage re-tries the same commit without a second X25519."""
from jvpn.gate import abi
from jvpn.store import StoreError
from kits.daemon_kit import events_of
from kits.rekey_kit import RekeyClient, gateway


def refused(*_a, **_k):
    raise StoreError("injected outage")


def test_a_store_outage_uses_up_the_epochs_rekey_attempts(tmp_path, monkeypatch):
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    n = gw.rekey.policy.max_rekey_attempts
    monkeypatch.setattr(gw.store, "cas", refused)
    for _ in range(n):  # the client's attempts during the outage (new ephemeral each)
        msg, _eph = c.init()
        assert c.send(msg) == []
    monkeypatch.undo()  # the store is back, nothing was ever applied
    msg, _eph = c.init()
    out = c.send(msg)
    kinds = [c.opened(m)[0].type for m, _ in out]
    print("max", n, "after the outage:", kinds,
          [e["reason_code"] for e in events_of(gw.events, "RekeyDenied")][-2:])
    assert kinds == [abi.MSG_REKEY_RESP], "the store outage used up the epoch's rekey attempts"


def test_twenty_one_second_resends_of_one_request_suffice(tmp_path, monkeypatch):
    """The client's own 1 s re-sends of ONE request (same ephemeral) during
    a 20 s outage: each derives again (the memory ring is still confirmed
    E, so the stored-answer path does not apply) and each counts."""
    gw, clock = gateway(tmp_path)
    c = RekeyClient(gw)
    made = []
    real = gw.rekey.ephemeral
    gw.rekey.ephemeral = lambda: made.append(1) or real()
    monkeypatch.setattr(gw.store, "cas", refused)
    msg, eph = c.init()
    assert c.send(msg) == []
    for _ in range(19):
        clock.ms += 1_000
        again, _ = c.init(eph=eph, ask=False)
        assert c.send(again) == []
    monkeypatch.undo()
    clock.ms += 1_000
    again, _ = c.init(eph=eph, ask=False)
    kinds = [c.opened(m)[0].type for m, _ in c.send(again)]
    print("21st second, store back:", kinds, "X25519s", len(made))
    assert len(made) == 1, "each re-send of one request derived again"
    assert kinds == [abi.MSG_REKEY_RESP], "20 s of store outage wedged the epoch's rekey"


def test_the_wedge_outlives_expiry_degraded_never_recovers(tmp_path, monkeypatch):
    gw, clock = gateway(tmp_path, rekey_after_ms=10_000, reject_after_ms=60_000,
                        expiry_terminates=False)
    c = RekeyClient(gw)
    monkeypatch.setattr(gw.store, "cas", refused)
    for _ in range(20):
        msg, _eph = c.init()
        c.send(msg)
    monkeypatch.undo()
    clock.ms += 60_001
    gw.tick()
    print("state after expiry:", c.live().record.state)
    msg, _eph = c.init()
    kinds = [c.opened(m)[0].type for m, _ in c.send(msg)]
    print("rekey from DEGRADED:", kinds,
          [e["reason_code"] for e in events_of(gw.events, "RekeyDenied")][-1:])
    assert kinds == [abi.MSG_REKEY_RESP], \
        "DEGRADED for good: the rekey that is its way back is RATE_LIMITED"


def test_degraded_by_expiry_starts_the_count_afresh(tmp_path, monkeypatch):
    """Attempts whose outcome stayed unknown (the read after the refused
    commit failed too) stay counted, up to the bound; once the keys expire
    into DEGRADED the count starts afresh: the rekey is its way back."""
    gw, clock = gateway(tmp_path, rekey_after_ms=10_000, reject_after_ms=60_000,
                        expiry_terminates=False, max_rekey_attempts=2)
    c = RekeyClient(gw)

    def send(msg):
        monkeypatch.setattr(gw.store, "cas", refused)
        monkeypatch.setattr(gw.store, "get", refused)
        try:
            return c.send(msg)
        finally:
            monkeypatch.undo()

    clock.ms += 10_000
    for _ in range(2):
        msg, _eph = c.init()
        assert send(msg) == []
    msg, _eph = c.init()
    assert [c.opened(m)[0].type for m, _ in send(msg)] == [abi.MSG_REKEY_REJECT]
    clock.ms += 50_001
    gw.tick()
    assert c.live().record.state.name == "DEGRADED"
    msg, _eph = c.init()
    assert [c.opened(m)[0].type for m, _ in c.send(msg)] == [abi.MSG_REKEY_RESP]
