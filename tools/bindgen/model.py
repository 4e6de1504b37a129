"""The model: what the generator knows about SPDK's declarations, free of clang and ctypes.

Takes nothing; every phase shares these types.  ``parse`` fills a :class:`Bindings`
from clang, ``order`` puts its typedefs and layouts in dependency order, ``layout``
chooses each record's verified ``_fields_``, and the two renderers turn it into text.
Tests build these objects by hand to exercise a phase without clang or SPDK.

A :class:`CType` is a C type as the generated module spells it (``expr``) and as the
stub spells it (``stub``), with the names it depends on: ``name_deps`` must be
defined before the expression is evaluated, ``value_deps`` (records embedded by
value) must also have their layout.
"""

from __future__ import annotations

import dataclasses
import keyword
from dataclasses import dataclass, field
from typing import Literal

REASON_INLINE = "static inline: no symbol in any library"
REASON_NOT_EXPORTED = "not exported by any SPDK library"
REASON_UNION_BY_VALUE = (
    "passes or returns a union that is not a plain 1/2/4/8-byte integer by value"
)
REASON_KEYWORD = "name is a Python keyword"


class GenerationError(Exception):
    """The headers cannot be turned into bindings (parse error, layout mismatch, ...)."""


def is_python_keyword(name: str) -> bool:
    """Whether ``name`` cannot be used as a Python identifier."""
    return keyword.iskeyword(name) or name in ("None", "True", "False")


Kind = Literal[
    "void",
    "int",
    "bool",
    "float",
    "char",
    "char_p",
    "char_ptr",
    "void_p",
    "pointer",
    "record",
    "array",
    "funcptr",
]
Context = Literal["field", "param", "return", "cb_param", "cb_return", "inner"]


@dataclass(frozen=True)
class CType:
    """A C type as the generated module spells it, plus what the stub needs to know.

    ``expr`` is the Python expression (``ctypes.c_int``, ``ctypes.POINTER(struct_X)``,
    an alias name); ``stub`` the matching type expression in the ``.pyi``.
    """

    expr: str
    kind: Kind
    stub: str
    target: CType | None = None
    size: int = 0
    signed: bool = False
    record: str = ""
    fn_type: bool = False
    value_deps: frozenset[str] = frozenset()
    name_deps: frozenset[str] = frozenset()

    def aliased(self, name: str) -> CType:
        """This type referred to through the typedef alias ``name``."""
        keeps_value_deps = self.kind in ("record", "array")
        return dataclasses.replace(
            self,
            expr=name,
            stub=name,
            value_deps=self.value_deps if keeps_value_deps else frozenset(),
            name_deps=frozenset({name}),
        )


VOID = CType("None", "void", "None")
VOID_P = CType("ctypes.c_void_p", "void_p", "ctypes.c_void_p", size=8)
CHAR_P = CType("ctypes.c_char_p", "char_p", "ctypes.c_char_p", size=8)
CHAR_PTR = CType(
    "ctypes.POINTER(ctypes.c_char)", "char_ptr", "ctypes._Pointer[ctypes.c_char]", size=8
)


def int_ctype(expr: str, size: int, signed: bool, kind: Kind = "int") -> CType:
    """A scalar ctypes type."""
    return CType(expr, kind, expr, size=size, signed=signed)


def int_expr(size: int, signed: bool) -> str:
    """The fixed-width ctypes integer of ``size`` bytes (``ctypes.c_uint32``, ...)."""
    return f"ctypes.c_{'' if signed else 'u'}int{size * 8}"


def pointer_to(target: CType) -> CType:
    """``T *`` for a mapped ``T``."""
    return CType(
        f"ctypes.POINTER({target.expr})",
        "pointer",
        f"ctypes._Pointer[{target.stub}]",
        target=target,
        size=8,
        name_deps=target.name_deps,
    )


def array_of(element: CType, count: int) -> CType:
    """``T[count]`` for a mapped ``T`` (``count`` 0: a flexible array member)."""
    return CType(
        f"({element.expr} * {count})",
        "array",
        f"ctypes.Array[{element.stub}]",
        target=element,
        size=element.size * count,
        value_deps=element.value_deps,
        name_deps=element.name_deps,
    )


@dataclass
class Field:
    """One member of a record as clang lays it out."""

    cname: str  # C name; "" for unnamed bit-fields and nameless struct/union members
    ctype: CType
    offset: int  # in bits
    size: int  # in bytes (0 for flexible array members)
    width: int | None = None  # bit-field width
    anonymous: bool = False  # nameless struct/union member


@dataclass
class Entry:
    """One ``_fields_`` entry of an emitted class."""

    name: str
    expr: str
    width: int | None = None
    source: Field | None = None


@dataclass
class Layout:
    """How a record is emitted: ``_pack_``, ``_anonymous_`` and ``_fields_``."""

    strategy: str
    pack: int | None
    anonymous: tuple[str, ...]
    entries: list[Entry]


@dataclass
class Record:
    """A struct or union; ``fields`` is None while it is opaque (no layout emitted)."""

    pyname: str
    kind: Literal["struct", "union"]
    header: str
    size: int = 0
    align: int = 0
    fields: list[Field] | None = None
    layout: Layout | None = None

    @property
    def base(self) -> str:
        """The ctypes base class."""
        return "ctypes.Union" if self.kind == "union" else "ctypes.Structure"


@dataclass
class Enum:
    """An enum type alias (``enum_X = ctypes.c_uint``)."""

    pyname: str
    ctype: CType
    header: str


@dataclass
class Constant:
    """A module-level constant: an enumerator or an evaluated macro."""

    name: str
    value: int | float | bytes
    header: str
    origin: Literal["enum", "macro"]


@dataclass
class Typedef:
    """A typedef alias; ``defines_callback`` when it is a callback (CFUNCTYPE) type.

    Callback typedefs with the same signature are one class at run time; ``same_as``
    names the one with the shortest name for the others, so the stub says so too.
    """

    name: str
    ctype: CType
    header: str
    defines_callback: bool
    same_as: str | None = None


@dataclass
class Param:
    """A function parameter."""

    name: str
    ctype: CType


@dataclass
class Function:
    """A bound function; ``notes`` are comments written next to its binding.

    ``releases_gil`` is why the call releases the GIL (set by :mod:`bindgen.gil`), or
    ``""`` when it is called with the GIL held.
    """

    name: str
    header: str
    restype: CType
    params: list[Param]
    variadic: bool
    notes: list[str] = field(default_factory=list)
    releases_gil: str = ""


@dataclass
class Bindings:
    """Everything collected from the headers, ready to render."""

    version: str
    headers: list[str]
    records: dict[str, Record]
    enums: dict[str, Enum]
    typedefs: dict[str, Typedef]
    constants: list[Constant]
    functions: list[Function]
    omitted: dict[str, str]
    declared: set[str]
    exports: dict[str, str]
    statements: list[tuple[str, str]] = field(default_factory=list)  # ("typedef"|"layout", name)
