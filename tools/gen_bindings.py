#!/usr/bin/env python3
"""Generate ``spdk_io/_generated.py`` (ctypes bindings) and its typed stub from SPDK's headers.

The generator reads the *installed* public headers (``<prefix>/include/spdk/*.h``) with
libclang (the ``libclang`` wheel from PyPI: no C compiler is needed) and writes:

* ``spdk_io/_generated.py``: the raw ctypes layer.  Naming rules that the rest of
  ``spdk_io`` relies on:

  - ``struct X`` -> ``class struct_X(ctypes.Structure)``, ``union X`` ->
    ``class union_X(ctypes.Union)``; nameless nested records are ``<parent>_anon_<n>``
    and nameless members are listed in ``_anonymous_`` so their fields read as in C;
  - typedefs -> module-level aliases; callback typedefs are CFUNCTYPE types
    (``spdk_msg_fn = _callback(None, ctypes.c_void_p)``: a CFUNCTYPE subclass whose
    parameters also accept None, one class per signature);
  - enums -> ``enum_X = ctypes.c_uint`` (the enum's real integer type) plus one int
    constant per enumerator;
  - object-like ``#define``s whose value clang can evaluate to an integer, float or
    string -> constants (strings as ``bytes``);
  - functions -> ``name = _lib.name`` with ``argtypes``/``restype`` set.  Functions that
    cannot be called (``static inline``, not exported by any library, ...) are listed in
    ``OMITTED`` with the reason instead; nothing callable is a no-op.

* ``spdk_io/_generated.pyi`` and ``stubs/spdk_io/_generated.pyi``: the typed stub.  mypy
  reads the copy next to the module (a stub directory cannot override one submodule of
  a package that exists on the path); ``stubs/`` is kept for other tools.

Record layouts come from clang (size, alignment, every field's bit offset), and each
emitted ctypes class is built and checked in this process before it is written: a class
that does not reproduce clang's layout exactly falls back to an explicit layout
(``_pack_ = 1`` plus padding fields and normalised bit-field storage).  The output is
deterministic and holds no path of the machine it was generated on.

Usage::

    python tools/gen_bindings.py [--out-dir DIR] [--stubs-dir DIR] [--report]
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import heapq
import importlib
import keyword
import os
import platform
import re
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import clang.cindex as ci  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
CLANG_INCLUDE = Path(__file__).resolve().parent / "clang_include"
MODULE_NAME = "_generated"

#: Public headers that are not parsed, and why.  Each reason was checked against an
#: installed SPDK 26.05 (``--report`` re-checks that every one of them still fails or
#: is still unwanted).
EXCLUDED_HEADERS: dict[str, str] = {
    "isa-l.h": 'includes "../isa-l/include/crc.h" (SPDK\'s bundled ISA-L headers, not installed)',
    "isa-l-crypto.h": "includes SPDK's bundled ISA-L crypto headers (../isa-l-crypto/include), "
    "which are not installed",
    "scsi.h": 'includes "spdk_internal/trace_defs.h", which SPDK does not install',
    "vfu_target.h": "includes <vfio-user/libvfio-user.h> (libvfio-user is not installed with SPDK)",
    "md5.h": "includes <openssl/md5.h>: parsing it would make the bindings depend on libssl-dev "
    "being present at build time (only the iSCSI CHAP code uses it)",
}

#: C library typedefs that map to a named ctypes type (everything else is resolved
#: through clang's canonical type).
FIXED_WIDTH_TYPEDEFS: dict[str, tuple[str, int, bool]] = {
    "int8_t": ("ctypes.c_int8", 1, True),
    "uint8_t": ("ctypes.c_uint8", 1, False),
    "int16_t": ("ctypes.c_int16", 2, True),
    "uint16_t": ("ctypes.c_uint16", 2, False),
    "int32_t": ("ctypes.c_int32", 4, True),
    "uint32_t": ("ctypes.c_uint32", 4, False),
    "int64_t": ("ctypes.c_int64", 8, True),
    "uint64_t": ("ctypes.c_uint64", 8, False),
    "size_t": ("ctypes.c_size_t", 8, False),
    "ssize_t": ("ctypes.c_ssize_t", 8, True),
}

TK = ci.TypeKind
CK = ci.CursorKind

#: clang's builtin type kinds -> (ctypes expression, kind, signed).
PRIMITIVES: dict[Any, tuple[str, str, bool]] = {
    TK.BOOL: ("ctypes.c_bool", "bool", False),
    TK.CHAR_S: ("ctypes.c_char", "char", True),
    TK.CHAR_U: ("ctypes.c_char", "char", False),
    TK.SCHAR: ("ctypes.c_byte", "int", True),
    TK.UCHAR: ("ctypes.c_ubyte", "int", False),
    TK.SHORT: ("ctypes.c_short", "int", True),
    TK.USHORT: ("ctypes.c_ushort", "int", False),
    TK.INT: ("ctypes.c_int", "int", True),
    TK.UINT: ("ctypes.c_uint", "int", False),
    TK.LONG: ("ctypes.c_long", "int", True),
    TK.ULONG: ("ctypes.c_ulong", "int", False),
    TK.LONGLONG: ("ctypes.c_longlong", "int", True),
    TK.ULONGLONG: ("ctypes.c_ulonglong", "int", False),
    TK.WCHAR: ("ctypes.c_wchar", "int", True),
    TK.FLOAT: ("ctypes.c_float", "float", True),
    TK.DOUBLE: ("ctypes.c_double", "float", True),
    TK.LONGDOUBLE: ("ctypes.c_longdouble", "float", True),
}

FUNCTION_KINDS = (TK.FUNCTIONPROTO, TK.FUNCTIONNOPROTO)

REASON_INLINE = "static inline: no symbol in any library"
REASON_NOT_EXPORTED = "not exported by any SPDK library"
REASON_UNION_BY_VALUE = (
    "passes or returns a union that is not a plain 1/2/4/8-byte integer by value"
)
REASON_KEYWORD = "name is a Python keyword"


class GenerationError(Exception):
    """The headers cannot be turned into bindings (parse error, layout mismatch, ...)."""


class _NotAnInteger(Exception):
    """A union passed by value cannot be treated as a plain integer."""


# =========================================================================== libclang


class _EvalKind:
    """Values of libclang's ``CXEvalResultKind``."""

    INT = 1
    FLOAT = 2
    STR_LITERAL = 4


def load_libclang() -> None:
    """Point clang.cindex at the libclang shared object of the ``libclang`` wheel.

    The ``clang`` bindings package (if installed next to ``libclang``) replaces the
    wheel's ``cindex.py`` by one that only looks for a system ``libclang.so``; the wheel
    still ships the library as ``clang/native/libclang.so``.  ``$SPDK_IO_LIBCLANG`` may
    name another library file.
    """
    if ci.Config.loaded:
        return
    candidates: list[Path] = []
    if os.environ.get("SPDK_IO_LIBCLANG"):
        candidates.append(Path(os.environ["SPDK_IO_LIBCLANG"]))
    native = Path(ci.__file__).resolve().parent / "native"
    candidates += sorted(native.glob("libclang*.so*"))
    for candidate in candidates:
        if candidate.is_file():
            ci.Config.set_library_file(str(candidate))
            break
    _register_extra_functions()


