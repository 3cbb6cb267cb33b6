"""Review k16r3 proofs of concept (adversarial review of k16fixR1/R2).
Each test states the property that should hold; they fail on main at
ed452a1."""

from __future__ import annotations

from jvpn.gate import abi
from jvpn.session import State
from kits.daemon_kit import events_of
from kits.rekey_kit import RekeyClient, gateway

NEW = ("198.51.100.77", 40_000)


def test_a_reattach_proven_under_an_expired_current_epoch_moves_nothing_and_seals_nothing(
        tmp_path):
    """Review k16r2 #2b made the data path refuse the current epoch past
    reject_after_* at use, before the key-expiry timer runs (a backlog). The
    control path does not: a REATTACH_REQ proven with the expired keys is
    answered (a challenge sealed under them) and its PATH_RESPONSE moves the
    binding (ACK sealed under them too): the expired keys still prove
    possession and still seal, for as long as the timer is late."""
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000)
    c = RekeyClient(gw)
    clock.ms += 2_000  # past reject_after_ms; no tick yet (a backlog)
    assert not c.data()  # the data path refuses the expired epoch (k16r2 #2b)
    sent = c.send(c.reattach_request(seq=1), src=NEW)
    moved = False
    if sent:
        _hdr, (server_nonce, client_nonce) = c.opened(sent[0][0])
        c.send(c.control(abi.MSG_PATH_RESPONSE, server_nonce, client_nonce), src=NEW)
        moved = c.record().binding.port == NEW[1]
    assert sent == [] and not moved, (
        f"sealed {len(sent)} control message(s) under expired keys; binding moved: {moved}")
    assert c.record().state is State.ATTACHED and not events_of(gw.events, "KeyExpired")
