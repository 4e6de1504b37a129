"""Record layouts of spdk_io._generated against the C compiler's view.

1. Every ``SPDK_STATIC_ASSERT`` about ``sizeof``/``offsetof`` in the installed public
   headers is found at test time, translated to Python and checked against ctypes.
2. Every record with a layout is compared with clang's size and field offsets.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gen_bindings
import pytest
from bindgen import source
from bindgen.model import Field, Record

import spdk_io._generated as g
from spdk_io._discover import find_spdk

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
MIN_ASSERTS = 50


_TOKEN = re.compile(
    r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)[uUlL]*|([A-Za-z_]\w*)|(==|!=|<=|>=|&&|\|\||<<|>>|[-+*/%()<>,.\[\]!&|^~]))"
)


# --------------------------------------------------------------------------- static asserts


@dataclass(frozen=True)
class StaticAssert:
    header: str
    line: int
    condition: str


def _matching_paren(text: str, open_index: int) -> int:
    depth = 0
    for i in range(open_index, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced parentheses")


def _split_top_level_comma(text: str) -> tuple[str, str]:
    depth = 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            return text[:i], text[i + 1 :]
    return text, ""


def static_asserts() -> list[StaticAssert]:
    """Every SPDK_STATIC_ASSERT use in the headers the bindings are generated from."""
    install = find_spdk()
    found: list[StaticAssert] = []
    for header in source.header_files(install):
        text = (install.headers / header).read_text()
        text = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m[0]), text, flags=re.DOTALL)
        for match in re.finditer(r"\bSPDK_STATIC_ASSERT\s*\(", text):
            line_start = text.rfind("\n", 0, match.start()) + 1
            if text[line_start : match.start()].lstrip().startswith("#"):
                continue  # the macro's own definition
            close = _matching_paren(text, match.end() - 1)
            condition, _ = _split_top_level_comma(text[match.end() : close])
            lineno = text.count("\n", 0, match.start()) + 1
            found.append(StaticAssert(f"spdk/{header}", lineno, " ".join(condition.split())))
    return found


def _record(tokens: list[str]) -> Any:
    """The generated class for a C type name: ``struct X``, ``union X`` or a typedef."""
    if len(tokens) == 2 and tokens[0] in ("struct", "union"):
        return getattr(g, f"{tokens[0]}_{tokens[1]}")
    if len(tokens) == 1:
        return getattr(g, tokens[0])
    raise ValueError(f"unsupported type name {' '.join(tokens)}")


def _member(cls: Any, name: str) -> tuple[int, Any]:
    """(offset, ctypes type) of field ``name`` of ``cls``, looking into nameless members."""
    for entry in cls._fields_:
        fname, ftype = entry[0], entry[1]
        if fname == name:
            return int(getattr(cls, name).offset), ftype
    for anon in getattr(cls, "_anonymous_", ()):
        atype = dict((e[0], e[1]) for e in cls._fields_)[anon]
        try:
            inner_offset, ftype = _member(atype, name)
        except AttributeError:
            continue
        return int(getattr(cls, anon).offset) + inner_offset, ftype
    raise AttributeError(f"{cls.__name__} has no field {name}")


def offsetof(cls: Any, designator: str) -> int:
    """C's offsetof with a member designator such as ``a.b[2].c``."""
    offset = 0
    for part in re.findall(r"[A-Za-z_]\w*|\[\d+\]", designator):
        if part.startswith("["):
            element = cls._type_
            offset += int(part[1:-1]) * ctypes.sizeof(element)
            cls = element
        else:
            field_offset, cls = _member(cls, part)
            offset += field_offset
    return offset


class _Translator:
    """Turns a C constant expression over sizeof/offsetof into a Python expression."""

    def __init__(self, condition: str) -> None:
        self.tokens: list[str] = []
        pos = 0
        while pos < len(condition):
            match = _TOKEN.match(condition, pos)
            if match is None or match.end() == pos:
                if condition[pos:].strip() == "":
                    break
                raise ValueError(f"cannot tokenize {condition[pos:]!r}")
            self.tokens.append(match[1] or match[2] or match[3])
            pos = match.end()
        self.values: list[Any] = []

    def _take_parenthesised(self, i: int) -> tuple[list[str], int]:
        assert self.tokens[i] == "("
        depth = 0
        for j in range(i, len(self.tokens)):
            depth += {"(": 1, ")": -1}.get(self.tokens[j], 0)
            if depth == 0:
                return self.tokens[i + 1 : j], j + 1
        raise ValueError("unbalanced parentheses")

    def _value(self, value: Any) -> str:
        self.values.append(value)
        return f"_v[{len(self.values) - 1}]"

    def translate(self) -> str:
        out: list[str] = []
        i = 0
        words = {"&&": " and ", "||": " or ", "!": " not ", "/": "//"}
        while i < len(self.tokens):
            tok = self.tokens[i]
            if tok == "sizeof":
                inner, i = self._take_parenthesised(i + 1)
                out.append(self._value(ctypes.sizeof(_record(inner))))
                continue
            if tok == "offsetof":
                inner, i = self._take_parenthesised(i + 1)
                comma = inner.index(",")
                cls = _record(inner[:comma])
                out.append(self._value(offsetof(cls, "".join(inner[comma + 1 :]))))
                continue
            if tok[0].isdigit():
                out.append(str(int(tok, 0) if not re.fullmatch(r"0\d+", tok) else int(tok, 8)))
            elif tok[0].isalpha() or tok[0] == "_":
                out.append(self._value(getattr(g, tok)))
            else:
                out.append(words.get(tok, tok))
            i += 1
        return "".join(out)

    def evaluate(self) -> bool:
        expr = self.translate()
        return bool(eval(expr, {"_v": self.values}))  # built from header tokens


