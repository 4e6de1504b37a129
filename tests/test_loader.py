"""The loader: finding SPDK, clear failures, and a cheap ``import spdk_io``."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import run_py


def test_import_spdk_io_loads_nothing_until_used() -> None:
    proc = run_py(
        """
        import sys
        import spdk_io
        print("loaded early:", sorted(m for m in sys.modules if m.startswith("spdk_io.")))
        spdk_io.EnvOptions  # first use pulls in what it needs
        print("after use:", "spdk_io._loader" in sys.modules, "spdk_io._generated" in sys.modules)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "loaded early: []" in proc.stdout
    assert "after use: True True" in proc.stdout


def test_missing_spdk_names_where_it_looked(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    proc = run_py(
        """
        try:
            import spdk_io.env
        except ImportError as exc:  # SpdkNotFoundError is an ImportError
            print(type(exc).__name__, exc)
        """,
        env={"SPDK_IO_PREFIX": str(nowhere)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("SpdkNotFoundError")
    assert "SPDK_IO_PREFIX" in proc.stdout and str(nowhere) in proc.stdout


def test_find_spdk_reports_the_installation() -> None:
    proc = run_py(
        """
        from spdk_io._loader import find_spdk
        i = find_spdk()
        print(i.version, (i.headers / "env.h").is_file(), "rte_mempool_ring" in i.dpdk_libs)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["26.05.0", "True", "True"]


def test_another_spdk_release_is_refused_with_how_to_rebuild(tmp_path: Path) -> None:
    """An SPDK upgrade after install: the generated layer refuses to load against it."""
    from spdk_io._loader import find_spdk

    real = find_spdk()
    fake = tmp_path / "prefix"
    (fake / "include" / "spdk").mkdir(parents=True)
    (fake / "lib" / "pkgconfig").mkdir(parents=True)
    for entry in real.libdir.iterdir():
        if entry.name != "pkgconfig":
            (fake / "lib" / entry.name).symlink_to(entry)
    for pc in (real.libdir / "pkgconfig").glob("*.pc"):  # headers under the fake prefix
        text = pc.read_text().replace(f"-I{real.includedir}", f"-I{fake / 'include'}")
        (fake / "lib" / "pkgconfig" / pc.name).write_text(text)
    text = (real.headers / "version.h").read_text()
    text = re.sub(r"(#define\s+SPDK_VERSION_MINOR\s+)\d+", r"\g<1>99", text)
    (fake / "include" / "spdk" / "version.h").write_text(text)
    proc = run_py(
        """
        try:
            import spdk_io._generated
        except ImportError as exc:
            print(type(exc).__name__, exc)
        """,
        env={"SPDK_IO_PREFIX": str(fake)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("SpdkVersionError"), proc.stdout
    assert f"built against SPDK {real.version}" in proc.stdout
    assert ".99." in proc.stdout and "pip install" in proc.stdout
