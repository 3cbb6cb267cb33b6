"""The kernel's view of a session record: one sessions-map element."""

from __future__ import annotations

import ipaddress

from jvpn.gate import abi
from jvpn.keys import SessionKeys
from jvpn.session import SessionRecord
from jvpn.wire import key_words


def session_element(rec: SessionRecord, keys: SessionKeys, fence: int = 0,
                    remote: bool = False) -> abi.Session:
    """The kernel's view of a record. ``remote``: owned by another gateway,
    only the client's reattach traffic may reach this daemon (a standby)."""
    b = rec.binding
    family = abi.AF_NONE
    if b is not None:
        family = abi.AF_INET6 if ipaddress.ip_address(b.addr).version == 6 else abi.AF_INET
    return abi.Session(
        tag_key=key_words(keys.hdr_c2s), version=rec.version, fence=fence,
        state=abi.STATE_REMOTE if remote else int(rec.state),
        bind_family=family, bind_addr=abi.addr_words(b.addr) if b else (0, 0, 0, 0),
        bind_port=abi.port_word(b.port) if b else 0)
