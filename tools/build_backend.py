"""In-tree PEP 517 build backend: setuptools, after generating the SPDK bindings.

``pyproject.toml`` names this module (``backend-path = ["tools"]``).  Before a wheel
(``pip install .``, ``python -m build --wheel``) or an editable install
(``pip install -e .``) is built, ``tools/gen_bindings.py`` writes
``spdk_io/_generated.py`` and its stub ``spdk_io/_generated.pyi`` into the source tree
from the SPDK installed on the build machine, so the wheel carries bindings that match
it.  Everything else is setuptools' own backend, unchanged.

Set ``SPDK_IO_SKIP_GENERATE=1`` to build with whatever ``_generated.py`` is already in the
tree (for packaging on a machine without SPDK).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools  # type: ignore[import-untyped]

# Re-exported unchanged: metadata preparation and the sdist need no generated code.
from setuptools.build_meta import (  # type: ignore[import-untyped]
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

ROOT = Path(__file__).resolve().parent.parent


def _generate() -> None:
    """Run the binding generator into the source tree; fail the build with its message."""
    if os.environ.get("SPDK_IO_SKIP_GENERATE"):
        if not (ROOT / "spdk_io" / "_generated.py").is_file():
            raise SystemExit("SPDK_IO_SKIP_GENERATE is set but spdk_io/_generated.py is missing")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import gen_bindings
    finally:
        sys.path.pop(0)
    status = gen_bindings.main(["--out-dir", str(ROOT / "spdk_io")])
    if status:
        raise SystemExit(status)


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """PEP 517 hook: generate the bindings, then build the wheel with setuptools."""
    _generate()
    return str(_setuptools.build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """PEP 660 hook: generate the bindings, then build the editable wheel with setuptools."""
    _generate()
    return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))
