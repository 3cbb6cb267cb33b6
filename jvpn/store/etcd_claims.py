"""The etcd store's initiation claims (``<prefix>initiations/<peer key
hex>``: the peer's newest accepted handshake timestamp). A mixin of
jvpn/store/etcd.py's EtcdStore (its key layout, reads and transactions)."""

from __future__ import annotations

from jvpn.store import StoreError, check_lowering
from jvpn.store.etcd_codec import _b64, _initiation


class EtcdClaims:
    def claim_initiation(self, peer: bytes, timestamp_ns: int) -> bool:
        """Compare-and-swap on the key's revision: of two gateways that
        claim one initiation at once, one transaction wins and the other
        re-reads a value that is not older (False)."""
        key = self._key("initiations", peer.hex())
        for _ in range(5):
            got = self._get_raw(key)
            if got is not None and _initiation(got[0], key) >= timestamp_ns:
                return False
            compare = ([{"key": _b64(key), "result": "EQUAL", "target": "CREATE",
                         "create_revision": 0}] if got is None else
                       [{"key": _b64(key), "result": "EQUAL", "target": "MOD",
                         "mod_revision": got[1]}])
            if self._txn(compare, [self._put(key, str(timestamp_ns))]):
                return True
        raise StoreError(f"handshake timestamp of {peer.hex()[:16]}...: too much contention")

    def last_initiation(self, peer: bytes) -> int:
        key = self._key("initiations", peer.hex())
        got = self._get_raw(key)
        return _initiation(got[0], key) if got is not None else 0

    def lower_claim(self, peer: bytes, claimed_ns: int, lowered_ns: int) -> bool:
        """Store.lower_claim: one transaction comparing the value itself
        with ``claimed_ns`` as claim_initiation wrote it (its text): a claim
        another gateway moved meanwhile, or any other text, is left."""
        check_lowering(claimed_ns, lowered_ns)
        key = self._key("initiations", peer.hex())
        return self._txn([{"key": _b64(key), "result": "EQUAL", "target": "VALUE",
                           "value": _b64(str(claimed_ns))}],
                         [self._put(key, str(lowered_ns))])
