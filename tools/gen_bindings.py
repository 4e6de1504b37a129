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
  - functions -> ``name = _pylib.name`` (``ctypes.PyDLL``: called with the GIL held) with
    ``argtypes``/``restype`` set, or ``name = _lib.name`` (``ctypes.CDLL``: the GIL is
    released during the call) for the functions that can block, listed with the reason
    in ``tools/bindgen/gil.py`` and in the module's ``RELEASES_GIL``.  Functions that
    cannot be called (``static inline``, not exported by any library, ...) are listed in
    ``OMITTED`` with the reason instead; nothing callable is a no-op.

* ``spdk_io/_generated.pyi``: the typed stub, next to the module, which is where mypy
  reads it (a stub directory on ``mypy_path`` cannot override one submodule of a
  package that exists on the path).  It is written there and nowhere else.

Record layouts come from clang (size, alignment, every field's bit offset), and each
emitted ctypes class is built and checked in this process before it is written: a class
that does not reproduce clang's layout exactly falls back to an explicit layout
(``_pack_ = 1`` plus padding fields and normalised bit-field storage).  The output is
deterministic and holds no path of the machine it was generated on.

This file is the command line; the phases are the package ``tools/bindgen`` (see its
docstring), and SPDK is found by ``spdk_io._discover``, which loads no library.

Usage::

    python tools/gen_bindings.py [--out-dir DIR] [--report]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
# The phases (tools/bindgen) and discovery (spdk_io._discover) of this source tree,
# whether this file is run as a script, imported by the build backend or by a test.
for _path in (str(TOOLS), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import clang.cindex as ci  # type: ignore[import-untyped]  # noqa: E402
from bindgen.gil import classify  # noqa: E402
from bindgen.layout import solve_layouts  # noqa: E402
from bindgen.model import Bindings, GenerationError  # noqa: E402
from bindgen.order import order_statements  # noqa: E402
from bindgen.parse import Collector  # noqa: E402
from bindgen.render_py import render_module  # noqa: E402
from bindgen.render_pyi import render_stub  # noqa: E402
from bindgen.report import report  # noqa: E402
from bindgen.source import (  # noqa: E402
    exported_functions,
    header_files,
    load_libclang,
    translation_unit,
)

from spdk_io._discover import SpdkInstall, SpdkNotFoundError, find_spdk  # noqa: E402

MODULE_NAME = "_generated"


def build_bindings(install: SpdkInstall, exports: dict[str, str] | None = None) -> Bindings:
    """Parse the headers, collect declarations, order them, solve every record layout and
    mark the functions that release the GIL.

    ``exports`` (function -> library) defaults to what the installed libraries export.
    """
    if sys.byteorder != "little":
        raise GenerationError("only little-endian hosts are supported (bit-field layout)")
    load_libclang()
    headers = header_files(install)
    if exports is None:
        exports = exported_functions(install.libdir)
    tu = translation_unit(install, headers)
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
    classify(bindings)
    return bindings


def check_no_machine_paths(text: str, install: SpdkInstall) -> None:
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


def generate(out_dir: Path, install: SpdkInstall | None = None) -> Bindings:
    """Generate the module and its stub into ``out_dir`` (both, or neither on error)."""
    install = install or find_spdk()
    bindings = build_bindings(install)
    module = render_module(bindings)
    stub = render_stub(bindings)
    check_no_machine_paths(module + stub, install)
    write_if_changed(out_dir / f"{MODULE_NAME}.py", module)
    write_if_changed(out_dir / f"{MODULE_NAME}.pyi", stub)
    return bindings


def _fail(message: str, code: int) -> NoReturn:
    print(f"gen_bindings: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success; exits 2 (SPDK or libclang missing) or 1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--out-dir", type=Path, default=ROOT / "spdk_io", help="where _generated.py/.pyi go"
    )
    parser.add_argument("--report", action="store_true", help="print coverage and counts")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        install = find_spdk()
        bindings = generate(args.out_dir, install)
    except SpdkNotFoundError as exc:
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
