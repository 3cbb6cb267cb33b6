"""The state machine table: every legal pair, every illegal pair, invariants."""

import itertools

import pytest

from jvpn.session import TRANSITIONS, Event, IllegalTransition, State, Transport, apply, new_session

T1 = Transport("192.0.2.10", 5555)
LEGAL = {
    (State.BIRTH, Event.ATTACH_OK): State.ATTACHED,
    (State.ATTACHED, Event.INSTABILITY_DETECTED): State.VOLATILE,
    (State.VOLATILE, Event.SWITCH_INITIATED): State.RECOVERING,
    (State.RECOVERING, Event.REATTACH_VALID): State.ATTACHED,
    (State.RECOVERING, Event.REATTACH_INVALID): State.DEGRADED,
    (State.VOLATILE, Event.RECOVERY_TIMEOUT): State.DEGRADED,
    (State.DEGRADED, Event.SWITCH_INITIATED): State.RECOVERING,
    # issue 13: expired keys degrade (policy), a rekey from the binding ends it
    (State.ATTACHED, Event.KEYS_AGED): State.DEGRADED,
    (State.VOLATILE, Event.KEYS_AGED): State.DEGRADED,
    (State.RECOVERING, Event.KEYS_AGED): State.DEGRADED,
    (State.DEGRADED, Event.REKEY_OK): State.ATTACHED,
}
for s in State:
    if s is not State.TERMINATED:
        for e in (Event.SESSION_TTL_EXPIRED, Event.TRANSPORT_TTL_EXPIRED,
                  Event.OPERATOR_TERMINATE, Event.POLICY_TERMINATE, Event.PEER_REVOKED,
                  Event.CLIENT_STOP,  # CLIENT_STOP: issue 12, the client's TERMINATE
                  Event.KEYS_EXPIRED):  # issue 13: keys refused, policy terminates
            LEGAL[(s, e)] = State.TERMINATED


def _rec(state):
    return new_session(1, 0).with_(state=state, version=5, binding=T1, candidate=T1)


def test_table_is_exactly_the_seed():
    assert {k: v[0] for k, v in TRANSITIONS.items()} == LEGAL


@pytest.mark.parametrize("state,event", list(itertools.product(State, Event)),
                         ids=lambda x: getattr(x, "name", None) or x.value)
def test_every_pair(state, event):
    rec = _rec(state)
    if (state, event) in LEGAL:
        new, tr = apply(rec, event, 10)
        assert new.state is LEGAL[(state, event)] and tr.new is new.state
        assert new.version == rec.version + 1 == tr.version
        assert tr.reason_code and tr.previous is state
    else:
        with pytest.raises(IllegalTransition) as err:
            apply(rec, event, 10)
        assert err.value.reason_code == "FATAL_PROTOCOL_ERROR"


def test_terminated_is_absorbing():
    rec = _rec(State.TERMINATED)
    for e in Event:
        with pytest.raises(IllegalTransition):
            apply(rec, e, 1)


def test_attached_needs_a_binding_and_recovering_a_candidate():
    with pytest.raises(ValueError, match="I2"):
        apply(new_session(1, 0), Event.ATTACH_OK, 1)
    vol = new_session(1, 0).with_(state=State.VOLATILE, binding=T1)
    with pytest.raises(ValueError, match="I3"):
        apply(vol, Event.SWITCH_INITIATED, 1)


def test_termination_clears_bindings_and_counts_degradations():
    rec, _ = apply(_rec(State.RECOVERING), Event.REATTACH_INVALID, 1)
    assert rec.degraded_count == 1
    rec, tr = apply(rec, Event.POLICY_TERMINATE, 2)
    assert rec.binding is None and tr.reason_code == "POLICY_TERMINATION"


@pytest.mark.parametrize("event, reason", [(Event.OPERATOR_TERMINATE, "OPERATOR_TERMINATED"),
                                           (Event.PEER_REVOKED, "PEER_REVOKED")])
def test_operator_ends_name_their_reason_and_the_client_can_be_told(event, reason):
    from jvpn import wire  # noqa: PLC0415

    _rec2, tr = apply(_rec(State.ATTACHED), event, 2)
    assert tr.reason_code == reason and reason in wire.TERMINATE_REASONS


def test_no_volatile_to_attached_shortcut():
    with pytest.raises(IllegalTransition):
        apply(_rec(State.VOLATILE), Event.REATTACH_VALID, 1)
    with pytest.raises(IllegalTransition):
        apply(_rec(State.ATTACHED), Event.ATTACH_OK, 1)
