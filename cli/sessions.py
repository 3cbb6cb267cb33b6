"""`jvpn-xdp sessions [IFACE]`: the sessions in the pinned maps, as the XDP
program sees them (binding from the sessions map, traffic and replay state
from the runtime map the program writes), merged with the running daemon's
identities (peer, key, inner address; cli/views.py)."""

from __future__ import annotations

import json
import math
import operator
import socket
import struct
import sys
from collections import Counter
from collections.abc import Iterable

import click

from jvpn.errors import JvpnError
from jvpn.gate import abi, pins, records
from jvpn.gcpause import paused_gc
from jvpn_cli import rowtext, views
from jvpn_cli.app import App, session_id_hex

# More rows than a terminal shows usefully (and a rich table of a million
# rows takes minutes): the table then says how many by state and shows the
# first ones; --json has every session.
TABLE_MAX_ROWS = 1_000


@click.command(short_help="List the sessions, with their peers.")
@click.argument("iface", required=False)
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON, every field, ids whole: {"IFACE": [session, ...], ...}.')
@click.option("--wide", is_flag=True, help="Every column, session ids and keys whole.")
@click.option("--socket", "socket_path", metavar="PATH", default=None,
              help="The gateway's operator socket (default: <run dir>/gateway.sock).")
@click.pass_obj
def sessions(app: App, iface: str | None, as_json: bool, wide: bool,
             socket_path: str | None) -> None:
    """List the sessions in the pinned maps of IFACE (default: every attached
    interface), merged with the running gateway daemon's view of them: the
    peer's Name, public key and inner address, the traffic it sent, how long
    since it last heard the client, and the session's key epoch (0: the
    handshake's keys, +1 per rekey) and the age of its current keys ("key";
    the epoch in --wide, "7*" while a committed epoch 7 is unconfirmed and
    the gateway still seals under 6, "7+" while 6 is still accepted after
    the confirmation: the overlap; --json key_confirmed, key_overlap).
    Without a daemon, the maps alone (one line on stderr says so: no
    identities, no key epoch or age); with the userspace gate, the daemon
    alone.

    From the maps: session id (hex), state (REMOTE: a session another
    gateway of the cluster owns, from the remote sessions map, or an element
    of ours that passes no data: parked for a handover, fenced), owner (the gateway that serves it:
    this one when the element's fence is this daemon's lease; "stale" for an
    element under an older lease), version, fence, bound transport address
    ("-" when unbound), and from the runtime state the XDP program keeps:
    packets and bytes received and the highest counter accepted ("-" before
    the first authentic packet). The table fits 80 columns (ids cut to 8 hex
    digits, sizes in K/M/G of 1024, ages in s/m/h/d); --wide and --json have
    everything. More than 1,000 sessions: one line with their count by
    state, then the first 1,000 by id (--json has every session, written
    one at a time; the maps are read in batches and the daemon asked in
    pages). --json is written as it is read: if the listing fails part-way,
    stdout holds JSON cut off and the exit status is 1 (check it). A reader
    that pauses longer than the daemon keeps a listing (60 s) resumes past
    the last session read. Needs root (and bcc for the maps).
    """
    with paused_gc():  # a million sessions: two million rows, none in a cycle
        _list_sessions(app, iface, as_json, wide, socket_path)


# what reading a page or a row of odd shape raises (a daemon's answer of
# the wrong types: review k19r2 F2); one line, not a traceback
_MALFORMED = (AttributeError, IndexError, KeyError, OverflowError, TypeError, ValueError)


def _list_sessions(app: App, iface: str | None, as_json: bool, wide: bool,
                   socket_path: str | None) -> None:
    try:
        _listed(app, iface, as_json, wide, socket_path)
    except _MALFORMED as e:
        raise JvpnError(f"the sessions could not be listed: a malformed value (the "
                        f"daemon's answer or a map's: {type(e).__name__}: {e})") from None