def layout_asserts() -> list[StaticAssert]:
    return [a for a in static_asserts() if re.search(r"\b(sizeof|offsetof)\b", a.condition)]


def test_static_asserts_hold() -> None:
    asserts = layout_asserts()
    print(f"checking {len(asserts)} SPDK_STATIC_ASSERTs about sizeof/offsetof")
    assert len(asserts) >= MIN_ASSERTS, f"only {len(asserts)} static asserts found"
    failures = []
    for a in asserts:
        try:
            if not _Translator(a.condition).evaluate():
                failures.append(f"{a.header}:{a.line}: {a.condition} is false for ctypes")
        except (AttributeError, ValueError, SyntaxError, TypeError) as exc:
            failures.append(f"{a.header}:{a.line}: {a.condition}: cannot check ({exc})")
    assert not failures, "\n".join(failures)


def test_translator_checks_something() -> None:
    """A false assert is reported false (the check is not vacuous)."""
    assert _Translator("sizeof(struct spdk_nvme_cmd) == 64").evaluate()
    assert not _Translator("sizeof(struct spdk_nvme_cmd) == 65").evaluate()
    assert _Translator("offsetof(struct spdk_nvme_cmd, dptr.sgl1) == 24").evaluate()


# --------------------------------------------------------------------------- every record


@pytest.fixture(scope="module")
def clang_records() -> dict[str, Record]:
    """The generator's model of every record: clang's sizes and bit offsets."""
    bindings = gen_bindings.build_bindings(find_spdk())
    return {name: r for name, r in bindings.records.items() if r.fields is not None}


def _leaf_fields(record: Record) -> Iterator[tuple[str, int, int | None]]:
    """(python name, bit offset, width) of every named field and nameless member."""
    anon = 0
    fields: list[Field] = record.fields or []
    for f in fields:
        if f.anonymous:
            yield f"_anon_{anon}", f.offset, None
            anon += 1
        elif f.cname:
            yield f.cname, f.offset, f.width


def _ctypes_bits(cls: Any, name: str, width: int | None) -> tuple[int, int | None]:
    cfield = getattr(cls, name)
    if hasattr(cfield, "bit_size"):  # Python 3.13+
        if cfield.is_bitfield:
            return cfield.byte_offset * 8 + cfield.bit_offset, cfield.bit_size
        return cfield.byte_offset * 8, None
    if width is not None:
        return cfield.offset * 8 + (cfield.size & 0xFFFF), cfield.size >> 16
    return cfield.offset * 8, None


def test_every_record_matches_clang(clang_records: dict[str, Record]) -> None:
    assert len(clang_records) > 500
    problems = []
    for name, record in sorted(clang_records.items()):
        cls = getattr(g, name)
        if ctypes.sizeof(cls) != record.size:
            problems.append(f"{name}: sizeof {ctypes.sizeof(cls)} != clang {record.size}")
            continue
        for fname, offset, width in _leaf_fields(record):
            got = _ctypes_bits(cls, fname, width)
            if got != (offset, width):
                problems.append(f"{name}.{fname}: ctypes {got} != clang {(offset, width)}")
    print(f"compared {len(clang_records)} records with clang")
    assert not problems, "\n".join(problems[:40])


def test_packed_and_bitfield_records() -> None:
    """Known hard cases: packed structs and bit-fields of mixed declared types."""
    assert ctypes.sizeof(g.union_spdk_nvme_feat_async_event_configuration) == 4
    aec = g.union_spdk_nvme_feat_async_event_configuration(raw=1 << 31)
    assert aec.bits.discovery_log_change_notice == 1
    assert ctypes.sizeof(g.struct_spdk_nvme_health_information_page) == 512
    assert ctypes.sizeof(g.struct_spdk_nvme_ctrlr_data) == 4096
