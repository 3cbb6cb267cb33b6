"""What the operator sees of a running gateway: its sessions with the peer
each belongs to, and the daemon's health. Pure reads over a ``Gateway``
(jvpn/gateway/daemon.py), returning JSON values; the operator socket serves
them as ``sessions`` and ``health`` (jvpn/gateway/operations.py), the
metrics collector reads the same (jvpn/gateway/metrics.py).

Received traffic comes from the kernel's runtime map when the XDP gate runs
(it counts every data and keepalive message it passed, as `jvpn-xdp
sessions` shows without a daemon), from the daemon's own counts otherwise;
sent traffic is the daemon's: only it sends (jvpn/gateway/traffic.py).
"""

from __future__ import annotations

import functools
import operator
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network

import psutil

from jvpn import keys
from jvpn.gateway.ownership import ClusterOwnership
from jvpn.keys import KeyRing
from jvpn.session import State


@dataclass(frozen=True)
class SessionView:
    """The fields of one session's row, in their order (``_view`` makes
    the row; ``sessions`` adds last_handshake_ms, key_age_s,
    rekey_requested and the key ring's state)."""

    session_id: str  # 16 hex digits, as events and `jvpn-xdp sessions` spell it
    peer: str | None  # the peer's Name in the peers file (None: no peer has its address now)
    public_key: str | None  # base64, as in the peers file
    inner: str
    allowed_ips: list[str]
    bound: str  # the binding, "-" when none
    state: str
    version: int
    owner: str
    confirmed: bool  # False: a new handshake's session its initiator has not used yet
    created_ms: int  # the handshake that made it
    key_epoch: int  # 0: the handshake's keys; +1 per rekey (docs/protocol.md "Rekey")
    keys_ms: int  # when the current epoch's keys were made (the handshake's: created_ms)
    last_rx_ms: int
    rx_packets: int
    rx_bytes: int
    rx_from: str  # "xdp" (the kernel's runtime map) or "daemon"
    tx_packets: int
    tx_bytes: int

    @property
    def last_handshake_ms(self) -> int:
        return self.created_ms


def references(gw) -> tuple[list, dict]:
    """The live sessions and the peers (by packed inner address): only
    references, copied under the control lock (two C-level copies, no
    per-session work), so that the lock's hold does not grow with what a
    reader does per session. Reading a session after the lock is safe: its
    record is immutable and replaced whole, its counters have one writer
    each (jvpn/gateway/traffic.py)."""
    with gw.control:
        return list(gw.table.sessions.values()), dict(gw.table.peers)


# a row's fields, in their order: a SessionView's, then what ``session_values`` adds
COLUMNS = (*SessionView.__dataclass_fields__, "last_handshake_ms", "key_age_s",
           "rekey_requested", "key_confirmed", "key_overlap")
BY_ID = operator.attrgetter("record.session_id")  # C-level sort key (operator_pages too)


def listed(live) -> tuple:
    """Everything a row reads of a session (a ``Live``), in one place:
    (record, traffic, last receive, confirmed, rekey requested, key ring,
    packed inner address). Nothing here makes what an idle session lacks
    (its data channel is not read: a restored session's may not exist; its
    traffic read as zeros until its first count)."""
    return (live.record, live.traffic_so_far, live.last_rx_ms, live.confirmed, live.rekey_requested,
            live.keys, live.inner)


def sessions(gw, now_ms: int | None = None, refs: tuple[list, dict] | None = None,
             kernel_rx: bool = True) -> list[dict]:
    """Every session this gateway serves, sorted by id, as dicts of
    :data:`COLUMNS` (:func:`session_values`, the same rows as lists)."""
    rows = session_values(gw, now_ms, refs, kernel_rx)
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


def session_values(gw, now_ms: int | None = None, refs: tuple[list, dict] | None = None,
                   kernel_rx: bool = True) -> list[list]:
    """Every session's row, sorted by id, its fields in :data:`COLUMNS`'
    order (a page's rows go out as these lists, their names once: issue
    15). ``refs``: from :func:`references` (taken now when absent); each
    session is read, and the kernel's counters looked up, after the
    control lock. ``kernel_rx`` False: no kernel lookup (two syscalls a
    session): rx 0 from "xdp" (the CLI's pages: it reads the runtime map
    itself, in batches)."""
    lives, peers = references(gw) if refs is None else refs
    now = gw.clock_ms() if now_ms is None else now_ms
    lead = now - gw.table.timer_ms()  # last_rx_ms is on the timer clock (Live): shown on the wall's
    gate, get_peer = gw.gate, peers.get
    rx_of = _rx_reader(gate, kernel_rx)
    out = []
    for live in sorted(lives, key=BY_ID):
        rec, traffic, last_rx, confirmed, rekey, keys_now, inner = listed(live)
        ring = KeyRing.of(keys_now)
        keys_ms = keys_made_ms(rec)  # the one rule, /metrics' too
        out.append([*_identity(rec, get_peer(inner)), rec.state._name_, rec.version, rec.owner,
                    confirmed, rec.created_ms, rec.key_epoch, keys_ms, last_rx + lead,
                    *rx_of(rec, traffic), *traffic.sent_so_far(), rec.created_ms,
                    key_age_s(keys_ms, now), rekey,
                    ring.confirmed, ring.previous is not None])  # key_ring_state's, no dict
    return out


