"""The operator socket's session-control operations (registered in
jvpn/gateway/operations.py): terminate, rekey, drain, reload. Each validates its
request before anything changes; the work is the gateway's
(jvpn/gateway/operator_actions.py, jvpn/gateway/reload.py), under the
control lock."""

from __future__ import annotations

import re

from jvpn.gateway.operator import Refused

_SESSION_ID = re.compile(r"(0x)?[0-9a-fA-F]{1,16}")


def terminate(gw, request: dict) -> dict:
    """``{"session": HEX}`` (one session) or ``{"peer": NAME_OR_KEY}``
    (every session of the peer served here)."""
    sid, peer = _target("terminate", request)
    return gw.terminate_peer(peer) if peer is not None else gw.terminate_session(sid)


def rekey(gw, request: dict) -> dict:
    """``{"session": HEX}`` or ``{"peer": NAME_OR_KEY}``, as terminate: the
    session(s) marked for a rekey (SessionTable.request_rekey), which the
    client then runs (docs/protocol.md "Rekey")."""
    sid, peer = _target("rekey", request)
    return gw.rekey_peer(peer) if peer is not None else gw.rekey_session(sid)


def _target(op: str, request: dict) -> tuple[int | None, str | None]:
    """(session id, None) or (None, peer), validated; Refused otherwise."""
    session, peer = request.get("session"), request.get("peer")
    if (session is None) == (peer is None):
        raise Refused(f"{op}: give exactly one of session (hex id) or peer (Name or key)")
    if peer is not None:
        if not isinstance(peer, str) or not peer.strip():
            raise Refused(f"{op}: peer must be a Name or a base64 public key")
        return None, peer
    if not isinstance(session, str) or not _SESSION_ID.fullmatch(session):
        raise Refused(f"{op}: {session!r} is not a session id (16 hex digits)")
    sid = int(session, 16)
    if sid == 0:
        raise Refused(f"{op}: session id 0 names no session")
    return sid, None


def drain(gw, request: dict) -> dict:
    """``{"on": true}``: refuse new sessions; ``{"on": false}``: admit them again."""
    on = request.get("on")
    if not isinstance(on, bool):
        raise Refused("drain: 'on' must be true or false")
    return gw.drain(on)


def reload(gw, _request: dict) -> dict:
    """What SIGHUP does, answered: the summary, or the one-line refusal."""
    if gw.reloader is None:
        raise Refused("reload: this gateway was not started from a config file")
    return gw.reloader.reload()
