"""What the validators return: a ``Decision`` (records to commit, events to
emit, the reply to seal), ``Proven`` (a request whose proof held, for the
ownership step), or a ``Reject``. Plain data: the control path carries them
out through the session table (jvpn/gateway/control.py)."""

from __future__ import annotations

from dataclasses import dataclass

from jvpn import wire
from jvpn.codes import EventType, Reason, Security
from jvpn.gate import abi
from jvpn.keys import KeyRing
from jvpn.session import SessionRecord, Transport


class Reject(Exception):
    def __init__(self, reason: Reason, security: Security | None = None, detail: str = "",
                 authenticated: bool = False, seq: int = 0, epoch: int = 0,
                 terminate: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.security, self.detail = reason, security, detail
        self.authenticated, self.seq = authenticated, seq
        self.epoch = epoch  # told with a stale epoch: the session's current one
        # the session is over: the key holder is told with a sealed TERMINATE
        # carrying this reason (TERMINATE_REASONS) instead of a REATTACH_REJECT,
        # so a policy's end is not read as a renewable expiry (review R3 #2)
        self.terminate = terminate


@dataclass
class Pending:
    candidate: Transport
    server_nonce: bytes
    client_nonce: bytes
    seq: int
    version: int  # the record's version in RECOVERING
    deadline_ms: int


@dataclass(frozen=True)
class Reply:
    """A control message to seal under the session's keys and send to ``to``."""

    type: int
    fields: tuple
    to: Transport


@dataclass(frozen=True)
class Note:
    """An event to emit once the decision is committed."""

    type: EventType
    reason: Reason
    transport: Transport | None
    fields: dict


@dataclass(frozen=True)
class Decision:
    """What validation concluded, in the order the caller carries it out:
    commit ``new`` over ``base`` (with ``steps`` for the state events), then
    emit ``notes``, await ``pending``, report ``reject`` (its reply sealed
    under ``keys`` if the request was authenticated) or send ``reply``. If the
    commit fails, only an OWNERSHIP_CONFLICT rejection follows."""

    sid: int
    src: Transport
    keys: KeyRing | None = None  # the reply is sealed under its send epoch
    base: SessionRecord | None = None
    new: SessionRecord | None = None
    steps: tuple = ()
    detail: str = ""
    notes: tuple[Note, ...] = ()
    pending: Pending | None = None
    reject: Reject | None = None
    reply: Reply | None = None

    def rejection_reply(self) -> Reply | None:
        r = self.reject
        if r is None or not r.authenticated:
            return None  # never answer what we could not authenticate (no reflection)
        if r.terminate is not None:
            return Reply(abi.MSG_TERMINATE, (wire.TERMINATE_REASONS.index(r.terminate),),
                         self.src)
        return Reply(abi.MSG_REATTACH_REJECT, (r.seq, wire.REJECT_REASONS.index(r.reason),
                                                 min(r.epoch, wire.EPOCH_MAX)), self.src)


@dataclass(frozen=True)
class Proven:
    """Steps 1-5 passed: the key holder asks to switch to ``src``."""

    rec: SessionRecord
    keys: KeyRing
    msg: bytes
    src: Transport
    seq: int
    client_nonce: bytes
    now: int
    # a retry of the request whose switch moved the binding elsewhere: the
    # key holder is at ``src``; validate it (item 6: a relayed path response)
    revalidate: bool = False
    # the epoch a new request named when it was not the record's: refused
    # once ownership settled, by the owner, which can seal the current epoch
    stale_epoch: int | None = None
