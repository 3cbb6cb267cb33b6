"""The kernel's view of a session record: one sessions-map element, and the
daemon's half of the runtime-slot protocol (jvpn_abi.h, jvpn_sessions): the
element names a runtime slot, a generation and a replay floor; the gate (XDP
or the model) initializes the slot itself. Shared by both gate adapters."""

from __future__ import annotations

import ipaddress
import struct
from collections import deque
from collections.abc import Callable

from jvpn.errors import JvpnError
from jvpn.fastip import address_memo, ipv4_packed
from jvpn.gate import abi
from jvpn.keys import KeyRing, SessionKeys
from jvpn.randpool import randbits, token_bytes
from jvpn.session import SessionRecord
from jvpn.wire import key_words


class GateFull(JvpnError):
    """The gate holds as many sessions as it can (its maps' capacity,
    `jvpn-xdp attach --max-sessions`): no element for another one."""


def unused_slot_key() -> bytes:
    """What a key slot no live epoch uses holds: 16 random bytes, never the
    public all-zero key (the gate also refuses a zero slot: docs/xdp.md)."""
    return token_bytes(16)


def header_keys(keys: SessionKeys | KeyRing,
                unused: Callable[[], bytes] = unused_slot_key) -> dict:
    """The element's key fields for the live epochs of ``keys``: each
    epoch's client->gateway header key in the slot of its phase, and
    exactly those phases accepted (docs/protocol.md "Rekey": both during an
    overlap, one outside it). A slot no live epoch uses holds ``unused()``
    (random): not accepted, and were its mask bit ever read set (a torn
    element read), its key is one nobody holds, so a stale key never checks
    a tag and the zero key never does."""
    slot0, slot1, mask = _key_slots(keys, unused)
    return dict(tag_key=slot0, tag_key_phase1=slot1, key_phases=mask)


def _key_slots(keys: SessionKeys | KeyRing,
               unused: Callable[[], bytes]) -> tuple[tuple, tuple, int]:
    """``header_keys`` as (phase 0's words, phase 1's words, mask)."""
    slots = {k.phase: key_words(k.hdr_c2s) for k in KeyRing.of(keys).live()}
    mask = 0
    for phase in slots:
        mask |= abi.key_phase_bit(phase)
    slot0 = slots.get(0) or key_words(unused())
    slot1 = slots.get(1) or key_words(unused())
    return slot0, slot1, mask


@address_memo  # per element write (twice a handshake): bounded, exact short strings
def _ip_version(addr: str) -> int:
    return ipaddress.ip_address(addr).version


def session_element(rec: SessionRecord, keys: SessionKeys | KeyRing, fence: int = 0,
                    remote: bool = False, *, rt_slot: int = 0, rt_gen: int = 0,
                    replay_floor: int = 0, ctl_floor: int = 0, probe_floor: int = 0,
                    unused_key: Callable[[], bytes] = unused_slot_key) -> abi.Session:
    """The kernel's view of a record. ``remote``: owned by another gateway,
    only the client's reattach traffic may reach this daemon (a standby).
    ``keys``: one epoch, or a key ring (``header_keys``; ``unused_key``
    fills a slot no live epoch uses)."""
    return element_of(rec, keys, fence, remote, rt_slot, rt_gen, replay_floor, ctl_floor,
                      probe_floor, unused_key)


def element_of(rec: SessionRecord, keys: SessionKeys | KeyRing, fence: int, remote: bool,
               rt_slot: int, rt_gen: int, replay_floor: int, ctl_floor: int,
               probe_floor: int, unused_key: Callable[[], bytes] = unused_slot_key
               ) -> abi.Session:
    """``session_element`` with its fields given in order (a gate's write:
    no keyword dictionaries, issue 15)."""
    b = rec.binding
    family, addr, port = abi.AF_NONE, _NO_ADDR, _NO_PORT
    if b is not None:
        family, addr = _bind_addr(b.addr)
        port = b.port.to_bytes(2, "big")  # network order in memory, as abi.port_word
    slot0, slot1, mask = _key_bytes(keys, unused_key)
    # the struct's bytes packed in one call, in its field order (a restart
    # builds a million: issue 15, k18rec2); the key slots are the header
    # keys' bytes as they are (key_words would unpack them only for ctypes
    # to write the same bytes back). A test holds the bytes equal to the
    # keyword construction's.
    try:
        return _from_bytes(_ELEMENT.pack(
            slot0, rec.version, fence, addr, port, family,
            abi.STATE_REMOTE if remote else int(rec.state), rt_slot, rt_gen,
            replay_floor, ctl_floor, slot1, mask, probe_floor))
    except struct.error as e:
        # a value out of its field's range (a version of 2**64 out of a
        # damaged store): no element rather than one with the value cut short
        raise ValueError(f"session {rec.session_id:016x}: a field does not fit "
                         f"its element ({e})") from None


