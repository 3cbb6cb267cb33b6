"""Review R5 #3 (fixed: the session ends here too, through the table's
TERMINATED projection, RekeyDenied OWNERSHIP_CONFLICT). Before the fix:
SessionTable.refresh_keys after an ambiguous rekey commit reads the
store; when the store says the session is TERMINATED (an earlier write of
ours the store applied while reporting a failure, e.g. the client's
TERMINATE: table.transition only emits TransitionRejected), it returns False
and changes nothing: memory keeps serving a session the store has ended,
data keeps being delivered, and each re-send meets the same conflict
(RekeyDenied STORE_UNAVAILABLE) -- the one moment the gateway learned the
truth, it is ignored."""
from jvpn.session import Event, State, apply
from kits.daemon_kit import events_of
from kits.rekey_kit import RekeyClient, gateway


def test_refresh_keys_ignores_a_terminated_store_record(tmp_path):
    gw, clock = gateway(tmp_path)
    c = RekeyClient(gw)
    live = c.live()
    rec = live.record
    ended, _tr = apply(rec, Event.CLIENT_STOP, clock())
    gw.store.cas(rec.session_id, rec.version, ended)  # an ambiguous write that landed
    assert c.record().state is State.TERMINATED
    msg, _eph = c.init()
    out = c.send(msg)
    denied = [e["reason_code"] for e in events_of(gw.events, "RekeyDenied")]
    print("answers", len(out), "denied", denied, "memory state", c.live() and c.live().record.state)
    delivered = c.data()
    print("data delivered on a session the store ended:", delivered)
    assert c.live() is None or c.live().record.state is State.TERMINATED, \
        "the store said TERMINATED at the refresh, yet the session is still served"
    assert not delivered
    assert denied[-1:] == ["OWNERSHIP_CONFLICT"]


def test_refresh_keys_moves_another_owners_record_to_standby(tmp_path):
    """The store answers a refused commit with the record of another owner
    (a takeover the watch had not told us yet): served here no more, stood
    by, RekeyDenied OWNERSHIP_CONFLICT (review R5 #3, #7: adopted only is a
    newer version of OUR ownership)."""
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    rec = c.live().record
    moved = rec.with_(version=rec.version + 1, owner="gw-b")
    gw.store.cas(rec.session_id, rec.version, moved)
    msg, _eph = c.init()
    assert c.send(msg) == []
    assert c.live() is None and gw.table.remote_owners() == {c.sid: "gw-b"}
    assert [e["reason_code"] for e in events_of(gw.events, "RekeyDenied")] == [
        "OWNERSHIP_CONFLICT"]
    assert not c.data()
