"""Fixtures the cluster tier shares: a throwaway etcd per module, and an
in-process cluster (gateways on that etcd, a client) inside its own namespace."""

from __future__ import annotations

import pytest

from jvpn.lab.etcd import EtcdServer
from kits.cluster_kit import Cluster, need_etcd, netns


@pytest.fixture(scope="module")
def etcd():
    need_etcd()
    server = EtcdServer().start()
    yield server
    server.remove()


@pytest.fixture
def cluster(tmp_path):
    need_etcd()
    with netns():
        c = Cluster(tmp_path)
        try:
            yield c
        finally:
            c.close()
