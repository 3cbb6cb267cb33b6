"""Review R3 F3b: keys past reject_after_ms while the store refuses the
TERMINATED (or DEGRADED) write fail closed: the element leaves the gate, no
data passes under either epoch, KeyExpired is said once, and the write is
retried until the session ends."""

from jvpn.store import StoreError
from kits.daemon_kit import events_of
from kits.rekey_kit import RekeyClient, gateway


def _refuse(monkeypatch, store):
    real = store.cas

    def refused(*_a, **_k):
        raise StoreError("store unavailable (injected)")

    monkeypatch.setattr(store, "cas", refused)
    return real


def test_expired_keys_fail_closed_while_the_store_refuses_and_end_once_it_answers(
        tmp_path, monkeypatch):
    gw, clock = gateway(tmp_path, rekey_overlap_ms=3_000)
    c = RekeyClient(gw)
    c.rekey()
    real = _refuse(monkeypatch, gw.store)
    for _ in range(60):  # 600 s: past reject_after_ms (180 s)
        clock.ms += 10_000
        gw.tick()
    assert c.sid not in gw.gate.model.sessions  # no element: nothing passes the gate
    assert not c.data() and not c.data(keys=c.old)
    assert len(events_of(gw.events, "KeyExpired")) == 1
    monkeypatch.setattr(gw.store, "cas", real)
    clock.ms += 1_000
    gw.tick()
    assert c.live() is None  # the retried write ended it
    ended = events_of(gw.events, "SessionTerminated")
    assert ended and ended[-1]["reason_code"] == "KEY_EXPIRED"
