"""The generator's ordering phase on hand-built models: no clang, no SPDK."""

from __future__ import annotations

import pytest
from bindgen.model import (
    CType,
    Field,
    GenerationError,
    Record,
    Typedef,
    array_of,
    int_ctype,
    pointer_to,
)
from bindgen.order import order_statements

pytestmark = pytest.mark.spdk_free  # runs where SPDK is not installed



U32 = int_ctype("ctypes.c_uint32", 4, False)


def rec(name: str, *fields: Field) -> Record:
    return Record(name, "struct", "t.h", 8, 4, list(fields))


def by_value(name: str) -> CType:
    return CType(name, "record", name, size=4, record=name, value_deps=frozenset({name}))


def test_embedded_record_is_laid_out_first() -> None:
    records = {
        "struct_a": rec("struct_a", Field("b", by_value("struct_b"), 0, 4)),
        "struct_b": rec("struct_b", Field("x", U32, 0, 4)),
    }
    assert order_statements(records, {}) == [("layout", "struct_b"), ("layout", "struct_a")]


def test_pointers_need_no_layout_and_ties_go_typedefs_first_then_by_name() -> None:
    """A pointer names only the class (which exists from the start): no constraint."""
    records = {
        "struct_z": rec("struct_z", Field("next", pointer_to(by_value("struct_a")), 0, 8)),
        "struct_a": rec("struct_a", Field("next", pointer_to(by_value("struct_z")), 0, 8)),
    }
    typedefs = {"spdk_t": Typedef("spdk_t", U32, "t.h", False)}
    assert order_statements(records, typedefs) == [
        ("typedef", "spdk_t"),
        ("layout", "struct_a"),
        ("layout", "struct_z"),
    ]


def test_aliases_before_their_users() -> None:
    """``typedef struct s s_t; typedef s_t s_arr[2]; struct u { s_arr v; };``"""
    s_t = by_value("struct_s").aliased("s_t")
    arr = array_of(s_t, 2).aliased("s_arr")
    typedefs = {
        "s_arr": Typedef("s_arr", array_of(s_t, 2), "t.h", False),
        "s_t": Typedef("s_t", by_value("struct_s"), "t.h", False),
    }
    records = {
        "struct_s": rec("struct_s", Field("x", U32, 0, 4)),
        "struct_u": rec("struct_u", Field("v", arr, 0, 8)),
    }
    order = order_statements(records, typedefs)
    assert order.index(("typedef", "s_t")) < order.index(("typedef", "s_arr"))
    # an alias of a record needs only its class; an array of it needs its layout
    assert order.index(("layout", "struct_s")) < order.index(("typedef", "s_arr"))
    assert order.index(("typedef", "s_arr")) < order.index(("layout", "struct_u"))
    assert order[0] == ("typedef", "s_t")


def test_the_order_does_not_depend_on_insertion_order() -> None:
    records = {f"struct_{c}": rec(f"struct_{c}", Field("x", U32, 0, 4)) for c in "dbca"}
    typedefs = {n: Typedef(n, U32, "t.h", False) for n in ("t2", "t1")}
    first = order_statements(records, typedefs)
    second = order_statements(dict(reversed(records.items())), dict(reversed(typedefs.items())))
    assert first == second
    assert first[:2] == [("typedef", "t1"), ("typedef", "t2")]


def test_a_cycle_by_value_is_an_error() -> None:
    records = {
        "struct_a": rec("struct_a", Field("b", by_value("struct_b"), 0, 4)),
        "struct_b": rec("struct_b", Field("a", by_value("struct_a"), 0, 4)),
    }
    with pytest.raises(GenerationError, match="circular type dependencies among: struct_a"):
        order_statements(records, {})


def test_opaque_records_are_not_laid_out() -> None:
    records = {"struct_o": Record("struct_o", "struct", "t.h")}
    assert order_statements(records, {}) == []
