"""BlobId: a distinct, hashable, ordered type with a stable text form (SPDK-free).

Also checks, with mypy --strict, that a type checker refuses an ``int`` where the
blobstore API takes a :class:`BlobId`.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spdk_io.blob.ids import BlobId, blob_id

pytestmark = pytest.mark.spdk_free  # runs where SPDK is not installed

ROOT = Path(__file__).resolve().parent.parent
#: Every value a blob id can hold (2**64 - 1 is SPDK_BLOBID_INVALID, never an id).
ids = st.integers(min_value=0, max_value=2**64 - 2)


def test_import_loads_nothing_of_spdk() -> None:
    code = (
        "import sys, spdk_io.blob, spdk_io.blob.ids\n"
        "from spdk_io.blob import BlobId\n"
        "BlobId.parse('0x1')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('spdk_io.') and m not in "
        "('spdk_io.blob', 'spdk_io.blob.ids', 'spdk_io._validate', 'spdk_io._lazy'))\n"
        "print(loaded)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@given(ids)
def test_text_form_round_trips(n: int) -> None:
    b = BlobId(n)
    text = str(b)
    assert text == hex(n) and text.startswith("0x") and text == text.lower()
    assert BlobId.parse(text) == b
    assert int(BlobId.parse(text)) == n
    assert repr(b) == f"BlobId({n:#x})"
    assert pickle.loads(pickle.dumps(b)) == b


def test_text_form_is_spdks_spelling() -> None:
    assert str(BlobId(0x100000000)) == "0x100000000"
    assert str(BlobId(0)) == "0x0"
    assert str(BlobId(2**64 - 2)) == "0xfffffffffffffffe"


@given(ids, ids)
def test_ordered_like_the_raw_values(a: int, b: int) -> None:
    x, y = BlobId(a), BlobId(b)
    assert (x < y) == (a < b)
    assert (x > y) == (a > b)
    assert (x <= y) == (a <= b)
    assert (x >= y) == (a >= b)
    assert (x == y) == (a == b)
    assert (x != y) == (a != b)
    assert sorted([y, x]) == [BlobId(v) for v in sorted([b, a])]


@given(ids)
def test_hashable_and_equal_by_value(n: int) -> None:
    a, b = BlobId(n), BlobId(n)
    assert a == b and a is not b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert {a: "x"}[b] == "x"


def test_distinct_from_int() -> None:
    b = BlobId(5)
    assert b != 5 and 5 != b  # noqa: SIM300  # both orders: neither side equals an int
    assert 5 not in {b}
    with pytest.raises(TypeError):
        _ = b < 6  # type: ignore[operator]  # the point: no ordering against ints
    with pytest.raises(TypeError, match="BlobId, not int"):
        blob_id(5)
    with pytest.raises(TypeError, match="BlobId, not str"):
        blob_id("0x5")
    assert blob_id(b) is b


def test_immutable() -> None:
    b = BlobId(7)
    with pytest.raises(AttributeError):
        b._value = 8
    with pytest.raises(AttributeError):
        b.other = 1
    assert int(b) == 7


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0x",
        "1",
        "100000000",
        "0X1",
        "0xAB",
        " 0x1",
        "0x1 ",
        "0x-1",
        "-0x1",
        "0x1g",
        "0x" + "f" * 17,
        "0x1_0",
    ],
)
def test_parse_refuses_other_spellings(text: str) -> None:
    with pytest.raises(ValueError, match="not a blob id"):
        BlobId.parse(text)


def test_parse_refuses_non_str_and_invalid_values() -> None:
    with pytest.raises(ValueError):
        BlobId.parse(0x1)  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(ValueError):
        BlobId.parse(b"0x1")  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(ValueError):
        BlobId.parse("0xffffffffffffffff")  # SPDK_BLOBID_INVALID
    with pytest.raises(ValueError):
        BlobId(-1)
    with pytest.raises(ValueError):
        BlobId(2**64 - 1)
    with pytest.raises(TypeError):
        BlobId(True)
    with pytest.raises(TypeError):
        BlobId(1.0)  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(TypeError):
        BlobId("0x1")  # type: ignore[arg-type]  # the point of the test


def test_mypy_refuses_an_int_where_a_blob_id_belongs(tmp_path: Path) -> None:
    """mypy --strict passes the correct use and reports an arg-type error for each int."""
    good = tmp_path / "good.py"
    good.write_text(
        textwrap.dedent(
            """
            from spdk_io.blob import Blob, BlobId, Blobstore

            async def use(bs: Blobstore) -> Blob:
                bid: BlobId = await bs.create_blob(1)
                snap = await bs.create_snapshot(bid)
                await bs.set_super(BlobId.parse(str(bid)))
                parent: BlobId | None = await bs.get_parent(bid)
                assert parent == snap
                return await bs.open_blob(bid)
            """
        )
    )
    bad = tmp_path / "bad.py"
    bad.write_text(
        textwrap.dedent(
            """
            from spdk_io.blob import Blobstore

            async def misuse(bs: Blobstore) -> None:
                await bs.open_blob(0x100000000)
                await bs.delete_blob(int(await bs.create_blob(1)))
            """
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--follow-imports=silent",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(good),
            str(bad),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, MYPYPATH=str(ROOT)),
        timeout=120,
        check=False,
    )
    report = proc.stdout + proc.stderr
    errors = [line for line in report.splitlines() if ": error:" in line]
    assert proc.returncode == 1, report
    assert not [e for e in errors if "good.py" in e], report
    assert len(errors) == 2, report
    for line, method in zip(errors, ("open_blob", "delete_blob"), strict=True):
        assert "bad.py" in line and "[arg-type]" in line, report
        assert f'"{method}"' in line and '"int"' in line and '"BlobId"' in line, report
