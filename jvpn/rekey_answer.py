"""The gateway's answer to a committed rekey, kept with the key ring in the
store's secrets value (issue 13, docs/protocol.md "Rekey", review R1 #1, #3).

Only public values and bookkeeping: the RESP's fields as sent (both
ephemeral public keys, the record version, the overlap, ``confirm``, an HMAC
the client already saw on the wire), and the previous epoch's making time
and base counters (the epoch the gateway seals under until the
confirmation: its expiry is measured on it). Stored with the ring, so a
restart, an adoption or a standby answers the client's re-send with the
same RESP instead of deriving a second epoch over the one the client took.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_FORMAT = struct.Struct("<QQQIQQQ32s32s32s")


@dataclass(frozen=True)
class RekeyAnswer:
    new_epoch: int
    switch_epoch: int
    version: int  # the record version the commit wrote
    overlap_ms: int
    prev_keys_ms: int  # when the previous epoch's keys were made
    prev_c2s_base: int  # ... and the counters at that moment
    prev_s2c_base: int
    client_ephemeral: bytes
    gateway_ephemeral: bytes
    confirm: bytes

    SIZE = _FORMAT.size

    @property
    def resp(self) -> tuple:
        """REKEY_RESP's fields (jvpn/wire.py), as first sent."""
        return (self.new_epoch, self.switch_epoch, self.version, self.overlap_ms,
                self.gateway_ephemeral, self.confirm)

    def pack(self) -> bytes:
        return _FORMAT.pack(self.new_epoch, self.switch_epoch, self.version, self.overlap_ms,
                            self.prev_keys_ms, self.prev_c2s_base, self.prev_s2c_base,
                            self.client_ephemeral, self.gateway_ephemeral, self.confirm)

    @classmethod
    def unpack(cls, raw: bytes) -> RekeyAnswer:
        if len(raw) != _FORMAT.size:
            raise ValueError("stored rekey answer has the wrong length")
        return cls(*_FORMAT.unpack(raw))
