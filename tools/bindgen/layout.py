"""Layout: choose, per record, ctypes ``_fields_`` that reproduce clang's layout exactly.

Takes a :class:`~bindgen.model.Bindings` whose ``statements`` are in dependency
order (:mod:`bindgen.order`) and whose records carry clang's size and field bit
offsets; sets each laid-out record's :class:`~bindgen.model.Layout` and marks
callback typedefs that are the same class at run time (``same_as``).  Guarantees:
every layout set was built as a real ctypes class in this process and matches
clang's size and every named field's (bit offset, width); otherwise
:class:`~bindgen.model.GenerationError` names the record and what differed.
Needs no clang: tests give it hand-built records.
"""

from __future__ import annotations

import ctypes
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .model import Bindings, Entry, Field, GenerationError, Layout, Record, int_expr


def cfield_bits(cfield: Any, bitfield: bool) -> tuple[int, int | None]:
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
            try:
                layout = strategy(record)
            except GenerationError as exc:
                problems.append(f"{strategy.__name__.strip('_')}: {exc}")
                continue
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
            got = cfield_bits(getattr(cls, entry.name), entry.width is not None)
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
                expr = int_expr(widths[id(f)], f.ctype.signed)
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
                    out.bit_units(storage_units([f], record.size), at=0)
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
            while True:
                limit = named[i][0].offset // 8 if i < len(named) else record.size
                try:
                    units = storage_units(run, limit)
                    break
                except GenerationError:
                    # C put the next member inside the last unit's bytes; ctypes cannot
                    # overlap them, so an integer member joins the unit as a bit-field
                    # of its full width, at the same bits.
                    if i == len(named) or not _fits_in_unit(named[i][0]):
                        raise
                    run.append(dataclasses.replace(named[i][0], width=8 * named[i][0].size))
                    i += 1
            out.bit_units(units)
        out.pad_to(record.size)
        return Layout("explicit", 1, tuple(anonymous), out.entries)


def _fits_in_unit(f: Field) -> bool:
    """Whether a plain member can be read as a full-width bit-field (an integer scalar)."""
    return f.width is None and not f.anonymous and f.ctype.kind == "int" and f.size in (1, 2, 4, 8)


@dataclass
class StorageUnit:
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


def storage_units(run: list[Field], limit: int) -> list[StorageUnit]:
    """Group bit-fields into integer storage units that reproduce their bit offsets.

    A field starting inside the bytes of the current unit joins it (growing it); any
    other field starts a new unit at its own byte, so units stay as small as possible.
    No unit may reach byte ``limit`` (where the next member starts).
    """
    units: list[StorageUnit] = []
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
        units.append(StorageUnit(f.offset // 8, size, [f]))
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

    def bit_units(self, units: list[StorageUnit], at: int | None = None) -> None:
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
                    expr = int_expr(unit.size, f.ctype.signed)
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
            self.entries.append(Entry(name, int_expr(size, False), bits))


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
