"""Review R4 #4: the overlap's end drops epoch E from memory and the element
first and retries the store write; a restart (or a handoff) while that
write is still refused loads the stored ring, which still holds E. A
confirmed ring that still has a previous epoch is past its overlap: at
load E is dropped at once, and the next tick writes the ring without it."""
from jvpn.store import StoreError
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import AdmitAll, make_gateway
from kits.rekey_kit import RekeyClient, gateway, policy


def refuse(*_a, **_k):
    raise StoreError("store unavailable (injected)")


def test_dropped_previous_epoch_stays_dropped_after_restart(tmp_path, monkeypatch):
    gw, clock = gateway(tmp_path, rekey_overlap_ms=2_000)
    c = RekeyClient(gw)
    c.rekey()
    monkeypatch.setattr(gw.store, "cas", refuse)
    clock.ms += 2_000
    gw.tick()
    assert c.live().keys.previous is None
    assert not c.data(keys=c.old)  # dropped: refused
    monkeypatch.undo()
    assert c.stored_ring().previous is not None  # the write never landed
    # the gateway restarts before its next tick retried the write
    c.gw = make_gateway(tmp_path, store=SqliteStore(tmp_path / "s.db"), gate=AdmitAll(),
                        clock=clock, policy=policy(rekey_overlap_ms=2_000))
    c.gw.reconcile()
    assert c.live().keys.previous is None and c.live().keys.epoch == 1
    assert not c.data(keys=c.old), "epoch 0's dropped keys deliver data again after a restart"
    assert c.data()  # epoch 1 goes on
    c.gw.tick()  # the store write, scheduled at load
    assert c.stored_ring().previous is None and c.stored_ring().epoch == 1
    assert not c.live().secrets_unsaved
