"""Contract checks every store backend must pass (SQLite, etcd)."""

import threading

import pytest

from jvpn.session import Transport
from jvpn.store import StoreError, VersionConflict


def concurrent_cas_has_one_winner(store, rec, racers: int) -> None:
    """``racers`` threads CAS the same record from the same version at once:
    exactly one wins, and its binding is the one stored."""
    store.create(rec, b"k")
    wins, losses = [], []
    barrier = threading.Barrier(racers)

    def racer(i):
        new = rec.with_(version=rec.version + 1, binding=Transport("203.0.113.1", 1000 + i))
        barrier.wait()
        try:
            store.cas(rec.session_id, rec.version, new)
            wins.append(i)
        except VersionConflict:
            losses.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == racers - 1
    assert store.get(rec.session_id)[0].binding.port == 1000 + wins[0]


def initiation_claims_have_one_winner(store, racers: int) -> None:
    """Handshake timestamps (issue 10 item 7): a claim succeeds only when
    newer than every earlier one; ``racers`` threads claiming one
    initiation at once (gateways that all received it) have one winner."""
    peer = bytes(range(32))
    assert store.last_initiation(peer) == 0
    assert store.claim_initiation(peer, 1_000) is True
    assert store.claim_initiation(peer, 1_000) is False  # the same initiation again
    assert store.claim_initiation(peer, 999) is False
    wins = []
    barrier = threading.Barrier(racers)

    def racer():
        barrier.wait()
        if store.claim_initiation(peer, 2_000):
            wins.append(1)

    threads = [threading.Thread(target=racer) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and store.last_initiation(peer) == 2_000


def lowering_a_claim_compares_first(store) -> None:
    """Store.lower_claim (review k21r2 F1): the claim set lower only if it
    is the value compared with, now; otherwise False and nothing changed.
    Racers lowering one claim at once (two gateways starting on one
    store): one lowers it, the others find it moved. Arguments that are
    no lowering fail closed (StoreError), the claim as it was."""
    peer = bytes(range(1, 33))
    assert store.lower_claim(peer, 9_000, 1_000) is False  # no claim: none made
    assert store.last_initiation(peer) == 0
    assert store.claim_initiation(peer, 9_000) is True
    assert store.lower_claim(peer, 8_999, 1_000) is False  # not the claim
    assert store.lower_claim(peer, 9_001, 1_000) is False
    assert store.last_initiation(peer) == 9_000
    for claimed, lowered in ((9_000, 9_000), (9_000, 9_001), (9_000, -1), (1 << 63, 5)):
        with pytest.raises(StoreError):
            store.lower_claim(peer, claimed, lowered)
    assert store.last_initiation(peer) == 9_000
    wins = []
    barrier = threading.Barrier(4)

    def racer(to: int):
        barrier.wait()
        if store.lower_claim(peer, 9_000, to):
            wins.append(to)

    threads = [threading.Thread(target=racer, args=(1_000 + i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and store.last_initiation(peer) == wins[0]
    assert store.claim_initiation(peer, wins[0]) is False  # the lowered claim bars as any
    assert store.claim_initiation(peer, wins[0] + 1) is True


def replay_ceiling_rules(store, rec) -> None:
    """The replay ceiling (jvpn/gateway/ceiling.py): raised never lowers it
    (and makes it not exact), settled sets it exactly, deleting the session
    deletes it."""
    sid = rec.session_id
    store.create(rec, b"k")
    assert store.get_replay_ceiling(sid) == (0, True)
    store.raise_replay_ceiling(sid, 1 << 16)
    store.raise_replay_ceiling(sid, 5)
    assert store.get_replay_ceiling(sid) == (1 << 16, False)
    store.settle_replay_ceiling(sid, 42)
    assert store.get_replay_ceiling(sid) == (42, True)
    store.raise_replay_ceiling(sid, 40)  # covered: still exact
    assert store.get_replay_ceiling(sid) == (42, True)
    store.raise_replay_ceiling(sid, 50)
    assert store.get_replay_ceiling(sid) == (50, False)
    store.delete(sid)
    assert store.get_replay_ceiling(sid) == (0, True)


def secrets_move_with_the_record(store, rec) -> None:
    """A rekey's compare-and-swap writes the record and the secrets together
    (or neither); a secrets-only write keeps the version and still needs it."""
    import pytest  # noqa: PLC0415

    from jvpn.store import StoreError, VersionConflict  # noqa: PLC0415

    store.create(rec, b"epoch 0")
    new = rec.with_(version=rec.version + 1, key_epoch=1)
    store.cas(rec.session_id, rec.version, new, secrets=b"epoch 1 and 0")
    assert store.get(rec.session_id) == (new, b"epoch 1 and 0")
    with pytest.raises(VersionConflict):  # a stale writer changes neither
        store.cas(rec.session_id, rec.version, new.with_(version=new.version + 1),
                  secrets=b"rolled back")
    store.cas(rec.session_id, new.version, new, secrets=b"epoch 1")  # the overlap's end
    assert store.get(rec.session_id) == (new, b"epoch 1")
    with pytest.raises(StoreError):  # the same version without secrets is no write
        store.cas(rec.session_id, new.version, new)
    store.cas(rec.session_id, new.version, new.with_(version=new.version + 1))
    assert store.get(rec.session_id)[1] == b"epoch 1"  # a record write keeps the secrets
