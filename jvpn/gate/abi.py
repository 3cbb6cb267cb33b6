"""ctypes mirrors of bpf/include/jvpn_abi.h, the single source of truth.

tests/test_abi.py compiles the header with the host C compiler and checks every
size, field offset and constant below against it, so a change on either side
that is not made on the other fails the tests. Values are built by keyword:
``Session(tag_key=(k0, k1), state=STATE_ATTACHED, ...)``.
"""

from __future__ import annotations

import ctypes
import socket
from ctypes import c_uint8 as u8
from ctypes import c_uint16 as u16
from ctypes import c_uint32 as u32
from ctypes import c_uint64 as u64

from jvpn.fastip import address_memo as _address_memo

# ---- wire format ----
WIRE_VERSION = 1
HDR_LEN = 32
TAGGED_LEN = 24
AEAD_TAG_LEN = 16
DEFAULT_PORT = 51900

MSG_HANDSHAKE_INIT = 1
MSG_HANDSHAKE_RESP = 2
MSG_COOKIE_REPLY = 3
MSG_DATA = 4
MSG_KEEPALIVE = 5
MSG_REATTACH_REQ = 6
MSG_PATH_CHALLENGE = 7
MSG_PATH_RESPONSE = 8
MSG_REATTACH_ACK = 9
MSG_REATTACH_REJECT = 10
MSG_TERMINATE = 11
MSG_REKEY_INIT = 12
MSG_REKEY_RESP = 13
MSG_REKEY_REJECT = 14
MSG_PATH_PROBE = 15  # client -> gateway, from a candidate path: moves nothing (issue 14)
MSG_PATH_PROBE_REPLY = 16  # gateway -> client, to the probe's source
MSG_MAX = 17

# header flags the gate reads: the low bit of the sender's key epoch
FLAG_KEY_PHASE = 4
KEY_PHASES_ALL = 3  # Session.key_phases with both phases' header keys live


def key_phase_bit(phase: int) -> int:
    """JVPN_KEY_PHASE_BIT: the bit of ``phase`` in Session.key_phases."""
    return 1 << phase

# ---- session states ----
STATE_BIRTH = 0
STATE_ATTACHED = 1
STATE_VOLATILE = 2
STATE_RECOVERING = 3
STATE_DEGRADED = 4
STATE_TERMINATED = 5
STATE_REMOTE = 6  # a projection, not an FSM state: owned by another gateway (standby)
STATE_MAX = 7
STATE_NAMES = {
    STATE_BIRTH: "BIRTH",
    STATE_ATTACHED: "ATTACHED",
    STATE_VOLATILE: "VOLATILE",
    STATE_RECOVERING: "RECOVERING",
    STATE_DEGRADED: "DEGRADED",
    STATE_TERMINATED: "TERMINATED",
    STATE_REMOTE: "REMOTE",
}


def _bit(t: int) -> int:
    return 1 << t


ALLOW_DATA = _bit(MSG_DATA) | _bit(MSG_KEEPALIVE)
ALLOW_CONTROL = (_bit(MSG_REATTACH_REQ) | _bit(MSG_PATH_RESPONSE) | _bit(MSG_TERMINATE)
                 | _bit(MSG_REKEY_INIT) | _bit(MSG_PATH_PROBE))
STATE_ALLOW = {
    STATE_BIRTH: 0,
    STATE_ATTACHED: ALLOW_DATA | ALLOW_CONTROL,
    STATE_VOLATILE: ALLOW_DATA | ALLOW_CONTROL,
    STATE_RECOVERING: ALLOW_DATA | ALLOW_CONTROL,
    STATE_DEGRADED: ALLOW_CONTROL,
    STATE_TERMINATED: 0,
    # a standby passes what its daemon acts on; not REKEY_INIT nor PATH_PROBE,
    # which it refuses unverified (its floors would never rise: jvpn_abi.h)
    STATE_REMOTE: _bit(MSG_REATTACH_REQ) | _bit(MSG_PATH_RESPONSE) | _bit(MSG_TERMINATE),
}

