"""Review k16r5 (PoC, failing): a session DEGRADED by expired keys
(keys.expiry_terminates = false) whose binding's path died cannot come back
(the reattach under its expired keys is refused unanswered, review k16r3;
the rekey must come from the binding, which is dead), yet it is never ended
either: the gateway nudges the dead binding every REKEY_NUDGE_MS for ever
and the session keeps its slot. Its client hears nothing authenticated and
only leaves after OrphanTimeout (20 s; with the default Reconnect = no it
then exits)."""

from __future__ import annotations

from jvpn.policy import Policy
from jvpn.session import State
from kits.rekey_kit import RekeyClient, gateway

NEW = ("198.51.100.77", 40_000)


def test_a_degraded_by_expiry_session_whose_binding_died_is_ended_within_the_ttl(tmp_path):
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000,
                        expiry_terminates=False)
    c = RekeyClient(gw)
    start = clock.ms  # the binding's last authenticated message: the handshake
    clock.ms += 2_000
    gw.tick()
    assert c.record().state is State.DEGRADED
    ttl = Policy.transport_lost_ttl_ms
    ended_at = None
    for i in range(4 * ttl // 1_000):  # nothing from the binding all along
        clock.ms += 1_000
        if i % 3 == 0:  # the client, moved to NEW, retries its reattach: refused unanswered
            assert c.send(c.reattach_request(seq=1 + i), src=NEW) == []
        gw.tick()
        live = gw.table.get(c.sid)
        if live is None or live.record.state is State.TERMINATED:
            ended_at = clock.ms
            break
    assert ended_at is not None, "still DEGRADED, nudging a dead binding, its slot held"
    assert ended_at - start <= ttl + 1_000  # the TTL, give or take a tick
    assert gw.store.get(c.sid) is None or c.record().state is State.TERMINATED
