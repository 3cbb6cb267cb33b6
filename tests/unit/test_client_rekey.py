"""Issue 13, the client's half of a rekey (docs/protocol.md "Rekey", steps 1
and 4; jvpn/client_rekey.py). The client is the real one on the injected
socket and clock of test_client_source; the gateway's side is scripted from
jvpn.keys and jvpn.wire (its DataChannel holds the gateway's key ring):
it answers the client's REKEY_INIT as the spec says, or as an attacker or a
stale path would."""

from __future__ import annotations

import pytest
from test_client_source import CL_PRIV, GW, GW_PRIV, SID, Rig

from jvpn import wire
from jvpn.client_rekey import REKEY_RETRY_MS, STOP_HOLD_MS
from jvpn.gate import abi
from jvpn.keys import (
    Ephemeral,
    RekeyBinding,
    derive_rekey,
    gateway_rekey_secret,
    public_from_private,
    rekey_confirm,
)
from jvpn.tunnel import FLAG_KEY_PHASE, FLAG_REATTACH, FLAG_REKEY, DataChannel

PACKET = bytes.fromhex("4500001c00000000401100000a4d64020a4d6401") + bytes(8)
OVERLAP_MS = 5_000


class ScriptedGateway:
    """The gateway's end of the rekey: its channel (a key ring) and the
    answers it would send."""

    def __init__(self, rig: Rig):
        self.rig = rig
        self.channel: DataChannel = rig.gateway.channel
        self._inits: list[tuple] = []

    def control(self, msg_type: int, *fields, keys=None) -> bytes:
        k = keys or self.channel.send_keys
        hdr = wire.Header(type=msg_type, session_id=SID, counter=self.channel.next_counter(),
                          flags=FLAG_KEY_PHASE if k.phase else 0)
        return wire.seal_control(hdr, k.hdr_s2c, k.reattach, *fields)

    def keepalive(self, flags: int = 0) -> bytes:
        return self.channel.seal(b"", abi.MSG_KEEPALIVE, flags)

    def inits(self) -> list[tuple]:
        """(header, (new_epoch, switch_epoch, client_ephemeral)) of every
        REKEY_INIT the client sent, opened as the gateway opened them (each
        when it was new: its epoch may be gone since)."""
        for m, _dst in self.rig.sent_of(abi.MSG_REKEY_INIT)[len(self._inits):]:
            self._inits.append(wire.open_control(m, self.channel.keys_for(m[2]).reattach))
        return list(self._inits)

    def answer(self, *, init=None, version=7, overlap_ms=OVERLAP_MS, confirm=None,
               commit=True, new_epoch=None) -> bytes:
        """The REKEY_RESP to ``init`` (default: the client's last request),
        sealed under the gateway's send epoch; ``commit``: the gateway's ring
        moves to the new epoch, unconfirmed (it still seals under the old)."""
        _hdr, (epoch, switch, client_pub) = init or self.inits()[-1]
        eph = Ephemeral()
        b = RekeyBinding(epoch, switch, version, client_pub, eph.public)
        shared = gateway_rekey_secret(eph, client_pub, GW_PRIV, public_from_private(CL_PRIV))
        new = derive_rekey(self.channel.ring.current, shared, b)
        resp = self.control(abi.MSG_REKEY_RESP, new_epoch if new_epoch is not None else epoch,
                            switch, version, overlap_ms, eph.public,
                            confirm or rekey_confirm(new, b))
        if commit:
            self.channel.set_keys(self.channel.ring.rotated(new))
        return resp

    def reject(self, reason: str, *, asked: int | None = None, switch: int = 0,
               init=None) -> bytes:
        """The refusal of ``init`` (default: the client's last request),
        naming its header counter."""
        hdr, (new_epoch, _switch, _pub) = init or self.inits()[-1]
        return self.control(abi.MSG_REKEY_REJECT, new_epoch if asked is None else asked,
                            self.channel.ring.epoch, switch,
                            wire.REJECT_REASONS.index(reason), hdr.counter)

    def hear(self, msg: bytes):
        """The gateway opens a client message; one under its unconfirmed
        epoch confirms it (step 5)."""
        opened = self.channel.open(msg)
        ring = self.channel.ring
        if opened and not ring.confirmed and self.channel.keys_for(opened[1]) is ring.current:
            self.channel.set_keys(ring.with_confirmed())
        return opened


@pytest.fixture
def rig():
    r = Rig()
    r.gw = ScriptedGateway(r)
    return r


def _flag(rig) -> None:
    rig.client.receive(rig.gw.keepalive(FLAG_REKEY), GW)