def _register_extra_functions() -> None:
    """Declare the libclang entry points that clang.cindex 18 does not wrap."""
    lib = ci.conf.lib
    signatures: dict[str, tuple[list[Any], Any]] = {
        "clang_Cursor_Evaluate": ([ci.Cursor], ctypes.c_void_p),
        "clang_EvalResult_getKind": ([ctypes.c_void_p], ctypes.c_int),
        "clang_EvalResult_isUnsignedInt": ([ctypes.c_void_p], ctypes.c_uint),
        "clang_EvalResult_getAsUnsigned": ([ctypes.c_void_p], ctypes.c_ulonglong),
        "clang_EvalResult_getAsLongLong": ([ctypes.c_void_p], ctypes.c_longlong),
        "clang_EvalResult_getAsDouble": ([ctypes.c_void_p], ctypes.c_double),
        "clang_EvalResult_getAsStr": ([ctypes.c_void_p], ctypes.c_char_p),
        "clang_EvalResult_dispose": ([ctypes.c_void_p], None),
        "clang_Type_getValueType": ([ci.Type], ci.Type),
        "clang_Cursor_isAnonymousRecordDecl": ([ci.Cursor], ctypes.c_uint),
    }
    for name, (argtypes, restype) in signatures.items():
        func = getattr(lib, name)
        func.argtypes = argtypes
        func.restype = restype
        if restype is ci.Type:  # keeps the translation unit alive, as cindex does
            func.errcheck = ci.Type.from_result


def evaluate(cursor: ci.Cursor) -> int | float | bytes | None:
    """The constant value of a variable's initializer, as clang computes it (or None)."""
    lib = ci.conf.lib
    result = lib.clang_Cursor_Evaluate(cursor)
    if not result:
        return None
    try:
        kind = lib.clang_EvalResult_getKind(result)
        if kind == _EvalKind.INT:
            if lib.clang_EvalResult_isUnsignedInt(result):
                return int(lib.clang_EvalResult_getAsUnsigned(result))
            return int(lib.clang_EvalResult_getAsLongLong(result))
        if kind == _EvalKind.FLOAT:
            return float(lib.clang_EvalResult_getAsDouble(result))
        if kind == _EvalKind.STR_LITERAL:
            value = lib.clang_EvalResult_getAsStr(result)
            return bytes(value) if value is not None else None
        return None
    finally:
        lib.clang_EvalResult_dispose(result)


def atomic_value_type(t: ci.Type) -> ci.Type:
    """``T`` for ``_Atomic(T)``."""
    return ci.conf.lib.clang_Type_getValueType(t)


def is_anonymous_member_record(decl: ci.Cursor) -> bool:
    """Whether ``decl`` is a nameless struct/union *member* (C11 anonymous member)."""
    return bool(ci.conf.lib.clang_Cursor_isAnonymousRecordDecl(decl))


# =========================================================================== SPDK install


@dataclass(frozen=True)
class Install:
    """What the generator needs to know about the SPDK installation."""

    includedir: Path
    libdir: Path
    version: str

    @property
    def headers(self) -> Path:
        """``<includedir>/spdk``."""
        return self.includedir / "spdk"


def find_install() -> Install:
    """Locate SPDK through ``spdk_io._loader.find_spdk`` (pkg-config, $SPDK_IO_PREFIX)."""
    found = _loader_module().find_spdk()
    return Install(
        includedir=Path(found.includedir), libdir=Path(found.libdir), version=str(found.version)
    )


def _loader_module() -> Any:
    """``spdk_io._loader`` of this source tree (imported by name: the generator must not
    depend on the typing state of the package it is generating for)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("spdk_io._loader")


def spdk_not_found_error() -> type[Exception]:
    """The loader's SpdkNotFoundError (an ImportError subclass)."""
    try:
        error: type[Exception] = _loader_module().SpdkNotFoundError
    except ImportError as exc:
        # importing the loader loads SPDK: a missing library surfaces right here
        if type(exc).__name__ == "SpdkNotFoundError":
            _fail(str(exc), 2)
        raise
    return error


def exported_functions(libdir: Path) -> dict[str, str]:
    """Every function defined and exported by a ``libspdk_*.so`` -> the library's file name.

    Reads the ELF dynamic symbol tables (``libspdk.so`` itself is a linker script and is
    skipped).
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    exports: dict[str, str] = {}
    for path in sorted(libdir.glob("libspdk_*.so")):
        with path.open("rb") as stream:
            try:
                elf = ELFFile(stream)
            except ELFError:
                continue
            dynsym = elf.get_section_by_name(".dynsym")
            if not isinstance(dynsym, SymbolTableSection):
                continue
            for sym in dynsym.iter_symbols():
                info = sym["st_info"]
                if (
                    info["type"] in ("STT_FUNC", "STT_GNU_IFUNC")
                    and info["bind"] in ("STB_GLOBAL", "STB_WEAK")
                    and sym["st_shndx"] != "SHN_UNDEF"
                ):
                    exports.setdefault(str(sym.name), path.name)
    return exports


# =========================================================================== parsing

UMBRELLA = "spdk_io_bindings.c"
_MACRO_RE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z]\w*)(?![\w(])(.*)$", re.MULTILINE)
_INT_PROBE = "__spdk_io_int_"
_STR_PROBE = "__spdk_io_str_"


def header_files(install: Install) -> list[str]:
    """The public header names to parse (``bdev.h``, ...), sorted."""
    names = sorted(p.name for p in install.headers.glob("*.h"))
    if not names:
        raise GenerationError(f"no headers in {install.headers}")
    return [n for n in names if n not in EXCLUDED_HEADERS]


def clang_args(install: Install) -> list[str]:
    """Compiler arguments: our freestanding headers, then the C library's, then SPDK's."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    args = ["-x", "c", "-std=gnu11", "-nostdinc", "-w", "-ferror-limit=0"]
    args += ["-isystem", str(CLANG_INCLUDE)]
    if multiarch and Path("/usr/include", multiarch).is_dir():
        args += ["-isystem", f"/usr/include/{multiarch}"]
    args += ["-isystem", "/usr/include", f"-I{install.includedir}"]
    return args


def macro_candidates(install: Install, headers: Iterable[str]) -> list[str]:
    """Object-like macros that may be constants, found textually (clang decides later)."""
    names: dict[str, None] = {}
    for header in headers:
        text = (install.headers / header).read_text(errors="replace")
        text = text.replace("\\\n", " ")
        for match in _MACRO_RE.finditer(text):
            body = re.sub(r"/\*.*?\*/|//.*", "", match.group(2)).strip()
            if body and not any(ch in body for ch in "{};#"):
                names.setdefault(match.group(1), None)
    return list(names)


def umbrella_source(headers: Sequence[str], macros: Sequence[str]) -> str:
    """The in-memory C file clang parses: every header, then one probe per macro."""
    lines = [f"#include <spdk/{h}>" for h in headers]
    lines.append("/* macro probes: clang evaluates each initializer */")
    for name in macros:
        lines.append(f"#ifdef {name}")
        lines.append(f"static __auto_type {_INT_PROBE}{name} = ({name});")
        lines.append(f"static const char {_STR_PROBE}{name}[] = {name};")
        lines.append("#endif")
    return "\n".join(lines) + "\n"


