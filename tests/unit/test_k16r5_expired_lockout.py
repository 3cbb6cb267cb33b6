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


def test_a_degraded_by_expiry_session_whose_binding_died_is_ended_not_kept_for_ever(tmp_path):
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000,
                        expiry_terminates=False)
    c = RekeyClient(gw)
    clock.ms += 2_000
    gw.tick()
    assert c.record().state is State.DEGRADED
    n = len(gw.sock.sent)
    horizon = 4 * Policy.transport_lost_ttl_ms  # nothing from the binding all along
    for i in range(horizon // 1_000):
        clock.ms += 1_000
        if i % 3 == 0:  # the client, moved to NEW, retries its reattach
            assert c.send(c.reattach_request(seq=1 + i), src=NEW) == []
        gw.tick()
    live = gw.table.get(c.sid)
    nudges = len(gw.sock.sent) - n
    assert live is None or live.record.state is State.TERMINATED, (
        f"after {horizon / 1000:.0f} s with a dead binding: still {live.record.state.name}, "
        f"{nudges} nudges sent to the dead binding {live.record.binding}, the client's "
        "reattach refused unanswered: recoverable by nothing but a new handshake")