def _events(rig, event_type: str) -> list[dict]:
    return [e for e in rig.events.recent if e["event_type"] == event_type]


def _rekey(rig) -> None:
    """One whole exchange: the flag, the request, the answer, the
    client's confirmation heard by the gateway."""
    _flag(rig)
    rig.client.receive(rig.gw.answer(), GW)
    assert rig.gw.hear(rig.sent_of(abi.MSG_KEEPALIVE)[-1][0]) is not None


def _state(rig) -> tuple:
    st = rig.client.rekeying
    return rig.client.channel.ring, st.pending, st.overlap_ms, rig.client.keys


def test_a_full_exchange_moves_both_directions_to_epoch_1(rig):
    client = rig.client
    _flag(rig)
    [(hdr, (new_epoch, switch, _pub))] = rig.gw.inits()
    assert (new_epoch, switch) == (1, client.epoch) and not hdr.flags & FLAG_KEY_PHASE
    _flag(rig)  # asked again while the attempt is pending: no second attempt
    assert len(rig.gw.inits()) == 1
    client.receive(rig.gw.answer(version=11), GW)
    ring = client.channel.ring
    assert ring.epoch == 1 and client.channel.send_keys.epoch == 1 and ring.previous.epoch == 0
    assert client.rekeying.pending is None  # the ephemeral is forgotten
    # the confirmation went out at once, under the new epoch
    confirmation = rig.sent_of(abi.MSG_KEEPALIVE)[-1][0]
    assert confirmation[2] & FLAG_KEY_PHASE and rig.gw.hear(confirmation) is not None
    assert rig.gw.channel.ring.confirmed and rig.gw.channel.send_keys.epoch == 1
    [rotated] = _events(rig, "KeyRotated")
    assert rotated["key_epoch"] == 1 and rotated["reason_code"] == "KEY_ROTATED"
    # data both ways under epoch 1
    client.send_data(PACKET)
    sent = rig.sent_of(abi.MSG_DATA)[-1][0]
    assert sent[2] & FLAG_KEY_PHASE and rig.gw.hear(sent)[2] == PACKET
    client.receive(rig.gw.channel.seal(PACKET), GW)
    assert client.tun.written[-1] == PACKET


def test_fifty_consecutive_rekeys_keep_the_session(rig):
    client, sid = rig.client, rig.client.session_id
    for epoch in range(1, 51):
        _rekey(rig)
        client.receive(rig.gw.keepalive(), GW)  # the gateway's first message under it
        rig.clock.ms += OVERLAP_MS
        client.rekey_timers(rig.clock.ms)
        rig.gw.channel.set_keys(rig.gw.channel.ring.without_previous())
        assert client.channel.ring.epoch == epoch and client.channel.ring.previous is None
    assert client.session_id == sid and client.failed is None
    assert len(_events(rig, "KeyRotated")) == 50 and not _events(rig, "RekeyDenied")
    client.send_data(PACKET)
    assert rig.gw.hear(rig.sent_of(abi.MSG_DATA)[-1][0])[2] == PACKET
    client.receive(rig.gw.channel.seal(PACKET), GW)
    assert client.tun.written[-1] == PACKET


@pytest.mark.parametrize("bad, reason", [
    ({"confirm": b"\x5a" * 32}, "AUTH_FAIL"),
    ({"new_epoch": 0}, "REPLAY_DETECTED"),   # names an epoch already reached
    ({"new_epoch": 2}, "FRESHNESS_INVALID"),  # names an epoch not asked for
], ids=["bad-confirm", "old-epoch", "future-epoch"])
def test_a_wrong_answer_changes_nothing(rig, bad, reason):
    _flag(rig)
    before = _state(rig)
    rig.client.receive(rig.gw.answer(commit=False, **bad), GW)
    assert _state(rig) == before and rig.client.channel.send_keys.epoch == 0
    assert not _events(rig, "KeyRotated")
    [denied] = _events(rig, "RekeyDenied")
    assert denied["reason_code"] == reason
    # the attempt stays: the genuine answer still works
    rig.client.receive(rig.gw.answer(), GW)
    assert rig.client.channel.ring.epoch == 1


def test_an_older_attempts_answer_does_not_verify(rig):
    """Attempt A is refused; attempt B (a new ephemeral) is pending; A's
    answer (same epoch, a fresh counter) is bound to A's ephemeral."""
    _flag(rig)
    init_a = rig.gw.inits()[-1]
    resp_a = rig.gw.answer(init=init_a, commit=False)
    rig.client.receive(rig.gw.reject("POLICY_DENY"), GW)
    _flag(rig)
    init_b = rig.gw.inits()[-1]
    assert init_b[1][2] != init_a[1][2]  # a new attempt, a new ephemeral
    before = _state(rig)
    rig.client.receive(resp_a, GW)
    assert _state(rig) == before and rig.client.rekeying.pending is before[1]
    assert _events(rig, "RekeyDenied")[-1]["reason_code"] == "AUTH_FAIL"


