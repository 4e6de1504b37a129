"""The generator's layout phase on hand-built records: no clang, no SPDK.

Each record states what clang would say (size, every field's bit offset and width);
the solver must find ``_fields_`` whose real ctypes class says the same, or refuse.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest
from bindgen.layout import (
    CALLBACK_HELPER,
    LayoutSolver,
    cfield_bits,
    solve_layouts,
    storage_units,
)
from bindgen.model import (
    Bindings,
    CType,
    Field,
    GenerationError,
    Record,
    Typedef,
    int_ctype,
)
from bindgen.order import order_statements

pytestmark = pytest.mark.spdk_free  # runs where SPDK is not installed



U8 = int_ctype("ctypes.c_uint8", 1, False)
U16 = int_ctype("ctypes.c_uint16", 2, False)
U32 = int_ctype("ctypes.c_uint32", 4, False)
I32 = int_ctype("ctypes.c_int32", 4, True)
U64 = int_ctype("ctypes.c_uint64", 8, False)


def record_type(name: str, size: int) -> CType:
    return CType(name, "record", name, size=size, record=name, value_deps=frozenset({name}))


def solve(*records: Record) -> dict[str, Any]:
    """Solve ``records`` in order in a fresh namespace; returns it (the built classes)."""
    ns: dict[str, Any] = {"ctypes": ctypes}
    for r in records:
        ns[r.pyname] = type(
            r.pyname, (ctypes.Union if r.kind == "union" else ctypes.Structure,), {}
        )
    solver = LayoutSolver(ns)
    for r in records:
        solver.solve(r)
    return ns


def assert_matches(cls: Any, record: Record) -> None:
    """The built class has clang's size and every named field's (bit offset, width)."""
    assert ctypes.sizeof(cls) == record.size
    for f in record.fields or []:
        if f.cname:
            assert cfield_bits(getattr(cls, f.cname), f.width is not None) == (f.offset, f.width)


def test_natural_layout_is_kept_when_it_matches() -> None:
    r = Record("struct_s", "struct", "t.h", 16, 8, [Field("a", U8, 0, 1), Field("b", U64, 64, 8)])
    ns = solve(r)
    assert r.layout is not None and r.layout.strategy == "natural" and r.layout.pack is None
    assert [e.name for e in r.layout.entries] == ["a", "b"]
    assert_matches(ns["struct_s"], r)


def test_packed_record_gets_an_explicit_layout() -> None:
    """``struct { uint8_t a; uint64_t b; uint16_t c; } __attribute__((packed))``."""
    fields = [Field("a", U8, 0, 1), Field("b", U64, 8, 8), Field("c", U16, 72, 2)]
    r = Record("struct_p", "struct", "t.h", 11, 1, fields)
    ns = solve(r)
    assert r.layout is not None and r.layout.strategy == "explicit" and r.layout.pack == 1
    assert_matches(ns["struct_p"], r)


def test_trailing_alignment_padding_is_explicit() -> None:
    """``struct { uint8_t a; } __attribute__((aligned(64)))``: 63 padding bytes."""
    r = Record("struct_al", "struct", "t.h", 64, 64, [Field("a", U8, 0, 1)])
    ns = solve(r)
    assert r.layout is not None and r.layout.strategy == "explicit"
    assert [e.expr for e in r.layout.entries] == ["ctypes.c_uint8", "(ctypes.c_uint8 * 63)"]
    assert_matches(ns["struct_al"], r)


def assert_bits_match(cls: Any, record: Record) -> None:
    """Like :func:`assert_matches`, but a plain member may be read as a full-width bit-field."""
    assert ctypes.sizeof(cls) == record.size
    for f in record.fields or []:
        cfield = getattr(cls, f.cname)
        bitfield = getattr(cfield, "is_bitfield", int(cfield.size) >> 16 != 0)
        offset, width = cfield_bits(cfield, bool(bitfield))
        assert offset == f.offset, f.cname
        assert width == (f.width if f.width is not None else (8 * f.size if bitfield else None))


def test_mixed_type_bit_fields() -> None:
    """``struct { uint8_t a:1; uint8_t b:7; uint16_t c:15; uint16_t d:1; }``, clang's offsets."""
    fields = [
        Field("a", U8, 0, 1, 1),
        Field("b", U8, 1, 1, 7),
        Field("c", U16, 16, 2, 15),
        Field("d", U16, 31, 2, 1),
    ]
    r = Record("struct_bits", "struct", "t.h", 4, 2, fields)
    ns = solve(r)
    assert_matches(ns["struct_bits"], r)
    value = ns["struct_bits"].from_buffer_copy((0xFFFFFFFF).to_bytes(4, "little"))
    assert (value.a, value.b, value.c, value.d) == (1, 0x7F, 0x7FFF, 1)


def test_bit_fields_of_mixed_storage_are_normalised() -> None:
    """``struct { uint16_t a:4; uint8_t b:4; uint32_t c:8; }``: one 4-byte unit in C."""
    fields = [Field("a", U16, 0, 2, 4), Field("b", U8, 4, 1, 4), Field("c", U32, 8, 4, 8)]
    r = Record("struct_norm", "struct", "t.h", 4, 4, fields)
    ns = solve(r)
    assert r.layout is not None and r.layout.strategy == "normalised"
    assert_matches(ns["struct_norm"], r)


def test_bit_fields_straddling_storage_units() -> None:
    """``struct { uint8_t a; uint32_t b:4; uint64_t c:60; }``, clang's offsets."""
    fields = [Field("a", U8, 0, 1), Field("b", U32, 8, 4, 4), Field("c", U64, 64, 8, 60)]
    r = Record("struct_st", "struct", "t.h", 16, 8, fields)
    ns = solve(r)
    assert r.layout is not None and r.layout.strategy == "explicit"
    assert_matches(ns["struct_st"], r)


