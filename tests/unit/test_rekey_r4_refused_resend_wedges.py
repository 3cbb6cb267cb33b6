"""R4 #1 (repro, fixed): an answered refusal of a RE-SEND of the committed attempt (here
POLICY_DENY: the copy came from another source; an on-path relay or a NAT
rebinding) makes the real client drop its pending attempt and its ephemeral,
while the gateway keeps the committed, unconfirmed epoch.  The gateway never
flags an unconfirmed ring, so the session cannot rekey until its keys expire;
the way back (DEGRADED nudge) then makes the client ask with a NEW ephemeral,
which the gateway reports as SecurityKeyCompromiseSuspected and refuses:
the legitimate client is named a second key holder and stays wedged."""
from jvpn import wire
from jvpn.client_rekey import REKEY_RETRY_MS
from jvpn.gate import abi
from jvpn.session import State
from kits.client_bridge import Bridge
from kits.daemon_kit import (
    LISTEN,
    PEER_INNER,
    AdmitAll,
    Clock,
    events_of,
    ipv4,
    make_gateway,
)
from kits.rekey_kit import RekeyClient, gateway, policy

OTHER = ("198.51.100.9", 4444)


def test_refused_resend_strands_client_and_names_it_compromised(tmp_path):
    clock = Clock()
    gw = make_gateway(tmp_path, gate=AdmitAll(), clock=clock,
                      policy=policy(rekey_after_ms=100_000, reject_after_ms=200_000,
                                    expiry_terminates=False))
    b = Bridge(gw, clock)
    b.client.send_data(ipv4(PEER_INNER[0]))
    b.pump()
    sid = b.client.session_id
    sent = []
    real = b.to_gateway
    mode = {"drop_resp": False, "relay": False}

    def to_gateway(msg):
        sent.append(msg)
        if mode["relay"] and wire.parse_header(msg).type == abi.MSG_REKEY_INIT:
            n = len(gw.sock.sent)
            gw.datapath.datagram(msg, OTHER)
            for m, to in gw.sock.sent[n:]:
                if tuple(to) == OTHER:
                    b.inbox.append((m, LISTEN))  # forwarded to the client
            return
        n = len(gw.sock.sent)
        real(msg)
        if mode["drop_resp"]:
            for m, _to in gw.sock.sent[n:]:
                if wire.parse_header(m).type == abi.MSG_REKEY_RESP:
                    while b.inbox:
                        b.inbox.pop()
    b.to_gateway = to_gateway

    gw.table.request_rekey(sid)
    mode["drop_resp"] = True
    b.client.start_rekey()  # as on the gateway's FLAG_REKEY
    live = gw.table.get(sid)
    assert live.keys.epoch == 1 and not live.keys.confirmed  # committed, RESP lost
    mode["drop_resp"], mode["relay"] = False, True
    clock.ms += REKEY_RETRY_MS
    b.client.rekey_timers(clock.ms)  # the same request again ... relayed from OTHER
    b.pump()
    assert not events_of(b.events, "RekeyDenied")  # the relayed re-send got the stored RESP
    mode["relay"] = False
    assert b.client.rekeying.pending is None  # answered: the client is at epoch 1
    # the gateway never flags an unconfirmed ring: no way forward until expiry
    for _ in range(25):
        clock.ms += 10_000
        b.client.send_data(ipv4(PEER_INNER[0]))
        b.tick()
        b.pump()
        b.client.rekey_timers(clock.ms)
    named = events_of(gw.events, "SecurityKeyCompromiseSuspected")
    assert not named, f"the legitimate client was named a second key holder: {named[0]['detail']}"


def test_a_resend_while_recovering_gets_the_stored_resp(tmp_path):
    """The RESP was lost, then a reattach began (RECOVERING): the committed
    request's re-send still gets the stored answer, never a refusal that
    would make the client drop the ephemeral epoch 1 needs."""
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)  # committed; this RESP is lost
    [(_challenge, to)] = c.send(c.reattach_request(seq=1), src=OTHER)
    assert to == OTHER and c.record().state is State.RECOVERING
    again, _ = c.init(eph=eph, new_epoch=1, ask=False)
    for src in (None, OTHER):  # from the binding, and from the new path
        [(reply, to)] = c.send(again if src is None else c.init(eph=eph, new_epoch=1,
                                                                ask=False)[0], src=src)
        hdr, fields = c.opened(reply)
        assert hdr.type == abi.MSG_REKEY_RESP and fields == c.opened(resp)[1]
        assert to == (src or c.src)  # to its source, as a reattach's reply
    assert c.live().keys.epoch == 1 and c.record().key_epoch == 1
    assert not events_of(gw.events, "RekeyDenied")