def test_a_replayed_answer_dies_in_the_control_window(rig):
    _flag(rig)
    resp = rig.gw.answer()
    rig.client.receive(resp, GW)
    after = _state(rig)
    rig.client.receive(resp, GW)  # the same bytes, the same counter
    assert _state(rig) == after and len(_events(rig, "KeyRotated")) == 1
    assert not _events(rig, "RekeyDenied")  # dropped before it was even read


def test_a_late_answer_never_moves_the_keys_back(rig):
    """Another answer of epoch 1's exchange (a fresh counter, under epoch 0,
    still heard in the overlap), delivered once the client asks for epoch 2:
    it names an epoch already reached. After epoch 2 it does not even open."""
    _flag(rig)
    late = rig.gw.answer(commit=False)
    later = rig.gw.answer(commit=False)
    rig.client.receive(rig.gw.answer(), GW)
    rig.gw.hear(rig.sent_of(abi.MSG_KEEPALIVE)[-1][0])
    _flag(rig)  # under epoch 1: the next attempt
    before = _state(rig)
    assert before[1].new_epoch == 2
    rig.client.receive(late, GW)
    assert _state(rig) == before
    assert _events(rig, "RekeyDenied")[-1]["reason_code"] == "REPLAY_DETECTED"
    rig.client.receive(rig.gw.answer(), GW)
    rig.gw.hear(rig.sent_of(abi.MSG_KEEPALIVE)[-1][0])
    denied = len(_events(rig, "RekeyDenied"))
    rig.client.receive(later, GW)
    assert rig.client.channel.ring.epoch == 2 and len(_events(rig, "RekeyDenied")) == denied


def test_an_unanswered_request_is_sent_again_with_the_same_ephemeral(rig):
    fixed = Ephemeral()
    rig.client.ephemeral_factory = lambda: fixed  # the injected randomness
    _flag(rig)
    assert rig.gw.inits()[0][1][2] == fixed.public
    rig.clock.ms += REKEY_RETRY_MS - 1
    rig.client.rekey_timers(rig.clock.ms)
    assert len(rig.gw.inits()) == 1
    rig.clock.ms += 1
    rig.client.rekey_timers(rig.clock.ms)
    (h1, f1), (h2, f2) = rig.gw.inits()
    assert f1 == f2 and h2.counter > h1.counter
    rig.client.receive(rig.gw.answer(init=(h1, f1)), GW)  # either copy's answer is the same
    assert rig.client.channel.ring.epoch == 1


def test_the_previous_epoch_is_heard_until_the_overlap_after_the_first_new_message(rig):
    client = rig.client
    old = DataChannel(rig.gw.channel.ring.current, "gateway", first_counter=1_000)
    _flag(rig)
    client.receive(rig.gw.answer(), GW)
    # the gateway has not heard the confirmation: it still seals under epoch 0
    rig.clock.ms += 60_000
    client.receive(rig.gw.keepalive(), GW)
    assert client.last_rx_ms == rig.clock.ms  # no overlap clock yet: epoch 0 is heard
    rig.gw.hear(rig.sent_of(abi.MSG_KEEPALIVE)[-1][0])
    client.receive(rig.gw.keepalive(), GW)  # the first under epoch 1
    first = rig.clock.ms
    rig.clock.ms = first + OVERLAP_MS - 1
    client.rekey_timers(rig.clock.ms)
    client.receive(old.seal(PACKET), GW)
    assert client.tun.written[-1] == PACKET and client.channel.ring.previous is not None
    rig.clock.ms = first + OVERLAP_MS
    client.rekey_timers(rig.clock.ms)
    assert client.channel.ring.previous is None
    n = len(client.tun.written)
    client.receive(old.seal(PACKET), GW)
    assert len(client.tun.written) == n  # refused
    client.receive(rig.gw.channel.seal(PACKET), GW)
    assert len(client.tun.written) == n + 1


def test_a_flag_under_the_previous_epoch_starts_nothing(rig):
    """The gateway's messages under epoch 0 sent before it heard the
    confirmation still carry its request: not a request for epoch 2."""
    _flag(rig)
    rig.client.receive(rig.gw.answer(), GW)
    _flag(rig)  # the gateway still seals under 0
    assert len(rig.gw.inits()) == 1


