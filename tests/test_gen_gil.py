"""The generator's GIL table (tools/bindgen/gil.py) on inline C: no SPDK needed.

A function the table lists is bound on the GIL-releasing library (``ctypes.CDLL``),
every other one on ``ctypes.PyDLL``; the module and its stub say which.
"""

from __future__ import annotations

import ast
import ctypes
from pathlib import Path
from typing import Any

import pytest
from bindgen import gil
from bindgen.render_py import render_module
from bindgen.render_pyi import render_stub

from tests.test_gen_parse import bindings_of, execute

pytestmark = pytest.mark.spdk_free  # runs where SPDK is not installed

HEADER = """
#include <stdint.h>
#include <stddef.h>
typedef void (*spdk_t_done)(void *ctx, int rc);
void spdk_delay_us(unsigned int us);
uint64_t spdk_get_ticks(void);
int spdk_t_with_callback(spdk_t_done cb, void *ctx);
int spdk_opal_cmd_t_anything(void *dev);
int spdk_nvme_probe(void *trid, void *ctx);
"""
EXPORTS = (
    "spdk_delay_us",
    "spdk_get_ticks",
    "spdk_t_with_callback",
    "spdk_opal_cmd_t_anything",
    "spdk_nvme_probe",
)
RELEASING = {
    "spdk_delay_us": gil.SLEEPS,
    "spdk_opal_cmd_t_anything": gil.OPAL,
    "spdk_nvme_probe": gil.NVME_SYNC,
}


def keeps_gil(fn: Any) -> bool:
    """Whether a ctypes function object is called with the GIL held (PyDLL's flag)."""
    return bool(fn._flags_ & ctypes._FUNCFLAG_PYTHONAPI)  # type: ignore[attr-defined]  # private ctypes flag, not in typeshed


def test_listed_functions_release_the_gil_others_keep_it(tmp_path: Path) -> None:
    ns = execute(bindings_of(tmp_path, HEADER, EXPORTS))
    for name in EXPORTS:
        assert keeps_gil(ns[name]) == (name not in RELEASING), name
    assert ns["RELEASES_GIL"] == RELEASING


def test_module_says_which_library_and_why(tmp_path: Path) -> None:
    text = render_module(bindings_of(tmp_path, HEADER, EXPORTS))
    assert f"spdk_delay_us = _lib.spdk_delay_us  # releases the GIL: {gil.SLEEPS}\n" in text
    assert "spdk_get_ticks = _pylib.spdk_get_ticks\n" in text
    assert "spdk_t_with_callback = _pylib.spdk_t_with_callback\n" in text


def test_stub_declares_the_table(tmp_path: Path) -> None:
    stub = render_stub(bindings_of(tmp_path, HEADER, EXPORTS))
    tree = ast.parse(stub)
    annotated = {
        node.target.id: ast.unparse(node.annotation)
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    assert annotated["RELEASES_GIL"] == "dict[str, str]"


def test_gil_reason_names_and_prefixes() -> None:
    assert gil.gil_reason("spdk_app_start") == gil.RUNS_APP
    assert gil.gil_reason("spdk_opal_cmd_lock_unlock") == gil.OPAL
    assert gil.gil_reason("spdk_get_ticks") == ""
    assert gil.gil_reason("spdk_opal") == ""  # a prefix matches names that start with it only


def test_every_entry_has_a_reason() -> None:
    for name, reason in {**gil.RELEASES_GIL, **gil.RELEASES_GIL_PREFIXES}.items():
        assert name.startswith("spdk_") and reason.strip(), name


def test_stale_entries_name_what_no_header_declares() -> None:
    declared = set(gil.RELEASES_GIL) | {"spdk_opal_cmd_x"}
    assert gil.stale_entries(declared) == []
    assert gil.stale_entries(declared - {"spdk_delay_us"}) == ["spdk_delay_us"]
    assert gil.stale_entries(declared - {"spdk_opal_cmd_x"}) == ["spdk_opal_cmd_*"]