@pytest.mark.parametrize(
    ("size", "fields"),
    [
        # struct { uint32_t a : 24; uint8_t c; }
        (4, [Field("a", U32, 0, 4, 24), Field("c", U8, 24, 1)]),
        # struct { uint8_t a : 4; uint32_t b : 20; uint8_t c; }
        (4, [Field("a", U8, 0, 1, 4), Field("b", U32, 4, 4, 20), Field("c", U8, 24, 1)]),
        # struct { uint64_t a : 40; uint8_t c; int16_t d; }
        (
            8,
            [
                Field("a", U64, 0, 8, 40),
                Field("c", U8, 40, 1),
                Field("d", int_ctype("ctypes.c_int16", 2, True), 48, 2),
            ],
        ),
    ],
)
def test_members_sharing_a_bit_field_storage_unit(size: int, fields: list[Field]) -> None:
    """C packs a plain member into the tail of a bit-field's unit; ctypes cannot, so the
    member is laid out as a full-width bit-field of that unit, at the same bits."""
    r = Record("struct_tail", "struct", "t.h", size, 4, fields)
    ns = solve(r)
    cls = ns["struct_tail"]
    assert_bits_match(cls, r)
    value = cls()
    for f in fields:
        setattr(value, f.cname, 1)
    assert [getattr(value, f.cname) for f in fields] == [1] * len(fields)
    raw = int.from_bytes(bytes(value), "little")
    assert raw == sum(1 << f.offset for f in fields)
    last = fields[-1]
    setattr(value, last.cname, -1 if last.ctype.signed else (1 << (8 * last.size)) - 1)
    assert getattr(value, last.cname) == (-1 if last.ctype.signed else (1 << (8 * last.size)) - 1)


def test_an_array_in_a_bit_field_unit_is_refused_by_name() -> None:
    """``struct { uint64_t a : 40; uint8_t c[3]; }``: no ctypes layout; the error names it."""
    arr = CType("(ctypes.c_uint8 * 3)", "array", "ctypes.Array[ctypes.c_uint8]", target=U8, size=3)
    r = Record(
        "struct_arr", "struct", "t.h", 8, 8, [Field("a", U64, 0, 8, 40), Field("c", arr, 40, 3)]
    )
    with pytest.raises(GenerationError, match=r"no ctypes layout of struct_arr .*past the next"):
        solve(r)


def test_union_with_an_anonymous_struct_member() -> None:
    inner = Record(
        "union_u_anon_0", "struct", "t.h", 4, 2, [Field("lo", U16, 0, 2), Field("hi", U16, 16, 2)]
    )
    outer = Record(
        "union_u",
        "union",
        "t.h",
        4,
        4,
        [Field("raw", U32, 0, 4), Field("", record_type("union_u_anon_0", 4), 0, 4, None, True)],
    )
    ns = solve(inner, outer)
    assert outer.layout is not None and outer.layout.anonymous == ("_anon_0",)
    value = ns["union_u"](raw=0x00020001)
    assert (value.lo, value.hi) == (1, 2)


def test_a_layout_no_strategy_can_reproduce_is_refused() -> None:
    """clang's size smaller than its fields: every strategy fails, and the error says why."""
    r = Record("struct_bad", "struct", "t.h", 2, 1, [Field("a", U32, 0, 4)])
    with pytest.raises(GenerationError, match=r"struct_bad.*natural: size 4 != 2"):
        solve(r)
    assert r.layout is None


def test_storage_units_group_bit_fields() -> None:
    run = [Field("a", U8, 0, 1, 3), Field("b", U8, 3, 1, 5), Field("c", U16, 8, 2, 9)]
    units = storage_units(run, limit=4)
    assert [(u.start, u.size, [m.cname for m in u.members]) for u in units] == [
        (0, 1, ["a", "b"]),
        (1, 2, ["c"]),
    ]
    with pytest.raises(GenerationError, match="past the next member"):
        storage_units(run, limit=2)
    with pytest.raises(GenerationError, match="does not fit an 8-byte storage unit"):
        storage_units([Field("w", U64, 4, 8, 64)], limit=16)


def test_equal_callback_typedefs_are_one_class() -> None:
    """Callback typedefs with one signature share a class; the shorter name is the one."""
    fn = CType("_callback(None, ctypes.c_void_p)", "funcptr", "_ctypes.CFuncPtr", size=8)
    other = CType("_callback(ctypes.c_int, ctypes.c_void_p)", "funcptr", "_ctypes.CFuncPtr")
    typedefs = {
        "spdk_msg_fn": Typedef("spdk_msg_fn", fn, "t.h", True),
        "spdk_other_msg_fn": Typedef("spdk_other_msg_fn", fn, "t.h", True),
        "spdk_int_fn": Typedef("spdk_int_fn", other, "t.h", True),
    }
    b = Bindings("0.0", [], {}, {}, typedefs, [], [], {}, set(), {})
    b.statements = order_statements(b.records, b.typedefs)
    solve_layouts(b)
    assert typedefs["spdk_msg_fn"].same_as is None
    assert typedefs["spdk_other_msg_fn"].same_as == "spdk_msg_fn"
    assert typedefs["spdk_int_fn"].same_as is None


def test_callback_helper_accepts_none() -> None:
    ns: dict[str, Any] = {"ctypes": ctypes}
    exec(CALLBACK_HELPER, ns)
    cb = ns["_callback"](None, ctypes.c_void_p)
    assert cb is ns["_callback"](None, ctypes.c_void_p)
    assert cb.from_param(None) is None
