"""Why a handshake failed, from what the client could observe: one line
naming the likely causes and the config keys to check (issue 12, "every
handshake failure looks the same").

What the client can tell apart:
- no answer at all: the gateway is down or unreachable (a firewall), the
  Endpoint is wrong, or the gateway does not know this client's key or the
  client has the wrong gateway key: the gateway is silent to initiations it
  cannot authenticate, by design, so these look alike from here;
- ICMP port unreachable (ECONNREFUSED): the gateway's host answered, nothing
  listens on that port;
- only cookie replies: the gateway is under load (its HandshakesPerSecond);
- a response that does not decrypt: something answered as the gateway
  without the key the client expects -- if every attempt met one; fewer are
  late or forged replies (ignored: the attempt keeps waiting) and said so;
- answers from another address or port: dropped unread (a gateway behind a
  NAT or answering from another address than Endpoint);
- no initiation could be sent at all (no route to the Endpoint);
- every send failed on an ICMP error queued for the socket (IP_RECVERR):
  drained and retried, then worded as ICMP, never as a routing problem.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Observed:
    attempts: int = 0
    refused: int = 0  # ICMP port unreachable for our initiation
    cookies: int = 0  # COOKIE_REPLY: the gateway is there, under load
    undecryptable: int = 0  # a HANDSHAKE_RESP that failed to open
    strangers: int = 0  # datagrams from another address or port, dropped
    unsent: int = 0  # initiations the kernel refused to send (no route...)
    unsent_why: str = ""
    icmp_unsent: int = 0  # initiations every send of which failed on an ICMP error


def cause_line(o: Observed, endpoint: tuple[str, int], seconds: float) -> str:
    """The failure in one line: what was seen, the likely causes, the keys."""
    where = f"{endpoint[0]}:{endpoint[1]}"
    head = f"no session with the gateway {where} after {o.attempts} attempts ({seconds:.0f} s)"
    if o.icmp_unsent and not o.refused and o.icmp_unsent + o.unsent == o.attempts:
        return (f"{head}: refused (ICMP): every send failed on an ICMP error reported to the "
                f"socket ({o.icmp_unsent}x), none of them a port unreachable from {where} "
                "(forged ICMP errors, a flood, can do this); check the network path to "
                f"{endpoint[0]} and that the gateway runs, then try again")
    if o.unsent and o.unsent == o.attempts:
        return (f"{head}: no initiation could be sent ({o.unsent_why}): check this host's "
                f"route to {endpoint[0]} and [Peer] Endpoint")
    if o.undecryptable and o.undecryptable < o.attempts:  # some attempts met silence
        head += f" ({o.undecryptable}x a reply did not verify (late or forged): ignored)"
    elif o.undecryptable:  # every attempt's reply failed: the keys do not match
        return (f"{head}: a response did not decrypt ({o.undecryptable}x): whatever answers at "
                "Endpoint is not the gateway whose key is [Peer] PublicKey; check PublicKey "
                "(the gateway's public key) and Endpoint in the client config")
    if o.refused:
        return (f"{head}: ICMP port unreachable ({o.refused}x): nothing listens on UDP port "
                f"{endpoint[1]} there; check that the gateway runs (`jvpn-xdp gateway up`) and "
                "the port in [Peer] Endpoint (the gateway's ListenPort)")
    if o.cookies:
        return (f"{head}: the gateway answered with cookies only ({o.cookies}x): it is under "
                "load (its HandshakesPerSecond); try again later")
    if o.strangers:
        return (f"{head}: {o.strangers} answers came from another address or port and were "
                "dropped: [Peer] Endpoint must be the address and port the gateway answers from")
    return (f"{head}: no answer at all. Likely: the gateway is down or unreachable (a firewall "
            f"on UDP {endpoint[1]}), a wrong [Peer] Endpoint, or keys that do not match (this "
            "client's public key missing from the gateway's PeersFile, or [Peer] PublicKey "
            "not the gateway's key: the gateway does not answer what it cannot authenticate)")


# what the client can add to the gateway's reason when that explains more
_ENDED_WHY = {
    "KEY_EXPIRED": ("the session's keys reached the gateway's keys.reject_after_ms (or "
                    "reject_after_messages) before a rekey completed (no rekey answer got "
                    "through, or the gateway refused them); check the path to the gateway "
                    "and its [keys] policy"),
}


def terminated_line(reason: str) -> str:
    """The one line for the gateway's authenticated TERMINATE naming ``reason``."""
    why = _ENDED_WHY.get(reason)
    return f"session ended by the gateway: {reason}" + (f": {why}" if why else "")