def parse(install: Install, headers: Sequence[str]) -> ci.TranslationUnit:
    """Parse all ``headers`` in one translation unit; header errors are fatal."""
    source = umbrella_source(headers, macro_candidates(install, headers))
    index = ci.Index.create()
    tu = index.parse(
        UMBRELLA,
        args=clang_args(install),
        unsaved_files=[(UMBRELLA, source)],
        options=ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD,
    )
    errors = [
        d
        for d in tu.diagnostics
        if d.severity >= ci.Diagnostic.Error
        and (d.location.file is None or d.location.file.name != UMBRELLA)
    ]
    if errors:
        shown = "\n  ".join(scrub_paths(str(d), install) for d in errors[:20])
        raise GenerationError(
            f"clang cannot parse the SPDK headers ({len(errors)} errors):\n  {shown}"
        )
    return tu


def scrub_paths(text: str, install: Install) -> str:
    """Replace the machine's include directory in a message by ``<include>``."""
    return text.replace(str(install.includedir), "<include>")


# =========================================================================== model

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
    """A bound function; ``notes`` are comments written next to its binding."""

    name: str
    header: str
    restype: CType
    params: list[Param]
    variadic: bool
    notes: list[str] = field(default_factory=list)


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


# =========================================================================== collection


def is_python_keyword(name: str) -> bool:
    """Whether ``name`` cannot be used as a Python identifier."""
    return keyword.iskeyword(name) or name in ("None", "True", "False")


def _pointer_to(target: CType) -> CType:
    """``T *`` for a mapped ``T``."""
    return CType(
        f"ctypes.POINTER({target.expr})",
        "pointer",
        f"ctypes._Pointer[{target.stub}]",
        target=target,
        size=8,
        name_deps=target.name_deps,
    )