def _listed(app: App, iface: str | None, as_json: bool, wide: bool,
            socket_path: str | None) -> None:
    if as_json:  # written as the daemon's pages come: no list of a million rows
        got = views.stream(app, iface, socket_path, _kernel_rows, rowtext.RowText)
        if got.daemon is None:
            app.warn_line(views.NO_DAEMON)
        stream_json(got.by_iface, sys.stdout)
        return
    got = views.gather(app, iface, socket_path, _kernel_rows)
    if got.daemon is None:
        app.warn_line(views.NO_DAEMON)
    for ifname, rows in got.by_iface.items():
        if not rows:
            app.say(f"{ifname}: no sessions", markup=False)
            continue
        if len(rows) > TABLE_MAX_ROWS:
            _summary(app, ifname, rows)
            rows = rows[:TABLE_MAX_ROWS]
        app.say(views.sessions_table(f"jvpn sessions on {ifname}", rows, wide=wide,
                                     daemon=got.daemon is not None))


WRITE_ROWS = 256  # rows a write: fewer calls, and a few hundred KB at most
WRITE_CHARS = 256 * 1024  # or texts of this size (rowtext's batches: many rows a text)


def stream_json(by_iface: dict[str, Iterable[dict | str]], out) -> None:
    """The same JSON as one json.dumps(by_iface, indent=2), written a few
    sessions at a time as the rows come (iterables): a million sessions
    never make one string, nor one list (issue 15). A row is a dict, or
    its text already, or the text of several rows (cli/rowtext.py: indented
    as rows of the listing, ",\\n    " between them)."""
    out.write("{")
    for i, (ifname, rows) in enumerate(by_iface.items()):
        out.write(f'{"," if i else ""}\n  {json.dumps(ifname)}: [')
        first, chunk, size = True, [], 0
        for row in rows:
            text = row if type(row) is str else indented(row).replace("\n", "\n    ")
            chunk.append(text)
            size += len(text)
            if len(chunk) == WRITE_ROWS or size >= WRITE_CHARS:
                first, chunk, size = _write_rows(out, chunk, first), [], 0
        if chunk:
            first = _write_rows(out, chunk, first)
        out.write("]" if first else "\n  ]")
    out.write("\n}\n" if by_iface else "}\n")
    out.flush()


def _write_rows(out, texts: list[str], first: bool) -> bool:
    out.write(("\n    " if first else ",\n    ") + ",\n    ".join(texts))
    return False


class _NotFlat(Exception):
    """A value :func:`indented` leaves to json.dumps."""


def _finite(value: float) -> str:
    if not math.isfinite(value):
        raise _NotFlat  # NaN, Infinity: json.dumps' own spelling
    return float.__repr__(value)


# one value as json.dumps writes it (its defaults: ensure_ascii, a float's
# repr), by its exact type; any other type is left to json.dumps
_SCALAR = {str: json.encoder.encode_basestring_ascii,  # json.dumps' own (C) encoder
           int: int.__repr__, bool: {True: "true", False: "false"}.__getitem__,
           type(None): "null".format, float: _finite}


def _list(value: list) -> str:
    """A list of scalars at depth 1 of a row."""
    if not value:
        return "[]"
    return "[\n    " + ",\n    ".join([_SCALAR[type(x)](x) for x in value]) + "\n  ]"


_VALUE = {**_SCALAR, list: _list}
_TEMPLATES: dict[tuple, str] = {}  # a row's keys -> its text with %s for each value
MAX_TEMPLATES = 64  # a listing has a few kinds of row (kernel, daemon, remote)


def _template(keys: tuple) -> str:
    got = _TEMPLATES.get(keys)
    if got is None:
        if not all(type(k) is str for k in keys):
            raise _NotFlat  # json.dumps' own rules for other keys
        got = "{\n  " + ",\n  ".join(
            _SCALAR[str](k).replace("%", "%%") + ": %s" for k in keys) + "\n}"
        if len(_TEMPLATES) < MAX_TEMPLATES:
            _TEMPLATES[keys] = got
    return got


