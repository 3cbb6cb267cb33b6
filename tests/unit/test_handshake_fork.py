"""Review R4 #3: each response is tried on an independent copy of the
initiator's Noise state as it was after msg1 (no rebuild per reply): any
number of forged replies, or the genuine one read before, leave the kept
state as it was."""
from __future__ import annotations

import os

from jvpn.gate import abi
from kits.daemon_kit import CLIENT, Clock, initiation, make_gateway


def _forged() -> bytes:
    return bytes([abi.MSG_HANDSHAKE_RESP]) + os.urandom(91)


def test_forged_replies_leave_the_state_for_the_genuine_one(tmp_path):
    gw = make_gateway(tmp_path, clock=Clock())
    init = initiation(clock_ms=gw.clock_ms)
    n = len(gw.sock.sent)
    gw.datapath.datagram(init.initiation(), CLIENT)
    [(resp, _)] = gw.sock.sent[n:]
    for _ in range(5):
        try:
            init.response(_forged())
        except Exception:  # noqa: BLE001 - HandshakeError, or the header check
            pass
        try:
            init.response(resp[:-1] + bytes([resp[-1] ^ 1]))  # the genuine one, one bit off
        except Exception:  # noqa: BLE001
            pass
    first, again = init.response(resp), init.response(resp)  # a fork each: read twice
    assert first == again and first[0].session_id in gw.table.sessions
