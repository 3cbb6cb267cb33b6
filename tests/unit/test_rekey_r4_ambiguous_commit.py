"""Review R4 #3: the store applied the rekey's commit but the call failed (a
timeout after the write: etcd's ambiguous result). The gateway re-reads the
record and ring: the store is at a newer version, so they become the live
session's (record, ring, element), the request gets the stored RESP, and
later writes of the session do not conflict. A commit the store did not
apply changes nothing, as before."""
from jvpn.gate import abi
from jvpn.store import StoreError
from kits.daemon_kit import events_of
from kits.rekey_kit import RekeyClient, gateway


def test_a_commit_applied_but_reported_failed_is_adopted(tmp_path, monkeypatch):
    gw, clock = gateway(tmp_path, max_rekey_attempts=1)
    c = RekeyClient(gw)
    real = gw.store.cas
    calls = {"n": 0}

    def applied_then_failed(*a, **k):
        real(*a, **k)
        if k.get("secrets") is not None and calls["n"] == 0:
            calls["n"] += 1
            raise StoreError("deadline exceeded (the write went through)")
    monkeypatch.setattr(gw.store, "cas", applied_then_failed)
    msg, eph = c.init()
    [(resp, _to)] = c.send(msg)
    assert c.opened(resp)[0].type == abi.MSG_REKEY_RESP
    live = c.live()
    assert live.keys.epoch == 1 == c.stored_ring().epoch and not live.keys.confirmed
    assert live.record == c.record()
    assert not events_of(gw.events, "RekeyDenied")
    clock.ms += 1_000
    again, _ = c.init(eph=eph, new_epoch=1, ask=False)  # a re-send: the stored RESP
    [(resent, _to)] = c.send(again)
    assert c.opened(resent)[1] == c.opened(resp)[1]
    c.finish(resp, eph)
    assert c.data()  # confirms: the session's next write does not conflict
    assert c.stored_ring().confirmed and c.live().keys.confirmed


def test_a_commit_the_store_did_not_apply_changes_nothing(tmp_path, monkeypatch):
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    real = gw.store.cas

    def refused(*a, **k):
        if k.get("secrets") is not None:
            raise StoreError("deadline exceeded (nothing written)")
        return real(*a, **k)
    monkeypatch.setattr(gw.store, "cas", refused)
    msg, _eph = c.init()
    assert c.send(msg) == []
    assert c.live().keys.epoch == 0 == c.stored_ring().epoch
    assert events_of(gw.events, "RekeyDenied")[-1]["reason_code"] == "STORE_UNAVAILABLE"
