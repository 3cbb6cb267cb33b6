"""A rekey is bound to both static keys (docs/protocol.md "Rekey",
Derivation; review R2 #2): an on-path attacker who holds epoch E's keys (a
disk image of the store, a core dump) but neither static private key
cannot take epoch E+1, from either side: ee | es | se, as in Noise KK."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_client_rekey import PACKET, ScriptedGateway, _events, _flag
from test_client_source import CL_PRIV, GW, GW_PRIV, SID, Rig

from jvpn import wire
from jvpn.gate import abi
from jvpn.keys import (
    Ephemeral,
    KeyRing,
    RekeyBinding,
    RekeyError,
    client_rekey_secret,
    derive_rekey,
    gateway_rekey_secret,
    generate_private,
    public_from_private,
    rekey_confirm,
)
from jvpn.tunnel import FLAG_KEY_PHASE, DataChannel
from kits.daemon_kit import GW_KEY, PEER_KEYS, events_of
from kits.rekey_kit import RekeyClient, gateway


@pytest.fixture
def rig():
    r = Rig()
    r.gw = ScriptedGateway(r)
    return r


def test_both_sides_derive_the_same_secret_and_each_static_key_counts():
    ce, ge = Ephemeral(), Ephemeral()
    gw_pub, cl_pub = public_from_private(GW_PRIV), public_from_private(CL_PRIV)
    ours = client_rekey_secret(ce, ge.public, CL_PRIV, gw_pub)
    assert ours == gateway_rekey_secret(ge, ce.public, GW_PRIV, cl_pub)
    other = generate_private()
    assert ours != gateway_rekey_secret(ge, ce.public, other, cl_pub)
    assert ours != gateway_rekey_secret(ge, ce.public, GW_PRIV, public_from_private(other))


def test_the_ephemeral_secret_alone_derives_nothing(rig):
    current = rig.gw.channel.ring.current
    ce, ge = Ephemeral(), Ephemeral()
    b = RekeyBinding(1, 0, 1, ce.public, ge.public)
    with pytest.raises(RekeyError, match=r"ee \| es \| se"):
        derive_rekey(current, ce.exchange(ge.public), b)


def test_a_holder_of_epoch_E_keys_cannot_answer_the_clients_rekey(rig):
    """Mallory has E's keys and its own static key, not the gateway's: its
    forged RESP (everything it can compute) is dropped; the client stays at
    E with its attempt pending."""
    c = rig.client
    stolen = KeyRing.unpack(KeyRing(rig.gw.channel.ring.current).pack()).current
    _flag(rig)
    _hdr, (epoch, switch, client_pub) = rig.gw.inits()[-1]
    mallory, mallory_static = Ephemeral(), generate_private()
    b = RekeyBinding(epoch, switch, 99, client_pub, mallory.public)
    # Mallory's best: ee and se it can compute; es (the client's ephemeral
    # with the gateway's static) it can only guess, here with its own key
    guess = gateway_rekey_secret(mallory, client_pub, mallory_static, public_from_private(CL_PRIV))
    known = derive_rekey(stolen, guess, b)
    hdr = wire.Header(type=abi.MSG_REKEY_RESP, session_id=SID,
                      counter=rig.gw.channel.next_counter(),
                      flags=FLAG_KEY_PHASE if stolen.phase else 0)
    forged = wire.seal_control(hdr, stolen.hdr_s2c, stolen.reattach, epoch, switch, 99,
                               5000, mallory.public, rekey_confirm(known, b))
    c.receive(forged, GW)
    assert c.channel.ring.epoch == 0 and c.rekeying.pending is not None
    assert [e["reason_code"] for e in _events(rig, "RekeyDenied")] == ["AUTH_FAIL"]
    c.send_data(PACKET)  # still under E: Mallory's keys open nothing the client sends
    assert DataChannel(known, "gateway").open(rig.sent_of(abi.MSG_DATA)[-1][0]) is None
    # the gateway's genuine answer still completes the attempt
    c.receive(rig.gw.answer(), GW)
    assert c.channel.ring.epoch == 1


def test_a_holder_of_epoch_E_keys_cannot_make_the_gateway_derive_keys_it_knows(tmp_path):
    """Mallory sends its own REKEY_INIT under the stolen epoch E from the
    client's transport (on path). The gateway answers, but the keys it
    committed need the client's static private key (se): whatever Mallory
    derives, the RESP's confirmation does not verify and its data under
    its "new" keys does not open at the gateway."""
    gw, _clock = gateway(tmp_path)
    victim = RekeyClient(gw)
    mallory = RekeyClient.__new__(RekeyClient)
    mallory.__dict__.update(victim.__dict__)  # E's keys, the session, the transport
    mallory.static = generate_private()  # not the client's
    msg, eph = mallory.init()
    [(resp, _to)] = mallory.send(msg)
    _hdr, (new_epoch, switch, version, _ov, gw_eph, confirm) = mallory.opened(resp)
    b = RekeyBinding(new_epoch, switch, version, eph.public, gw_eph)
    guess = derive_rekey(mallory.ring.current, client_rekey_secret(
        eph, gw_eph, mallory.static, public_from_private(GW_KEY)), b)
    assert rekey_confirm(guess, b) != confirm
    assert gw.table.get(victim.sid).keys.epoch == 1  # committed, unconfirmed
    assert not mallory.data(keys=guess)  # sealed under Mallory's "epoch 1": dropped
    assert victim.data()  # the client, still under E, carries on


@pytest.mark.parametrize("why", ["peer removed", "no peer key"])
def test_a_rekey_with_no_static_key_to_bind_to_is_refused(tmp_path, why):
    gw, _clock = gateway(tmp_path)
    c = RekeyClient(gw)
    if why == "peer removed":
        del gw.admission.peers[public_from_private(PEER_KEYS[0])]
    else:  # a record from before records carried the peer's key
        live = gw.table.get(c.sid)
        live.record = replace(live.record, peer_key="")
    msg, _eph = c.init()
    [(answer, _to)] = c.send(msg)
    hdr, fields = c.opened(answer)
    assert hdr.type == abi.MSG_REKEY_REJECT
    assert wire.REJECT_REASONS[fields[3]] == "POLICY_DENY"
    assert fields[4] == wire.parse_header(msg).counter  # names the refused request
    assert c.stored_ring().epoch == 0 and gw.table.get(c.sid).keys.epoch == 0
    [denied] = events_of(gw.events, "RekeyDenied")
    assert "static key" in denied["detail"]