def _rx_reader(gate, kernel_rx: bool):
    """(rx packets, rx bytes, from) of a session: the kernel's runtime map
    when the XDP gate checks (looked up only with ``kernel_rx``: 0 without),
    the daemon's own counts otherwise."""
    if not gate.checks_in_kernel:
        return lambda _rec, t: (t.rx_packets, t.rx_bytes, "daemon")
    if not kernel_rx:
        return lambda _rec, _t: (0, 0, "xdp")
    return lambda rec, _t: (*((gate.runtime(rec.session_id) or (0, 0))[:2]), "xdp")


def _identity(rec, peer) -> tuple:
    """session_id, peer, public_key, inner, allowed_ips, bound."""
    key = rec.peer_key
    if peer is not None:
        peer_key = keys.encode(peer.public_key)
        if key and key != peer_key:
            peer = None  # a key no longer at this address (its revocation pending): not this peer
        else:
            key = key or peer_key
    allowed = [_network_text(n) for n in peer.allowed_ips] if peer is not None \
        else [f"{rec.inner_addr}/32"]
    return (f"{rec.session_id:016x}", peer.name if peer is not None else None, key or None,
            rec.inner_addr, allowed, str(rec.binding) if rec.binding is not None else "-")


def _network_text(network) -> str:
    """str(network): an IPv4 network's in half the time (a listing's rows)."""
    if type(network) is IPv4Network:  # inet_ntoa spells IPv4 as ipaddress does
        return f"{socket.inet_ntoa(network.network_address.packed)}/{network.prefixlen}"
    return str(network)


def key_ring_state(keys) -> dict:
    """From the live key ring, not the record: ``key_confirmed`` False
    while the committed epoch is unconfirmed (the gateway still seals under
    the previous one, although ``key_epoch`` and its age already name the
    new one); ``key_overlap`` True while a previous epoch is still accepted
    (unconfirmed, or the overlap after the confirmation: docs/protocol.md
    "Rekey")."""
    ring = KeyRing.of(keys)
    return {"key_confirmed": ring.confirmed, "key_overlap": ring.previous is not None}


def keys_made_ms(rec) -> int:
    """When the record's current keys were made: ``keys_ms``, or for the
    handshake's own keys (a record before issue 13 included) ``created_ms``."""
    return rec.keys_ms or rec.created_ms


def key_age_s(keys_ms: int, now_ms: int) -> float:
    return round(max(0, now_ms - keys_ms) / 1000, 3)


def states(session_rows: list[dict]) -> dict[str, int]:
    """Sessions by state, every state named (zero included)."""
    return count_states(row["state"] for row in session_rows)


def count_states(names: Iterable[str]) -> dict[str, int]:
    """State names counted, every state named (zero included)."""
    out = {s.name: 0 for s in State}
    for name in names:
        out[name] = out.get(name, 0) + 1
    return out


# ------------------------------------------------------------------ health
def health(gw) -> dict:
    """Threads alive by name, the store (one cheap read), the cluster lease,
    whether it drains (`jvpn-xdp drain`), the gate, and the process."""
    threads = gw.supervisor.alive()
    store = store_check(gw.store)
    with gw.control:
        count = len(gw.table.sessions)
        cluster = _cluster(gw)
    gate_problem = gw.gate.detached()
    ok = (all(threads.values()) and store["reachable"] and gate_problem is None
          and gw.fatal is None and not (cluster and cluster["fenced"]))
    return {"ok": ok, "node_id": gw.events.node_id,
            "threads": threads, "store": store, "cluster": cluster,
            "draining": gw.draining,
            "gate": "xdp" if gw.gate.checks_in_kernel else "userspace",
            "gate_problem": gate_problem, "fatal": gw.fatal, "sessions": count,
            "path_probes": dict(gw.probes.counts) if hasattr(gw, "probes") else {},
            "send_drops": gw.sender.counts() if hasattr(gw, "sender") else {},
            "process": process_figures()}


def store_check(store) -> dict:
    """One read of an id no session has (0 is never handed out): it proves
    the store answers without touching anything."""
    start = time.monotonic()
    try:
        store.get(0)
    except Exception as e:  # noqa: BLE001 - any failure means unreachable; said in one line
        line = (str(e).splitlines() or [type(e).__name__])[0][:200]
        return {"reachable": False, "latency_ms": None, "error": line}
    return {"reachable": True, "latency_ms": round((time.monotonic() - start) * 1000, 3),
            "error": None}


def _cluster(gw) -> dict | None:
    """None for one gateway (the SQLite store: no lease)."""
    own = gw.ownership
    if not isinstance(own, ClusterOwnership):
        return None
    return {"node_id": own.node_id, "lease": own.token, "lease_valid": own.lease_valid(),
            "fenced": gw.table.fenced}


@functools.cache
def _process() -> psutil.Process:
    proc = psutil.Process(os.getpid())
    proc.cpu_percent(None)  # the first call starts the interval the next one measures
    return proc


def process_figures() -> dict:
    """This process through psutil: CPU% since the previous call (health or
    a scrape), resident memory, open descriptors, threads, CPU seconds."""
    proc = _process()
    with proc.oneshot():
        times = proc.cpu_times()
        return {"pid": proc.pid, "cpu_percent": proc.cpu_percent(None),
                "cpu_seconds": round(times.user + times.system, 3),
                "rss_bytes": proc.memory_info().rss, "open_fds": proc.num_fds(),
                "threads": proc.num_threads(), "start_time_s": proc.create_time()}
