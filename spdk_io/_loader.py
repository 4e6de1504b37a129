"""Find the installed SPDK and load its shared libraries into this process.

SPDK's shared objects cannot simply be dlopen'ed one by one:

* ``libspdk.so`` is a GNU ld linker script (``GROUP ( ... )``), not an ELF file;
* the ``libspdk_*.so`` files do not record their system dependencies
  (libcrypto, libaio, libnuma, libuuid, isa-l, ...): ``spdk_syslibs.pc`` lists
  them, and they must be loaded first;
* DPDK's ring mempool driver (``rte_mempool_ring``, in ``spdk_env_dpdk.pc``) is a
  plug-in that nothing links against, yet mempool creation fails without it;
* subsystems, bdev modules, transports and RPC methods register themselves in
  ELF constructors, so every library is loaded with ``RTLD_GLOBAL``.

This module knows those rules.  :func:`find_spdk` is pure (no dlopen) so the
binding generator can use it at build time; :func:`load` does the loading once
per process and raises :class:`SpdkNotFoundError` naming what is missing.

Where SPDK is looked for, in order: ``$SPDK_IO_PREFIX`` (an install prefix),
then ``pkg-config`` (with ``/usr/local/lib/pkgconfig`` appended to its path),
then the prefix ``/usr/local``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SpdkInstall",
    "SpdkNotFoundError",
    "SpdkVersionError",
    "find_spdk",
    "lib",
    "load",
    "pylib",
    "require_version",
]

PREFIX_ENV = "SPDK_IO_PREFIX"
#: Comma-separated library file names not to load (their subsystems then do not exist).
SKIP_ENV = "SPDK_IO_SKIP_LIBS"
_DEFAULT_PREFIX = Path("/usr/local")
_LIBDIR_NAMES = ("lib", "lib64", "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu")


class SpdkNotFoundError(ImportError):
    """SPDK (or one of the libraries it needs) is not installed where we looked."""


class SpdkVersionError(SpdkNotFoundError):
    """The installed SPDK is not the release the bindings were generated from.

    Struct layouts and function signatures change between SPDK releases, so the
    generated layer refuses to run against another one instead of corrupting memory.
    """


@dataclass(frozen=True)
class SpdkInstall:
    """Where an SPDK installation lives and what must be loaded for it."""

    prefix: Path
    libdir: Path
    includedir: Path
    version: str
    syslibs: tuple[str, ...]
    dpdk_libdirs: tuple[Path, ...]
    dpdk_libs: tuple[str, ...]
    searched: tuple[str, ...] = field(default=(), compare=False)

    @property
    def headers(self) -> Path:
        """The directory holding SPDK's public headers (``include/spdk``)."""
        return self.includedir / "spdk"


# --------------------------------------------------------------------------- .pc files


def _parse_pc(path: Path) -> dict[str, str]:
    """Parse a pkg-config file into its fields, with ``${var}`` expanded."""
    variables: dict[str, str] = {"pcfiledir": str(path.parent)}
    fields: dict[str, str] = {}

    def expand(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), ""), value)

    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^([\w.]+)\s*([=:])\s*(.*)$", line)
        if m is None:
            continue
        key, sep, value = m.groups()
        if sep == "=":
            variables[key] = expand(value)
        else:
            fields[key] = expand(value)
    return fields


def _pc_libs(pcdir: Path, name: str, seen: set[str] | None = None) -> tuple[list[str], list[str]]:
    """``-L`` dirs and ``-l`` names of a .pc file and everything it requires."""
    seen = set() if seen is None else seen
    if name in seen:
        return [], []
    seen.add(name)
    pc = pcdir / f"{name}.pc"
    if not pc.is_file():
        return [], []
    fields = _parse_pc(pc)
    dirs: list[str] = []
    libs: list[str] = []
    for req_field in ("Requires", "Requires.private"):
        for req in re.split(r"[,\s]+", fields.get(req_field, "")):
            if req and re.match(r"^[\w.+-]+$", req):
                d, ll = _pc_libs(pcdir, req, seen)
                dirs += d
                libs += ll
    for tok in (fields.get("Libs", "") + " " + fields.get("Libs.private", "")).split():
        if tok.startswith("-L"):
            dirs.append(tok[2:])
        elif tok.startswith("-l:"):
            libs.append(tok[3:])
        elif tok.startswith("-l"):
            libs.append(tok[2:])
        elif tok.endswith(".so") or ".so." in tok:
            libs.append(tok)
    return dirs, libs


