"""The gateway daemon serves its operator socket while it runs, and only then."""

from __future__ import annotations

import pytest

from jvpn import operator as client
from jvpn.gateway.operator import SocketInUse
from kits.daemon_kit import make_gateway


def test_the_running_gateway_answers_on_its_socket_and_removes_it_at_stop(tmp_path):
    path = tmp_path / "run" / "gateway.sock"
    gw = make_gateway(tmp_path, operator_socket=path)
    gw.start()
    try:
        got = client.call(path, "ping")
        assert got["node_id"] == "gw-test" and got["gate"] == "userspace"
    finally:
        gw.stop()
    assert not path.exists()
    with pytest.raises(client.NoDaemon):
        client.call(path, "ping")


def test_a_second_gateway_on_the_same_socket_is_refused_before_it_serves(tmp_path):
    path = tmp_path / "run" / "gateway.sock"
    first = make_gateway(tmp_path, operator_socket=path)
    first.start()
    try:
        with pytest.raises(SocketInUse):
            make_gateway(tmp_path, operator_socket=path)
        assert client.call(path, "ping")["node_id"] == "gw-test"
    finally:
        first.stop()
