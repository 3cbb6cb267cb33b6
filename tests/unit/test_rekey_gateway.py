"""The gateway's half of the rekey (docs/protocol.md "Rekey", steps 2, 3, 5,
the overlap, the attempts bound): through the daemon's own dispatch, with a
client built from jvpn.wire and jvpn.keys, an injected clock, and the
userspace-gate mode where the daemon's channels check every tag."""

from __future__ import annotations

import pytest

from jvpn import wire
from jvpn.gate import abi
from jvpn.keys import Ephemeral
from jvpn.store import StoreError
from jvpn.tunnel import FLAG_KEY_PHASE
from kits.daemon_kit import events_of
from kits.rekey_kit import RekeyClient, gateway


@pytest.fixture
def gw(tmp_path):
    g, _clock = gateway(tmp_path)
    return g


def denied(gw) -> list[str]:
    return [e["reason_code"] for e in events_of(gw.events, "RekeyDenied")]


def rejected(c: RekeyClient, out, src=None) -> str:
    """The reason of the one sealed REKEY_REJECT, sent to the request's source."""
    [(msg, to)] = out
    assert to == (src or c.src)
    hdr, (_asked, _epoch, _switch, reason, _request) = c.opened(msg)
    assert hdr.type == abi.MSG_REKEY_REJECT
    return wire.REJECT_REASONS[reason]


def test_a_rekey_commits_record_and_ring_in_one_write_then_answers_under_the_old_epoch(gw):
    c = RekeyClient(gw)
    before = c.record()
    msg, eph = c.init()
    [(resp, to)] = c.send(msg)
    assert to == c.src and not wire.parse_header(resp).flags & FLAG_KEY_PHASE  # epoch 0
    new = c.finish(resp, eph)  # the confirmation holds: the gateway derived the same keys
    rec = c.record()
    assert (rec.key_epoch, rec.version) == (1, before.version + 1)
    assert rec.keys_ms == gw.clock_ms() and rec.state is before.state
    ring = c.stored_ring()
    assert (ring.current, ring.previous, ring.confirmed) == (new, c.old, False)
    assert c.live().keys == ring and c.live().channel.send_keys == c.old  # still sends under E


def test_the_first_message_under_the_new_epoch_confirms_it(gw):
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    new = c.finish(resp, eph)
    assert c.data()  # under epoch 1: the confirmation
    assert c.stored_ring().confirmed and c.live().channel.send_keys == new
    [rotated] = events_of(gw.events, "KeyRotated")
    assert rotated["reason_code"] == "REKEY_CONFIRMED" and rotated["key_epoch"] == 1
    out = c.send(c.channel.seal(b"", abi.MSG_KEEPALIVE))  # the reply is under epoch 1
    assert out and wire.parse_header(out[0][0]).flags & FLAG_KEY_PHASE


def test_old_keys_pass_only_inside_the_overlap(tmp_path):
    gw, clock = gateway(tmp_path, rekey_overlap_ms=2_000)
    c = RekeyClient(gw)
    c.rekey()
    clock.ms += 1_999
    gw.tick()
    assert c.data(keys=c.old)  # inside the overlap
    clock.ms += 2
    gw.tick()
    assert not c.data(keys=c.old)  # dropped: memory, element, store
    assert c.data()
    assert c.stored_ring().previous is None and c.live().keys.previous is None
    reasons = [e["reason_code"] for e in events_of(gw.events, "KeyRotated")]
    assert reasons == ["REKEY_CONFIRMED", "PREVIOUS_KEYS_DROPPED"]


def test_a_replayed_init_changes_nothing_and_is_not_answered(gw):
    c = RekeyClient(gw)
    msg, _eph = c.init()
    [(_resp, _)] = c.send(msg)
    rec, ring = c.record(), c.stored_ring()
    assert c.send(msg) == []  # the same bytes (the same counter)
    assert denied(gw) == ["REPLAY_DETECTED"]
    assert (c.record(), c.stored_ring()) == (rec, ring)


def test_a_resend_for_an_epoch_already_reached_is_a_replay(gw):
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    c.finish(resp, eph)
    assert c.data()  # epoch 1 confirmed
    rec, ring = c.record(), c.stored_ring()
    again, _ = c.init(eph=eph, new_epoch=1)  # a delayed re-send, fresh counter, under epoch 1
    assert rejected(c, c.send(again)) == "REPLAY_DETECTED"
    assert denied(gw) == ["REPLAY_DETECTED"]
    assert (c.record(), c.stored_ring()) == (rec, ring)


def test_the_same_ephemeral_again_gets_the_stored_answer(gw):
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    rec, ring = c.record(), c.stored_ring()
    again, _ = c.init(eph=eph, new_epoch=1)  # re-sent: same ephemeral, new counter
    [(resp2, _)] = c.send(again)
    assert c.opened(resp2)[1] == c.opened(resp)[1]  # nothing derived again
    assert (c.record(), c.stored_ring()) == (rec, ring)


