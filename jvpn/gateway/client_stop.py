"""The client's TERMINATE, verified (decides, writes nothing): the client
stopped and says so, so the gateway ends the session at once instead of
after its TTL. Only the key holder can say it: the header tag under the
client-to-gateway header key, the MAC under the session's reattach key
(wire.open_control: the type and the session id are covered), a counter
the session's control window has not seen (recorded here, so a replayed
copy changes nothing), and the session's own id. A replay aimed at a later
session fails the tag and the MAC: that session has other keys. The XDP
gate already checked the tag, the data window and the control floor, and
spent the session's control budget."""

from __future__ import annotations

from jvpn.codes import EventType, Reason
from jvpn.gate import abi
from jvpn.gateway.sealing import open_client
from jvpn.replay import ControlWindows


def verified(msg: bytes, live, windows: ControlWindows) -> str | None:
    """CLIENT_STOPPED if ``msg`` is an authentic, fresh TERMINATE of
    ``live`` (a session served here, or None), else None. The reason index
    the client put in it is not echoed (review R3 #7): whatever it says,
    the client stopped, and the event log must not carry its choice."""
    if live is None:
        return None
    return authentic(msg, live.record.session_id, live.keys, windows)


def authentic(msg: bytes, sid: int, keys, windows: ControlWindows) -> str | None:
    """CLIENT_STOPPED if ``msg`` is session ``sid``'s fresh TERMINATE under
    ``keys`` (a key ring: the epoch its key phase names)."""
    opened = open_client(keys, msg)
    if opened is None:
        return None
    hdr = opened[0]
    if hdr.type != abi.MSG_TERMINATE or hdr.session_id != sid:
        return None
    if not windows.mark(sid, hdr.counter):
        return None  # a copy of one already acted on (or older than the window)
    return "CLIENT_STOPPED"


def not_served(msg: bytes, src, sid: int, table, windows: ControlWindows, follower,
               events, now_ms: int) -> None:
    """A TERMINATE for a session not served here (a cluster non-owner: the
    client's path moved here, or it stopped while its reattach was parked
    here). Verified under our standby keys, it cancels a parked reattach and
    ends the record in the store (:func:`end_in_store`); anything else is
    counted (one summary line per interval). The record is ended by the
    table (StandbyWrites.end_remote), its one writer."""
    keys, _owner = table.standby.get(sid, (None, None))
    if keys is None or authentic(msg, sid, keys, windows) is None:
        events.emit_unauthenticated(
            EventType.SESSION_TERMINATED, Reason.SESSION_NOT_FOUND, src, sid,
            detail="a TERMINATE for a session not served here, unverified: ignored")
        return
    cancelled = follower.cancel_parked(sid)
    table.end_remote(sid, src, now_ms,
                     detail="the client's TERMINATE at a gateway that does not own the "
                            f"session{': its parked reattach cancelled' * cancelled}")