# jvpn_session's layout (jvpn/gate/abi.py Session; a test compares them)
_ELEMENT = struct.Struct("<16sQQ16s2sBBIQQQ16sB7xQ")
_from_bytes = abi.Session.from_buffer_copy
_NO_ADDR, _NO_PORT, _V4_TAIL = bytes(16), bytes(2), bytes(12)


def _bind_addr(addr) -> tuple[int, bytes]:
    """A binding's family and its 16 bytes as the element holds them."""
    v4 = ipv4_packed(addr)  # the common case: one parse for family and bytes
    if v4 is not None:
        return abi.AF_INET, v4 + _V4_TAIL
    family = abi.AF_INET6 if _ip_version(addr) == 6 else abi.AF_INET
    return family, _WORDS.pack(*abi.addr_words(addr))


_WORDS = struct.Struct("<4I")
_PHASE_BIT = (abi.key_phase_bit(0), abi.key_phase_bit(1))  # by phase, made once


def _key_bytes(keys: SessionKeys | KeyRing,
               unused: Callable[[], bytes]) -> tuple[bytes, bytes, int]:
    """``header_keys`` as (phase 0's key, phase 1's key, mask), 16 bytes
    each (ValueError otherwise, as key_words: the session is not served)."""
    ring = keys if keys.__class__ is KeyRing else KeyRing.of(keys)
    if ring.previous is None:  # one epoch (outside a rekey's overlap): its phase's slot
        current = ring.current
        phase = current.epoch & 1  # SessionKeys.phase
        if phase:
            slot0, slot1 = unused(), current.hdr_c2s or unused()
        else:
            slot0, slot1 = current.hdr_c2s or unused(), unused()
        mask = _PHASE_BIT[phase]
    else:
        slots: list[bytes | None] = [None, None]
        mask = 0
        for k in ring.live():
            slots[k.phase] = k.hdr_c2s
            mask |= abi.key_phase_bit(k.phase)
        slot0 = slots[0] or unused()
        slot1 = slots[1] or unused()
    if len(slot0) != 16 or len(slot1) != 16:
        raise ValueError("header key must be 16 bytes")
    return slot0, slot1, mask


def remote_entry(keys: SessionKeys | KeyRing, ctl_floor: int = 0,
                 unused_key: Callable[[], bytes] = unused_slot_key) -> abi.Remote:
    """The kernel's view of a session another gateway owns (jvpn_remote):
    the header keys of its live epochs and the control floor, nothing else
    (docs/cluster.md "Remote sessions")."""
    return abi.Remote(**header_keys(keys, unused_key), ctl_floor=ctl_floor)


def kept_ctl_floor(old: abi.Session | abi.Remote | None) -> int:
    """What a rewritten element keeps of the one it replaces: the control
    floor only rises (a restart over pinned maps included), whatever else
    the record changed."""
    return int(old.ctl_floor) if old is not None else 0


# the element's floors: only the daemon raises them, each once it verified a
# message of its kind (ctl_floor: a keepalive or control message, issue 10
# item 5; probe_floor: a PATH_PROBE, issue 14), and they only rise
FLOORS = ("ctl_floor", "probe_floor")


def kept_floors(old: abi.Session | None,
                remote: abi.Remote | None = None) -> dict[str, int]:
    """What a rewritten element keeps of the one it replaces: its floors
    only rise (a restart over pinned maps included), whatever else the
    record changed. A new element (``old`` None) that replaces a remote
    entry (a handoff made the session ours) starts at that entry's control
    floor: the requests verified while it was remote stay dead at the gate."""
    ctl, probe = floors_kept(old, remote)
    return {"ctl_floor": ctl, "probe_floor": probe}


