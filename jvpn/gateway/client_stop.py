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

from jvpn import wire
from jvpn.gate import abi
from jvpn.replay import ControlWindows


def verified(msg: bytes, live, windows: ControlWindows) -> str | None:
    """CLIENT_STOPPED if ``msg`` is an authentic, fresh TERMINATE of
    ``live`` (a session served here, or None), else None. The reason index
    the client put in it is not echoed (review R3 #7): whatever it says,
    the client stopped, and the event log must not carry its choice."""
    if live is None:
        return None
    keys = live.keys
    try:
        hdr, _fields = wire.open_control(msg, keys.reattach)
    except wire.WireError:
        return None
    sid = live.record.session_id
    if hdr.type != abi.MSG_TERMINATE or hdr.session_id != sid or not hdr.tag_valid(keys.hdr_c2s):
        return None
    if not windows.mark(sid, hdr.counter):
        return None  # a copy of one already acted on (or older than the window)
    return "CLIENT_STOPPED"