class Collector:
    """Walks the translation unit and turns SPDK's declarations into the model."""

    def __init__(self, install: Install, exports: dict[str, str]) -> None:
        self.install = install
        self.exports = exports
        self.records: dict[str, Record] = {}
        self.enums: dict[str, Enum] = {}
        self.typedefs: dict[str, Typedef] = {}
        self.constants: list[Constant] = []
        self.functions: list[Function] = []
        self.omitted: dict[str, str] = {}
        self.declared: set[str] = set()
        self._anon_names: dict[tuple[str, int], str] = {}
        self._pending_layouts: list[tuple[Record, ci.Cursor]] = []
        self._typedefs_in_progress: set[str] = set()

    # ------------------------------------------------------------------ locations

    def header_of(self, cursor: ci.Cursor) -> str | None:
        """``spdk/bdev.h`` for a cursor in an SPDK public header, else None."""
        loc = cursor.location.file
        if loc is None:
            return None
        path = Path(loc.name)
        try:
            rel = path.relative_to(self.install.includedir)
        except ValueError:
            return None
        return rel.as_posix() if rel.parts and rel.parts[0] == "spdk" else None

    def _source_name(self, cursor: ci.Cursor) -> str:
        """A machine-independent name for where ``cursor`` is declared."""
        header = self.header_of(cursor)
        if header is not None:
            return header
        loc = cursor.location.file
        return "<system>" if loc is None else f"<{Path(loc.name).name}>"

    @staticmethod
    def _loc_key(cursor: ci.Cursor) -> tuple[str, int]:
        loc = cursor.location
        return (loc.file.name if loc.file else "", int(loc.offset))

    # ------------------------------------------------------------------ walk

    def collect(self, tu: ci.TranslationUnit) -> None:
        """Collect every SPDK declaration of ``tu``."""
        probes: dict[str, dict[str, ci.Cursor]] = {"int": {}, "str": {}}
        macro_headers: dict[str, str] = {}
        for cursor in tu.cursor.get_children():
            if cursor.kind == CK.VAR_DECL and cursor.spelling.startswith(_INT_PROBE):
                probes["int"][cursor.spelling[len(_INT_PROBE) :]] = cursor
                continue
            if cursor.kind == CK.VAR_DECL and cursor.spelling.startswith(_STR_PROBE):
                probes["str"][cursor.spelling[len(_STR_PROBE) :]] = cursor
                continue
            header = self.header_of(cursor)
            if header is None:
                continue
            self._collect_top_level(cursor, header, macro_headers)
        self._drain_layouts()
        self._pass_unions_as_integers()
        self._collect_macros(macro_headers, probes)

    def _collect_top_level(
        self, cursor: ci.Cursor, header: str, macro_headers: dict[str, str]
    ) -> None:
        kind = cursor.kind
        if kind in (CK.STRUCT_DECL, CK.UNION_DECL):
            if not cursor.is_anonymous():  # nameless: reached through its user, if any
                self.record_ref(cursor, need_layout=cursor.is_definition())
        elif kind == CK.ENUM_DECL and cursor.is_definition():
            self._collect_enum(cursor, header)
        elif kind == CK.TYPEDEF_DECL:
            self.typedef_ref(cursor)
        elif kind == CK.FUNCTION_DECL:
            self._collect_function(cursor, header)
        elif kind == CK.MACRO_DEFINITION:
            macro_headers.setdefault(cursor.spelling, header)

    def _drain_layouts(self) -> None:
        while self._pending_layouts:
            record, defn = self._pending_layouts.pop(0)
            self._collect_fields(record, defn)

    # ------------------------------------------------------------------ records

    def record_name(self, decl: ci.Cursor) -> tuple[str, ci.Cursor]:
        """The Python class name of a record and its defining cursor."""
        defn = decl.get_definition() or decl
        kind = "union" if defn.kind == CK.UNION_DECL else "struct"
        anon = self._anon_names.get(self._loc_key(defn))
        if anon is not None:
            return anon, defn
        if defn.is_anonymous():
            raise GenerationError(
                f"nameless record in {self._source_name(defn)} used outside its parent"
            )
        return f"{kind}_{defn.spelling}", defn

    def record_ref(self, decl: ci.Cursor, need_layout: bool) -> CType:
        """Register a record (opaque unless a layout is needed) and return its type."""
        pyname, defn = self.record_name(decl)
        record = self.records.get(pyname)
        if record is None:
            kind: Literal["struct", "union"] = "union" if defn.kind == CK.UNION_DECL else "struct"
            record = Record(pyname, kind, self._source_name(defn))
            self.records[pyname] = record
        in_spdk = self.header_of(defn) is not None
        if (need_layout or in_spdk) and record.fields is None and defn.is_definition():
            record.fields = []  # claimed; filled in by _collect_fields
            self._pending_layouts.append((record, defn))
        size = max(int(defn.type.get_size()), 0)
        return CType(
            pyname, "record", pyname, size=size, record=pyname, value_deps=frozenset({pyname})
        )

    def _collect_fields(self, record: Record, defn: ci.Cursor) -> None:
        record.size = int(defn.type.get_size())
        record.align = int(defn.type.get_align())
        nested = [
            c
            for c in defn.get_children()
            if c.kind in (CK.STRUCT_DECL, CK.UNION_DECL) and c.is_anonymous()
        ]
        for index, child in enumerate(nested):
            self._anon_names[self._loc_key(child)] = f"{record.pyname}_anon_{index}"
        fields: list[Field] = []
        for cursor in defn.type.get_fields():
            ftype = cursor.type
            decl = ftype.get_declaration()
            anonymous = decl.kind in (CK.STRUCT_DECL, CK.UNION_DECL) and is_anonymous_member_record(
                decl
            )
            ctype = self.map_type(ftype, "field")
            width = int(cursor.get_bitfield_width()) if cursor.is_bitfield() else None
            cname = "" if anonymous else str(cursor.spelling)
            size = max(int(ftype.get_size()), 0)
            fields.append(
                Field(cname, ctype, int(cursor.get_field_offsetof()), size, width, anonymous)
            )
        record.fields = fields

    # ------------------------------------------------------------------ enums

    def enum_ref(self, decl: ci.Cursor) -> CType:
        """The type of an enum: its alias if it has a name, else its integer type."""
        defn = decl.get_definition() or decl
        base = self.map_type(defn.enum_type, "inner")
        if defn.is_anonymous() or not defn.spelling:
            return base
        pyname = f"enum_{defn.spelling}"
        if pyname not in self.enums:
            self.enums[pyname] = Enum(pyname, base, self._source_name(defn))
        return dataclasses.replace(base, expr=pyname, stub=pyname)

    def _collect_enum(self, cursor: ci.Cursor, header: str) -> None:
        self.enum_ref(cursor)
        for child in cursor.get_children():
            if child.kind == CK.ENUM_CONSTANT_DECL:
                self.constants.append(
                    Constant(child.spelling, int(child.enum_value), header, "enum")
                )

    # ------------------------------------------------------------------ typedefs

    def typedef_ref(self, decl: ci.Cursor) -> CType:
        """Register an SPDK typedef (once) and return the type through its alias."""
        name = str(decl.spelling)
        known = self.typedefs.get(name)
        if known is not None:
            return known.ctype.aliased(name)
        if name in self._typedefs_in_progress:
            raise GenerationError(f"typedef {name} refers to itself")
        self._typedefs_in_progress.add(name)
        try:
            under = decl.underlying_typedef_type
            ctype = self.map_type(under, "field")
            defines_callback = ctype.kind == "funcptr" and ctype.expr.startswith("_callback(")
        finally:
            self._typedefs_in_progress.discard(name)
        self.typedefs[name] = Typedef(name, ctype, self._source_name(decl), defines_callback)
        return ctype.aliased(name)

    # ------------------------------------------------------------------ types

    def map_type(self, t: ci.Type, ctx: Context, by_ref: bool = False) -> CType:
        """Map a clang type to a :class:`CType` in context ``ctx``.

        ``by_ref`` is set when the type is only reached through a pointer, so a record
        met there does not need its layout.
        """
        kind = t.kind
        if kind == TK.ELABORATED:
            return self.map_type(t.get_named_type(), ctx, by_ref)
        if kind == TK.ATOMIC:
            return self.map_type(atomic_value_type(t), ctx, by_ref)
        if kind == TK.TYPEDEF:
            return self._map_typedef(t, ctx, by_ref)
        if kind == TK.POINTER:
            return self._map_pointer(t, ctx)
        if kind in (TK.CONSTANTARRAY, TK.INCOMPLETEARRAY):
            return self._map_array(t, ctx, by_ref)
        if kind == TK.RECORD:
            return self.record_ref(t.get_declaration(), need_layout=not by_ref)
        if kind == TK.ENUM:
            return self.enum_ref(t.get_declaration())
        if kind in FUNCTION_KINDS:
            return self._map_function_type(t)
        if kind == TK.VOID:
            return VOID
        if kind in PRIMITIVES:
            expr, pkind, signed = PRIMITIVES[kind]
            return int_ctype(expr, int(t.get_size()), signed, pkind)  # type: ignore[arg-type]
        canonical = t.get_canonical()
        if canonical.kind != kind:
            return self.map_type(canonical, ctx, by_ref)
        size = int(t.get_size())
        if size > 0:  # __int128, vector types: raw bytes with clang's size
            return self._array_of(int_ctype("ctypes.c_uint8", 1, False), size)
        raise GenerationError(
            f"unsupported C type {t.kind} ({scrub_paths(str(t.spelling), self.install)})"
        )

    def _map_typedef(self, t: ci.Type, ctx: Context, by_ref: bool) -> CType:
        decl = t.get_declaration()
        name = str(decl.spelling)
        if self.header_of(decl) is None:
            if name in FIXED_WIDTH_TYPEDEFS and t.get_size() == FIXED_WIDTH_TYPEDEFS[name][1]:
                expr, size, signed = FIXED_WIDTH_TYPEDEFS[name]
                return int_ctype(expr, size, signed)
            if name in ("va_list", "__gnuc_va_list", "__builtin_va_list"):
                return VOID_P  # only ever useful to pass on a va_list received in a callback
            return self.map_type(decl.underlying_typedef_type, ctx, by_ref)
        return self.typedef_ref(decl)

    def _map_pointer(self, t: ci.Type, ctx: Context) -> CType:
        pointee = t.get_pointee()
        canonical = pointee.get_canonical()
        if canonical.kind == TK.VOID:
            return VOID_P
        if canonical.kind in (TK.CHAR_S, TK.CHAR_U):
            return self._char_pointer(ctx, bool(canonical.is_const_qualified()))
        if ctx == "cb_return":
            return VOID_P
        if canonical.kind in FUNCTION_KINDS:
            return dataclasses.replace(self.map_type(pointee, "inner", by_ref=True), fn_type=False)
        if canonical.kind == TK.RECORD and canonical.get_declaration().is_anonymous():
            by_ref = False  # nameless records only exist with their parent's layout
        else:
            by_ref = True
        target = self.map_type(pointee, "inner", by_ref=by_ref)
        if target.kind == "funcptr" and target.fn_type:
            return dataclasses.replace(target, fn_type=False)
        return _pointer_to(target)

    @staticmethod
    def _char_pointer(ctx: Context, const: bool) -> CType:
        """``char *``: bytes in, bytes out; a freeable pointer for owned results."""
        if ctx == "cb_return":
            return VOID_P
        if not const and ctx in ("return", "cb_param"):
            return CHAR_PTR
        return CHAR_P

    def _map_array(self, t: ci.Type, ctx: Context, by_ref: bool) -> CType:
        element = t.get_array_element_type()
        if ctx in ("param", "cb_param"):  # arrays decay to pointers in prototypes
            canonical = element.get_canonical()
            if canonical.kind in (TK.CHAR_S, TK.CHAR_U):
                return self._char_pointer(ctx, bool(canonical.is_const_qualified()))
            return _pointer_to(self.map_type(element, "inner", by_ref=True))
        count = int(t.get_array_size()) if t.kind == TK.CONSTANTARRAY else 0
        return self._array_of(self.map_type(element, "field", by_ref), count)

    @staticmethod
    def _array_of(element: CType, count: int) -> CType:
        return CType(
            f"({element.expr} * {count})",
            "array",
            f"ctypes.Array[{element.stub}]",
            target=element,
            size=element.size * count,
            value_deps=element.value_deps,
            name_deps=element.name_deps,
        )

    def _map_function_type(self, t: ci.Type) -> CType:
        """A function type as a CFUNCTYPE (callbacks: pointer results become c_void_p)."""
        restype = self.map_type(t.get_result(), "cb_return")
        args = (
            [self.map_type(a, "cb_param") for a in t.argument_types()]
            if t.kind == TK.FUNCTIONPROTO
            else []
        )
        expr = "_callback(" + ", ".join([restype.expr] + [a.expr for a in args]) + ")"
        deps = frozenset().union(restype.name_deps, *(a.name_deps for a in args))
        return CType(expr, "funcptr", "_ctypes.CFuncPtr", size=8, fn_type=True, name_deps=deps)

    # ------------------------------------------------------------------ functions

    def _collect_function(self, cursor: ci.Cursor, header: str) -> None:
        name = str(cursor.spelling)
        if name in self.declared:
            return
        self.declared.add(name)
        exported = name in self.exports
        if cursor.storage_class == ci.StorageClass.STATIC and not exported:
            self.omitted[name] = REASON_INLINE
            return
        if not exported:
            self.omitted[name] = REASON_NOT_EXPORTED
            return
        if is_python_keyword(name):
            self.omitted[name] = REASON_KEYWORD
            return
        ftype = cursor.type
        restype = self.map_type(ftype.get_result(), "return")
        params = [
            Param(str(arg.spelling) or f"arg{i}", self.map_type(arg.type, "param"))
            for i, arg in enumerate(cursor.get_arguments())
        ]
        variadic = ftype.kind == TK.FUNCTIONPROTO and bool(ftype.is_function_variadic())
        self.functions.append(Function(name, header, restype, params, variadic))

    def _pass_unions_as_integers(self) -> None:
        """Bind unions passed by value as the unsigned integer holding their bits.

        ctypes cannot pass or return unions by value.  A union of 1, 2, 4 or 8 bytes
        whose members are all integers (NVMe register unions such as ``union
        spdk_nvme_cap_register``) travels exactly like an unsigned integer of that size
        in the x86-64 and AArch64 calling conventions, so it is bound as one: callers
        get ``.raw``-style bits back.  Other unions by value make the function OMITTED.
        """
        kept: list[Function] = []
        for fn in self.functions:
            try:
                fn.restype = self._union_as_int(fn.restype, fn, "returns")
                for param in fn.params:
                    param.ctype = self._union_as_int(param.ctype, fn, f"takes {param.name} as")
            except _NotAnInteger:
                self.omitted[fn.name] = REASON_UNION_BY_VALUE
                continue
            kept.append(fn)
        self.functions = kept

    def _union_as_int(self, ctype: CType, fn: Function, verb: str) -> CType:
        record = self.records.get(ctype.record) if ctype.kind == "record" else None
        if record is None or record.kind != "union":
            return ctype
        if record.size not in (1, 2, 4, 8) or not self._integer_only(record):
            raise _NotAnInteger(record.pyname)
        fn.notes.append(f"{verb} {record.pyname} as its raw bits (an int)")
        return int_ctype(_int_expr(record.size, False), record.size, False)

    def _integer_only(self, record: Record) -> bool:
        """Whether every member of ``record`` (recursively) is an integer or a pointer."""
        for f in record.fields or []:
            ct = f.ctype
            while ct.kind == "array" and ct.target is not None:
                ct = ct.target
            if ct.kind == "float":
                return False
            if ct.kind == "record":
                inner = self.records.get(ct.record)
                if inner is None or not self._integer_only(inner):
                    return False
        return True

    # ------------------------------------------------------------------ macros

    def _collect_macros(
        self, macro_headers: dict[str, str], probes: dict[str, dict[str, ci.Cursor]]
    ) -> None:
        taken = (
            {c.name for c in self.constants}
            | set(self.typedefs)
            | set(self.declared)
            | set(self.records)
            | set(self.enums)
        )
        for name, header in macro_headers.items():
            if name in taken or name.startswith("_") or is_python_keyword(name):
                continue
            value: int | float | bytes | None = None
            if name in probes["int"]:
                value = evaluate(probes["int"][name])
            if value is None and name in probes["str"]:
                value = evaluate(probes["str"][name])
                if header == "spdk/config.h" and isinstance(value, bytes) and b"/" in value:
                    value = None  # build-configuration paths (SPDK_CONFIG_*_DIR, ...)
            if value is not None:
                self.constants.append(Constant(name, value, header, "macro"))
                taken.add(name)


