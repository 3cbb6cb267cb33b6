"""A client's half of the rekey as the gateway's tests need it (built with
jvpn.wire and jvpn.keys as a client would), over the in-process daemon of
kits/daemon_kit.py with the AdmitAll gate: the daemon's channels check every
tag and AEAD themselves, under the epoch each message's key phase names."""

from __future__ import annotations

import os

from jvpn import wire
from jvpn.gate import abi
from jvpn.keys import (
    Ephemeral,
    KeyRing,
    RekeyBinding,
    client_rekey_secret,
    derive_rekey,
    public_from_private,
    rekey_confirm,
)
from jvpn.policy import default_policy
from jvpn.tunnel import DataChannel
from kits.daemon_kit import (
    CLIENT,
    GW_KEY,
    PEER_INNER,
    PEER_KEYS,
    AdmitAll,
    Clock,
    handshake,
    ipv4,
    make_gateway,
)


def policy(**changes):
    p = default_policy()
    return p.__class__(**{**p.as_dict(), **changes})


class RekeyClient:
    """One session's client: its key ring and channel (counters shared by
    every message, as the real client's)."""

    def __init__(self, gw, src=CLIENT, peer: int = 0):
        self.gw, self.src = gw, src
        self.static = PEER_KEYS[peer]  # the rekey is bound to it and to the gateway's
        peer = handshake(gw, src, peer)
        self.sid = peer.session_id
        self.channel: DataChannel = peer.channel
        self.ring = KeyRing(peer.keys)
        assert self.data()  # confirms the handshake's session

    # ------------------------------------------------------------ sending
    def send(self, msg: bytes, src=None) -> list[tuple[bytes, tuple]]:
        """What the gateway sent back for ``msg``."""
        n = len(self.gw.sock.sent)
        self.gw.datapath.datagram(msg, src or self.src)
        return self.gw.sock.sent[n:]

    def data(self, keys=None, src=None) -> bool:
        """An inner packet sealed under ``keys`` (default: our send epoch):
        delivered to the gateway's TUN?"""
        ch = self.channel
        if keys is not None:  # a message under a chosen epoch, with our counters
            ch = DataChannel(keys, "client", first_counter=self.channel.next_counter())
        n = len(self.gw.tun.written)
        self.gw.datapath.datagram(ch.seal(ipv4(PEER_INNER[0])), src or self.src)
        return len(self.gw.tun.written) == n + 1

    def control(self, msg_type: int, *fields, keys=None, counter=None) -> bytes:
        keys = keys or self.ring.send
        hdr = wire.Header(type=msg_type, session_id=self.sid,
                          counter=self.channel.next_counter() if counter is None else counter,
                          flags=abi.FLAG_KEY_PHASE if keys.phase else 0)
        return wire.seal_control(hdr, keys.hdr_c2s, keys.reattach, *fields)

    def init(self, eph: Ephemeral | None = None, new_epoch=None, switch_epoch=None,
             keys=None, ask=True) -> tuple[bytes, Ephemeral]:
        """A REKEY_INIT; ``ask``: the gateway asked for it first (the
        operator's mark, as `jvpn-xdp rekey`: it accepts no rekey unasked)."""
        if ask and self.gw.table.get(self.sid) is not None:
            self.gw.table.request_rekey(self.sid)
        eph = eph or Ephemeral()
        rec = self.record()
        msg = self.control(abi.MSG_REKEY_INIT,
                           self.ring.epoch + 1 if new_epoch is None else new_epoch,
                           rec.epoch if switch_epoch is None else switch_epoch, eph.public,
                           keys=keys)
        return msg, eph

    def reattach_request(self, seq: int, keys=None) -> bytes:
        rec = self.record()
        return self.control(abi.MSG_REATTACH_REQ, seq, self.gw.clock_ms(), os.urandom(16),
                            rec.epoch, keys=keys)

    # ------------------------------------------------------------ answers
    def opened(self, msg: bytes) -> tuple[wire.Header, tuple]:
        """A gateway control message, opened under the epoch its phase names."""
        hdr = wire.parse_header(msg)
        keys = self.ring.for_phase(wire.key_phase(hdr.flags))
        assert keys is not None and hdr.tag_valid(keys.hdr_s2c)
        return wire.open_control(msg, keys.reattach)

    def finish(self, resp: bytes, eph: Ephemeral):
        """Step 4: open the RESP, derive, check the confirmation, switch."""
        hdr, (new_epoch, switch_epoch, version, _overlap_ms, gw_eph, confirm) = self.opened(resp)
        assert hdr.type == abi.MSG_REKEY_RESP
        b = RekeyBinding(new_epoch, switch_epoch, version, eph.public, gw_eph)
        shared = client_rekey_secret(eph, gw_eph, self.static, public_from_private(GW_KEY))
        new = derive_rekey(self.ring.current, shared, b)
        assert rekey_confirm(new, b) == confirm
        self.old = self.ring.current
        self.ring = self.ring.rotated(new, confirmed=True)
        self.channel.set_keys(self.ring)
        return new

    def rekey(self, ask=True):
        """One whole exchange: INIT, RESP, the switch, the first message under it."""
        msg, eph = self.init(ask=ask)
        [(resp, _to)] = self.send(msg)
        new = self.finish(resp, eph)
        assert self.data()
        return new

    # ------------------------------------------------------------ the gateway's view
    def record(self):
        return self.gw.store.get(self.sid)[0]

    def stored_ring(self) -> KeyRing:
        return KeyRing.unpack(self.gw.store.get(self.sid)[1])

    def live(self):
        return self.gw.table.get(self.sid)


def gateway(tmp_path, clock=None, **policy_changes):
    clock = clock or Clock()
    return make_gateway(tmp_path, gate=AdmitAll(), clock=clock,
                        policy=policy(**policy_changes)), clock