def test_no_rekey_starts_during_a_reattach(rig):
    rig.client.start_reattach("test")
    _flag(rig)
    assert rig.gw.inits() == []
    seq = rig.client.pending.seq
    rig.client.receive(rig.gw.control(abi.MSG_REATTACH_ACK, seq, rig.client.epoch + 1, 9), GW)
    _flag(rig)
    [(_hdr, (_e, switch, _pub))] = rig.gw.inits()
    assert switch == rig.client.epoch == 1


def test_a_reattach_during_a_rekey_keeps_it_pending(rig):
    """The request waits (no re-send while the reattach is pending), the
    answer may still come, and the reattach's request from then on is
    sealed under the new epoch."""
    _flag(rig)
    rig.client.start_reattach("test")
    rig.clock.ms += 5 * REKEY_RETRY_MS
    rig.client.rekey_timers(rig.clock.ms)
    assert len(rig.gw.inits()) == 1 and rig.client.rekeying.pending is not None
    rig.client.receive(rig.gw.answer(), GW)
    assert rig.client.channel.ring.epoch == 1 and rig.client.pending is not None
    rig.client.retry_reattach()
    req = rig.sent_of(abi.MSG_REATTACH_REQ)[-1][0]
    assert req[2] & FLAG_KEY_PHASE
    hdr, fields = rig.gw.channel.open_control(req)
    assert fields[3] == rig.client.epoch and hdr.type == abi.MSG_REATTACH_REQ


def test_a_refusal_for_now_waits_for_the_next_request(rig):
    _flag(rig)
    first = rig.gw.inits()[-1][1][2]
    rig.client.receive(rig.gw.reject("POLICY_DENY"), GW)
    assert rig.client.rekeying.pending is None
    assert _events(rig, "RekeyDenied")[-1]["reason_code"] == "POLICY_DENY"
    rig.clock.ms += 10 * REKEY_RETRY_MS
    rig.client.rekey_timers(rig.clock.ms)
    assert len(rig.gw.inits()) == 1  # no re-send of a refused attempt
    _flag(rig)
    assert rig.gw.inits()[-1][1][2] != first


def test_a_final_refusal_stops_the_requests_for_this_epoch(rig):
    _flag(rig)
    rig.client.receive(rig.gw.reject("RATE_LIMITED"), GW)
    _flag(rig)
    rig.clock.ms += 10 * REKEY_RETRY_MS
    rig.client.rekey_timers(rig.clock.ms)
    assert len(rig.gw.inits()) == 1
    assert rig.client.failed is None and not rig.client._stop.is_set()  # age never ends it


def test_a_refusal_of_another_attempt_keeps_the_pending_one(rig):
    _flag(rig)
    rig.client.receive(rig.gw.reject("RATE_LIMITED", asked=5), GW)
    assert rig.client.rekeying.pending is not None
    rig.client.receive(rig.gw.answer(), GW)
    assert rig.client.channel.ring.epoch == 1


def test_a_stale_switch_epoch_after_a_reattach_starts_a_new_attempt(rig):
    _flag(rig)
    rig.client.start_reattach("test")
    rig.client.receive(rig.gw.control(abi.MSG_REATTACH_ACK, rig.client.pending.seq, 1, 9), GW)
    rig.client.receive(rig.gw.reject("FRESHNESS_INVALID", switch=1), GW)
    (_h1, (_e1, s1, p1)), (_h2, (e2, s2, p2)) = rig.gw.inits()
    assert (s1, s2, e2) == (0, 1, 1) and p1 != p2


def test_a_newer_switch_epoch_is_not_adopted_from_a_rekey_refusal(rig):
    _flag(rig)
    rig.client.receive(rig.gw.reject("FRESHNESS_INVALID", switch=4), GW)
    assert rig.client.epoch == 0  # not adopted ...
    assert rig.client.pending is not None  # ... the client asks through a reattach
    req = rig.sent_of(abi.MSG_REATTACH_REQ)[-1][0]
    assert rig.gw.channel.open_control(req)[1][3] == 0


def test_a_terminate_for_expired_keys_ends_the_client_with_why(rig):
    rig.client.receive(rig.gw.control(abi.MSG_TERMINATE,
                                      wire.TERMINATE_REASONS.index("KEY_EXPIRED")), GW)
    assert rig.client.failed == "KEY_EXPIRED" and rig.client._stop.is_set()
    assert rig.client.ended.startswith("session ended by the gateway: KEY_EXPIRED: ")
    assert "keys.reject_after_ms" in rig.client.ended and "\n" not in rig.client.ended