def indented(row: dict) -> str:
    """json.dumps(row, indent=2), the same text, several times faster for a
    row of scalars and lists of scalars: json.dumps with an indent is the
    pure-Python encoder, most of a million rows' listing (issue 15). Any
    other row goes to json.dumps itself."""
    if type(row) is not dict or not row:
        return json.dumps(row, indent=2)
    try:
        return _template(tuple(row)) % tuple([_VALUE[type(v)](v) for v in row.values()])
    except (_NotFlat, KeyError):
        return json.dumps(row, indent=2)


def _summary(app: App, ifname: str, rows: list[dict]) -> None:
    """Too many for a table: the count by state, then the first rows."""
    by_state = Counter(r["state"] for r in rows)
    states = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
    app.say(f"{ifname}: {len(rows)} sessions ({states}); the table shows the first "
            f"{TABLE_MAX_ROWS} by id (--json: every session)", markup=False)


def _kernel_rows(gm: pins.GateMaps, owners: records.Owners | None) -> list[tuple]:
    """Two batched map reads in all (BPF_MAP_LOOKUP_BATCH: the sessions map,
    then the runtime map), not two lookups per session (issue 15), their
    fields unpacked from the batch buffers (pins.SESSION_FIELDS); the remote
    map's ids (another gateway's sessions) after them. Each row a tuple of
    views.KERNEL (a million dicts cost more than their text), by id."""
    runtime = gm.runtime_views()
    elements = dict(gm.session_fields())  # an id listed twice (a dump under changes): the last
    remote = gm.remote_ids() - elements.keys()  # an element of ours wins (the gate's order)
    rows = [_row(runtime, sid, fields, owners) for sid, fields in elements.items()]
    rows += [_remote_row(sid, owners) for sid in remote]
    rows.sort(key=_SESSION_ID)  # 16 hex digits each: the ids' order
    return rows


_SESSION_ID = operator.itemgetter(0)


def _remote_row(sid: int, owners: records.Owners | None) -> tuple:
    """A session another gateway owns (jvpn_remote): no binding, no runtime."""
    owner = owners.remote.get(f"{sid:016x}") if owners is not None else None
    return (session_id_hex(sid), abi.STATE_NAMES[abi.STATE_REMOTE], owner, None, 0, "-",
            None, None, None, None, None)


# an element's bind_addr bytes, as abi.words_addr spells its words: on a
# little-endian host (the words read as ctypes does, then written back
# little-endian) they are the bytes themselves
_LITTLE = sys.byteorder == "little"
_STATES = abi.STATE_NAMES


def _addr(raw: bytes, family: int) -> str:
    if _LITTLE and family == abi.AF_INET:  # abi.words_addr's inet_ntop, without the words
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return abi.words_addr(struct.unpack("=4I", raw), family)


def _row(runtime: dict[int, tuple], sid: int, fields: tuple,
         owners: records.Owners | None = None) -> tuple:
    """views.KERNEL's fields of one element (pins.SESSION_FIELDS' values)."""
    version, fence, raw_addr, port_word, family, state, rt_slot, rt_gen = fields
    if family == abi.AF_NONE:
        addr, port, bound = None, None, "-"
    else:  # the port: abi.word_port's byte swap
        addr, port = _addr(raw_addr, family), (port_word & 0xFF) << 8 | port_word >> 8
        bound = f"[{addr}]:{port}" if family == abi.AF_INET6 else f"{addr}:{port}"
    # the runtime XDP keeps for this element's slot, or none (no packet since
    # the element named its slot and generation), as GateMaps.get_runtime decides
    rt = runtime.get(rt_slot)
    if rt is None or rt[0] != sid or rt[1] != rt_gen:
        rx_packets = rx_bytes = highest = None
    else:
        rx_packets, rx_bytes, top = rt[2:]
        highest = top - 1 if top else None
    if owners is None:
        owner = None  # no gateway daemon has described these maps
    elif state == abi.STATE_REMOTE:
        owner = owners.remote.get(f"{sid:016x}")
    else:
        owner = owners.node if fence == owners.lease else "stale"
    name = _STATES.get(state) or f"UNKNOWN({state})"
    return (f"{sid:016x}", name, owner, version, fence, bound, addr, port,
            rx_packets, rx_bytes, highest)


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)
