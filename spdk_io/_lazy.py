"""Lazy package exports: a name is imported from its module on first use, so importing
a package (``spdk_io.nvme``, ``spdk_io.blob``) loads nothing of SPDK until a name that
needs it is touched."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def exports(
    package: str, names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``, serving each public name
    in ``names`` (name -> submodule) from ``package.submodule`` and caching it."""
    public = sorted(names)

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return public

    return __getattr__, __dir__
