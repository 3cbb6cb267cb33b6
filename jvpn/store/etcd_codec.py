"""How the etcd store's values and keys are written and read back: base64
for the JSON gateway, session values, watch events. Anything that does not
parse is ``Unreadable`` (skipped and reported by the caller, never a crash)."""

from __future__ import annotations

import base64
import json
import re

from jvpn.session import SessionRecord
from jvpn.store import MAX_VERSION, StoreError, Unreadable, record_from_json


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _initiation(raw: bytes, key: str) -> int:
    """A stored handshake timestamp; one that does not parse fails closed."""
    try:
        return int(raw)
    except ValueError:
        raise StoreError(f"etcd value at {key} is not a timestamp: {raw[:40]!r}") from None


class NodeIdTaken(StoreError):
    pass


def _parse_session(value: bytes | str) -> tuple[SessionRecord, str]:
    """(record, sealed secrets) of a sessions/ value; raises Unreadable."""
    try:
        doc = json.loads(value)
        record, sealed = doc["record"], doc["secrets"]
        if not isinstance(record, str) or not isinstance(sealed, str):
            raise TypeError("record and secrets must be strings")
    except (ValueError, KeyError, TypeError, RecursionError) as e:  # nested past the decoder
        raise Unreadable(f"not a session value ({type(e).__name__}: {e})") from None
    return record_from_json(record), sealed


_SID_NAME = re.compile(r"[0-9a-f]{16}")  # a session id as _sid_key writes it


def _sid_of(key: bytes | str) -> int:
    """The session id of a sessions/ key, its raw bytes or its text; raises
    Unreadable for any other key: not UTF-8 (a damaged or hostile etcd:
    the watch's history read ended on its UnicodeDecodeError), or a name
    that is not 16 lowercase hex digits ("+10", "0x10" and "1_0" parse as
    numbers too: two keys for one session)."""
    try:
        text = key.decode() if isinstance(key, (bytes, bytearray)) else key
        name = text.rsplit("/", 1)[1]
    except (IndexError, ValueError, AttributeError) as e:  # UnicodeDecodeError: a ValueError
        raise Unreadable(f"not a session key: {key!r:.80}") from e
    if _SID_NAME.fullmatch(name) is None:
        raise Unreadable(f"not a session key: {key!r:.80}")
    return int(name, 16)


def _counter(raw: bytes | str, key: str) -> tuple[int, bool]:
    """(value, exact) of a floors/ or replay/ value as the store writes it:
    ``<n>`` or ``<n> exact`` (ASCII digits, at most MAX_VERSION). Anything
    else is Unreadable naming the key: a reader that took a value it could
    not decode as absent would restore the session's counter floor as 0."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    number, space, rest = data.partition(b" ")
    if (number.isdigit() and len(number) <= 19 and rest == (b"exact" if space else b"")
            and int(number) <= MAX_VERSION):
        return int(number), bool(space)
    raise Unreadable(f"etcd value at {key} is not a counter: {data[:40]!r}")


def _parse_event(ev: dict) -> tuple[int, SessionRecord | None, str, int]:
    """(session id, record or None for a deletion, sealed secrets,
    mod_revision) of one watch event (key and value base64); raises Unreadable."""
    try:
        kv = ev["kv"]
        sid = _sid_of(_unb64(kv["key"]))
        if ev.get("type") == "DELETE":
            return sid, None, "", 0
        rec, sealed = _parse_session(_unb64(kv["value"]))
        return sid, rec, sealed, int(kv.get("mod_revision", 0))
    except (KeyError, TypeError, ValueError) as e:
        raise Unreadable(f"not a session event ({type(e).__name__}: {e})") from None


def _meta_key(meta) -> str:
    """The key of a value etcd3gw returned with its metadata (for the report)."""
    try:
        key = meta["key"]
        return key.decode() if isinstance(key, bytes) else _unb64(key).decode()
    except Exception:  # noqa: BLE001 - only used to name what was skipped
        return "?"