# ---- verdict reasons (index of jvpn_counters) ----
R_PASS_OTHER = 0
R_PASS_DATA = 1
R_PASS_KEEPALIVE = 2
R_PASS_CONTROL = 3
R_PASS_HANDSHAKE = 4
R_DROP_MALFORMED = 5
R_DROP_BAD_TYPE = 6
R_DROP_UNKNOWN_SESSION = 7
R_DROP_STATE = 8
R_DROP_BAD_TAG = 9
R_DROP_WRONG_BINDING = 10
R_DROP_REPLAY = 11
R_DROP_RATE_SESSION = 12
R_DROP_RATE_SOURCE = 13
R_DROP_RATE_GLOBAL = 14  # handshakes (unauthenticated), whole gateway
R_DROP_UNPARSED = 15  # the parser gave up on a frame that may be UDP to our port
R_DROP_RATE_AUTHED = 16  # authenticated control, whole gateway
R_DROP_KEY_PHASE = 17  # a phase not accepted (or a zero key slot): forgery, late old keys
R_VERDICT_MAX = 18
C_EVENT_SENT = 18
C_EVENT_SUPPRESSED = 19
C_MAX = 20

COUNTER_NAMES = {
    R_PASS_OTHER: "pass_other",
    R_PASS_DATA: "pass_data",
    R_PASS_KEEPALIVE: "pass_keepalive",
    R_PASS_CONTROL: "pass_control",
    R_PASS_HANDSHAKE: "pass_handshake",
    R_DROP_MALFORMED: "drop_malformed",
    R_DROP_BAD_TYPE: "drop_bad_type",
    R_DROP_UNKNOWN_SESSION: "drop_unknown_session",
    R_DROP_STATE: "drop_state",
    R_DROP_BAD_TAG: "drop_bad_tag",
    R_DROP_WRONG_BINDING: "drop_wrong_binding",
    R_DROP_REPLAY: "drop_replay",
    R_DROP_RATE_SESSION: "drop_rate_session",
    R_DROP_RATE_SOURCE: "drop_rate_source",
    R_DROP_RATE_GLOBAL: "drop_rate_global",
    R_DROP_UNPARSED: "drop_unparsed",
    R_DROP_RATE_AUTHED: "drop_rate_authed",
    R_DROP_KEY_PHASE: "drop_key_phase",
    C_EVENT_SENT: "events_sent",
    C_EVENT_SUPPRESSED: "events_suppressed",
}
SECURITY_DROPS = frozenset(
    {
        R_DROP_BAD_TAG,
        R_DROP_WRONG_BINDING,
        R_DROP_REPLAY,
        R_DROP_RATE_SESSION,
        R_DROP_RATE_SOURCE,
        R_DROP_RATE_GLOBAL,
        R_DROP_RATE_AUTHED,
        R_DROP_KEY_PHASE,
    }
)


def is_pass(reason: int) -> bool:
    return reason <= R_PASS_HANDSHAKE


# ---- address families in maps ----
AF_NONE = 0
AF_INET = 4
AF_INET6 = 6

# ---- replay window (defaults; a build may override JVPN_REPLAY_BITS) ----
REPLAY_BITS = 4096
MAX_PORTS = 4

# ---- capacity: the sessions map and the runtime map (JVPN_MAX_SESSIONS, a build
# parameter: `jvpn-xdp attach --max-sessions`) ----
DEFAULT_MAX_SESSIONS = 65536
MAX_SESSIONS_RANGE = (1024, 4_194_304)  # 4M elements: about 3 GiB of kernel memory


def replay_words(bits: int = REPLAY_BITS) -> int:
    return bits // 64


def replay_window(bits: int = REPLAY_BITS) -> int:
    return bits - 64


def reject_after(bits: int = REPLAY_BITS) -> int:
    """Counters at or above this are refused (JVPN_REJECT_AFTER)."""
    return (1 << 64) - 1 - bits


_SETTABLE: dict[type, dict[str, int | None]] = {}


def _settable(cls: type) -> dict[str, int | None]:
    """The fields a keyword may set (not a padding), each with its array
    length (None: a scalar): read once per class, not per element built
    (a restart builds one element per session, issue 15)."""
    spec = _SETTABLE.get(cls)
    if spec is None:
        spec = {}
        for klass in reversed(cls.__mro__):
            for name, ctype, *_bits in klass.__dict__.get("_fields_", ()):
                if not name.startswith("_pad"):
                    spec[name] = ctype._length_ if issubclass(ctype, ctypes.Array) else None
        _SETTABLE[cls] = spec
    return spec


class _Struct(ctypes.Structure):
    """Keyword construction with tuples accepted for array fields."""

    def __init__(self, **kwargs):
        super().__init__()
        spec = _settable(type(self))
        for name, value in kwargs.items():
            if name not in spec:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            length = spec[name]
            if length is None:
                setattr(self, name, value)
                continue
            if len(value) != length:
                raise ValueError(f"{name}: expected {length} items")
            getattr(self, name)[:] = list(value)

    def as_dict(self) -> dict:
        out = {}
        for name, _ in self._fields_:
            if name.startswith("_") or name == "lock":
                continue
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, ctypes.Array) else value
        return out


