"""Review R5 #5 (fixed: the stored-answer path also needs a counter above the
stored key_c2s_base; a stale counter from a foreign source, or the committed request itself,
is unanswered).
Before the fix: what "fresh" means on the stored-answer path.  The counter check
is the in-memory control window (and the gate's control floor), neither of
which survives a restart of the (userspace-gate) gateway, while the stored
answer does.  A copy of the client's committed REKEY_INIT captured by a
man-on-the-side, replayed after the restart from ANY source, gets the
stored RESP sent to that source (a reflection), before the binding and
state checks."""
from jvpn.gate import abi
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import AdmitAll, events_of, make_gateway
from kits.rekey_kit import RekeyClient, gateway, policy


def restart(c, tmp_path, clock) -> None:  # as tests/unit/test_rekey_restart.py
    c.gw = make_gateway(tmp_path, store=SqliteStore(tmp_path / "s.db"), gate=AdmitAll(),
                        clock=clock, policy=policy())
    c.gw.reconcile()

VICTIM = ("203.0.113.77", 53)


def test_captured_init_replayed_after_restart_reflects_resp(tmp_path):
    gw, clock = gateway(tmp_path)
    c = RekeyClient(gw)
    msg, _eph = c.init()
    [(_resp, _)] = c.send(msg)  # committed; the attacker copies msg
    assert c.send(msg, VICTIM) == []  # before the restart: the copy dies (window)
    restart(c, tmp_path, clock)
    out = c.send(msg, VICTIM)  # the same captured bytes, from a spoofed source
    print("after restart, replay from", VICTIM, "->", [(len(m), to) for m, to in out])
    print("gateway events:", [e["type"] for e in c.gw.events.records][-5:]
          if hasattr(c.gw.events, "records") else "")
    assert not any(tuple(to) == VICTIM for _m, to in out), \
        "a replayed (stale-counter) REKEY_INIT reflected a RESP to a spoofed source"


def test_the_committed_request_from_the_binding_after_restart_is_no_reject(tmp_path):
    """A delayed copy of the committed request from the binding after a
    restart: no REJECT naming it (it would end the client's attempt while
    E+1 is committed), unanswered; the client's own re-send still gets the
    stored RESP."""
    gw, clock = gateway(tmp_path)
    c = RekeyClient(gw)
    msg, eph = c.init()
    assert len(c.send(msg)) == 1  # committed; the RESP is lost
    restart(c, tmp_path, clock)
    assert c.send(msg) == []
    assert events_of(c.gw.events, "RekeyDenied")[-1]["reason_code"] == "REPLAY_DETECTED"
    again, _ = c.init(eph=eph, ask=False)
    [(resp, to)] = c.send(again)
    assert c.opened(resp)[0].type == abi.MSG_REKEY_RESP and to == c.src