def test_a_lost_answer_is_sent_again_to_the_same_request_never_derived_twice(gw):
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(first, _)] = c.send(msg)  # its answer is lost; the client re-sends the same request
    again, _ = c.init(eph=eph, new_epoch=1, ask=False)
    [(resp, _)] = c.send(again)
    assert c.opened(resp)[1] == c.opened(first)[1]
    new = c.finish(resp, eph)
    assert c.data() and c.stored_ring().current == new and c.record().key_epoch == 1


def test_refusals_in_the_spec_order(gw):
    c = RekeyClient(gw)
    msg, _ = c.init()
    elsewhere = ("198.51.100.7", 6000)
    assert rejected(c, c.send(msg, src=elsewhere), elsewhere) == "POLICY_DENY"
    msg, _ = c.init(switch_epoch=7)
    assert rejected(c, c.send(msg)) == "FRESHNESS_INVALID"
    msg, _ = c.init(new_epoch=2)
    assert rejected(c, c.send(msg)) == "FRESHNESS_INVALID"
    msg, _ = c.init(new_epoch=0)
    assert rejected(c, c.send(msg)) == "REPLAY_DETECTED"
    assert denied(gw) == ["POLICY_DENY", "FRESHNESS_INVALID", "FRESHNESS_INVALID",
                          "REPLAY_DETECTED"]
    assert c.record().key_epoch == 0 and c.stored_ring().previous is None


def test_what_is_not_authentic_gets_nothing(gw):
    c = RekeyClient(gw)
    msg, _ = c.init()
    forged = msg[:-1] + bytes([msg[-1] ^ 1])  # the MAC
    assert c.send(forged) == [] and denied(gw) == []
    other = msg[:8] + (c.sid ^ 1).to_bytes(8, "little") + msg[16:]  # a session not served
    assert c.send(other) == []
    assert c.record().key_epoch == 0


def test_the_attempts_per_epoch_are_bounded(tmp_path, monkeypatch):
    """Every client ephemeral whose commit may have landed counts (review
    R1 #8, R5 #1): here the store answers nothing, neither the commit nor
    the read after it; past the bound no X25519 is made, while a re-send of
    a counted ephemeral is tried again (its derivation kept: no X25519)."""
    gw, _clock = gateway(tmp_path, max_rekey_attempts=2)
    c = RekeyClient(gw)
    made = []
    real = gw.rekey.ephemeral
    gw.rekey.ephemeral = lambda: (made.append(1), real())[1]

    def refused(*_a, **_k):
        raise StoreError("store unavailable (injected)")

    real_get = gw.store.get
    monkeypatch.setattr(gw.store, "cas", refused)

    def send(msg):  # the read after the refused commit gets no answer either
        monkeypatch.setattr(gw.store, "get", refused)
        try:
            return c.send(msg)
        finally:
            monkeypatch.setattr(gw.store, "get", real_get)

    for _ in range(2):
        msg, eph = c.init()
        assert send(msg) == []
    msg, _eph = c.init()
    assert rejected(c, send(msg)) == "RATE_LIMITED"
    again, _ = c.init(eph=eph, ask=False)
    assert send(again) == []  # the second ephemeral's re-send: counted once, tried
    assert denied(gw) == ["STORE_UNAVAILABLE", "STORE_UNAVAILABLE", "RATE_LIMITED",
                          "STORE_UNAVAILABLE"]
    assert len(made) == 2


def _keyed(element) -> tuple:
    """What a rekey's element replace changes (the control floor moves with
    any verified control message: not a key write)."""
    return tuple(element.tag_key), element.version


def test_a_store_failure_at_the_commit_changes_nothing(gw, monkeypatch):
    c = RekeyClient(gw)
    rec, ring, live = c.record(), c.stored_ring(), c.live()
    element = _keyed(gw.gate.model.sessions[c.sid])

    def refused(*_a, **_k):
        raise StoreError("store unavailable (injected)")

    monkeypatch.setattr(gw.store, "cas", refused)
    msg, _ = c.init()
    assert c.send(msg) == []  # no RESP
    monkeypatch.undo()
    assert (c.record(), c.stored_ring()) == (rec, ring)
    assert live.keys == ring and live.channel.ring == ring  # no keys in memory
    assert _keyed(gw.gate.model.sessions[c.sid]) == element  # no element write
    assert denied(gw) == ["STORE_UNAVAILABLE"]
    msg, eph = c.init()  # the client's next attempt succeeds
    [(resp, _)] = c.send(msg)
    c.finish(resp, eph)
    assert c.data()


