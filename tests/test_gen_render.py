"""The generator's two renderers on a hand-built model: no clang, no SPDK.

The module text is executed with a stand-in library; the stub text must be valid
Python declaring every name the module defines.
"""

from __future__ import annotations

import ast
import ctypes
from typing import Any

import pytest
from bindgen.layout import solve_layouts
from bindgen.model import (
    CHAR_P,
    CHAR_PTR,
    VOID,
    VOID_P,
    Bindings,
    Constant,
    CType,
    Enum,
    Field,
    Function,
    Param,
    Record,
    Typedef,
    int_ctype,
    pointer_to,
)
from bindgen.order import order_statements
from bindgen.render_py import render_module
from bindgen.render_pyi import render_stub

pytestmark = pytest.mark.spdk_free  # runs where SPDK is not installed


U32 = int_ctype("ctypes.c_uint32", 4, False)
I32 = int_ctype("ctypes.c_int32", 4, True)


class FakeLib:
    """Stands in for SPDK: every name is a fresh function object (PyDLL's if ``keeps_gil``)."""

    def __init__(self, keeps_gil: bool = False) -> None:
        self._libc = ctypes.PyDLL(None) if keeps_gil else ctypes.CDLL(None)

    def __getattr__(self, name: str) -> Any:
        return self._libc._FuncPtr(("abs", self._libc))


def model() -> Bindings:
    point = CType("struct_pt", "record", "struct_pt", size=8, record="struct_pt")
    cb = CType("_callback(None, ctypes.c_void_p)", "funcptr", "_ctypes.CFuncPtr", size=8)
    records = {
        "struct_pt": Record(
            "struct_pt",
            "struct",
            "spdk/t.h",
            8,
            4,
            [Field("x", I32, 0, 4), Field("lambda", U32, 32, 4)],
        ),
        "struct_opaque": Record("struct_opaque", "struct", "spdk/t.h"),
    }
    typedefs = {
        "spdk_t_fn": Typedef("spdk_t_fn", cb, "spdk/t.h", True),
        "spdk_t_alias_fn": Typedef("spdk_t_alias_fn", cb, "spdk/t.h", True),
        "spdk_t_pt": Typedef("spdk_t_pt", point, "spdk/t.h", False),
    }
    constants = [
        Constant("SPDK_T_A", -1, "spdk/t.h", "enum"),
        Constant("SPDK_T_STR", b"ab\x00\xff", "spdk/t.h", "macro"),
        Constant("SPDK_T_HALF", 0.5, "spdk/u.h", "macro"),
        Constant("SPDK_T_INF", float("inf"), "spdk/u.h", "macro"),
        Constant("SPDK_T_NINF", float("-inf"), "spdk/u.h", "macro"),
        Constant("SPDK_T_NAN", float("nan"), "spdk/u.h", "macro"),
    ]
    functions = [
        Function(
            "spdk_t_call",
            "spdk/t.h",
            I32,
            [
                Param("fn", typedefs["spdk_t_alias_fn"].ctype.aliased("spdk_t_alias_fn")),
                Param("pt", pointer_to(point)),
                Param("name", CHAR_P),
                Param("ctx", VOID_P),
                Param("lambda", U32),
                Param("lambda_", U32),
            ],
            False,
        ),
        Function("spdk_t_fmt", "spdk/t.h", CHAR_PTR, [Param("fmt", CHAR_P)], True, ["a note"]),
        Function("spdk_t_void", "spdk/u.h", VOID, [], False),
    ]
    enums = {"enum_spdk_t": Enum("enum_spdk_t", I32, "spdk/t.h")}
    b = Bindings(
        "9.99.0",
        ["t.h"],
        records,
        enums,
        typedefs,
        constants,
        functions,
        {"spdk_t_inline": "static inline: no symbol in any library"},
        {"spdk_t_call", "spdk_t_fmt", "spdk_t_void", "spdk_t_inline"},
        {},
    )
    b.statements = order_statements(b.records, b.typedefs)
    solve_layouts(b)
    return b


