"""`client up` with DNS, the four hooks and an Endpoint host name, in the lab
(issue 11). The client runs with a private /etc (jvpn/lab/private_etc.py):
its /etc/hosts names the gateway, its /etc/resolv.conf is a file in
tmp_path; the host's own files are never written."""

from __future__ import annotations

from pathlib import Path

import pytest

from jvpn.lab.addresses import (
    CLIENT_DNS_SEARCH,
    GW_HOSTNAME,
    GW_INNER,
    GW_IP,
    PORT,
    UPLINK_DNS,
)
from jvpn.lab.private_etc import PrivateEtc
from jvpn.lab.tunnel import TunnelLab

pytestmark = pytest.mark.kernel

ORIGINAL = f"nameserver {UPLINK_DNS}\nsearch uplink.test\n"


def hook(log: Path, kind: str) -> str:
    """Logs the hook's kind, %i, whether DNS points into the tunnel, and whether the TUN exists."""
    return (f"{kind} = echo {kind} %i dns=$(grep -c 'nameserver {GW_INNER}' /etc/resolv.conf)"
            f" tun=$(ip link show %i >/dev/null 2>&1 && echo yes || echo no) >> {log}\n")


def test_dns_hooks_and_a_host_name_endpoint(tmp_path):
    host_resolv = Path("/etc/resolv.conf").read_bytes()
    log = tmp_path / "hooks.log"
    etc = PrivateEtc(tmp_path, resolv_conf=ORIGINAL,
                     hosts=f"127.0.0.1 localhost\n{GW_IP} {GW_HOSTNAME}\n")
    extra = (f"DNS = {GW_INNER}, {CLIENT_DNS_SEARCH}\n" + hook(log, "PreUp") + hook(log, "PostUp")
             + hook(log, "PreDown") + hook(log, "PostDown"))
    tl = TunnelLab(tmp_path, client_extra=extra, endpoint=GW_HOSTNAME, client_wrap=etc.wrap())
    tl.up()
    try:
        # the lab saw the TUN's address; DNS and PostUp come after it
        tl.wait(lambda: log.exists() and "PostUp" in log.read_text(), "PostUp", proc=tl.client)
        # up: the host name was resolved through the private /etc/hosts, and said so
        [resolved] = [e for e in tl.client_event_list() if e["event_type"] == "EndpointResolved"]
        assert (resolved["name"], resolved["address"], resolved["port"]) == (
            GW_HOSTNAME, GW_IP, PORT)
        # DNS points into the tunnel while up; the previous file is kept next to it
        lines = etc.resolv_conf.read_text().splitlines()
        assert lines[0].startswith("# jvpn-xdp client pid")
        assert lines[1:] == [f"nameserver {GW_INNER}", f"search {CLIENT_DNS_SEARCH}"]
        assert (etc.upper / "resolv.conf.jvpn-backup").read_text() == ORIGINAL
        # the session works: the gateway's inner address answers through the tunnel
        tl.lab.run("cl", "ping", "-c", "2", "-W", "2", GW_INNER)
        tl.client.terminate()
        assert tl.client.wait(timeout=30) == 0, tl.logs()
    finally:
        tl.down()
    assert etc.resolv_conf.read_text() == ORIGINAL
    assert not (etc.upper / "resolv.conf.jvpn-backup").exists()
    assert log.read_text().splitlines() == [
        "PreUp jvpn0 dns=0 tun=no", "PostUp jvpn0 dns=1 tun=yes",
        "PreDown jvpn0 dns=1 tun=yes", "PostDown jvpn0 dns=0 tun=no"]
    assert Path("/etc/resolv.conf").read_bytes() == host_resolv


def test_a_failing_post_up_stops_up_and_undoes_dns(tmp_path):
    """Through the real CLI: one `error:` line naming the hook and its line, exit 1, DNS
    put back, PostDown run (its PreUp ran), PreDown not (PostUp never completed)."""
    log = tmp_path / "hooks.log"
    etc = PrivateEtc(tmp_path, resolv_conf=ORIGINAL, hosts=f"{GW_IP} {GW_HOSTNAME}\n")
    extra = (f"DNS = {GW_INNER}\n" + hook(log, "PreUp") + "PostUp = exit 7\n"
             + hook(log, "PreDown") + hook(log, "PostDown"))
    tl = TunnelLab(tmp_path, client_extra=extra, endpoint=GW_HOSTNAME, client_wrap=etc.wrap(),
                   xdp=False)
    tl.lab.up()
    try:
        tl.start_gateway()
        client = tl.lab.spawn("cl", *etc.wrap(), *tl.lab.jvpn_cmd(
            "client", "up", "--config", str(tmp_path / "client.conf")),
            log=tmp_path / "client.log", env=tl.client_env())
        assert client.wait(timeout=60) == 1
    finally:
        tl.down()
    errors = [ln for ln in (tmp_path / "client.log").read_text().splitlines()
              if ln.startswith("error:")]
    conf = tmp_path / "client.conf"  # the error names the hook's own line (issue 12)
    line = next(n for n, text in enumerate(conf.read_text().splitlines(), start=1)
                if text.startswith("PostUp"))
    assert errors == [f"error: {conf}:{line}: PostUp hook 1 of 1 ('exit 7') failed with exit "
                      "status 7"]
    assert etc.resolv_conf.read_text() == ORIGINAL
    assert not (etc.upper / "resolv.conf.jvpn-backup").exists()
    assert log.read_text().splitlines() == ["PreUp jvpn0 dns=0 tun=no",
                                            "PostDown jvpn0 dns=0 tun=no"]