# =========================================================================== layout


def _cfield_bits(cfield: Any, bitfield: bool) -> tuple[int, int | None]:
    """(bit offset, bit-field width or None) of a ctypes CField (any Python version).

    Before Python 3.13 a bit-field's ``size`` packs ``width << 16 | bit offset``.
    """
    if hasattr(cfield, "bit_size"):  # Python 3.13+
        if cfield.is_bitfield:
            return int(cfield.byte_offset) * 8 + int(cfield.bit_offset), int(cfield.bit_size)
        return int(cfield.byte_offset) * 8, None
    if bitfield:
        size = int(cfield.size)
        return int(cfield.offset) * 8 + (size & 0xFFFF), size >> 16
    return int(cfield.offset) * 8, None


#: Written at the top of the generated module: callback typedefs are built with it.
CALLBACK_HELPER = '''\
def _callback_from_param(cls, obj):
    return None if obj is None else cls.__base__.from_param(obj)


_callbacks = {}


def _callback(restype, *argtypes):
    """A CFUNCTYPE type whose parameters also accept None (NULL); one class per signature."""
    key = (restype, *argtypes)
    if key not in _callbacks:
        base = ctypes.CFUNCTYPE(restype, *argtypes)
        attrs = {
            "_flags_": base._flags_,
            "_argtypes_": base._argtypes_,
            "_restype_": base._restype_,
            "from_param": classmethod(_callback_from_param),
        }
        _callbacks[key] = type("CFunctionType", (base,), attrs)
    return _callbacks[key]
'''


def _load_callback_helper() -> Callable[..., type]:
    """The generated module's ``_callback``, for building the same types here."""
    namespace: dict[str, Any] = {"ctypes": ctypes}
    exec(CALLBACK_HELPER, namespace)
    helper: Callable[..., type] = namespace["_callback"]
    return helper


_callback = _load_callback_helper()


def _int_expr(size: int, signed: bool) -> str:
    return f"ctypes.c_{'' if signed else 'u'}int{size * 8}"


