"""Review R5 #2: key expiry's quarantine (lifts=True) must also lift once a
rekey renewed the keys (key_timers.run). Before the fix it was lifted only by
key_timers._expire after its write landed, i.e. only while the keys were
still expired.  A committed, unconfirmed rekey answered by the stored-answer
shortcut (which skips every state check, the quarantine included) and then
confirmed between the store's recovery and the next tick leaves the session
ATTACHED, with fresh keys, and quarantined: no element, nothing delivered,
until the NEW epoch expires (reject_after later)."""
from jvpn import wire
from jvpn.client_rekey import REKEY_RETRY_MS
from jvpn.gate import abi
from jvpn.session import State
from jvpn.store import StoreError
from kits.client_bridge import Bridge
from kits.daemon_kit import PEER_INNER, AdmitAll, Clock, ipv4, make_gateway
from kits.rekey_kit import policy


def refused(*_a, **_k):
    raise StoreError("injected outage")


def test_expiry_quarantine_survives_a_confirmed_rekey(tmp_path, monkeypatch):
    clock = Clock()
    gw = make_gateway(tmp_path, gate=AdmitAll(), clock=clock,
                      policy=policy(rekey_after_ms=10_000, reject_after_ms=20_000,
                                    expiry_terminates=False))
    b = Bridge(gw, clock)
    b.client.send_data(ipv4(PEER_INNER[0]))
    b.pump()
    sid = b.client.session_id
    # a committed rekey whose RESP is lost
    real = b.to_gateway
    drop = {"on": True}

    def to_gateway(msg):
        n = len(gw.sock.sent)
        real(msg)
        if drop["on"]:
            for m, _ in gw.sock.sent[n:]:
                if wire.parse_header(m).type == abi.MSG_REKEY_RESP:
                    b.inbox.clear()
    b.to_gateway = to_gateway
    clock.ms += 10_000
    gw.table.request_rekey(sid)
    b.client.start_rekey()
    live = gw.table.get(sid)
    assert live.keys.epoch == 1 and not live.keys.confirmed
    drop["on"] = False
    # epoch 0 (the one the gateway seals under) expires; the store refuses KEYS_AGED
    clock.ms += 10_500
    monkeypatch.setattr(gw.store, "cas", refused)
    b.online = False
    b.tick()
    assert live.quarantined and live.quarantine_lifts
    assert live.record.state is State.ATTACHED
    monkeypatch.undo()
    b.online = True
    # before the next tick: the client's re-send gets the stored RESP (shortcut)
    clock.ms += REKEY_RETRY_MS
    b.client.rekey_timers(clock.ms)
    b.pump()
    assert b.client.rekeying.pending is None
    # and the client's next control message under epoch 1 confirms it
    b.client.rebind()
    b.pump()
    print("after rebind: confirmed", live.keys.confirmed, "state", live.record.state,
          "q", live.quarantined, live.keys.epoch)
    for _ in range(5):
        clock.ms += 100
        b.tick()
        b.pump()
        print("tick", live.record.state, live.keys.epoch, live.keys.confirmed, live.quarantined)
    live = gw.table.get(sid)
    print("state", live.record.state, "epoch", live.keys.epoch, "confirmed", live.keys.confirmed,
          "quarantined", live.quarantined, "installed", live.installed)
    n = len(gw.tun.written)
    b.client.send_data(ipv4(PEER_INNER[0]))
    b.pump()
    assert not (live.record.state is State.ATTACHED and live.keys.confirmed
                and live.quarantined), "rekeyed, ATTACHED, fresh keys, yet still quarantined"
    assert len(gw.tun.written) == n + 1
