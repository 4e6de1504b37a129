"""The loader: finding SPDK, clear failures, and a cheap ``import spdk_io``."""

from __future__ import annotations

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
