"""The session table's raises of the gate's floors, the one element write
the data thread makes (jvpn/gateway/datapath.py, probes.py): a monotone
raise of one field, serialized with the other element writes by the gate's
own lock, so it needs no control lock. A mixin of
:class:`jvpn.gateway.table.SessionTable`, which stays the one writer of
elements."""

from __future__ import annotations


class Floors:
    def raise_control_floor(self, sid: int, counter: int) -> None:
        """A keepalive or control message of ``sid`` the daemon verified (and
        recorded in its own window): the gate drops every keepalive / control
        message whose counter is at or below it, before any bucket (issue 10
        item 5). The one element write the data thread makes: a monotone
        raise of one field, serialized with the other element writes by the
        gate's own lock, so it needs no control lock."""
        self.gate.raise_ctl_floor(sid, counter)

    def raise_probe_floor(self, sid: int, counter: int) -> None:
        """A PATH_PROBE the daemon verified (jvpn/gateway/probes.py, its only
        caller): the gate drops probes at or below it, before their bucket
        (issue 14). Written as the control floor is."""
        self.gate.raise_probe_floor(sid, counter)
