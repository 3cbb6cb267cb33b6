"""jvpn/lab/impair.py in a real router namespace: a blackhole on one uplink
silences that path only (both directions, its link still up), clearing it
brings the path back, and the table is gone on exit."""

import pytest

from jvpn.lab.addresses import GW_IP
from jvpn.lab.impair import TABLE, Impairments, nft_in
from jvpn.lab.netns import RoamingLab

pytestmark = pytest.mark.kernel


def _ping(lab: RoamingLab, uplink: str) -> bool:
    out = lab.run("cl", "ping", "-c", "1", "-W", "1", "-I", uplink, GW_IP, check=False)
    return out.returncode == 0


def test_blackhole_silences_one_uplink_and_the_table_goes_on_exit():
    with RoamingLab(with_attacker=False) as lab:
        assert _ping(lab, "wifi") and _ping(lab, "lte")
        with Impairments(nft_in(lab)) as imp:
            imp.blackhole("wifi")
            assert not _ping(lab, "wifi") and _ping(lab, "lte")
            link = lab.run("cl", "ip", "-o", "link", "show", "wifi").stdout
            assert "state UP" in link  # silent: no link event
            imp.clear("wifi")
            assert _ping(lab, "wifi")
            imp.set("lte", 100)
        tables = lab.run("rt", "nft", "list", "tables").stdout
        assert TABLE not in tables
        assert _ping(lab, "lte")
