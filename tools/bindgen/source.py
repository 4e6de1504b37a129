"""The inputs of parsing: which headers, how clang is run, libclang's extras, ELF exports.

Takes an :class:`~spdk_io._discover.SpdkInstall` (found by ``spdk_io._discover``,
which loads nothing) and gives a clang translation unit of every public SPDK header
plus one probe per ``#define`` (so clang evaluates macros), and the functions the
installed libraries export.  Clang sees only our freestanding headers
(``tools/clang_include``), the C library's and SPDK's: no compiler is needed.
Header errors are fatal (:class:`~bindgen.model.GenerationError`).
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import clang.cindex as ci  # type: ignore[import-untyped]

from spdk_io._discover import SpdkInstall

from .model import GenerationError

CLANG_INCLUDE = Path(__file__).resolve().parent.parent / "clang_include"

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


# =========================================================================== exports


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


# =========================================================================== the translation unit

UMBRELLA = "spdk_io_bindings.c"
_MACRO_RE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z]\w*)(?![\w(])(.*)$", re.MULTILINE)
INT_PROBE = "__spdk_io_int_"
STR_PROBE = "__spdk_io_str_"


def header_files(install: SpdkInstall) -> list[str]:
    """The public header names to parse (``bdev.h``, ...), sorted."""
    names = sorted(p.name for p in install.headers.glob("*.h"))
    if not names:
        raise GenerationError(f"no headers in {install.headers}")
    return [n for n in names if n not in EXCLUDED_HEADERS]


def clang_args(install: SpdkInstall) -> list[str]:
    """Compiler arguments: our freestanding headers, then the C library's, then SPDK's."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    args = ["-x", "c", "-std=gnu11", "-nostdinc", "-w", "-ferror-limit=0"]
    args += ["-isystem", str(CLANG_INCLUDE)]
    if multiarch and Path("/usr/include", multiarch).is_dir():
        args += ["-isystem", f"/usr/include/{multiarch}"]
    args += ["-isystem", "/usr/include", f"-I{install.includedir}"]
    return args


def macro_candidates(install: SpdkInstall, headers: Iterable[str]) -> list[str]:
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
        lines.append(f"static __auto_type {INT_PROBE}{name} = ({name});")
        lines.append(f"static const char {STR_PROBE}{name}[] = {name};")
        lines.append("#endif")
    return "\n".join(lines) + "\n"


def translation_unit(install: SpdkInstall, headers: Sequence[str]) -> ci.TranslationUnit:
    """Parse all ``headers`` in one translation unit; header errors are fatal."""
    source = umbrella_source(headers, macro_candidates(install, headers))
    index = ci.Index.create()
    tu = index.parse(
        UMBRELLA,
        args=clang_args(install),
        unsaved_files=[(UMBRELLA, source)],
        options=ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD,
    )
    # A probe of a macro that is not a constant fails, as expected, on its own line of
    # the umbrella; an error on an #include line (or right after: a header that ends
    # mid-declaration) belongs to a header and is fatal.
    last_include_line = len(headers) + 1
    errors = [
        d
        for d in tu.diagnostics
        if d.severity >= ci.Diagnostic.Error
        and (
            d.location.file is None
            or d.location.file.name != UMBRELLA
            or d.location.line <= last_include_line
        )
    ]
    if errors:
        shown = "\n  ".join(scrub_paths(str(d), install) for d in errors[:20])
        raise GenerationError(
            f"clang cannot parse the SPDK headers ({len(errors)} errors):\n  {shown}"
        )
    return tu


def scrub_paths(text: str, install: SpdkInstall) -> str:
    """Replace the machine's include directory in a message by ``<include>``."""
    return text.replace(str(install.includedir), "<include>")
