"""jvpn/rtnl.py, the client's raw rtnetlink reader: its answers match
pyroute2's for the same kernel state, and it decodes what pyroute2
encodes."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from jvpn.rtnl import NetlinkError, Rtnl, attrs, messages, parse_address, parse_link


def _body(msg) -> bytes:
    msg.encode()
    return bytes(msg.data)[16:]  # past the netlink header


def test_a_link_as_pyroute2_encodes_it():
    m = ifinfmsg()
    m["index"], m["flags"] = 7, 0x1043
    m["attrs"] = [("IFLA_IFNAME", "wifi"), ("IFLA_MTU", 1492)]
    link = parse_link(_body(m))
    assert (link.index, link.name, link.flags, link.mtu) == (7, "wifi", 0x1043, 1492)


def test_an_address_as_pyroute2_encodes_it():
    m = ifaddrmsg()
    m["family"], m["prefixlen"], m["index"] = 2, 24, 3
    m["attrs"] = [("IFA_ADDRESS", "10.77.1.2")]
    assert parse_address(_body(m)) == (3, ipaddress.ip_interface("10.77.1.2/24"))


def test_truncated_input_ends_the_lists_instead_of_reading_past_them():
    one = struct.pack("=HH", 8, 4) + struct.pack("=I", 9)
    assert attrs(one + struct.pack("=HH", 40, 5), 0, len(one) + 4) == {4: struct.pack("=I", 9)}
    header = struct.pack("=IHHII", 100, 24, 0, 1, 0)  # claims 100 bytes, has 16
    assert list(messages(header)) == []


def _links_match(ipr, nl) -> bool:
    """One dump each agrees (other tests add and remove links meanwhile:
    asked again when they differ)."""
    theirs = {m["index"]: (m.get_attr("IFLA_IFNAME"), m["flags"]) for m in ipr.get_links()}
    return {link.index: (link.name, link.flags) for link in nl.links()} == theirs


def test_the_kernels_answers_match_pyroute2s():
    with IPRoute() as ipr, Rtnl() as nl:
        assert any(_links_match(ipr, nl) for _ in range(5))
        r = ipr.route("get", dst="127.0.0.1")[0]
        mine = nl.route_get("127.0.0.1")
        assert (mine.prefsrc, mine.oif) == (r.get_attr("RTA_PREFSRC"), r.get_attr("RTA_OIF"))
        assert ipaddress.ip_interface("127.0.0.1/8") in nl.addresses(mine.oif)
        assert nl.link(mine.oif).name == "lo"


def test_a_refused_request_is_an_oserror():
    with Rtnl() as nl, pytest.raises(NetlinkError):
        nl.route_get("127.0.0.1", oif=2**31 - 1)  # no such interface
    with Rtnl() as nl:
        assert nl.link(2**31 - 1) is None


def test_only_the_kernels_datagrams_are_read():
    """A datagram from another netlink socket (a process with
    CAP_NET_ADMIN: root here) is skipped, not taken for an answer."""
    import socket

    from jvpn.rtnl import from_kernel

    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as reader, \
            socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as other:
        reader.bind((0, 0))
        other.bind((0, 0))
        reader.settimeout(0.2)
        done = struct.pack("=IHHII", 16, 3, 0, 1, 0)  # an NLMSG_DONE
        other.sendto(done, (reader.getsockname()[0], 0))
        assert reader.recvfrom(64)[1][0] == other.getsockname()[0]  # it does arrive
        other.sendto(done, (reader.getsockname()[0], 0))
        with pytest.raises(TimeoutError):
            from_kernel(reader)
