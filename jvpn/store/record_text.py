"""A stored session record read straight from its text when the text is
exactly as the stores write it (issue 15, k19rec: a restart reads a million;
the JSON decoder, the dictionary of defaults laid under it and the keyword
Transport were a fifth of the pass).

``record_to_json`` writes one layout: the fields in sorted order,
``json.dumps``' separators, ``confirmed`` only when False. :func:`fields_of`
matches that layout with each value of the one JSON type its field is
written with (an integer of at most 20 digits, a string without escapes or
control characters, null where the field may be None, an empty or integer
list, a transport of exactly its two fields) and answers the record's field
values in ``__init__``'s order; anything else (another version's fields, an
escape, a float, a long integer, a value of another type, any other
spacing) answers None and the caller decodes it with ``json`` as before. On
what it matches, ``json.loads`` gives the same values (tests compare both
paths on written and damaged records), so the record and its refusals are
the same.
"""

from __future__ import annotations

import re
from dataclasses import fields

from jvpn.fastip import ipv4_packed
from jvpn.frozen import positional_maker
from jvpn.session import SessionRecord, State, Transport, stored_ip

# SessionRecord(*values) and Transport(addr, port) without a frozen
# dataclass's object.__setattr__ per field (jvpn/frozen.py): the same objects
make_record = positional_maker(SessionRecord)
make_transport = positional_maker(Transport)

_INT = r"(-?(?:0|[1-9][0-9]{0,19}))"  # json's integers; longer ones: json's own answer
_STR = r'"([^"\\\x00-\x1f]*)"'  # a string json reads as its characters, unchanged
_LIST_MAX = 256  # integers in a list read here (switches_ms)
# each field's kind: the JSON it is written as, and the value it reads as
_KIND = {
    "session_id": "int", "state": "state", "version": "int", "created_ms": "int",
    "last_change_ms": "int", "binding": "transport", "candidate": "transport",
    "switches_ms": "ints", "transport_lost_ms": "int?", "recovery_deadline_ms": "int?",
    "degraded_count": "int", "owner": "str", "owner_lease": "int", "handoff_to": "str",
    "handoff_lease": "int", "c2s_floor": "int", "inner_addr": "str", "reattach_seq": "int",
    "switch_seq": "int", "epoch": "int", "s2c_counter_floor": "int", "handshake_ns": "int",
    "peer_key": "str", "key_epoch": "int", "keys_ms": "int", "key_c2s_base": "int",
    "key_s2c_base": "int", "confirmed": "confirmed",
}
_NAMES = tuple(f.name for f in fields(SessionRecord))
if set(_KIND) != set(_NAMES):  # a new field needs its kind here (a test holds it too)
    raise ImportError(f"record_text: fields without a kind: {set(_NAMES) ^ set(_KIND)}")

_PATTERN = {
    "int": _INT, "int?": f"(?:null|{_INT})", "str": _STR, "state": r'"([A-Z_]{1,32})"',
    # a few switch times (a minute's, the policy's bound): a longer list,
    # which the expression would read 25 times slower than json, is json's
    "ints": rf"\[((?:{_INT[1:-1]}, ){{0,{_LIST_MAX - 1}}}{_INT[1:-1]})?\]",
    "transport": rf'(?:null|\{{"addr": {_STR}, "port": {_INT}\}})',
}
# a value's expression from its group(s) g[i] (g[i + 1]: a transport's port)
_VALUE = {
    "int": "int(g[{i}])", "int?": "None if g[{i}] is None else int(g[{i}])",
    "str": "g[{i}]", "state": "_state[g[{i}]]", "ints": "_ints(g[{i}])",
    "confirmed": 'g[{i}] != "false"',
    "transport": "None if g[{i}] is None else _transport(_address(g[{i}]), int(g[{n}]))",
}
_GROUPS = {"transport": 2}  # groups a kind's pattern holds (1 otherwise)


def _address(addr: str) -> str:
    """``stored_ip(addr)`` (ValueError: no address, the record unreadable);
    a canonical IPv4 address (a restart's usual binding, each one new to
    its bounded memo) is its own answer."""
    return addr if ipv4_packed(addr) is not None else stored_ip(addr)


def _ints(text: str | None) -> tuple[int, ...]:
    return () if text is None else tuple(map(int, text.split(", ")))


def _compile():
    """The layout's pattern and the function from its groups to the fields."""
    parts, first_group, group = [], {}, 0
    for name in sorted(_NAMES):  # record_to_json's order (sort_keys)
        kind = _KIND[name]
        first_group[name] = group
        if kind == "confirmed":  # written only when False
            parts.append('(?:"confirmed": (true|false), )?')
            group += 1
            continue
        parts.append(f'"{name}": {_PATTERN[kind]}, ')
        group += _GROUPS.get(kind, 1)
    # the last field's separator: ", " between fields, none before the brace
    pattern = re.compile(r"\{" + "".join(parts)[:-2] + r"\}")
    values = ", ".join(_VALUE[_KIND[n]].format(i=first_group[n], n=first_group[n] + 1)
                       for n in _NAMES)  # __init__'s order
    scope = {"_state": State.__members__, "_ints": _ints, "_transport": make_transport,
             "_address": _address}
    # built from the record's own field names and the fixed kinds above
    exec(f"def values(g):\n    return ({values},)\n", scope)  # noqa: S102
    return pattern, scope["values"]


_LAYOUT, _values = _compile()


def fields_of(text) -> tuple | None:
    """The record's field values in ``__init__``'s order if ``text`` is in
    the written layout (KeyError for a state no State names, as json's path
    raises); None: not that layout, decode it as JSON."""
    if text.__class__ is not str:
        return None
    m = _LAYOUT.fullmatch(text)
    return None if m is None else _values(m.groups())
