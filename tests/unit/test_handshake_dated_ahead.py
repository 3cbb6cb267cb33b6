"""Review k21 of the restore rule (a record whose handshake_ns is more than
HANDSHAKE_AHEAD_MAX_MS ahead of its created_ms is unreadable): the gateway
must never write such a record itself, or the rule drops honest sessions
at the next start. It did, two ways: a client whose clock was more than a
day ahead (its initiation answered, its session then lost at every
restart; and its claim in the store, a day and more ahead, made its
initiations replays once its clock was set right), and a gateway whose
wall clock was behind (stepped back) when it answered. The initiation is
refused now, before anything is claimed or written (``FRESHNESS_INVALID``),
checked by the very clock reading the record's created_ms is: every record
the gateway writes passes the rule, whatever its clock did since.

Clocks injected: the gateway's ``Clock``, the client's timestamps."""

from __future__ import annotations

from test_capacity_answerable import MS, T0_NS

from jvpn import keys
from jvpn.codes import Reason
from jvpn.config import HANDSHAKE_AHEAD_MAX_MS
from jvpn.handshake import Initiator
from jvpn.store.sqlite import SqliteStore
from kits.daemon_kit import CLIENT, GW_PUB, PEER_KEYS, AdmitAll, Clock, events_of, make_gateway

DAY_MS = 86_400_000


def _gateway(tmp_path, store, clock):
    return make_gateway(tmp_path, gate=AdmitAll(), clock=clock, cookie_threshold_per_s=10_000,
                        store=store)


def _answered(gw, stamp_ns: int) -> bool:
    """Peer 0's initiation stamped ``stamp_ns`` (its clock): answered?"""
    init = Initiator(PEER_KEYS[0], GW_PUB, clock_ns=lambda: stamp_ns)
    n = len(gw.sock.sent)
    gw.datapath.datagram(init.initiation(), CLIENT)
    return bool(gw.sock.sent[n:])


def _public(peer: int) -> bytes:
    return keys.public_from_private(PEER_KEYS[peer])


def _refusals(gw, reason: Reason) -> list[dict]:
    return [e for e in events_of(gw.events, "HandshakeRejected") if e["reason_code"] == reason]


def test_an_initiation_dated_past_the_bound_is_refused_before_any_write(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    gw = _gateway(tmp_path, store, Clock())
    assert not _answered(gw, T0_NS + (HANDSHAKE_AHEAD_MAX_MS + 1) * MS)
    [refusal] = _refusals(gw, Reason.FRESHNESS_INVALID)
    assert "ahead of this gateway's clock" in refusal["detail"]
    assert not gw.sessions and store.list() == []
    assert store.last_initiation(_public(0)) == 0
    assert store._db.execute("SELECT COUNT(*) FROM initiations").fetchone() == (0,)
    # its clock set right, the client handshakes: nothing of the refused one bars it
    assert _answered(gw, T0_NS + 1_000 * MS)
    store.close()


def test_at_the_bound_it_is_answered_and_restored(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    gw = _gateway(tmp_path, store, clock)
    assert _answered(gw, T0_NS + HANDSHAKE_AHEAD_MAX_MS * MS)
    [sid] = gw.sessions
    again = _gateway(tmp_path, store, clock)
    again.reconcile()
    assert sid in again.sessions
    store.close()


def test_whatever_the_gateway_clock_did_its_own_records_are_restored(tmp_path):
    """The gateway's wall clock stepped back two days (a bad NTP source, an
    RTC) between two handshakes of a client whose clock is right, then set
    right again before a restart: the record it wrote is restored, or was
    never written (the second handshake is refused while the clock is
    wrong), never written and then dropped at the restart."""
    store = SqliteStore(tmp_path / "s.db")
    clock = Clock()
    gw = _gateway(tmp_path, store, clock)
    assert _answered(gw, T0_NS)
    clock.ms -= 2 * DAY_MS
    _answered(gw, T0_NS + 1_000 * MS)
    written = {r.session_id for r in store.list()}
    clock.ms += 2 * DAY_MS + 2_000
    again = _gateway(tmp_path, store, clock)
    again.reconcile()
    assert written <= set(again.sessions), "a record the gateway wrote is dropped at restart"
    assert not [e for e in events_of(again.events, "DaemonError")
                if e["reason_code"] == "STORE_RECORD_UNREADABLE"]
    store.close()