def test_with_reconnect_expired_keys_are_renewed_and_said(rig):
    rig.client.reconnect = True
    rig.client.receive(rig.gw.control(abi.MSG_TERMINATE,
                                      wire.TERMINATE_REASONS.index("KEY_EXPIRED")), GW)
    assert rig.client.renewing and not rig.client._stop.is_set()


def test_a_new_session_starts_with_no_attempt(rig):
    _flag(rig)
    assert rig.client.rekeying.pending is not None
    rig.client.handshake(attempts=1)
    assert rig.client.rekeying.pending is None and rig.client.channel.ring.epoch == 0


def test_a_reattach_in_the_overlap_answers_under_the_new_epoch(rig):
    """The gateway, not yet confirmed, challenges under epoch 0: the client
    opens it (the phase names epoch 0, still live) and answers under 1."""
    _flag(rig)
    rig.client.receive(rig.gw.answer(), GW)
    rig.client.start_reattach("test")
    _hdr, (_seq, _ts, nonce, _epoch) = rig.gw.channel.open_control(
        rig.sent_of(abi.MSG_REATTACH_REQ)[-1][0])
    challenge = rig.gw.control(abi.MSG_PATH_CHALLENGE, b"\x07" * 16, nonce)
    assert not challenge[2] & FLAG_KEY_PHASE  # sealed under epoch 0
    rig.client.receive(challenge, GW)
    [(answer, _dst)] = rig.sent_of(abi.MSG_PATH_RESPONSE)
    assert answer[2] & FLAG_KEY_PHASE
    assert rig.gw.channel.open_control(answer)[1] == (b"\x07" * 16, nonce)


def test_both_flags_at_once_start_the_reattach_first(rig):
    rig.client.receive(rig.gw.keepalive(FLAG_REKEY | FLAG_REATTACH), GW)
    assert rig.client.pending is not None and rig.gw.inits() == []


def test_an_unknown_refusal_reason_reads_as_a_refusal_for_now(rig):
    _flag(rig)
    hdr, (asked, _switch, _pub) = rig.gw.inits()[-1]
    rig.client.receive(rig.gw.control(abi.MSG_REKEY_REJECT, asked, 0, 0, 200, hdr.counter), GW)
    assert rig.client.rekeying.pending is None
    assert _events(rig, "RekeyDenied")[-1]["reason_code"] == "POLICY_DENY"
    _flag(rig)
    assert len(rig.gw.inits()) == 2


def test_a_late_refusal_of_an_older_attempt_does_not_cancel_the_new_one(rig):
    """Review R2 #4: a genuine refusal of attempt A's re-send, held back on
    the path, names A's request counter: it does not end attempt B (same
    epoch), whose genuine answer then completes the rekey."""
    c = rig.client
    _flag(rig)  # attempt A
    rig.clock.ms += REKEY_RETRY_MS
    c.rekey_timers(rig.clock.ms)  # A re-sent
    first, resent = rig.gw.inits()
    r1 = rig.gw.reject("POLICY_DENY", init=first)
    r2 = rig.gw.reject("POLICY_DENY", init=resent)  # held back
    c.receive(r1, GW)
    assert c.rekeying.pending is None
    _flag(rig)  # attempt B, a new ephemeral, the same epoch
    b = c.rekeying.pending
    resp_b = rig.gw.answer()
    c.receive(r2, GW)  # A's late refusal
    assert c.rekeying.pending is b
    c.receive(resp_b, GW)
    assert c.channel.ring.epoch == 1 == rig.gw.channel.ring.epoch


def test_a_refusal_naming_no_counter_of_the_attempt_is_only_logged(rig):
    _flag(rig)
    p = rig.client.rekeying.pending
    hdr, (asked, _switch, _pub) = rig.gw.inits()[-1]
    rig.client.receive(rig.gw.control(abi.MSG_REKEY_REJECT, asked, 0, 0,
                                      wire.REJECT_REASONS.index("RATE_LIMITED"),
                                      hdr.counter + 1), GW)
    assert rig.client.rekeying.pending is p and rig.client.rekeying.stopped_epoch is None
    assert _events(rig, "RekeyDenied")[-1]["reason_code"] == "RATE_LIMITED"


def test_flagged_again_long_after_a_final_refusal_the_client_asks_once_more(rig):
    """A session DEGRADED by expired keys is flagged until a rekey brings it
    back: a stop is not for ever (review R2 #3)."""
    _flag(rig)
    rig.client.receive(rig.gw.reject("RATE_LIMITED"), GW)
    rig.clock.ms += STOP_HOLD_MS - 1
    _flag(rig)
    assert len(rig.gw.inits()) == 1
    rig.clock.ms += 1
    _flag(rig)
    assert len(rig.gw.inits()) == 2 and rig.client.rekeying.pending is not None
