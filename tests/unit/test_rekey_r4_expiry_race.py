"""Review R4 #6: keys that crossed reject_after_* between two ticks, on a
session still ATTACHED, commit no rekey: that would skip KeyExpired. The
refusal says KEY_EXPIRED when the policy terminates (the next tick ends the
session), else POLICY_DENY until the tick degrades it; from DEGRADED the
rekey is the way back, as before."""

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.session import State
from kits.daemon_kit import events_of
from kits.rekey_kit import RekeyClient, gateway


@pytest.mark.parametrize("terminates,reason", [(True, "KEY_EXPIRED"), (False, "POLICY_DENY")])
def test_expired_keys_between_two_ticks_commit_no_rekey(tmp_path, terminates, reason):
    gw, clock = gateway(tmp_path, rekey_after_ms=1_000, reject_after_ms=2_000,
                        expiry_terminates=terminates)
    c = RekeyClient(gw)
    clock.ms += 2_000  # expired, and no tick yet
    assert c.record().state is State.ATTACHED
    msg, _eph = c.init()
    [(rej, _to)] = c.send(msg)
    hdr, fields = c.opened(rej)
    assert hdr.type == abi.MSG_REKEY_REJECT and wire.REJECT_REASONS[fields[3]] == reason
    assert c.live().keys.epoch == 0 and c.record().key_epoch == 0  # nothing committed
    assert events_of(gw.events, "RekeyDenied")[-1]["reason_code"] == reason
    gw.tick()
    assert events_of(gw.events, "KeyExpired")  # not skipped
    if terminates:
        assert gw.table.get(c.sid) is None
        return
    assert c.record().state is State.DEGRADED
    msg, eph = c.init()
    [(resp, _to)] = c.send(msg)  # from DEGRADED: the way back
    c.finish(resp, eph)
    assert c.data() and c.record().state is State.ATTACHED
