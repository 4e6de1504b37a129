"""Parse: walk clang's translation unit and build the model.

Takes the translation unit of :func:`bindgen.source.translation_unit` and the
installed libraries' exports; gives a :class:`Collector` whose records, enums,
typedefs, constants and functions are the :mod:`bindgen.model` of every declaration
in SPDK's public headers.  Guarantees: every record used by value or declared in an
SPDK header has its fields (clang's bit offsets and sizes); a function is bound only
if a library exports it, else it is in ``omitted`` with the reason; unions passed by
value are bound as their integer bits or omitted; a macro becomes a constant only
when clang evaluates it.  No layout is chosen here (that is :mod:`bindgen.layout`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import clang.cindex as ci  # type: ignore[import-untyped]

from spdk_io._discover import SpdkInstall

from .model import (
    CHAR_P,
    CHAR_PTR,
    REASON_INLINE,
    REASON_KEYWORD,
    REASON_NOT_EXPORTED,
    REASON_UNION_BY_VALUE,
    VOID,
    VOID_P,
    Constant,
    Context,
    CType,
    Enum,
    Field,
    Function,
    GenerationError,
    Param,
    Record,
    Typedef,
    array_of,
    int_ctype,
    int_expr,
    is_python_keyword,
    pointer_to,
)
from .source import (
    INT_PROBE,
    STR_PROBE,
    atomic_value_type,
    evaluate,
    is_anonymous_member_record,
    scrub_paths,
)

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


class _NotAnInteger(Exception):
    """A union passed by value cannot be treated as a plain integer."""


class Collector:
    """Walks the translation unit and turns SPDK's declarations into the model."""

    def __init__(self, install: SpdkInstall, exports: dict[str, str]) -> None:
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
            if cursor.kind == CK.VAR_DECL and cursor.spelling.startswith(INT_PROBE):
                probes["int"][cursor.spelling[len(INT_PROBE) :]] = cursor
                continue
            if cursor.kind == CK.VAR_DECL and cursor.spelling.startswith(STR_PROBE):
                probes["str"][cursor.spelling[len(STR_PROBE) :]] = cursor
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
            if child.kind == CK.ENUM_CONSTANT_DECL and not is_python_keyword(child.spelling):
                self.constants.append(
                    Constant(child.spelling, int(child.enum_value), header, "enum")
                )

    # ------------------------------------------------------------------ typedefs

    def typedef_ref(self, decl: ci.Cursor) -> CType:
        """Register an SPDK typedef (once) and return the type through its alias.

        A typedef named like a Python keyword gets no alias: its type is returned.
        """
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
        if is_python_keyword(name):
            return ctype  # no alias can have this name: its users get the type itself
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
            return array_of(int_ctype("ctypes.c_uint8", 1, False), size)
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
        return pointer_to(target)

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
            return pointer_to(self.map_type(element, "inner", by_ref=True))
        count = int(t.get_array_size()) if t.kind == TK.CONSTANTARRAY else 0
        return array_of(self.map_type(element, "field", by_ref), count)

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
        return int_ctype(int_expr(record.size, False), record.size, False)

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
