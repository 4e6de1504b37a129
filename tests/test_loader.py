"""The loader: finding SPDK, clear failures, and a cheap ``import spdk_io``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
        from spdk_io._discover import find_spdk
        i = find_spdk()
        print(i.version, (i.headers / "env.h").is_file(), "rte_mempool_ring" in i.dpdk_libs)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["26.05.0", "True", "True"]


def test_another_spdk_release_is_refused_with_how_to_rebuild(tmp_path: Path) -> None:
    """An SPDK upgrade after install: the generated layer refuses to load against it."""
    from spdk_io._discover import find_spdk

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


# --------------------------------------------------------------------------- discovery


def _fake_install(prefix: Path, version_h: str | None = None) -> Path:
    """An SPDK-shaped prefix: the two .pc files the loader reads, and version.h."""
    pcdir = prefix / "lib" / "pkgconfig"
    pcdir.mkdir(parents=True)
    (prefix / "include" / "spdk").mkdir(parents=True)
    (pcdir / "spdk_env_dpdk.pc").write_text(
        "prefix=" + str(prefix) + "\n"
        "libdir=${prefix}/lib\n"
        "includedir=${prefix}/include  # a comment\n"
        "\n"
        "Name: spdk_env_dpdk\n"
        "Cflags: -I${includedir}\n"
        "Requires: spdk_dpdklibs\n"
        "Libs: -L${libdir} -lspdk_env_dpdk\n"
    )
    (pcdir / "spdk_dpdklibs.pc").write_text(
        "prefix=/opt/dpdk\n"
        "Libs: -L${prefix}/lib -lrte_eal -lrte_mempool -lrte_mempool_ring -lnuma\n"
        "Requires: spdk_dpdklibs\n"  # a cycle must not recurse forever
    )
    (pcdir / "spdk_syslibs.pc").write_text(
        "Libs: -lisal -lssl -lcrypto -l:libkeyutils.so -lspdk_util\nLibs.private: -lcrypto -luuid\n"
    )
    (prefix / "include" / "spdk" / "version.h").write_text(
        version_h
        if version_h is not None
        else "#define SPDK_VERSION_MAJOR\t26\n#define SPDK_VERSION_MINOR 5\n"
        "#define SPDK_VERSION_PATCH 1\n"
    )
    return prefix


@pytest.mark.spdk_free
def test_discovery_reads_a_prefix_without_spdk(tmp_path: Path) -> None:
    """find_spdk is pure: it parses .pc files and version.h, and needs no library."""
    from spdk_io import _discover

    prefix = _fake_install(tmp_path / "p")
    install = _discover.find_spdk(prefix=prefix)
    assert install.prefix == prefix
    assert install.libdir == prefix / "lib"
    assert install.includedir == prefix / "include"
    assert install.headers == prefix / "include" / "spdk"
    assert install.version == "26.05.1"
    assert install.syslibs == ("isal", "ssl", "crypto", "libkeyutils.so", "uuid")
    assert install.dpdk_libs == ("rte_eal", "rte_mempool", "rte_mempool_ring")
    assert install.dpdk_libdirs == (Path("/opt/dpdk/lib"), prefix / "lib")


@pytest.mark.spdk_free
def test_discovery_prefix_argument_and_env_name_where_they_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spdk_io import _discover

    nowhere = tmp_path / "nowhere"
    with pytest.raises(_discover.SpdkNotFoundError, match="nowhere"):
        _discover.find_spdk(prefix=nowhere)
    monkeypatch.setenv(_discover.PREFIX_ENV, str(nowhere))
    with pytest.raises(_discover.SpdkNotFoundError) as info:
        _discover.find_spdk()
    assert _discover.PREFIX_ENV in str(info.value)
    assert str(nowhere / "lib" / "pkgconfig" / "spdk_env_dpdk.pc") in str(info.value)
    assert isinstance(info.value, ImportError)


@pytest.mark.spdk_free
@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("#define SPDK_VERSION_MAJOR 26\n#define SPDK_VERSION_MINOR 5\n", "26.05.0"),
        (
            "#define SPDK_VERSION_MAJOR 24\n#define SPDK_VERSION_MINOR 1\n"
            "#define SPDK_VERSION_PATCH 3\n",
            "24.01.3",
        ),
        ("/* no version here */\n", "unknown"),
    ],
)
def test_header_version(tmp_path: Path, text: str, version: str) -> None:
    from spdk_io import _discover

    (tmp_path / "spdk").mkdir()
    (tmp_path / "spdk" / "version.h").write_text(text)
    assert _discover.header_version(tmp_path) == version
    assert _discover.header_version(tmp_path / "missing") == "unknown"


@pytest.mark.spdk_free
def test_version_check_names_both_releases(tmp_path: Path) -> None:
    from spdk_io import _discover

    install = _discover.find_spdk(prefix=_fake_install(tmp_path / "p"))
    _discover.check_version(install, "26.05.1")  # the same release: no error
    with pytest.raises(_discover.SpdkVersionError) as info:
        _discover.check_version(install, "26.01.0")
    message = str(info.value)
    assert "built against SPDK 26.01.0" in message and "26.05.1" in message
    assert str(tmp_path / "p") in message and "pip install" in message
    assert issubclass(_discover.SpdkVersionError, _discover.SpdkNotFoundError)


@pytest.mark.spdk_free
def test_spdk_libraries_follow_the_linker_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spdk_io import _discover

    for name in ("libspdk_util.so", "libspdk_log.so", "libspdk_ut.so", "libspdk_bdev.so"):
        (tmp_path / name).write_bytes(b"\x7fELF")
    (tmp_path / "libspdk.so").write_text(
        "GROUP ( libspdk_log.so libspdk_util.so libspdk_ut_mock.so libspdk_event_iscsi.so )"
    )
    names = [p.name for p in _discover.spdk_libraries(tmp_path)]
    assert names == ["libspdk_log.so", "libspdk_util.so", "libspdk_env_dpdk.so"]
    monkeypatch.setenv(_discover.SKIP_ENV, " libspdk_util.so ,")
    names = [p.name for p in _discover.spdk_libraries(tmp_path)]
    assert names == ["libspdk_log.so", "libspdk_env_dpdk.so"]
    (tmp_path / "libspdk.so").unlink()  # no linker script: every libspdk_*.so
    monkeypatch.delenv(_discover.SKIP_ENV)
    names = [p.name for p in _discover.spdk_libraries(tmp_path)]
    assert names == ["libspdk_bdev.so", "libspdk_log.so", "libspdk_util.so", "libspdk_env_dpdk.so"]


def test_discovery_loads_nothing() -> None:
    """Importing spdk_io._discover and finding SPDK maps no SPDK library, imports no ctypes."""
    proc = run_py(
        """
        import sys
        from spdk_io._discover import find_spdk
        install = find_spdk()
        maps = open("/proc/self/maps").read()
        print("libspdk" in maps, "librte" in maps, "ctypes" in sys.modules, install.version)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False", "False", "26.05.0"]
