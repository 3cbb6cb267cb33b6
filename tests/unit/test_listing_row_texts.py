"""The daemon's listing rows (jvpn/gateway/snapshot.py) spell networks,
keys and states as str(), base64.b64encode and Enum.name do: their faster
forms (issue 15) are checked against those, hostile-looking values too."""

import base64
import ipaddress
import os
import random

import pytest

from jvpn import keys
from jvpn.gateway import snapshot
from jvpn.session import State


def _networks():
    rng = random.Random(19)
    fixed = ["0.0.0.0/0", "255.255.255.255/32", "10.0.0.0/8", "192.0.2.7/32", "::/0",
             "::ffff:1.2.3.4/128", "2001:db8::/32", "fe80::1:0:0:1/128", "2001:db8:0:1::/64"]
    nets = [ipaddress.ip_network(n) for n in fixed]
    for _ in range(2000):
        prefix = rng.randint(0, 32)
        nets.append(ipaddress.IPv4Network((rng.getrandbits(32) >> (32 - prefix) << (32 - prefix)
                                           if prefix else 0, prefix)))
        nets.append(ipaddress.IPv6Network((rng.getrandbits(128), 128)))
    return nets


def test_a_network_is_spelled_as_str_spells_it():
    for net in _networks():
        assert snapshot._network_text(net) == str(net)


class Subclass(ipaddress.IPv4Network):
    def __str__(self):
        return "its own"


def test_a_network_of_another_type_is_its_str():
    assert snapshot._network_text(Subclass("10.0.0.0/8")) == "its own"


@pytest.mark.parametrize("size", [0, 1, 2, 3, 31, 32, 33, 64])
def test_a_key_is_encoded_as_b64encode_does(size):
    for _ in range(50):
        raw = os.urandom(size)
        assert keys.encode(raw) == base64.b64encode(raw).decode()
        assert keys.encode(bytearray(raw)) == base64.b64encode(raw).decode()


def test_a_state_name_is_its_enum_name():
    assert all(s._name_ == s.name for s in State)