def test_an_old_epoch_request_after_the_confirmation_is_a_second_key_holder(gw):
    c = RekeyClient(gw)
    c.rekey()
    msg, _ = c.init(new_epoch=1, switch_epoch=0, keys=c.old)  # someone else holds epoch 0
    assert rejected(c, c.send(msg)) == "REPLAY_DETECTED"
    [ev] = events_of(gw.events, "SecurityKeyCompromiseSuspected")
    assert ev["reason_code"] == "SEC_KEY_COMPROMISE_SUSPECTED"
    assert c.record().key_epoch == 1 and c.data()  # the session goes on under epoch 1


def test_fifty_rekeys_in_a_row(tmp_path):
    gw, clock = gateway(tmp_path, rekey_overlap_ms=0)
    c = RekeyClient(gw)
    for epoch in range(1, 51):
        c.rekey()
        clock.ms += 1
        gw.tick()
        assert c.record().key_epoch == epoch and c.stored_ring().previous is None
    assert c.data()


def test_the_ephemeral_of_the_gateway_is_fresh_per_attempt(gw):
    c = RekeyClient(gw)
    seen = set()
    for _ in range(3):
        msg, eph = c.init(eph=Ephemeral())
        [(resp, _)] = c.send(msg)
        seen.add(c.opened(resp)[1][4])
        c.finish(resp, eph)
        assert c.data()
    assert len(seen) == 3


def test_a_second_key_holder_is_named_whatever_it_asks(gw):
    c = RekeyClient(gw)
    c.rekey()
    msg, _ = c.init(new_epoch=9, switch_epoch=3, keys=c.old)
    assert rejected(c, c.send(msg, src=("203.0.113.66", 6666)), ("203.0.113.66", 6666)) \
        == "REPLAY_DETECTED"
    assert len(events_of(gw.events, "SecurityKeyCompromiseSuspected")) == 1


def test_a_store_failure_at_the_confirmation_leaves_it_to_the_next_message(tmp_path,
                                                                           monkeypatch):
    gw, clock = gateway(tmp_path)
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    new = c.finish(resp, eph)

    def refused(*_a, **_k):
        raise StoreError("store unavailable (injected)")

    monkeypatch.setattr(gw.store, "cas", refused)
    c.data()  # authentic under epoch 1, but the confirmation is not recorded
    monkeypatch.undo()
    assert not c.stored_ring().confirmed and not c.live().keys.confirmed
    assert c.live().channel.send_keys == c.old and events_of(gw.events, "KeyRotated") == []
    clock.ms += 100  # refused writes are tried again at most every 100 ms
    assert c.data()  # the next one confirms
    assert c.stored_ring().confirmed and c.live().channel.send_keys == new


@pytest.mark.parametrize("restart", [False, True])
def test_an_older_attempt_delivered_late_does_not_replace_the_pending_epoch(tmp_path, restart):
    from jvpn.store.sqlite import SqliteStore  # noqa: PLC0415
    from kits.daemon_kit import AdmitAll, make_gateway  # noqa: PLC0415
    from kits.rekey_kit import policy  # noqa: PLC0415

    gw, clock = gateway(tmp_path)
    c = RekeyClient(gw)
    held, _x = c.init()  # held back by an on-path attacker
    msg, eph = c.init()  # the client's next attempt (a newer counter)
    [(resp, _)] = c.send(msg)
    if restart:
        c.gw = make_gateway(tmp_path, store=SqliteStore(tmp_path / "s.db"), gate=AdmitAll(),
                            clock=clock, policy=policy())
        c.gw.reconcile()
    ring = c.stored_ring()
    assert rejected(c, c.send(held)) == "REPLAY_DETECTED"
    assert c.stored_ring() == ring
    c.finish(resp, eph)
    assert c.data() and c.stored_ring().confirmed


def test_the_clients_own_late_requests_are_not_a_second_key_holder(gw):
    c = RekeyClient(gw)
    held, _x = c.init()  # an older attempt, held back
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    resend, _ = c.init(eph=eph, new_epoch=1)  # a re-send that crossed the answer
    c.finish(resp, eph)
    assert c.data()  # epoch 1 confirmed
    assert rejected(c, c.send(held)) == "REPLAY_DETECTED"
    assert rejected(c, c.send(resend)) == "REPLAY_DETECTED"
    assert events_of(gw.events, "SecurityKeyCompromiseSuspected") == []
    assert c.record().key_epoch == 1 and c.data()


def test_the_next_request_under_the_new_epoch_confirms_it_first(gw):
    c = RekeyClient(gw)
    msg, eph = c.init()
    [(resp, _)] = c.send(msg)
    c.finish(resp, eph)
    msg, eph = c.init()  # epoch 2 asked under epoch 1, nothing else sent under 1 yet
    [(resp, _)] = c.send(msg)
    assert [e["key_epoch"] for e in events_of(gw.events, "KeyRotated")] == [1]
    c.finish(resp, eph)
    assert c.data() and c.record().key_epoch == 2
    assert [e["key_epoch"] for e in events_of(gw.events, "KeyRotated")] == [1, 2]
