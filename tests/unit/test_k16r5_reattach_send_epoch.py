"""Review k16r5 (PoC): the k16r3 fix refuses a reattach by the epoch the
client's message OPENED under, but its replies are sealed under the ring's
SEND epoch. After a rekey from DEGRADED the send epoch is the expired
previous one until the confirmation is written; a reattach under the new
epoch confirms it first, but a failing store (threat model: a failing or
slow store) leaves it unconfirmed and the message is handled anyway
(jvpn/gateway/control.py _keys_used): its challenge is sealed under the
expired epoch 0. Probes check key_age.sending_expired for this; reattach
replies do not."""

from __future__ import annotations

from test_rekey_expiry import NEW, _rekeyed_from_degraded

from jvpn import wire
from jvpn.store import StoreError
from jvpn.tunnel import FLAG_KEY_PHASE


def test_no_reattach_reply_is_sealed_under_the_expired_send_epoch(tmp_path, monkeypatch):
    gw, _clock, c = _rekeyed_from_degraded(tmp_path)

    def refused(*_a, **_k):
        raise StoreError("store unavailable")

    monkeypatch.setattr(gw.table, "confirm_keys", refused)
    before = c.record()
    sent = c.send(c.reattach_request(seq=1), src=NEW)  # under the fresh epoch 1
    assert not c.live().keys.confirmed
    under_epoch_0 = [m for m, _to in sent if not wire.parse_header(m).flags & FLAG_KEY_PHASE]
    assert under_epoch_0 == [], (
        f"{len(under_epoch_0)} reattach reply(ies) sealed under the expired epoch 0")
    assert c.record() == before  # refused before its commit: nothing changed