class Hdr(_Struct):
    _fields_ = [
        ("type", u8),
        ("version", u8),
        ("flags", u16),
        ("reserved", u32),
        ("session_id", u64),
        ("counter", u64),
        ("tag", u64),
    ]


class Counter(_Struct):
    _fields_ = [("packets", u64), ("bytes", u64)]


class Session(_Struct):
    """jvpn_session: written by the daemon only (jvpn/gate/element.py).
    ``tag_key`` / ``tag_key_phase1``: the client->gateway header key of key
    phase 0 / 1; ``key_phases``: the phases accepted (``key_phase_bit``;
    0 accepts nothing)."""

    _fields_ = [
        ("tag_key", u64 * 2),  # phase 0's header key
        ("version", u64),
        ("fence", u64),
        ("bind_addr", u32 * 4),
        ("bind_port", u16),
        ("bind_family", u8),
        ("state", u8),
        ("rt_slot", u32),  # the daemon's choice of runtime slot
        ("rt_gen", u64),  # a new value re-initializes the slot (XDP does it)
        ("replay_floor", u64),  # a new window counts everything below as seen
        ("ctl_floor", u64),  # keepalive/control (not probe) counters <= this: replays
        ("tag_key_phase1", u64 * 2),  # phase 1's header key
        ("key_phases", u8),  # key_phase_bit(p): phase p accepted
        ("_pad0", u8 * 7),
        ("probe_floor", u64),  # PATH_PROBE counters <= this: replays (issue 14)
    ]


class SpinLock(ctypes.Structure):
    _fields_ = [("val", u32)]


def session_rt_type(bits: int = REPLAY_BITS) -> type:
    """The runtime struct for a given replay ring size (a build parameter)."""

    class SessionRt(_Struct):
        _fields_ = [
            ("lock", SpinLock),
            ("_pad0", u32),
            ("session_id", u64),
            ("gen", u64),
            ("replay_top", u64),
            ("rate_pkt_tat", u64),
            ("rate_byte_tat", u64),
            ("rx_packets", u64),
            ("rx_bytes", u64),
            ("last_rx_ns", u64),
            ("replay_bitmap", u64 * replay_words(bits)),
            ("control_tat", u64),
            ("probe_tat", u64),
            ("probe_top", u64),  # the highest probe counter that spent probe_tat (review E L1)
            ("probe_dup_tat", u64),  # one copy at or below it per refill of probe_tat
        ]

    return SessionRt


SessionRt = session_rt_type()


class Config(_Struct):
    _fields_ = [
        ("ports", u16 * MAX_PORTS),
        ("session_pkt_interval_ns", u64),
        ("session_pkt_burst_ns", u64),
        ("session_byte_interval_ns", u64),
        ("session_byte_burst_ns", u64),
        ("source_interval_ns", u64),
        ("source_burst_ns", u64),
        ("global_interval_ns", u64),
        ("global_burst_ns", u64),
        ("session_control_interval_ns", u64),
        ("session_control_burst_ns", u64),
        ("session_probe_interval_ns", u64),
        ("session_probe_burst_ns", u64),
        ("authed_interval_ns", u64),
        ("authed_burst_ns", u64),
        ("global_probe_interval_ns", u64),  # PATH_PROBE, whole gateway: not the authed budget
        ("global_probe_burst_ns", u64),
        ("event_interval_ns", u64),
        ("event_burst_ns", u64),
        ("event_sample_every", u32),
        ("ns_per_jiffy", u32),
    ]


class Fence(_Struct):
    """Cluster fencing (jvpn_fence), written by the daemon only."""

    _fields_ = [
        ("token", u64),  # the daemon's current lease
        ("deadline_ns", u64),  # ... valid until (CLOCK_MONOTONIC ns; 0: fencing off)
    ]


class Remote(_Struct):
    """jvpn_remote: a session another gateway owns, written by the daemon
    only (jvpn/gate/element.py remote_entry): its header keys by phase and
    its control floor, no binding, no runtime slot."""

    _fields_ = [
        ("tag_key", u64 * 2),  # phase 0's header key
        ("tag_key_phase1", u64 * 2),  # phase 1's
        ("ctl_floor", u64),  # control counters <= this: replays (daemon-verified)
        ("key_phases", u8),  # key_phase_bit(p): phase p accepted
        ("_pad0", u8 * 7),
    ]


class RemoteRl(_Struct):
    """jvpn_remote_rl: a remote session's control bucket, written by XDP only."""

    _fields_ = [("control_tat", u64)]


