"""Render ``_generated.pyi``: the model as a typed stub for mypy.

Takes the same :class:`~bindgen.model.Bindings` as :mod:`bindgen.render_py`; gives
the stub's text, which declares every name the module defines: constants with their
Python type, records with their fields (nameless members' fields promoted, as
ctypes reads them), callback typedefs as classes (one per run-time class, through
``same_as``), and functions with positional-only parameters typed by what ctypes
accepts and results typed by what it returns.
"""

from __future__ import annotations

from .model import Bindings, CType, Record, is_python_keyword
from .render_py import HEADER_COMMENT

STUB_PRELUDE = '''\
import _ctypes
import ctypes
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

_T = TypeVar("_T", bound=ctypes._CData)
#: What a ``void *`` parameter accepts.
_VoidP: TypeAlias = int | bytes | None | ctypes._CData | ctypes._CArgObject
#: What a ``char *`` parameter (``c_char_p``) accepts.
_CharP: TypeAlias = (
    bytes
    | None
    | ctypes.c_char_p
    | ctypes.Array[ctypes.c_char]
    | ctypes._Pointer[ctypes.c_char]
    | ctypes._CArgObject
)
#: What a ``T *`` parameter accepts.
_Ptr: TypeAlias = ctypes._Pointer[_T] | ctypes.Array[_T] | ctypes._CArgObject | None

class _Callback(_ctypes.CFuncPtr):
    """A C function pointer type; calling the class with no argument gives NULL."""

    def __init__(self, fn: Callable[..., Any] | int = ..., /) -> None: ...

GENERATED_FROM_SPDK: str
OMITTED: dict[str, str]
RELEASES_GIL: dict[str, str]
'''


def stub_value(ct: CType) -> str:
    """The Python type of a value of ``ct`` as ctypes returns it (fields, results)."""
    simple = {
        "int": "int",
        "bool": "bool",
        "float": "float",
        "char": "bytes",
        "char_p": "bytes | None",
        "void_p": "int | None",
        "void": "None",
    }
    if ct.kind in simple:
        return simple[ct.kind]
    if ct.kind == "array" and ct.target is not None and ct.target.kind == "char":
        return "bytes"
    return ct.stub


def stub_arg(ct: CType) -> str:
    """The Python types a parameter of type ``ct`` accepts."""
    if ct.kind in ("char_p", "char_ptr"):
        return "_CharP"
    if ct.kind == "void_p":
        return "_VoidP"
    if ct.kind == "pointer" and ct.target is not None:
        return f"_Ptr[{ct.target.stub}]"
    if ct.kind == "funcptr":
        return f"{ct.stub} | None"
    return stub_value(ct)


def _stub_fields(record: Record, records: dict[str, Record], seen: set[str]) -> list[str]:
    """Attribute lines of a record, including the fields promoted from nameless members."""
    lines: list[str] = []
    for f in record.fields or []:
        if f.anonymous:
            inner = records.get(f.ctype.record)
            if inner is not None:
                lines += _stub_fields(inner, records, seen)
            continue
        if not f.cname or f.cname in seen:
            continue
        seen.add(f.cname)
        if is_python_keyword(f.cname):
            lines.append(f"    # {f.cname}: a Python keyword, use getattr()")
            continue
        kind = "int" if f.width is not None else None
        lines.append(f"    {f.cname}: {kind or stub_value(f.ctype)}")
    return lines


def _stub_param_name(name: str, index: int, used: set[str]) -> str:
    base = name if name.isidentifier() else f"arg{index}"
    if is_python_keyword(base) or base.startswith("__"):
        base = f"{base.strip('_')}_"
    while base in used:
        base += "_"
    used.add(base)
    return base


def render_stub(b: Bindings) -> str:
    """The text of ``_generated.pyi``."""
    out: list[str] = [HEADER_COMMENT.format(version=b.version).rstrip("\n"), STUB_PRELUDE]
    out += [f"{c.name}: {type(c.value).__name__}" for c in b.constants]
    out.append("")
    out += [f"{name} = {enum.ctype.stub}" for name, enum in sorted(b.enums.items())]
    out.append("")
    for name, record in sorted(b.records.items()):
        lines = _stub_fields(record, b.records, set())
        out.append(f"class {name}({record.base}):" + ("" if lines else " ..."))
        out += lines
    out.append("")
    for name, td in sorted(b.typedefs.items()):
        if td.defines_callback and td.same_as:
            out.append(f"{name} = {td.same_as}")
        elif td.defines_callback:
            out.append(f"class {name}(_Callback): ...")
        else:
            out.append(f"{name} = {td.ctype.stub}")
    out.append("")
    for fn in b.functions:
        used: set[str] = set()
        params = [
            f"{_stub_param_name(p.name, i, used)}: {stub_arg(p.ctype)}"
            for i, p in enumerate(fn.params)
        ]
        if params:
            params.append("/")
        if fn.variadic:
            params.append("*args: Any")
        ret = "None" if fn.restype.kind == "void" else stub_value(fn.restype)
        out.append(f"def {fn.name}({', '.join(params)}) -> {ret}: ...")
    return "\n".join(out) + "\n"