class LayoutSolver:
    """Chooses, per record, ctypes ``_fields_`` that reproduce clang's layout exactly.

    Strategies are tried in order: the declared types; the declared types with every
    run of bit-fields normalised to one storage type; an explicit byte-exact layout
    (``_pack_ = 1``, padding members, bit-fields regrouped into storage units).  Each
    candidate is built as a real ctypes class and compared with clang's size and
    field offsets, so what is written is what was verified.
    """

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.ns = namespace

    def solve(self, record: Record) -> Layout:
        """Find a verified layout for ``record`` and apply it to its class in the namespace."""
        assert record.fields is not None
        problems: list[str] = []
        for strategy in (self._natural, self._normalised, self._explicit):
            layout = strategy(record)
            try:
                candidate = self._build(layout, type(record.pyname, (self._base(record),), {}))
            except (TypeError, ValueError, AttributeError) as exc:
                problems.append(f"{layout.strategy}: {exc}")
                continue
            mismatch = self._mismatch(record, layout, candidate)
            if mismatch is None:
                self._build(layout, self.ns[record.pyname])
                record.layout = layout
                return layout
            problems.append(f"{layout.strategy}: {mismatch}")
        raise GenerationError(
            f"no ctypes layout of {record.pyname} matches clang: " + "; ".join(problems)
        )

    @staticmethod
    def _base(record: Record) -> type:
        return ctypes.Union if record.kind == "union" else ctypes.Structure

    def _build(self, layout: Layout, cls: Any) -> Any:
        """Give ``cls`` the layout (``_pack_``, ``_anonymous_``, ``_fields_``)."""
        if layout.pack is not None:
            cls._pack_ = layout.pack
            cls._layout_ = "ms"
        if layout.anonymous:
            cls._anonymous_ = layout.anonymous
        fields: list[tuple[Any, ...]] = []
        for entry in layout.entries:
            ctype = eval(entry.expr, self.ns)
            fields.append(
                (entry.name, ctype) if entry.width is None else (entry.name, ctype, entry.width)
            )
        cls._fields_ = fields
        return cls

    @staticmethod
    def _mismatch(record: Record, layout: Layout, cls: Any) -> str | None:
        if ctypes.sizeof(cls) != record.size:
            return f"size {ctypes.sizeof(cls)} != {record.size}"
        for entry in layout.entries:
            source = entry.source
            if source is None or (not source.cname and not source.anonymous):
                continue
            got = _cfield_bits(getattr(cls, entry.name), entry.width is not None)
            if got != (source.offset, source.width):
                want = (source.offset, source.width)
                return f"{entry.name}: ctypes (bit offset, width) {got} != clang {want}"
        return None

    # ------------------------------------------------------------------ strategies

    @staticmethod
    def _names(record: Record) -> Iterator[tuple[Field, str]]:
        anon = 0
        assert record.fields is not None
        for f in record.fields:
            if f.anonymous:
                yield f, f"_anon_{anon}"
                anon += 1
            else:
                yield f, f.cname

    def _natural(self, record: Record, normalise: bool = False) -> Layout:
        entries: list[Entry] = []
        anonymous: list[str] = []
        widths = self._run_sizes(record) if normalise else {}
        pads = 0
        for f, name in self._names(record):
            if f.width == 0:
                continue
            if not name:
                name = f"_bitpad_{pads}"
                pads += 1
            expr = f.ctype.expr
            if f.width is not None and id(f) in widths:
                expr = _int_expr(widths[id(f)], f.ctype.signed)
            entries.append(Entry(name, expr, f.width, f))
            if f.anonymous:
                anonymous.append(name)
        return Layout("normalised" if normalise else "natural", None, tuple(anonymous), entries)

    def _normalised(self, record: Record) -> Layout:
        return self._natural(record, normalise=True)

    @staticmethod
    def _run_sizes(record: Record) -> dict[int, int]:
        """For each bit-field: the largest declared storage size in its run."""
        assert record.fields is not None
        sizes: dict[int, int] = {}
        run: list[Field] = []

        def close() -> None:
            if run:
                biggest = max(max(f.ctype.size, 1) for f in run)
                for f in run:
                    sizes[id(f)] = biggest
                run.clear()

        for f in record.fields:
            if f.width is None or f.width == 0:
                close()
            else:
                run.append(f)
        close()
        return sizes

    def _explicit(self, record: Record) -> Layout:
        """Byte-exact layout: ``_pack_ = 1``, explicit padding, bit-fields in storage units."""
        assert record.fields is not None
        out = _ExplicitFields()
        anonymous: list[str] = []
        named = list(self._names(record))
        if record.kind == "union":
            for f, name in named:
                if f.width is None:
                    out.field(Entry(name, f.ctype.expr, None, f), f.size, at=0)
                elif name:
                    out.bit_units(_storage_units([f], record.size), at=0)
                if f.anonymous:
                    anonymous.append(name)
            out.entries.append(Entry(out.pad_name(), f"(ctypes.c_uint8 * {record.size})"))
            return Layout("explicit", 1, tuple(anonymous), out.entries)
        i = 0
        while i < len(named):
            f, name = named[i]
            if f.width is None:
                out.field(Entry(name, f.ctype.expr, None, f), f.size, at=f.offset // 8)
                if f.anonymous:
                    anonymous.append(name)
                i += 1
                continue
            run: list[Field] = []
            while i < len(named) and named[i][0].width is not None:
                run.append(named[i][0])
                i += 1
            limit = named[i][0].offset // 8 if i < len(named) else record.size
            out.bit_units(_storage_units(run, limit))
        out.pad_to(record.size)
        return Layout("explicit", 1, tuple(anonymous), out.entries)


@dataclass
class _Unit:
    """A bit-field storage unit of an explicit layout: ``size`` bytes at byte ``start``."""

    start: int
    size: int
    members: list[Field]

    @property
    def end_bit(self) -> int:
        return max(f.offset + (f.width or 0) for f in self.members)


def _unit_size(start: int, end_bit: int) -> int | None:
    """The smallest integer size (1, 2, 4, 8 bytes) from byte ``start`` covering ``end_bit``."""
    for size in (1, 2, 4, 8):
        if (start + size) * 8 >= end_bit:
            return size
    return None


def _storage_units(run: list[Field], limit: int) -> list[_Unit]:
    """Group bit-fields into integer storage units that reproduce their bit offsets.

    A field starting inside the bytes of the current unit joins it (growing it); any
    other field starts a new unit at its own byte, so units stay as small as possible.
    No unit may reach byte ``limit`` (where the next member starts).
    """
    units: list[_Unit] = []
    for f in sorted((f for f in run if f.width), key=lambda m: m.offset):
        end = f.offset + (f.width or 0)
        if units and f.offset < (units[-1].start + units[-1].size) * 8:
            unit = units[-1]
            size = _unit_size(unit.start, max(end, unit.end_bit))
            if size is None:
                raise GenerationError(f"bit-field {f.cname} does not fit an 8-byte storage unit")
            unit.size = size
            unit.members.append(f)
            continue
        size = _unit_size(f.offset // 8, end)
        if size is None:
            raise GenerationError(f"bit-field {f.cname} does not fit an 8-byte storage unit")
        units.append(_Unit(f.offset // 8, size, [f]))
    if units and units[-1].start + units[-1].size > limit:
        names = ", ".join(m.cname or "<unnamed>" for m in units[-1].members)
        raise GenerationError(f"bit-fields {names} need a storage unit past the next member")
    return units


class _ExplicitFields:
    """Accumulates the ``_fields_`` of an explicit (``_pack_ = 1``) layout."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.pos = 0  # next free byte
        self._pads = 0
        self._bitpads = 0
        self._last_unit = 0  # size of the storage unit just emitted (0: none)

    def pad_name(self) -> str:
        self._pads += 1
        return f"_pad_{self._pads - 1}"

    def pad_to(self, target: int) -> None:
        """Explicit padding bytes up to byte ``target``."""
        if target > self.pos:
            self.entries.append(Entry(self.pad_name(), f"(ctypes.c_uint8 * {target - self.pos})"))
            self.pos = target
            self._last_unit = 0

    def field(self, entry: Entry, size: int, at: int) -> None:
        """A member at byte ``at`` (unions: always 0)."""
        self.pad_to(at)
        self.entries.append(entry)
        self.pos = max(self.pos, at + size)
        self._last_unit = 0

    def bit_units(self, units: list[_Unit], at: int | None = None) -> None:
        """Storage units, each filled completely with fields and padding bits."""
        for unit in units:
            if at is None:
                self.pad_to(unit.start)
            if self._last_unit and unit.size > self._last_unit:
                # ctypes would widen the previous unit instead of starting a new one
                self.entries.append(Entry(self.pad_name(), "(ctypes.c_uint8 * 0)"))
            bit = unit.start * 8
            for f in unit.members:
                self._bitpad(f.offset - bit, unit.size)
                if f.cname:
                    expr = _int_expr(unit.size, f.ctype.signed)
                    self.entries.append(Entry(f.cname, expr, f.width, f))
                else:
                    self._bitpad(f.width or 0, unit.size)
                bit = f.offset + (f.width or 0)
            self._bitpad((unit.start + unit.size) * 8 - bit, unit.size)
            self._last_unit = unit.size
            if at is None:
                self.pos = unit.start + unit.size

    def _bitpad(self, bits: int, size: int) -> None:
        if bits > 0:
            name = f"_bitpad_{self._bitpads}"
            self._bitpads += 1
            self.entries.append(Entry(name, _int_expr(size, False), bits))


# =========================================================================== ordering


def order_statements(
    records: dict[str, Record], typedefs: dict[str, Typedef]
) -> list[tuple[str, str]]:
    """Typedef aliases and record layouts in an order where every use is defined.

    A layout needs the aliases it names and every record it embeds by value complete;
    an alias needs the aliases it names (and complete records for arrays of records).
    Ties are broken by (typedefs first, name) so the order is deterministic.
    """
    deps: dict[tuple[str, str], set[tuple[str, str]]] = {}
    laid_out = {name for name, r in records.items() if r.fields}

    def requirements(ctypes_used: Iterable[CType]) -> set[tuple[str, str]]:
        req: set[tuple[str, str]] = set()
        for ct in ctypes_used:
            req |= {("typedef", n) for n in ct.name_deps if n in typedefs}
            req |= {("layout", n) for n in ct.value_deps if n in laid_out}
        return req

    for name, td in typedefs.items():
        used = (
            td.ctype
            if td.ctype.kind != "record"
            else dataclasses.replace(td.ctype, value_deps=frozenset())
        )
        deps[("typedef", name)] = requirements([used]) - {("typedef", name)}
    for name in laid_out:
        fields = records[name].fields or []
        deps[("layout", name)] = requirements(f.ctype for f in fields) - {("layout", name)}
    return _toposort(deps)


def _toposort(deps: dict[tuple[str, str], set[tuple[str, str]]]) -> list[tuple[str, str]]:
    waiting = {node: set(req) for node, req in deps.items()}
    users: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for node, req in waiting.items():
        for r in req:
            users.setdefault(r, []).append(node)
    ready = [(0 if n[0] == "typedef" else 1, n[1], n) for n, req in waiting.items() if not req]
    heapq.heapify(ready)
    order: list[tuple[str, str]] = []
    while ready:
        _, _, node = heapq.heappop(ready)
        order.append(node)
        for user in users.get(node, []):
            waiting[user].discard(node)
            if not waiting[user]:
                heapq.heappush(ready, (0 if user[0] == "typedef" else 1, user[1], user))
    if len(order) != len(deps):
        stuck = sorted(n[1] for n in deps if n not in set(order))[:10]
        raise GenerationError(f"circular type dependencies among: {', '.join(stuck)}")
    return order


def solve_layouts(bindings: Bindings) -> None:
    """Run the statements in a scratch namespace, choosing each record's layout."""
    ns: dict[str, Any] = {"ctypes": ctypes, "_callback": _callback}
    for name, record in sorted(bindings.records.items()):
        ns[name] = type(name, (LayoutSolver._base(record),), {})
    for name, enum in sorted(bindings.enums.items()):
        ns[name] = eval(enum.ctype.expr, ns)
    solver = LayoutSolver(ns)
    for kind, name in bindings.statements:
        if kind == "layout":
            solver.solve(bindings.records[name])
        else:
            ns[name] = eval(bindings.typedefs[name].ctype.expr, ns)
    first_with_class: dict[int, str] = {}
    for name in sorted(bindings.typedefs, key=lambda n: (len(n), n)):  # shortest name wins
        td = bindings.typedefs[name]
        if td.defines_callback:
            first = first_with_class.setdefault(id(ns[name]), name)
            td.same_as = first if first != name else None


# =========================================================================== rendering

HEADER_COMMENT = (
    "# Generated by tools/gen_bindings.py from the public headers of SPDK {version}.\n"
    "# Do not edit: it is rebuilt whenever the package is built.\n"
)


def _py_literal(value: int | float | bytes) -> str:
    return repr(value)


def _fields_lines(record: Record) -> list[str]:
    layout = record.layout
    assert layout is not None
    lines: list[str] = []
    if layout.pack is not None:
        lines.append(f"{record.pyname}._pack_ = {layout.pack}")
        lines.append(f'{record.pyname}._layout_ = "ms"')
    if layout.anonymous:
        names = ", ".join(f'"{n}"' for n in layout.anonymous)
        lines.append(f"{record.pyname}._anonymous_ = ({names},)")
    lines.append(f"{record.pyname}._fields_ = [")
    for entry in layout.entries:
        width = "" if entry.width is None else f", {entry.width}"
        lines.append(f'    ("{entry.name}", {entry.expr}{width}),')
    lines.append("]")
    return lines


def render_module(b: Bindings) -> str:
    """The text of ``_generated.py``."""
    out: list[str] = [HEADER_COMMENT.format(version=b.version).rstrip("\n")]
    out += [
        '"""Raw ctypes bindings for SPDK\'s public C API (generated; see tools/gen_bindings.py).',
        "",
        "Variadic functions have ``argtypes`` for their fixed parameters only: pass the",
        "variable arguments as ctypes instances (``ctypes.c_int(1)``, ``b'text'``, ...).",
        "Callback types are CFUNCTYPE subclasses: wrap a Python function with the type",
        "(``spdk_msg_fn(fn)``, and keep a reference while C may call it); a parameter of",
        "a callback type also accepts None for NULL.",
        '"""',
        "",
        "# ruff: noqa",
        "import ctypes",
        "",
        "from spdk_io._loader import lib as _lib",
        "from spdk_io._loader import require_version as _require_version",
        "",
        "",
        CALLBACK_HELPER,
        f"GENERATED_FROM_SPDK = {b.version!r}",
        "_require_version(GENERATED_FROM_SPDK)  # refuse another SPDK release: layouts differ",
        "",
        "#: Functions declared in the headers that are deliberately not bound, with the reason.",
        "OMITTED: dict[str, str] = {",
    ]
    out += [f"    {name!r}: {reason!r}," for name, reason in sorted(b.omitted.items())]
    out += ["}", "", "# " + "-" * 30 + " constants (enumerators and #defines)"]
    header = ""
    for const in b.constants:
        if const.header != header:
            header = const.header
            out.append(f"# {header}")
        out.append(f"{const.name} = {_py_literal(const.value)}")
    out += ["", "# " + "-" * 30 + " enum types"]
    out += [f"{name} = {enum.ctype.expr}" for name, enum in sorted(b.enums.items())]
    out += ["", "# " + "-" * 30 + " records (fields are set below, once every type exists)"]
    for name, record in sorted(b.records.items()):
        out.append(f"class {name}({record.base}): pass  # {record.header}")
    out += ["", "# " + "-" * 30 + " typedefs and record layouts, in dependency order"]
    for kind, name in b.statements:
        if kind == "typedef":
            td = b.typedefs[name]
            out.append(f"{name} = {td.ctype.expr}  # {td.header}")
        else:
            out += _fields_lines(b.records[name])
    out += ["", "# " + "-" * 30 + " functions"]
    header = ""
    for fn in b.functions:
        if fn.header != header:
            header = fn.header
            out.append(f"# {header}")
        out += [f"# {note}" for note in fn.notes]
        out.append(f"{fn.name} = _lib.{fn.name}")
        args = ", ".join(p.ctype.expr for p in fn.params)
        note = "  # variadic: fixed parameters only" if fn.variadic else ""
        out.append(f"{fn.name}.argtypes = [{args}]{note}")
        out.append(f"{fn.name}.restype = {fn.restype.expr}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- stubs

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


# =========================================================================== driver


def build_bindings(install: Install, exports: dict[str, str] | None = None) -> Bindings:
    """Parse the headers, collect declarations and solve every record layout.

    ``exports`` (function -> library) defaults to what the installed libraries export.
    """
    if sys.byteorder != "little":
        raise GenerationError("only little-endian hosts are supported (bit-field layout)")
    load_libclang()
    headers = header_files(install)
    if exports is None:
        exports = exported_functions(install.libdir)
    tu = parse(install, headers)
    collector = Collector(install, exports)
    collector.collect(tu)
    bindings = Bindings(
        version=install.version,
        headers=headers,
        records=collector.records,
        enums=collector.enums,
        typedefs=collector.typedefs,
        constants=collector.constants,
        functions=collector.functions,
        omitted=collector.omitted,
        declared=collector.declared,
        exports=exports,
    )
    bindings.statements = order_statements(bindings.records, bindings.typedefs)
    solve_layouts(bindings)
    return bindings


def check_no_machine_paths(text: str, install: Install) -> None:
    """Refuse output that mentions a directory of the build machine."""
    forbidden = {
        str(install.includedir),
        str(install.libdir),
        str(ROOT),
        "site-packages",
        str(Path.home()),
    }
    prefix = install.includedir.parent
    if len(prefix.parts) > 2:  # /usr/local, /opt/spdk: specific enough to look for
        forbidden.add(str(prefix))
    for needle in sorted(forbidden):
        if len(needle) > 1 and needle in text:
            raise GenerationError(f"generated output contains a build-machine path ({needle})")


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds exactly that; True if written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    tmp.replace(path)
    return True


def generate(out_dir: Path, stubs_dir: Path | None, install: Install | None = None) -> Bindings:
    """Generate the module (and stubs) into ``out_dir`` / ``stubs_dir/spdk_io``."""
    install = install or find_install()
    bindings = build_bindings(install)
    module = render_module(bindings)
    stub = render_stub(bindings)
    check_no_machine_paths(module + stub, install)
    write_if_changed(out_dir / f"{MODULE_NAME}.py", module)
    write_if_changed(out_dir / f"{MODULE_NAME}.pyi", stub)
    if stubs_dir is not None:
        write_if_changed(stubs_dir / "spdk_io" / f"{MODULE_NAME}.pyi", stub)
    return bindings


# --------------------------------------------------------------------------- report


def check_exclusions(install: Install) -> dict[str, str]:
    """For each excluded header: the first error parsing it alone, or why it is still skipped."""
    status: dict[str, str] = {}
    index = ci.Index.create()
    for header in sorted(EXCLUDED_HEADERS):
        if not (install.headers / header).is_file():
            status[header] = "not installed"
            continue
        tu = index.parse(
            UMBRELLA,
            args=clang_args(install),
            unsaved_files=[(UMBRELLA, f"#include <spdk/{header}>\n")],
        )
        errors = [d for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error]
        status[header] = (
            "fails: " + scrub_paths(errors[0].spelling, install)
            if errors
            else "parses (excluded on purpose)"
        )
    return status


def report(b: Bindings, install: Install, elapsed: float) -> str:
    """Coverage and counts, for humans."""
    bound = {f.name for f in b.functions}
    spdk_exports = {n for n in b.exports if n.startswith("spdk_")}
    declared_exports = spdk_exports & b.declared
    missing = sorted(declared_exports - bound)
    reasons = Counter(b.omitted.values())
    records = list(b.records.values())
    n_internal = len(spdk_exports - b.declared)
    n_variadic = sum(f.variadic for f in b.functions)
    n_callbacks = sum(t.defines_callback for t in b.typedefs.values())
    strategies = Counter(r.layout.strategy for r in records if r.layout is not None)
    constants = Counter(c.origin for c in b.constants)
    lines = [
        f"SPDK {b.version}: {len(b.headers)} headers parsed, {len(EXCLUDED_HEADERS)} excluded",
        f"exported spdk_* functions (ELF .dynsym of libspdk_*.so): {len(spdk_exports)}",
        f"  declared in the parsed public headers:  {len(declared_exports)}",
        f"  bound:                                   {len(declared_exports & bound)}",
        f"  declared but not bound:                  {len(missing)} {' '.join(missing[:10])}",
        f"  exported, not in public headers:        {n_internal} (internal/module API)",
        f"functions bound in total: {len(bound)} (variadic: {n_variadic})",
        f"OMITTED: {len(b.omitted)}",
    ]
    lines += [f"  {count:5d}  {reason}" for reason, count in sorted(reasons.items())]
    lines += [
        f"records: {len(records)} ({sum(r.layout is not None for r in records)} with layout, "
        f"{sum(r.fields is None for r in records)} opaque); layouts: "
        + ", ".join(f"{k} {v}" for k, v in sorted(strategies.items())),
        f"enum types: {len(b.enums)}; enumerators: {constants['enum']}; "
        f"#define constants: {constants['macro']}",
        f"typedefs: {len(b.typedefs)} ({n_callbacks} callback types)",
        "excluded headers:",
    ]
    for header, status in check_exclusions(install).items():
        lines.append(f"  {header}: {status}")
        lines.append(f"      reason: {EXCLUDED_HEADERS[header]}")
    lines.append(f"generation time: {elapsed:.2f} s")
    return "\n".join(lines)


def _fail(message: str, code: int) -> NoReturn:
    print(f"gen_bindings: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--out-dir", type=Path, default=ROOT / "spdk_io", help="where _generated.py/.pyi go"
    )
    parser.add_argument(
        "--stubs-dir", type=Path, default=ROOT / "stubs", help="stub root (<dir>/spdk_io/...)"
    )
    parser.add_argument("--report", action="store_true", help="print coverage and counts")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    not_found = spdk_not_found_error()
    try:
        install = find_install()
        bindings = generate(args.out_dir, args.stubs_dir, install)
    except not_found as exc:
        _fail(str(exc), 2)
    except GenerationError as exc:
        _fail(str(exc), 1)
    except ci.LibclangError as exc:
        _fail(f"libclang cannot be loaded ({exc}); install the 'libclang' wheel", 2)
    if args.report:
        print(report(bindings, install, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
