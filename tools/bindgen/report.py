"""Report: binding coverage and counts for humans (``gen_bindings.py --report``).

Takes the finished :class:`~bindgen.model.Bindings` and the install; gives text.
It re-parses each excluded header alone, so the report says whether every reason in
:data:`~bindgen.source.EXCLUDED_HEADERS` still holds.  Nothing here changes the output.
"""

from __future__ import annotations

from collections import Counter

import clang.cindex as ci  # type: ignore[import-untyped]

from spdk_io._discover import SpdkInstall

from .gil import stale_entries
from .model import Bindings
from .source import EXCLUDED_HEADERS, UMBRELLA, clang_args, scrub_paths


def check_exclusions(install: SpdkInstall) -> dict[str, str]:
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


def report(b: Bindings, install: SpdkInstall, elapsed: float) -> str:
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
    releasing = sum(bool(f.releases_gil) for f in b.functions)
    stale = stale_entries(b.declared)
    lines += [
        f"releasing the GIL during the call (bindgen/gil.py): {releasing}; "
        f"called with the GIL held: {len(bound) - releasing}",
        f"  GIL table entries no header declares: {len(stale)} {' '.join(stale)}",
    ]
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
