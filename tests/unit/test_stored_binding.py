"""A stored session record whose transport (its binding, or a reattach's
candidate) is not an address and a UDP port (a damaged or hostile store:
the store is attack surface) was read back as a record: the gate's element
and the sends would each make of the text what they could (ipaddress's
refusal at the install, a getaddrinfo lookup of a name at a send). Ambiguity
is failure: such a record is unreadable to every read of the store (skipped
and reported, the store left as it is), and no store writes one. The etcd
store's reads: tests/cluster/test_store_malformed.py."""

from __future__ import annotations

import json

import pytest

from jvpn.session import Event, Transport, apply, new_session
from jvpn.store import StoreError, Unreadable, record_from_json, record_to_json
from jvpn.store.record_text import fields_of
from jvpn.store.sqlite import SqliteStore

SID = 7
# (field, damaged value): text that is no IPv4/IPv6 address, a port no UDP source has
DAMAGED = [
    ("addr", "not an address"), ("addr", ""), ("addr", "198.18.0.1.5"),
    ("addr", "198.018.0.1"), ("addr", "localhost"), ("addr", "2001:db8::g"),
    ("addr", "198.18.0.1 "), ("port", 0), ("port", 65536), ("port", -1),
]


BOUND = Transport("198.18.0.1", 4000)


def _attached(binding: Transport = BOUND):
    return apply(new_session(SID, 1_000).with_(peer_key="k"), Event.ATTACH_OK, 1_001,
                 binding=binding)[0]


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(tmp_path / "s.db")
    s.skipped = []
    s.on_unreadable = lambda key, detail: s.skipped.append(detail)
    yield s
    s.close()


def _damage(store, transport: str, field: str, value) -> None:
    """The stored record's transport field set, past the store's own writing."""
    store._db.execute(f"UPDATE sessions SET record = json_set(record, '$.{transport}', "
                      "json(?))", (json.dumps({"addr": "198.18.0.1", "port": 4000,
                                               field: value}),))
    store._db.commit()


def _stored_text(store) -> str:
    return store._db.execute("SELECT record FROM sessions").fetchone()[0]


@pytest.mark.parametrize(("field", "value"), DAMAGED)
@pytest.mark.parametrize("transport", ["binding", "candidate"])
def test_every_read_skips_and_reports_a_transport_that_is_no_address(store, transport,
                                                                     field, value):
    store.create(_attached(), b"secrets")
    _damage(store, transport, field, value)
    damaged = _stored_text(store)
    assert store.get(SID) is None
    assert store.list() == []
    assert list(store.restorable()) == []
    assert len(store.skipped) == 3
    assert _stored_text(store) == damaged  # reported, the store left as it is


@pytest.mark.parametrize(("field", "value"), DAMAGED)
def test_both_parsing_paths_refuse_it(field, value):
    """The layout's fast path (jvpn/store/record_text.py) and json's."""
    text = record_to_json(_attached())
    doc = json.loads(text)
    doc["binding"][field] = value
    written = json.dumps({"addr": "198.18.0.1", "port": 4000})
    in_layout = text.replace(written, json.dumps(doc["binding"]))
    if field == "port":  # read by the layout, refused by the range check after it
        assert fields_of(in_layout) is not None
    for damaged in (in_layout, json.dumps(doc, indent=1)):  # other spacing: json's path
        with pytest.raises(Unreadable, match=r"address|port"):
            record_from_json(damaged)


@pytest.mark.parametrize("binding", [Transport("2001:db8::1", 1), Transport("10.0.0.9", 65535),
                                     Transport("::ffff:10.0.0.9", 443),
                                     Transport("fe80::1%eth0", 51820)])
def test_an_address_and_a_port_read_back(store, binding):
    """IPv4, IPv6 (a link-local one with its zone, as recvfrom gives it), the ports' ends."""
    rec = _attached(binding)
    store.create(rec, b"secrets")
    assert store.get(SID)[0] == rec and store.list() == [rec] and store.skipped == []


@pytest.mark.parametrize(("field", "value"), DAMAGED)
def test_no_store_writes_it(store, field, value):
    """The write fails closed: never a row every later read skips."""
    bad = Transport(**{"addr": "198.18.0.1", "port": 4000, field: value})
    for rec in (_attached(bad), _attached().with_(candidate=bad)):
        with pytest.raises(StoreError, match="not written"):
            store.create(rec, b"secrets")
    assert store._db.execute("SELECT COUNT(*) FROM sessions").fetchone() == (0,)
