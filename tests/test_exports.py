"""The top-level names: one table (``_EXPORTS``), and the type checker's view agrees."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import spdk_io

INIT = Path(spdk_io.__file__)


def _type_checking_imports() -> dict[str, str]:
    """``name -> module`` for every ``from spdk_io.X import Y as Y`` under TYPE_CHECKING."""
    tree = ast.parse(INIT.read_text())
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.unparse(stmt)
                for alias in stmt.names:
                    assert alias.asname == alias.name, f"{alias.name} must be re-exported as itself"
                    found[alias.name] = str(stmt.module)
    return found


def test_type_checking_view_agrees_with_the_export_table() -> None:
    seen = _type_checking_imports()
    submodules = {name for name, mod in seen.items() if mod == "spdk_io"}
    names = {name: mod.removeprefix("spdk_io.") for name, mod in seen.items() if mod != "spdk_io"}
    assert submodules == spdk_io._SUBMODULES
    assert names == spdk_io._EXPORTS


def test_every_export_resolves_to_what_its_module_defines() -> None:
    for name, module in spdk_io._EXPORTS.items():
        mod = importlib.import_module(f"spdk_io.{module}")
        assert getattr(spdk_io, name) is getattr(mod, name), name
    every = [*spdk_io._EXPORTS, *spdk_io._SUBMODULES, "__version__"]
    assert sorted(spdk_io.__all__) == sorted(every)


def test_every_exception_lives_in_errors() -> None:
    from spdk_io import errors

    for name in dir(spdk_io):
        value = getattr(spdk_io, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert value.__module__ == "spdk_io.errors", name
            assert name in errors.__all__, name