def _pkg_config_prefix(searched: list[str]) -> Path | None:
    exe = shutil.which("pkg-config") or shutil.which("pkgconf")
    if exe is None:
        searched.append("pkg-config (not on PATH)")
        return None
    env = dict(os.environ)
    extra = str(_DEFAULT_PREFIX / "lib" / "pkgconfig")
    env["PKG_CONFIG_PATH"] = ":".join(p for p in (env.get("PKG_CONFIG_PATH", ""), extra) if p)
    searched.append(f"pkg-config spdk_env_dpdk (PKG_CONFIG_PATH={env['PKG_CONFIG_PATH']})")
    try:
        out = subprocess.run(
            [exe, "--variable=prefix", "spdk_env_dpdk"],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    prefix = out.stdout.strip()
    return Path(prefix) if out.returncode == 0 and prefix else None


def _header_version(includedir: Path) -> str:
    """SPDK's release (e.g. ``26.05.0``) as ``spdk/version.h`` states it."""
    try:
        text = (includedir / "spdk" / "version.h").read_text()
    except OSError:
        return "unknown"
    parts = {
        k: int(v)
        for k, v in re.findall(r"#define\s+SPDK_VERSION_(MAJOR|MINOR|PATCH)\s+(\d+)", text)
    }
    if "MAJOR" not in parts:
        return "unknown"
    return f"{parts['MAJOR']}.{parts.get('MINOR', 0):02d}.{parts.get('PATCH', 0)}"


def _install_at(prefix: Path, searched: list[str]) -> SpdkInstall | None:
    for name in _LIBDIR_NAMES:
        libdir = prefix / name
        pcdir = libdir / "pkgconfig"
        searched.append(str(pcdir / "spdk_env_dpdk.pc"))
        if not (pcdir / "spdk_env_dpdk.pc").is_file():
            continue
        env_pc = _parse_pc(pcdir / "spdk_env_dpdk.pc")
        _, syslibs = _pc_libs(pcdir, "spdk_syslibs")
        dpdk_dirs, dpdk_libs = _pc_libs(pcdir, "spdk_env_dpdk")
        includedir = Path(env_pc.get("Cflags", f"-I{prefix}/include").split()[0].removeprefix("-I"))
        if not (includedir / "spdk" / "version.h").is_file():
            includedir = prefix / "include"
        dpdk_libdirs = tuple(dict.fromkeys(Path(d) for d in dpdk_dirs))
        return SpdkInstall(
            prefix=prefix,
            libdir=libdir,
            includedir=includedir,
            version=_header_version(includedir),
            syslibs=tuple(dict.fromkeys(lib for lib in syslibs if not lib.startswith("spdk"))),
            dpdk_libdirs=dpdk_libdirs,
            dpdk_libs=tuple(dict.fromkeys(lib for lib in dpdk_libs if lib.startswith("rte_"))),
            searched=tuple(searched),
        )
    return None


def find_spdk() -> SpdkInstall:
    """Locate the SPDK installation without loading anything.

    Raises :class:`SpdkNotFoundError` that lists every place that was tried.
    """
    searched: list[str] = []
    override = os.environ.get(PREFIX_ENV)
    if override:
        found = _install_at(Path(override), searched)
        if found is None:
            raise SpdkNotFoundError(
                f"${PREFIX_ENV}={override} holds no SPDK install; looked for: "
                + ", ".join(searched)
            )
        return found
    prefix = _pkg_config_prefix(searched)
    for candidate in (prefix, _DEFAULT_PREFIX):
        if candidate is not None:
            found = _install_at(candidate, searched)
            if found is not None:
                return found
    raise SpdkNotFoundError(
        "SPDK is not installed (built with --with-shared and its pkg-config files). Looked for: "
        + ", ".join(searched)
        + f". Set ${PREFIX_ENV} to the prefix SPDK was installed under."
    )


# --------------------------------------------------------------------------- loading

_MODE = ctypes.RTLD_GLOBAL | os.RTLD_NOW
_loaded: list[ctypes.CDLL] = []  # kept alive for the life of the process
_lock = threading.Lock()
_install: SpdkInstall | None = None


def _load_system_lib(name: str) -> None:
    candidates = [f"lib{name}.so"]
    found = ctypes.util.find_library(name)
    if found:
        candidates.append(found)
    errors = []
    for cand in candidates:
        try:
            _loaded.append(ctypes.CDLL(cand, mode=_MODE))
            return
        except OSError as exc:
            errors.append(str(exc))
    raise SpdkNotFoundError(
        f"system library '{name}' that SPDK needs (from spdk_syslibs.pc) cannot be loaded: "
        + "; ".join(errors)
    )


def _find_in(dirs: tuple[Path, ...], filename: str) -> Path | None:
    for d in dirs:
        if (d / filename).exists():
            return d / filename
    return None


#: Libraries not loaded, with the reason.  Loading a library registers its subsystem,
#: and every registered subsystem is initialised by ``spdk_subsystem_init``.
_SKIPPED = {
    # The iSCSI target allocates large PDU pools at init and fails without hugepages;
    # spdk_io does not offer an iSCSI target.
    "libspdk_event_iscsi.so": "iSCSI target subsystem (not offered; needs large pools)",
}


def _spdk_libraries(libdir: Path) -> list[Path]:
    """The SPDK shared objects to load: those ``libspdk.so`` groups, plus the env layer.

    ``libspdk.so`` is a linker script naming every library of the installed
    build; the env layer (``libspdk_env_dpdk.so``) is kept out of it on purpose.
    Test-only libraries (``libspdk_ut*``) are never loaded.
    """
    script = libdir / "libspdk.so"
    names: list[str] = []
    try:
        text = script.read_text(errors="replace") if script.stat().st_size < 65536 else ""
    except OSError:
        text = ""
    m = re.search(r"GROUP\s*\(([^)]*)\)", text)
    names = m.group(1).split() if m else [p.name for p in sorted(libdir.glob("libspdk_*.so"))]
    names.append("libspdk_env_dpdk.so")
    skipped = set(_SKIPPED) | {
        n.strip() for n in os.environ.get(SKIP_ENV, "").split(",") if n.strip()
    }
    return [
        libdir / n
        for n in dict.fromkeys(names)
        if n not in skipped and not n.startswith("libspdk_ut")
    ]


def _load_all(paths: list[Path]) -> None:
    """dlopen ``paths`` with RTLD_GLOBAL, retrying until the dependency order works out."""
    pending = list(paths)
    errors: dict[Path, str] = {}
    while pending:
        progress = False
        for path in list(pending):
            try:
                _loaded.append(ctypes.CDLL(str(path), mode=_MODE))
            except OSError as exc:
                errors[path] = str(exc)
                continue
            pending.remove(path)
            errors.pop(path, None)
            progress = True
        if not progress:
            detail = "; ".join(f"{p.name}: {errors[p]}" for p in pending[:5])
            raise SpdkNotFoundError(f"{len(pending)} SPDK libraries cannot be loaded: {detail}")


def load() -> SpdkInstall:
    """Load SPDK into this process (once) and return where it was found."""
    global _install
    with _lock:
        if _install is not None:
            return _install
        install = find_spdk()
        for name in install.syslibs:
            _load_system_lib(name)
        dpdk_dirs = (*install.dpdk_libdirs, install.libdir)
        dpdk_paths: list[Path] = []
        for name in install.dpdk_libs:
            path = _find_in(dpdk_dirs, f"lib{name}.so")
            if path is None:
                raise SpdkNotFoundError(
                    f"DPDK library lib{name}.so (listed in spdk_env_dpdk.pc) is not in "
                    + ", ".join(map(str, dpdk_dirs))
                )
            dpdk_paths.append(path)
        _load_all(dpdk_paths)
        spdk = _spdk_libraries(install.libdir)
        if not spdk:
            raise SpdkNotFoundError(
                f"no libspdk_*.so in {install.libdir}: was SPDK built --with-shared?"
            )
        _load_all(spdk)
        _install = install
        return install


def require_version(generated_from: str) -> SpdkInstall:
    """Load SPDK; raise :class:`SpdkVersionError` unless it is release ``generated_from``.

    The generated layer calls this at import with the version it was generated from.
    """
    install = load()
    if install.version != generated_from:
        raise SpdkVersionError(
            f"spdk_io was built against SPDK {generated_from}, but the SPDK found at "
            f"{install.prefix} is {install.version}: its structs and functions may differ. "
            "Rebuild spdk_io against the installed SPDK (pip install --force-reinstall "
            "--no-deps --no-binary spdk-io spdk-io; from a checkout, pip install -e .), "
            f"or point ${PREFIX_ENV} at an SPDK {generated_from} install."
        )
    return install


load()

#: Every SPDK symbol, through the process's global scope.  Calls release the GIL.
lib = ctypes.CDLL(None)
#: The same symbols, called with the GIL held: cheaper for short, non-blocking calls.
pylib = ctypes.PyDLL(None)


def fast(name: str, restype: Any, argtypes: list[Any] | None = None) -> Any:
    """``name`` bound for hot paths: called with the GIL held (no release/reacquire).

    With ``argtypes=None`` ctypes converts nothing, so callers must pass only
    ctypes objects, or ints for C ``int``-sized parameters: a Python int is
    passed as a 32-bit C int, and a 64-bit parameter (pointer, ``uint64_t``)
    that lands on the stack would get garbage in its upper half.
    """
    fn: Any = pylib[name]  # indexing makes a new function object: its argtypes are its own
    fn.restype = restype
    fn.argtypes = argtypes
    return fn
