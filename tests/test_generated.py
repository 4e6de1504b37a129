"""The generated ctypes layer (spdk_io._generated) and its generator, tools/gen_bindings.py.

Everything runs against the SPDK installed on this machine: the generator is run for
real, the functions called are SPDK's.  The generator's phases are tested without SPDK
in ``tests/test_gen_*.py``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import subprocess
import sys
import textwrap
import time
from _ctypes import CFuncPtr
from functools import cache
from pathlib import Path
from typing import Any

import gen_bindings
import pytest
from bindgen import model, source

import spdk_io._generated as g
from spdk_io._discover import find_spdk

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
GENERATOR = TOOLS / "gen_bindings.py"
OUTPUTS = ("_generated.py", "_generated.pyi")


@cache
def exported_functions() -> frozenset[str]:
    """Functions exported by the installed libspdk_*.so (read from the ELF files)."""
    return frozenset(source.exported_functions(find_spdk().libdir))


def run_generator(out: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--out-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc, time.perf_counter() - started


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The generator run twice, into two fresh directories."""
    dirs = []
    for name in ("first", "second"):
        out = tmp_path_factory.mktemp(name)
        proc, elapsed = run_generator(out)
        assert proc.returncode == 0, proc.stderr
        print(f"generation into {name}: {elapsed:.2f} s")
        dirs.append(out)
    return dirs[0], dirs[1]


# --------------------------------------------------------------------------- generator


def test_generation_is_deterministic(two_runs: tuple[Path, Path]) -> None:
    first, second = two_runs
    for name in OUTPUTS:
        a, b = (first / name).read_bytes(), (second / name).read_bytes()
        assert a == b, f"{name} differs between two runs"
        assert len(a) > 100_000


def test_installed_module_is_current(two_runs: tuple[Path, Path]) -> None:
    """The spdk_io/_generated.py being tested is what the generator makes today."""
    fresh = (two_runs[0] / "_generated.py").read_text()
    assert Path(g.__file__).read_text() == fresh


def test_output_holds_no_build_machine_path(two_runs: tuple[Path, Path]) -> None:
    install = find_spdk()
    needles = {
        str(install.includedir),
        str(install.libdir),
        str(install.libdir.parent),
        str(ROOT),
        "site-packages",
        "/usr/local",
        "/work/",
        str(Path.home()),
    }
    for name in OUTPUTS:
        text = (two_runs[0] / name).read_text()
        for needle in needles:
            assert needle not in text, f"{name} mentions {needle}"
    assert "spdk/bdev.h" in (two_runs[0] / "_generated.py").read_text()


def test_generator_without_spdk_fails_cleanly(tmp_path: Path) -> None:
    env = dict(os.environ, SPDK_IO_PREFIX=str(tmp_path / "nowhere"))
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(tmp_path / "nowhere") in proc.stderr
    assert not (tmp_path / "_generated.py").exists()


def test_generator_needs_no_compiler(tmp_path: Path) -> None:
    """No gcc, cc or clang on PATH, CC=/bin/false: generation still works.

    The interpreter is run by its own path, not linked elsewhere: a venv's python
    moved out of its venv would lose the venv's site-packages (and libclang).
    """
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("pkg-config", "pkgconf"):  # the loader asks pkg-config where SPDK is
        for d in os.environ.get("PATH", "").split(os.pathsep):
            if (Path(d) / tool).is_file():
                (bindir / tool).symlink_to(Path(d) / tool)
                break
    env = dict(os.environ, PATH=str(bindir), CC="/bin/false", CPATH="", C_INCLUDE_PATH="")
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--out-dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "_generated.py").read_text() == Path(g.__file__).read_text()


def test_clang_sees_only_our_freestanding_headers() -> None:
    """No compiler include directory is on clang's search path."""
    args = source.clang_args(find_spdk())
    assert "-nostdinc" in args
    assert not [a for a in args if "gcc" in a or "/clang/" in a or "lib/llvm" in a]
    assert str(source.CLANG_INCLUDE) in args


