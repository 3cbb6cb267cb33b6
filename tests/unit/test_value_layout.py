"""pins.value_layout reads the named fields as ctypes reads them, signed and
floating-point fields too (review k19r2 F1: it picked the struct code by
size alone, so a signed field read as unsigned and a float as its bits)."""

import ctypes

import pytest

from jvpn.gate import pins


class Mixed(ctypes.Structure):
    _fields_ = [("small", ctypes.c_int8), ("word", ctypes.c_int32), ("wide", ctypes.c_int64),
                ("real", ctypes.c_double)]


@pytest.mark.parametrize("name", ["small", "word", "wide", "real"])
def test_a_field_reads_as_ctypes_reads_it(name):
    value = Mixed(small=-1, word=-2, wide=-3, real=-0.5)
    (got,) = pins.value_layout(Mixed, (name,)).unpack(bytes(value))
    assert got == getattr(value, name)