def execute(text: str) -> dict[str, Any]:
    source = (
        text.replace("from spdk_io._loader import lib as _lib", "_lib = _FakeLib()")
        .replace("from spdk_io._loader import pylib as _pylib", "_pylib = _FakeLib(True)")
        .replace(
            "from spdk_io._loader import require_version as _require_version",
            "_require_version = str",
        )
    )
    assert "_loader import" not in source
    ns: dict[str, Any] = {"_FakeLib": FakeLib}
    exec(compile(source, "_generated", "exec"), ns)
    return ns


def test_module_defines_what_the_model_says() -> None:
    ns = execute(render_module(model()))
    assert ns["GENERATED_FROM_SPDK"] == "9.99.0"
    assert ns["OMITTED"] == {"spdk_t_inline": "static inline: no symbol in any library"}
    assert ns["SPDK_T_A"] == -1 and ns["SPDK_T_STR"] == b"ab\x00\xff"
    assert ns["SPDK_T_HALF"] == 0.5
    assert ns["enum_spdk_t"] is ctypes.c_int32
    pt = ns["struct_pt"](x=-2)
    setattr(pt, "lambda", 7)  # a Python keyword as a field name still works through getattr
    assert (pt.x, getattr(pt, "lambda"), ctypes.sizeof(pt)) == (-2, 7, 8)
    assert ns["spdk_t_pt"] is ns["struct_pt"]
    assert ns["spdk_t_alias_fn"] is ns["spdk_t_fn"]
    call = ns["spdk_t_call"]
    assert call.restype is ctypes.c_int32
    assert call.argtypes[1] is ctypes.POINTER(ns["struct_pt"])
    assert call.argtypes[2:4] == [ctypes.c_char_p, ctypes.c_void_p]
    assert ns["spdk_t_fmt"].restype is ctypes.POINTER(ctypes.c_char)
    assert ns["spdk_t_void"].restype is None and ns["spdk_t_void"].argtypes == []


def test_non_finite_float_constants_are_valid_python() -> None:
    """``repr(float("inf"))`` is ``inf``, a name: the module must spell it as a float."""
    ns = execute(render_module(model()))
    assert ns["SPDK_T_INF"] == float("inf") and ns["SPDK_T_NINF"] == float("-inf")
    assert ns["SPDK_T_NAN"] != ns["SPDK_T_NAN"]


def test_rendering_is_deterministic() -> None:
    assert render_module(model()) == render_module(model())
    assert render_stub(model()) == render_stub(model())


def test_stub_declares_every_public_name_of_the_module() -> None:
    module = render_module(model())
    stub = render_stub(model())
    tree = ast.parse(stub)
    declared: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            declared.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared.add(node.target.id)
        elif isinstance(node, ast.Assign):
            declared.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import):
            declared.update(alias.asname or alias.name for alias in node.names)
    public = {n for n in execute(module) if not n.startswith("_")}
    assert public - declared == set()
    assert "class spdk_t_fn(_Callback): ..." in stub
    assert "spdk_t_alias_fn = spdk_t_fn" in stub
    assert "    # lambda: a Python keyword, use getattr()" in stub
    assert "SPDK_T_INF: float" in stub


def test_stub_signatures() -> None:
    stub = render_stub(model())
    assert (
        "def spdk_t_call(fn: spdk_t_alias_fn | None, pt: _Ptr[struct_pt], name: _CharP, "
        "ctx: _VoidP, lambda_: int, lambda__: int, /) -> int: ..." in stub
    )
    assert (
        "def spdk_t_fmt(fmt: _CharP, /, *args: Any) -> ctypes._Pointer[ctypes.c_char]: ..." in stub
    )
    assert "def spdk_t_void() -> None: ..." in stub