class Global(_Struct):
    _fields_ = [("control_tat", u64), ("event_tat", u64), ("authed_control_tat", u64),
                ("probe_tat", u64)]  # the gateway-wide PATH_PROBE budget


class SrcKey(_Struct):
    _fields_ = [("addr", u32 * 4), ("family", u8), ("_pad0", u8 * 7)]


class SrcRl(_Struct):
    _fields_ = [("tat", u64)]


class Event(_Struct):
    _fields_ = [
        ("ts_ns", u64),
        ("session_id", u64),
        ("counter", u64),
        ("saddr", u32 * 4),
        ("sport", u16),
        ("family", u8),
        ("msg_type", u8),
        ("reason", u32),
    ]


# Every struct the header defines, by C name: the layout test walks this.
STRUCTS = {
    "jvpn_hdr": Hdr,
    "jvpn_counter": Counter,
    "jvpn_session": Session,
    "jvpn_session_rt": SessionRt,
    "jvpn_config": Config,
    "jvpn_fence": Fence,
    "jvpn_remote": Remote,
    "jvpn_remote_rl": RemoteRl,
    "jvpn_global": Global,
    "jvpn_src_key": SrcKey,
    "jvpn_src_rl": SrcRl,
    "jvpn_event": Event,
}

# Every constant the header defines that Python uses, by C name.
CONSTANTS = {
    "JVPN_WIRE_VERSION": WIRE_VERSION,
    "JVPN_HDR_LEN": HDR_LEN,
    "JVPN_TAGGED_LEN": TAGGED_LEN,
    "JVPN_AEAD_TAG_LEN": AEAD_TAG_LEN,
    "JVPN_DEFAULT_PORT": DEFAULT_PORT,
    **{f"JVPN_MSG_{n[4:]}": v for n, v in globals().items() if n.startswith("MSG_")},
    **{f"JVPN_STATE_{n[6:]}": v for n, v in globals().items()
       if n.startswith("STATE_") and isinstance(v, int)},
    **{f"JVPN_STATE_ALLOW_{STATE_NAMES[s]}": m for s, m in STATE_ALLOW.items()},
    **{f"JVPN_R_{n[2:]}": v for n, v in globals().items() if n.startswith("R_")},
    **{f"JVPN_C_{n[2:]}": v for n, v in globals().items() if n.startswith("C_")},
    "JVPN_AF_NONE": AF_NONE,
    "JVPN_AF_INET": AF_INET,
    "JVPN_AF_INET6": AF_INET6,
    "JVPN_REPLAY_BITS": REPLAY_BITS,
    "JVPN_REPLAY_WORDS": replay_words(),
    "JVPN_REPLAY_WINDOW": replay_window(),
    "JVPN_REJECT_AFTER": reject_after(),
    "JVPN_MAX_PORTS": MAX_PORTS,
    "JVPN_FLAG_KEY_PHASE": FLAG_KEY_PHASE,
    "JVPN_KEY_PHASES_ALL": KEY_PHASES_ALL,
}


# ---- address conventions of the maps (network order kept in host words) ----
@_address_memo  # twice per handshake (its element): bounded, exact short strings only
def addr_words(ip) -> tuple[int, int, int, int]:
    """An address as the four u32 words the maps store (network byte order
    in memory, so IPv4 sits in word 0 and the rest are zero)."""
    import ipaddress

    from jvpn.fastip import ipv4_packed

    fast = ipv4_packed(ip)
    if fast is not None:
        return (int.from_bytes(fast, "little"), 0, 0, 0)
    packed = ipaddress.ip_address(ip).packed.ljust(16, b"\0")
    return tuple(int.from_bytes(packed[i:i + 4], "little") for i in range(0, 16, 4))


def words_addr(words, family: int) -> str:
    import ipaddress

    if family == AF_INET:  # inet_ntop spells IPv4 as ipaddress does, in a tenth of the time
        return socket.inet_ntop(socket.AF_INET, int(words[0]).to_bytes(4, "little"))
    raw = b"".join(int(w).to_bytes(4, "little") for w in words)
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(raw))
    return "-"


def port_word(port: int) -> int:
    """A UDP port as the u16 the maps store (network order in memory)."""
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def word_port(word: int) -> int:
    return int.from_bytes(int(word).to_bytes(2, "little"), "big")


# Protocol numbers the parser matches (linux/if_ether.h, linux/in.h): the
# model and the test frames use these, the C side the kernel headers.
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
IPPROTO_UDP = 17
IPPROTO_TCP = 6
