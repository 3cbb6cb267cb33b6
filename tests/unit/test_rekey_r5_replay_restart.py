"""Review R5 #5 (fixed: the stored-answer path also needs a counter above the
stored key_c2s_base; a stale counter from a foreign source is unanswered).
Before the fix: what "fresh" means on the stored-answer path.  The counter check
is the in-memory control window (and the gate's control floor), neither of
which survives a restart of the (userspace-gate) gateway, while the stored
answer does.  A copy of the client's committed REKEY_INIT captured by a
man-on-the-side, replayed after the restart from ANY source, gets the
stored RESP sent to that source (a reflection), before the binding and
state checks."""
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import AdmitAll, make_gateway
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
