"""Review R5 #4 (fixed: POLICY_DENY before deriving). Before the fix the
rekey validator never looked at ``live.quarantined``.  A
session whose revocation the store refused (quarantined, permanent: "it
ends, it is not rekeyed" says the operator socket) still commits a full
rekey (X25519, a store write of fresh keys) for the revoked peer and gets
it a RESP: the revoked key holder obtains a new epoch's keys, and the store
gets a fresh secrets value for a session that must end."""
from jvpn.gate import abi
from kits.daemon_kit import events_of
from kits.rekey_kit import RekeyClient, gateway


def test_a_revocation_quarantined_session_still_rekeys(tmp_path):
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    gw.table.request_rekey(c.sid)  # asked before the revocation (or: keys old)
    gw.table.quarantine(c.sid)  # the revocation the store refused (revocation.py)
    live = gw.table.get(c.sid)
    assert live.quarantined and not live.quarantine_lifts
    msg, _eph = c.init(ask=False)
    out = c.send(msg)
    types = [c.opened(m)[0].type for m, _ in out]
    print("answers:", types, "ring epoch", gw.table.get(c.sid).keys.epoch,
          "denied", [e["reason_code"] for e in events_of(gw.events, "RekeyDenied")])
    assert abi.MSG_REKEY_RESP not in types, "a revoked (quarantined) peer was given a new epoch"
    assert gw.table.get(c.sid).keys.epoch == 0
