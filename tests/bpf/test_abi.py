"""The ctypes mirrors in jvpn/gate/abi.py against bpf/include/jvpn_abi.h, and
the pin registry in jvpn/gate/pins.py against the maps of bpf/jvpn_xdp.c.

The header is compiled with the host C compiler into a tiny program that prints
every size, field offset and constant as JSON, so this test needs no root and
no bcc; the kernel-side _Static_asserts guard the same header in the BPF build.
"""

import ctypes
import json
import re
import shutil
import subprocess

import pytest

from jvpn.gate import abi
from jvpn.gate.loader import INCLUDE_DIR, PROGRAM_SOURCE
from jvpn.gate.pins import PINS


def _c_program() -> str:
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "jvpn_abi.h"',
             "int main(void) {", 'printf("{\\"structs\\": {");']
    for i, (cname, cls) in enumerate(abi.STRUCTS.items()):
        sep = "," if i else ""
        lines.append(f'printf("{sep}\\"{cname}\\": {{\\"size\\": %zu, \\"fields\\": {{", '
                     f"sizeof(struct {cname}));")
        for j, (fname, _) in enumerate(cls._fields_):
            fsep = "," if j else ""
            lines.append(
                f'printf("{fsep}\\"{fname}\\": [%zu, %zu]", offsetof(struct {cname}, {fname}), '
                f"sizeof(((struct {cname} *)0)->{fname}));"
            )
        lines.append('printf("}}");')
    lines.append('printf("}, \\"constants\\": {");')
    for i, name in enumerate(abi.CONSTANTS):
        sep = "," if i else ""
        lines.append(f'printf("{sep}\\"{name}\\": %llu", (unsigned long long)({name}));')
    lines += ['printf("}}\\n");', "return 0;", "}"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def header_facts(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to check the ABI header (sudo make setup installs gcc)"
    d = tmp_path_factory.mktemp("abi")
    src, exe = d / "abi.c", d / "abi"
    src.write_text(_c_program())
    subprocess.run([cc, "-Wall", "-Werror", f"-I{INCLUDE_DIR}", str(src), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    return json.loads(subprocess.run([str(exe)], check=True, capture_output=True,
                                     text=True).stdout)


@pytest.mark.parametrize("cname", list(abi.STRUCTS))
def test_struct_layout_matches_header(header_facts, cname):
    cls = abi.STRUCTS[cname]
    facts = header_facts["structs"][cname]
    assert ctypes.sizeof(cls) == facts["size"], f"sizeof(struct {cname})"
    for fname, _ in cls._fields_:
        field = getattr(cls, fname)
        assert [field.offset, field.size] == facts["fields"][fname], f"{cname}.{fname}"


def test_every_header_field_is_mirrored(header_facts):
    # The C side was asked only for the Python fields; a field added in C and
    # not in Python shows up as a size mismatch, checked here explicitly.
    for cname, cls in abi.STRUCTS.items():
        last = max(getattr(cls, f).offset + getattr(cls, f).size for f, _ in cls._fields_)
        assert last == header_facts["structs"][cname]["size"], f"{cname}: trailing C fields"


def test_constants_match_header(header_facts):
    assert header_facts["constants"] == {k: int(v) for k, v in abi.CONSTANTS.items()}


def test_counter_names_cover_every_slot():
    assert sorted(abi.COUNTER_NAMES) == list(range(abi.C_MAX))
    assert len(set(abi.COUNTER_NAMES.values())) == abi.C_MAX


def test_values_build_by_keyword_and_reject_unknown_fields():
    s = abi.Session(tag_key=(1, 2), state=abi.STATE_ATTACHED, bind_port=abi.port_word(4000))
    assert list(s.tag_key) == [1, 2] and abi.word_port(s.bind_port) == 4000
    with pytest.raises(TypeError):
        abi.Session(bogus=1)
    with pytest.raises(ValueError):
        abi.Session(tag_key=(1, 2, 3))


def test_address_words_round_trip():
    assert abi.words_addr(abi.addr_words("192.0.2.7"), abi.AF_INET) == "192.0.2.7"
    assert abi.words_addr(abi.addr_words("2001:db8::9"), abi.AF_INET6) == "2001:db8::9"
    # network order in memory: the first octet is the lowest byte of word 0
    assert abi.addr_words("1.2.3.4")[0] == 0x04030201


# ---- the pin registry (jvpn/gate/pins.py) against the maps of jvpn_xdp.c ----

_PINNED = re.compile(r'BPF_TABLE_PINNED\(\s*"(\w+)",\s*([\w ]+?),\s*([\w ]+?),\s*(\w+),'
                     r'[^;]*?JVPN_PIN_DIR\s*"/(\w+)"')
_RINGBUF = re.compile(r"BPF_RINGBUF_OUTPUT\(\s*(\w+),")


def _c_type(ctype) -> str:
    scalar = {ctypes.c_uint64: "__u64", ctypes.c_uint32: "__u32", ctypes.c_int: "int"}
    if ctype in scalar:
        return scalar[ctype]
    by_name = {cls.__name__: cname for cname, cls in abi.STRUCTS.items()}
    return f"struct {by_name[ctype.__name__]}"


def test_pin_registry_matches_the_c_source():
    source = PROGRAM_SOURCE.read_text()
    in_c = {pin: (name, kind, key.strip(), value.strip())
            for kind, key, value, name, pin in _PINNED.findall(source)}
    ringbufs = _RINGBUF.findall(source)
    registry = {pin: (s.c_name, s.kind, _c_type(s.key), _c_type(s.value))
                for pin, s in PINS.items() if s.kind != "ringbuf"}
    assert registry == in_c
    assert [s.c_name for s in PINS.values() if s.kind == "ringbuf"] == ringbufs
    assert PINS["events"].c_name in ringbufs  # pinned by loader.Program under "events"


def test_every_registry_value_is_a_checked_struct_or_scalar():
    for spec in PINS.values():
        assert _c_type(spec.value)  # raises KeyError for a layout the header test skips
        assert ctypes.sizeof(spec.value_type(128)) <= ctypes.sizeof(spec.value_type())