def test_report_covers_every_declared_export(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status = gen_bindings.main(["--out-dir", str(tmp_path), "--report"])
    assert status == 0
    report = capsys.readouterr().out
    print(report)
    declared = int(re.search(r"declared in the parsed public headers:\s+(\d+)", report)[1])  # type: ignore[index]
    bound = int(re.search(r"\bbound:\s+(\d+)", report)[1])  # type: ignore[index]
    assert declared > 1000
    assert bound == declared


# --------------------------------------------------------------------------- OMITTED


def static_inline_functions() -> set[str]:
    """Names of functions defined ``static inline`` in the parsed headers (by regex)."""
    install = find_spdk()
    names: set[str] = set()
    pattern = re.compile(r"^static\s+inline\b[^;{}()#]*?\b([A-Za-z_]\w*)\s*\(", re.MULTILINE)
    for header in source.header_files(install):
        text = (install.headers / header).read_text()
        names.update(m[1] for m in pattern.finditer(text))
    return names


def test_omitted_lists_every_static_inline_function() -> None:
    inline = static_inline_functions()
    assert len(inline) > 20
    exported = exported_functions()
    for name in sorted(inline):
        if name in exported:  # a library also exports it: bound, not omitted
            assert callable(getattr(g, name))
        else:
            assert g.OMITTED.get(name, "").startswith("static inline"), name
            assert not hasattr(g, name), f"{name} must not be bound"


def test_omitted_holds_no_exported_function() -> None:
    assert not set(g.OMITTED) & exported_functions()
    assert set(g.OMITTED.values()) <= {
        model.REASON_INLINE,
        model.REASON_NOT_EXPORTED,
        model.REASON_UNION_BY_VALUE,
        model.REASON_KEYWORD,
    }
    for name in g.OMITTED:
        assert not hasattr(g, name)


def test_every_bound_function_is_a_real_symbol() -> None:
    """Nothing callable is a stub: each binding is a ctypes function at a loaded address."""
    libc = ctypes.CDLL(None)
    bound = [n for n, v in vars(g).items() if isinstance(v, CFuncPtr) and n.startswith("spdk_")]
    assert len(bound) > 1000
    for name in bound:
        func = getattr(g, name)
        assert (
            ctypes.cast(func, ctypes.c_void_p).value
            == ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
        )
        assert isinstance(func.argtypes, list)


def test_gil_table_names_only_declared_functions() -> None:
    """Every entry of tools/bindgen/gil.py is declared by the installed headers.

    Fails when SPDK renames or drops a listed function (its new name would otherwise
    silently keep the GIL while it blocks).
    """
    from bindgen import gil

    bindings = gen_bindings.build_bindings(find_spdk())
    assert gil.stale_entries(bindings.declared) == []


def test_each_function_is_bound_on_the_library_the_table_says() -> None:
    """Listed functions release the GIL (CDLL), all others keep it (PyDLL)."""
    from bindgen import gil

    bound = {n: v for n, v in vars(g).items() if isinstance(v, CFuncPtr) and n.startswith("spdk_")}
    releasing = {n for n in bound if gil.gil_reason(n)}
    assert {n: gil.gil_reason(n) for n in releasing} == g.RELEASES_GIL
    for name, func in bound.items():
        keeps_gil = bool(func._flags_ & ctypes._FUNCFLAG_PYTHONAPI)  # type: ignore[attr-defined]  # private ctypes flag, not in typeshed
        assert keeps_gil == (name not in releasing), name
    # what the typed layer calls that waits on other threads or devices releases the GIL
    for name in ("spdk_env_init", "spdk_env_fini", "spdk_app_start", "spdk_nvme_connect_async"):
        assert name in g.RELEASES_GIL


def test_variadic_functions_keep_fixed_argtypes() -> None:
    sprintf_alloc: Any = g.spdk_sprintf_alloc  # the stub types it as a plain function
    assert sprintf_alloc.argtypes == [ctypes.c_char_p]
    assert sprintf_alloc.restype is ctypes.POINTER(ctypes.c_char)


# --------------------------------------------------------------------------- real calls


def test_spdk_strerror() -> None:
    assert g.spdk_strerror(errno.ENOENT) == os.strerror(errno.ENOENT).encode()


def test_crc32c_check_value() -> None:
    assert g.spdk_crc32c_update(b"123456789", 9, 0xFFFFFFFF) ^ 0xFFFFFFFF == 0xE3069283


def test_uuid_round_trip() -> None:
    text = b"f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
    uuid = g.struct_spdk_uuid()
    assert g.spdk_uuid_parse(ctypes.byref(uuid), text) == 0
    buf = ctypes.create_string_buffer(g.SPDK_UUID_STRING_LEN)
    assert g.spdk_uuid_fmt_lower(buf, len(buf), ctypes.byref(uuid)) == 0
    assert buf.value == text
    assert g.spdk_uuid_parse(ctypes.byref(uuid), b"not-a-uuid") != 0


def test_nvme_transport_id_parse() -> None:
    trid = g.struct_spdk_nvme_transport_id()
    text = b"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:c1"
    assert g.spdk_nvme_transport_id_parse(ctypes.byref(trid), text) == 0
    assert trid.trtype == g.SPDK_NVME_TRANSPORT_TCP
    assert trid.adrfam == g.SPDK_NVMF_ADRFAM_IPV4
    assert trid.traddr == b"127.0.0.1"
    assert trid.trsvcid == b"4420"
    assert trid.subnqn == b"nqn.2016-06.io.spdk:c1"
    assert trid.trstring == g.SPDK_NVME_TRANSPORT_NAME_TCP


def test_env_opts_init_fills_defaults() -> None:
    opts = g.struct_spdk_env_opts()
    opts.opts_size = ctypes.sizeof(opts)
    g.spdk_env_opts_init(ctypes.byref(opts))
    assert opts.opts_size == ctypes.sizeof(opts)
    assert opts.name == b"spdk"
    assert opts.core_mask == b"0x1"
    assert opts.shm_id == -1
    assert opts.main_core == -1
    assert opts.enforce_numa is False


def test_variadic_call_returns_freeable_string() -> None:
    ptr = g.spdk_sprintf_alloc(b"%s-%d", b"abc", ctypes.c_int(42))
    assert ctypes.string_at(ptr) == b"abc-42"
    free = ctypes.CDLL(None).free
    free.argtypes = [ctypes.c_void_p]
    free(ctypes.cast(ptr, ctypes.c_void_p))


def test_union_returned_by_value_is_its_bits() -> None:
    """ctypes cannot return unions: register unions come back as their raw integer."""
    get_regs_cap: Any = g.spdk_nvme_ctrlr_get_regs_cap
    assert get_regs_cap.restype is ctypes.c_uint64
    cap = g.union_spdk_nvme_cap_register(raw=(1 << 37) | 0x3FF)
    assert cap.bits.mqes == 0x3FF and cap.bits.css == 1


def test_callbacks_accept_python_functions_and_none() -> None:
    seen: list[int | None] = []
    callback = g.spdk_msg_fn(seen.append)
    callback(ctypes.c_void_p(1234))
    assert seen == [1234]
    assert g.spdk_msg_fn.from_param(None) is None
    assert not g.spdk_msg_fn()  # the NULL function pointer
    # one class per signature, so equivalent callback typedefs are interchangeable
    assert g.spdk_subsystem_fini_fn is g.spdk_msg_fn


def test_constants() -> None:
    assert g.SPDK_ENV_NUMA_ID_ANY == -1
    assert g.SPDK_ENV_LCORE_ID_ANY == 0xFFFFFFFF
    assert g.SPDK_BDEV_IO_TYPE_READ == 1
    assert g.SPDK_VERSION_STRING.startswith(b"SPDK v")
    assert int(g.GENERATED_FROM_SPDK.split(".")[0]) == g.SPDK_VERSION_MAJOR
    assert ctypes.sizeof(g.enum_spdk_bdev_io_type) == 4


def test_anonymous_members_read_as_in_c() -> None:
    cmd = g.struct_spdk_nvme_cmd()
    cmd.dptr.prp.prp1 = 0x1000
    assert cmd.dptr.sgl1.address == 0x1000
    assert "_anon_0" not in {name for name, *_ in g.union_spdk_nvme_cap_register._fields_}


# --------------------------------------------------------------------------- typing


def run_mypy(code: str, tmp_path: Path) -> str:
    """mypy --strict on ``code`` with this repository's spdk_io; returns its report."""
    from mypy import api

    snippet = tmp_path / "snippet.py"
    snippet.write_text(textwrap.dedent(code))
    old = os.environ.get("MYPYPATH")
    os.environ["MYPYPATH"] = str(ROOT)
    try:
        stdout, stderr, _ = api.run(
            [
                "--strict",
                "--no-incremental",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--follow-imports=silent",
                "--config-file",
                str(ROOT / "pyproject.toml"),
                str(snippet),
            ]
        )
    finally:
        if old is None:
            del os.environ["MYPYPATH"]
        else:
            os.environ["MYPYPATH"] = old
    return stdout + stderr


def test_raw_is_the_generated_layer() -> None:
    from spdk_io import raw

    assert raw.spdk_env_init is g.spdk_env_init
    assert raw.struct_spdk_env_opts is g.struct_spdk_env_opts
    assert raw.SPDK_BDEV_IO_TYPE_READ == g.SPDK_BDEV_IO_TYPE_READ
    assert raw.GENERATED_FROM_SPDK == g.GENERATED_FROM_SPDK
    assert raw.RELEASES_GIL is g.RELEASES_GIL


def test_mypy_uses_the_generated_stub(tmp_path: Path) -> None:
    """Through the public name ``spdk_io.raw``, the stub's types reach user code."""
    report = run_mypy(
        """
        import ctypes
        from spdk_io import raw as g

        reveal_type(g.spdk_env_init)
        reveal_type(g.struct_spdk_env_opts().name)
        g.spdk_strerror("not an int")
        ok: int = g.spdk_crc32c_update(b"x", 1, 0)
        g.spdk_env_opts_init(ctypes.byref(g.struct_spdk_env_opts()))
        """,
        tmp_path,
    )
    print(report)
    assert 'Revealed type is "def (' in report and "struct_spdk_env_opts" in report
    assert 'Revealed type is "Any"' not in report
    assert re.search(r'Revealed type is "(builtins\.)?bytes \| None"', report)
    errors = [line for line in report.splitlines() if ": error:" in line]
    assert len(errors) == 1, report
    assert "spdk_strerror" in errors[0] and '"str"' in errors[0] and '"int"' in errors[0]


def test_parse_reads_no_compiler_header() -> None:
    """Every file clang opens is ours, the C library's or SPDK's."""
    install = find_spdk()
    source.load_libclang()
    tu = source.translation_unit(install, source.header_files(install))
    allowed = (str(source.CLANG_INCLUDE), "/usr/include/", str(install.includedir))
    opened = {str(inc.include.name) for inc in tu.get_includes()}
    assert opened
    assert not [path for path in opened if not path.startswith(allowed)]
    assert any(path.startswith(str(source.CLANG_INCLUDE)) for path in opened)


# --------------------------------------------------------------------------- one stub, no dlopen


def test_generator_loads_no_spdk_library(tmp_path: Path) -> None:
    """The generator finds SPDK through discovery only: no SPDK or DPDK library is mapped."""
    code = f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tools")!r})
        import gen_bindings
        status = gen_bindings.main(["--out-dir", {str(tmp_path)!r}])
        maps = open("/proc/self/maps").read()
        print(status, "libspdk" in maps, "librte" in maps, "spdk_io._loader" in sys.modules)
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "False", "False", "False"]
    assert (tmp_path / "_generated.py").read_text() == Path(g.__file__).read_text()


def test_stub_is_written_once_next_to_the_module(tmp_path: Path) -> None:
    """One stub, beside ``_generated.py`` where mypy reads it."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(GENERATOR), "--out-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["_generated.py", "_generated.pyi"]
    assert (out / "_generated.pyi").read_text() == (ROOT / "spdk_io" / "_generated.pyi").read_text()


def test_mypy_reads_no_second_stub() -> None:
    """mypy's search path holds no copy of the stub: the one next to the module is read."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mypy_path = config["tool"]["mypy"].get("mypy_path", "")
    for entry in str(mypy_path).replace(",", ":").split(":"):
        if entry.strip():
            assert not list((ROOT / entry.strip()).rglob("*.pyi")), entry
    assert "stubs" not in str(mypy_path)
    assert "_generated.pyi" in config["tool"]["setuptools"]["package-data"]["spdk_io"]
    build_backend = (ROOT / "tools" / "build_backend.py").read_text()
    assert "--stubs-dir" not in build_backend
