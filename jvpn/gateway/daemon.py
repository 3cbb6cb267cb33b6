"""The gateway daemon: handshakes, reattach, the session state machine and its
timers, the userspace tunnel, and the only writer of bindings into the XDP
sessions map.

Threads: one reads the UDP socket (data to the TUN, control to the control
path), one reads the TUN (inner packets to the session's one binding), one
runs the timers. Control work (handshake, reattach, timers) is serialized by
one lock; the data loops only read the session table.

Restart: sessions live in the store and the XDP maps stay pinned, so on start
the daemon reconciles: every live store session is projected into the maps,
every map element without a store session is removed, and send counters
resume above the persisted floor.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from jvpn.events import EventLog
from jvpn.gate import abi
from jvpn.gateway.ownership import Claim, ClusterOwnership, LocalOwnership, OwnershipError
from jvpn.gateway.reattach import ReattachServer, Reject
from jvpn.gateway.timers import due_timer
from jvpn.handshake import Assignment, CookieChecker, HandshakeError, Responder
from jvpn.keys import SessionKeys, public_from_private
from jvpn.policy import Policy
from jvpn.session import (
    Event,
    IllegalTransition,
    SessionRecord,
    State,
    Transport,
    apply,
    new_session,
)
from jvpn.store import Store, StoreError
from jvpn.tunnel import FLAG_FRAGMENT, FLAG_REATTACH, DataChannel, Tun, inner_dst, send_messages

CONTROL_TYPES = (abi.MSG_REATTACH_REQ, abi.MSG_PATH_RESPONSE)
SENDABLE = (State.ATTACHED, State.VOLATILE, State.RECOVERING)
HANDOFF_WAIT_MS = 3_000  # a request parked for the owner's release is dropped after this
SWEEP_S = 0.5  # full re-read of the store (what a missed watch event would hide)


@dataclass
class Live:
    record: SessionRecord
    keys: SessionKeys
    channel: DataChannel
    inner: bytes  # the client's inner IPv4 address, packed
    last_rx_ms: int
    installed: bool = True  # our element is in the gate (False: adopted, or parked)
    parked: bool = False  # element removed for a handover/fence that did not complete


@dataclass
class Parked:
    """A proven reattach that waits for the owner to release the session."""
    msg: bytes
    src: Transport
    until_ms: int


class Gateway:
    def __init__(self, *, private_key: bytes, listen: tuple[str, int],
                 address: ipaddress.IPv4Interface, peers: dict[bytes, ipaddress.IPv4Address],
                 policy: Policy, store: Store, gate, events: EventLog, tun_name: str = "jvpn-gw",
                 clock_ms: Callable[[], int] | None = None, cookie_threshold_per_s: int = 50):
        self.private_key, self.public_key = private_key, public_from_private(private_key)
        self.address, self.peers, self.policy = address, peers, policy
        self.store, self.gate, self.events = store, gate, events
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.sessions: dict[int, Live] = {}
        self.by_inner: dict[bytes, int] = {}
        self.control = threading.RLock()
        self.responder = Responder(private_key, lambda pub: pub in peers)
        self.cookies = CookieChecker(private_key)
        self.cookie_threshold = cookie_threshold_per_s
        self._last_reason = ""
        self._recent_handshakes: deque = deque()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(listen)
        self.tun = Tun(tun_name, persist=True)
        self.tun.configure(str(address.ip), address.network.prefixlen)
        self.ownership = (ClusterOwnership(store, events.node_id)
                          if getattr(store, "clustered", False) else LocalOwnership(events.node_id))
        self.waiting: dict[int, Parked] = {}
        # sessions other gateways own: (keys, owner) of our standby element
        self.standby: dict[int, tuple[SessionKeys, str]] = {}
        self.fenced = False
        self.reattach = ReattachServer(store, policy, events, project=self._project,
                                       next_counter=self._next_counter, clock_ms=self.clock_ms,
                                       claim=self._claim)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.ownership.clustered:  # before any element of ours is written
            self.gate.set_fence(self.ownership.token, self.ownership.deadline_ns())
        else:
            self.gate.set_fence(0, 0)  # a cluster gateway's fence must not outlive it here
        self.reconcile()
        loops = [self._udp_loop, self._tun_loop, self._timer_loop]
        if self.ownership.clustered:
            loops.append(lambda: self.store.watch_sessions(self._on_store_record, self._stop))
        reader = self.gate.event_reader()
        if reader is not None:
            loops.append(lambda: self._xdp_events_loop(reader))
        for target in loops:
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        self.gate.publish_owners(self.ownership.node_id, self.ownership.token,
                                 self._remote_owners())
        self.events.emit("GatewayStarted", "OK", listen=str(self.sock.getsockname()),
                         gate="xdp" if self.gate.checks_in_kernel else "userspace",
                         sessions=len(self.sessions))

    def stop(self) -> None:
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.tun.close()
        for t in self._threads:
            t.join(timeout=2)
        if self.ownership.clustered:
            # our lease ends with us (the caller revokes it): another gateway
            # may take these sessions at once, so our elements stop first
            with self.control:
                for live in self.sessions.values():
                    if live.installed:
                        self.gate.standby(live.record, live.keys)
        self.gate.close()
        self.events.emit("GatewayStopped", "OK", sessions=len(self.sessions))

    def reconcile(self) -> None:
        """Store is the truth; the maps follow it (no session lost, none left)."""
        with self.control:
            kept = 0
            for rec in self.store.list():
                got = self.store.get(rec.session_id)
                if got is None:
                    continue
                rec, raw = got
                if not self.ownership.owns(rec):
                    if rec.state is not State.TERMINATED:
                        self._stand_by(rec, SessionKeys.unpack(raw))
                    continue
                if rec.state is State.TERMINATED:
                    self._forget(rec.session_id)
                    continue
                rec = self._reclaim(rec)
                if rec is None:
                    continue
                keys = SessionKeys.unpack(raw)
                inner = ipaddress.IPv4Address(rec.inner_addr).packed
                self._install(rec, keys, inner, first_counter=self.store.get_floor(rec.session_id))
                kept += 1
            stale = self.gate.ids() - set(self.sessions) - set(self.standby)
            for sid in stale:
                self.gate.remove(sid)
            self.events.emit("Reconciled", "OK", sessions=kept, removed_from_maps=len(stale))

    # ------------------------------------------------------------ state helpers
    def _next_counter(self, sid: int) -> int:
        return self.sessions[sid].channel.next_counter()

    def _live(self, rec: SessionRecord, keys: SessionKeys, inner: bytes,
              first_counter: int = 1) -> Live:
        sid = rec.session_id
        channel = DataChannel(keys, "gateway", first_counter=max(first_counter, 1),
                              check_replay=not self.gate.checks_in_kernel,
                              check_tag=not self.gate.checks_in_kernel,
                              reserve=lambda floor: self.store.set_floor(sid, floor))
        live = Live(rec, keys, channel, inner, self.clock_ms(), installed=False)
        self.sessions[sid] = live
        self.by_inner[inner] = sid
        return live

    def _install(self, rec: SessionRecord, keys: SessionKeys, inner: bytes,
                 first_counter: int = 1) -> Live:
        live = self._live(rec, keys, inner, first_counter)
        self._put(live, rec)
        return live

    def _put(self, live: Live, rec: SessionRecord) -> None:
        """Our element, fenced by our lease; a session new to this gateway
        starts its window above what the previous owner saw."""
        self.gate.put(rec, live.keys, self.ownership.token, first=not live.installed,
                      c2s_floor=rec.c2s_floor)
        live.installed, live.parked = True, False
        self.standby.pop(rec.session_id, None)

    def _adopt(self, rec: SessionRecord, keys: SessionKeys) -> Live:
        """A session this gateway just became owner of: counters resume above
        the cluster-wide floor; no element until its reattach completes."""
        return self._live(rec, keys, ipaddress.IPv4Address(rec.inner_addr).packed,
                          first_counter=self.store.get_floor(rec.session_id))

    def _project(self, rec: SessionRecord, keys: SessionKeys) -> None:
        """Called after every successful store write: the map follows."""
        live = self.sessions.get(rec.session_id)
        if rec.state is State.TERMINATED:
            self.gate.remove(rec.session_id)  # first: no packet passes any more
            if live is not None:
                self._send_terminate(live, rec)
                live.record = rec  # the timer loop forgets it (store, tables)
            return
        if live is None:
            return
        live.record = rec
        if live.installed or (rec.state is State.ATTACHED and not self.fenced):
            self._put(live, rec)

    def _send_terminate(self, live: Live, rec: SessionRecord) -> None:
        """Best effort, authenticated: the client learns its session is over
        instead of retrying into an unknown session."""
        from jvpn import wire  # noqa: PLC0415

        old = live.record
        to = old.binding or old.candidate
        reason = next((r for r in wire.TERMINATE_REASONS if r == self._last_reason), None)
        if to is None:
            return
        msg = wire.seal_control(
            wire.Header(type=abi.MSG_TERMINATE, session_id=rec.session_id,
                        counter=live.channel.next_counter()),
            live.keys.hdr_s2c, live.keys.reattach,
            wire.TERMINATE_REASONS.index(reason or "POLICY_TERMINATION"))
        try:
            self.sock.sendto(msg, (to.addr, to.port))
        except OSError:
            pass

    def _drop_local(self, sid: int) -> None:
        """This gateway stops serving the session (the store keeps it)."""
        live = self.sessions.pop(sid, None)
        if live is not None and self.by_inner.get(live.inner) == sid:
            del self.by_inner[live.inner]
        self.gate.remove(sid)

    def _forget(self, sid: int) -> None:
        self._drop_local(sid)
        try:
            self.store.delete(sid)
        except StoreError:
            pass

    def _transition(self, live: Live, event: Event, detail: str = "", **changes) -> None:
        rec = live.record
        now = self.clock_ms()
        try:
            new, tr = apply(rec, event, now, **changes)
            self._last_reason = tr.reason_code
            self.store.cas(rec.session_id, rec.version, new)
        except (IllegalTransition, StoreError) as e:
            self.events.emit("TransitionRejected", getattr(e, "reason_code", "OWNERSHIP_CONFLICT"),
                             rec.session_id, detail=str(e))
            return
        self._project(new, live.keys)
        self.events.emit("SessionStateChange", tr.reason_code, rec.session_id, new.binding,
                         version=new.version, previous_state=tr.previous.name,
                         new_state=tr.new.name, detail=detail)
        if new.state is State.TERMINATED:
            self.events.emit("SessionTerminated", tr.reason_code, rec.session_id,
                             version=new.version, session_age_ms=now - rec.created_ms,
                             transportless_age_ms=(now - rec.transport_lost_ms)
                             if rec.transport_lost_ms else 0)
            self._forget(rec.session_id)

    # ------------------------------------------------------------ handshake
    def _under_load(self, now: float) -> bool:
        q = self._recent_handshakes
        q.append(now)
        while q and now - q[0] > 1.0:
            q.popleft()
        return len(q) > self.cookie_threshold

    def _handshake(self, msg: bytes, src: tuple[str, int]) -> None:
        try:
            cookie_reply = self.cookies.check(msg, src, self._under_load(time.monotonic()))
            if cookie_reply is not None:
                self.sock.sendto(cookie_reply, src)
                return
            init = self.responder.open(msg)
        except HandshakeError as e:
            self.events.emit("HandshakeRejected", "HANDSHAKE_FAIL", transport=Transport(*src),
                             detail=e.reason)
            return
        inner = self.peers[init.client_public]
        old = self.by_inner.get(inner.packed)
        if old is not None:  # explicit: a new handshake ends the previous session
            self._transition(self.sessions[old], Event.OPERATOR_TERMINATE,
                             detail="replaced by a new handshake")
        sid = self._new_session_id()
        now = self.clock_ms()
        resp, keys = init.respond(Assignment(sid, ipaddress.IPv4Interface(
            (inner, self.address.network.prefixlen)), self.address.ip))
        if self.fenced or not self.ownership.lease_valid():
            self.events.emit("HandshakeRejected", "OWNERSHIP_CONFLICT", transport=Transport(*src),
                             detail="this gateway's lease is not certainly alive")
            return
        rec = new_session(sid, now, owner=self.events.node_id).with_(
            inner_addr=str(inner), owner_lease=self.ownership.token)
        rec, tr = apply(rec, Event.ATTACH_OK, now, binding=Transport(*src))
        try:
            self.store.create(rec, keys.pack())
        except StoreError as e:
            self.events.emit("HandshakeRejected", "HANDSHAKE_FAIL", sid, detail=str(e))
            return
        self._install(rec, keys, inner.packed)
        self.events.emit("SessionStateChange", tr.reason_code, sid, rec.binding,
                         version=rec.version, previous_state="BIRTH", new_state="ATTACHED")
        self.sock.sendto(resp, src)

    def _new_session_id(self) -> int:
        while True:
            sid = secrets.randbits(64)
            if sid and sid not in self.sessions and self.store.get(sid) is None:
                return sid

    # ------------------------------------------------------------ loops
    def _udp_loop(self) -> None:
        recv, sessions = self.sock.recvfrom, self.sessions
        write, admit = self.tun.write, self.gate.admit
        while not self._stop.is_set():
            try:
                msg, src = recv(65535)
            except OSError:
                return
            if not msg or not admit(msg, src):
                continue
            t = msg[0]
            if t in (abi.MSG_DATA, abi.MSG_KEEPALIVE):
                live = sessions.get(int.from_bytes(msg[8:16], "little"))
                if live is None:
                    continue
                opened = live.channel.open(msg)
                if opened is None:
                    continue
                live.last_rx_ms = self.clock_ms()
                if t == abi.MSG_DATA:
                    packet = (live.channel.reassembly.add(opened[2])
                              if opened[1] & FLAG_FRAGMENT else opened[2])
                    if packet is not None:
                        write(packet)
                else:
                    self._keepalive_reply(live)
            elif t == abi.MSG_HANDSHAKE_INIT:
                with self.control:
                    self._handshake(msg, src)
            elif t in CONTROL_TYPES:
                with self.control:
                    replies = self.reattach.handle(msg, Transport(*src[:2]))
                self._send(replies)

    def _xdp_events_loop(self, reader) -> None:
        """The kernel's sampled security drops join the event stream."""
        try:
            while not self._stop.is_set():
                for ev in reader.poll(200):
                    self.events.emit(
                        "XdpSecurityDrop", abi.COUNTER_NAMES[ev.reason].upper(), ev.session_id,
                        Transport(abi.words_addr(ev.saddr, ev.family), abi.word_port(ev.sport)),
                        where="xdp", counter=ev.counter, msg_type=ev.msg_type)
        finally:
            reader.close()

    def _keepalive_reply(self, live: Live) -> None:
        rec = live.record
        if rec.binding is None or rec.state not in SENDABLE:
            return
        flags = FLAG_REATTACH if rec.state is State.VOLATILE else 0
        try:
            self.sock.sendto(live.channel.seal(b"", abi.MSG_KEEPALIVE, flags),
                             (rec.binding.addr, rec.binding.port))
        except OSError:
            pass  # a closing socket or an unreachable client: the next one may pass

    def _tun_loop(self) -> None:
        read = self.tun.read
        by_inner, sessions = self.by_inner, self.sessions
        while not self._stop.is_set():
            try:
                pkt = read()
            except OSError:
                return
            sid = by_inner.get(inner_dst(pkt))
            live = sessions.get(sid) if sid is not None else None
            if live is None:
                continue
            rec = live.record
            if rec.binding is None or rec.state not in SENDABLE or not live.installed:
                continue
            dst = (rec.binding.addr, rec.binding.port)
            try:
                send_messages(self.sock, live.channel.seal_packet(pkt), dst)
            except OSError:
                continue

    def _timer_loop(self) -> None:
        next_sweep = 0.0
        while not self._stop.wait(0.1):
            with self.control:
                self._check_lease()
                self.reattach.expire()
                for live in list(self.sessions.values()):
                    self._timers(live)
                self._expire_waiting()
            if self.ownership.clustered and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_S
                self._sweep()
                self.gate.publish_owners(self.ownership.node_id, self.ownership.token,
                                         self._remote_owners())

    def _timers(self, live: Live) -> None:
        if live.record.state is State.TERMINATED:
            self._forget(live.record.session_id)
            return
        due = due_timer(live.record, live.last_rx_ms, self.clock_ms(), self.policy)
        if due is not None:
            event, detail, changes = due
            self._transition(live, event, detail=detail, **changes)

    # ------------------------------------------------------------ cluster ownership
    def _claim(self, rec: SessionRecord, keys: SessionKeys, msg: bytes,
               src: Transport) -> SessionRecord | None:
        """Reattach step 5b (after the proof): may this gateway serve the
        session? None: parked until its owner releases it."""
        if self.fenced:
            raise Reject("OWNERSHIP_CONFLICT", "SEC_OWNERSHIP_ANOMALY", "this gateway is fenced")
        try:
            claim, new = self.ownership.claim(rec)
        except OwnershipError as e:
            raise Reject("OWNERSHIP_CONFLICT", "SEC_OWNERSHIP_ANOMALY", e.detail) from None
        sid = rec.session_id
        if claim is Claim.WAIT:
            self.waiting[sid] = Parked(msg, src, self.clock_ms() + HANDOFF_WAIT_MS)
            self.events.emit("OwnershipHandoff", "HANDOFF_REQUESTED", sid, src,
                             version=new.version, owner=rec.owner, to=self.events.node_id)
            return None
        if rec.owner != new.owner:
            self.events.emit("OwnershipHandoff", "OWNER_LEASE_EXPIRED", sid, src,
                             version=new.version, previous_owner=rec.owner,
                             owner=new.owner, detail="the owner's lease is gone: taken over")
        if sid not in self.sessions:
            self._adopt(new, keys)
        return new

    def _reclaim(self, rec: SessionRecord) -> SessionRecord | None:
        """Our record under an older lease of ours (restart, re-registration):
        move it to the current token before serving it."""
        if not self.ownership.clustered or rec.owner_lease == self.ownership.token:
            return rec
        try:
            claim, new = self.ownership.claim(rec)
        except OwnershipError as e:
            self.events.emit("SecurityEvent", "SEC_OWNERSHIP_ANOMALY", rec.session_id,
                             detail=f"not re-claimed: {e.detail}")
            return None
        return new if claim is Claim.MINE else None

    def _on_store_record(self, sid: int, rec: SessionRecord | None) -> None:
        """A session changed in the store (watch or sweep): follow it."""
        with self.control:
            live = self.sessions.get(sid)
            if live is not None:
                self._follow(live, rec)
            elif rec is None or rec.state is State.TERMINATED:
                if self.standby.pop(sid, None) is not None:
                    self.gate.remove(sid)
            elif not self.ownership.owns(rec):
                keys, owner = self.standby.get(sid, (None, None))
                if owner != rec.owner:
                    self._stand_by(rec, keys)
            parked = self.waiting.get(sid)
            if (parked is not None and rec is not None and self.ownership.owns(rec)
                    and not rec.handoff_to):
                del self.waiting[sid]
                self._send(self.reattach.handle(parked.msg, parked.src))

    def _stand_by(self, rec: SessionRecord, keys: SessionKeys | None = None) -> None:
        """Another gateway owns it: a standby element lets the client's
        reattach reach us (a handoff), never its data."""
        if keys is None:
            try:
                got = self.store.get(rec.session_id)
            except StoreError:
                return  # the next sweep tries again
            if got is None:
                return
            keys = SessionKeys.unpack(got[1])
        self.standby[rec.session_id] = (keys, rec.owner)
        self.gate.standby(rec, keys)

    def _remote_owners(self) -> dict[int, str]:
        return {sid: owner for sid, (_keys, owner) in self.standby.items()}

    def _follow(self, live: Live, rec: SessionRecord | None) -> None:
        sid = live.record.session_id
        if rec is None or not self.ownership.owns(rec):
            self._drop_local(sid)  # deleted, or moved while we could not hear it
            self.events.emit("OwnershipHandoff", "OWNERSHIP_LOST", sid,
                             owner=rec.owner if rec else "", detail="the store says not ours")
            if rec is not None and rec.state is not State.TERMINATED:
                self._stand_by(rec, live.keys)
            return
        if rec.version < live.record.version:
            return  # an old event; we already know better
        live.record = rec
        if rec.handoff_to and rec.handoff_to != self.ownership.node_id:
            self._release(live, rec)
        elif live.parked and not self.fenced and rec.owner_lease == self.ownership.token:
            self._put(live, rec)  # a handover that did not happen: serve it again

    def _release(self, live: Live, rec: SessionRecord) -> None:
        """The owner's half of a handoff: our element goes first, then the
        record moves. If the move is refused we serve it again; if the answer
        is ambiguous we stay parked (the sweep decides when the store answers)."""
        sid = rec.session_id
        self.gate.standby(rec, live.keys)  # one element write: no data passes here any more
        floor = self.gate.counter_top(sid)
        live.installed, live.parked = False, True
        try:
            new = self.ownership.handover(rec, floor)
        except OwnershipError as e:
            self.events.emit("OwnershipHandoff", "OWNERSHIP_CONFLICT", sid, to=rec.handoff_to,
                             detail=e.detail)
            self.events.emit("SecurityEvent", "SEC_OWNERSHIP_ANOMALY", sid, detail=e.detail)
            self._refuse_handoff(live, rec)
            return
        self._drop_local(sid)
        self._stand_by(new, live.keys)
        self.events.emit("OwnershipHandoff", "HANDOFF_RELEASED", sid, version=new.version,
                         owner=new.owner, c2s_floor=new.c2s_floor)

    def _refuse_handoff(self, live: Live, rec: SessionRecord) -> None:
        """The requester is gone (or the record moved): clear the request if
        it is still the current record, and serve the session again."""
        try:
            got = self.store.get(rec.session_id)
            if got is None or not self.ownership.owns(got[0]):
                return  # the next sweep or watch event drops it
            cur = got[0]
            if cur.handoff_to and self.store.gateway_lease(cur.handoff_to) is None:
                cur = cur.with_(version=cur.version + 1, handoff_to="", handoff_lease=0)
                self.store.cas(rec.session_id, got[0].version, cur)
        except StoreError:
            return  # ambiguous: stay parked
        if not cur.handoff_to:
            live.record = cur
            self._put(live, cur)

    def _check_lease(self) -> None:
        """Fence: without a certainly-alive lease another gateway may take
        our sessions over, so every element of ours leaves the kernel now.
        The kernel fences itself at the same deadline (set_fence) even if
        this thread never runs again."""
        if not self.ownership.clustered:
            return
        self.gate.set_fence(self.ownership.token, self.ownership.deadline_ns())
        if self.ownership.lease_valid():
            if self.fenced:
                self.fenced = False
                self.events.emit("OwnershipHandoff", "LEASE_RENEWED", detail="unfenced")
            return
        if not self.fenced:
            self.fenced = True
            for live in self.sessions.values():
                if live.installed:
                    self.gate.standby(live.record, live.keys)
                    live.installed, live.parked = False, True
            self.events.emit("SecurityEvent", "SEC_OWNERSHIP_ANOMALY",
                             detail="lease not renewed in time: fenced, no session passes here")
        self._renew_registration()

    def _renew_registration(self) -> None:
        """A lease etcd already dropped cannot come back: register anew (a
        new token); our records are re-claimed by the sweep."""
        if self.store.lease_expired():
            try:
                self.store.register_gateway(self.ownership.node_id, self.store.lease_ttl_s)
            except StoreError:
                return

    def _sweep(self) -> None:
        try:
            records = {r.session_id: r for r in self.store.list()}
        except StoreError:
            return
        known = set(self.sessions) | set(self.waiting) | set(self.standby)
        for sid in known | set(records):
            rec = records.get(sid)
            if rec is not None and sid in self.sessions and self.ownership.owns(rec):
                with self.control:
                    rec = self._reclaim(rec) if not self.fenced else rec
            self._on_store_record(sid, rec)

    def _expire_waiting(self) -> None:
        now = self.clock_ms()
        for sid, p in list(self.waiting.items()):
            if now > p.until_ms:
                del self.waiting[sid]
                self.events.emit("ReattachResult", "OWNERSHIP_CONFLICT", sid, p.src,
                                 accepted=False, detail="the owner did not release in time")

    def _send(self, replies) -> None:
        for reply, to in replies:
            try:
                self.sock.sendto(reply, (to.addr, to.port))
            except OSError:
                pass