def floors_kept(old: abi.Session | None,
                remote: abi.Remote | None = None) -> tuple[int, int]:
    """``kept_floors`` as (ctl_floor, probe_floor)."""
    if old is None:
        return kept_ctl_floor(remote), 0
    return int(old.ctl_floor), int(old.probe_floor)


def remote_ctl_floor(old_remote: abi.Remote | None, element: abi.Session | None) -> int:
    """The control floor of a remote entry written over ``old_remote``
    while ``element`` (ours, served or parked, or None) may still be in the
    sessions map: the highest of the two. An owner that becomes a non-owner
    (a handover, the store saying it moved) keeps the floor its element
    learned, so a captured control message it acted on never passes again."""
    return max(kept_ctl_floor(old_remote), kept_ctl_floor(element))


def raised_floor(old: abi.Session | abi.Remote | None, counter: int,
                 floor: str = "ctl_floor") -> abi.Session | abi.Remote | None:
    """The element (or remote entry: a control floor only) with its
    ``floor`` raised to ``counter`` (a counter of that floor's kind the
    daemon verified), or None: no element, or the floor is already there
    (no write)."""
    if floor not in FLOORS:
        raise ValueError(f"not a floor: {floor}")
    if old is None or counter <= getattr(old, floor):
        return None
    new = type(old).from_buffer_copy(old)
    setattr(new, floor, counter)
    return new


def raised_ctl_floor(old: abi.Session | abi.Remote | None, counter: int):
    """``raised_floor`` for a keepalive or a control message (not a probe)."""
    return raised_floor(old, counter, "ctl_floor")


def enforced_top(sid: int, element: abi.Session | None, rt) -> int:
    """The replay top the gate enforces at the session's next packet, from
    its element and the runtime slot it names (mirror of jvpn_rt_claim)."""
    if element is None:
        return 0
    if rt is None or rt.session_id != sid:
        return int(element.replay_floor)
    if rt.gen == element.rt_gen:
        return int(rt.replay_top)
    return max(int(element.replay_floor), int(rt.replay_top))


def random_generation() -> int:
    return randbits(64) | 1  # never 0, the generation of an unused slot


class RuntimeSlots:
    """Which runtime slot each session's element names, and its generation.

    A freed slot goes to the back of the queue, so a slot is reused as late as
    possible (a packet of the removed session still in flight cannot touch a
    new session's window). Generations are random: a re-added session never
    meets the generation its old slot still holds."""

    def __init__(self, capacity: int, existing: dict[int, abi.Session] | None = None,
                 new_generation: Callable[[], int] = random_generation):
        self.capacity = capacity
        self.new_generation = new_generation
        self.slot_of = {sid: int(e.rt_slot) for sid, e in (existing or {}).items()}
        used = set(self.slot_of.values())
        self._next = max(used, default=-1) + 1
        self._free = deque(i for i in range(self._next) if i not in used)

    def place(self, sid: int, old: abi.Session | None, first: bool,
              floor: int) -> dict[str, int]:
        """Slot, generation and floor for the element about to be written.
        ``first``: new on this gateway, so a new generation (the gate starts
        the window above ``floor`` and above what it saw itself)."""
        slot, gen, replay_floor = self.placed(sid, old, first, floor)
        return dict(rt_slot=slot, rt_gen=gen, replay_floor=replay_floor)

    def placed(self, sid: int, old: abi.Session | None, first: bool,
               floor: int) -> tuple[int, int, int]:
        """``place`` as (rt_slot, rt_gen, replay_floor)."""
        slot = self.slot_of.get(sid)
        if slot is None:
            slot = self.slot_of[sid] = self._take()
            old = None
        if first or old is None:
            return slot, self.new_generation(), floor
        return slot, int(old.rt_gen), max(int(old.replay_floor), floor)

    def _take(self) -> int:
        if self._next < self.capacity:
            self._next += 1
            return self._next - 1
        if not self._free:
            raise GateFull(f"no runtime slot left (capacity {self.capacity})")
        return self._free.popleft()

    def free(self, sid: int) -> None:
        slot = self.slot_of.pop(sid, None)
        if slot is not None:
            self._free.append(slot)
