"""Find the installed SPDK: prefix, headers, libraries, release.  Pure: nothing is loaded.

This module reads files (pkg-config ``.pc`` files, ``spdk/version.h``, the
``libspdk.so`` linker script) and may run ``pkg-config``; it never dlopens
anything and does not import ctypes, so both the runtime loader
(:mod:`spdk_io._loader`) and the binding generator (``tools/gen_bindings.py``, at
build time) use it.

Where SPDK is looked for, in order: the ``prefix`` argument or ``$SPDK_IO_PREFIX``
(an install prefix), then ``pkg-config`` (with ``/usr/local/lib/pkgconfig``
appended to its path), then the prefix ``/usr/local``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from spdk_io.errors import SpdkNotFoundError, SpdkVersionError

__all__ = [
    "PREFIX_ENV",
    "SKIP_ENV",
    "SpdkInstall",
    "SpdkNotFoundError",
    "SpdkVersionError",
    "check_version",
    "find_spdk",
    "header_version",
    "spdk_libraries",
]

#: An SPDK install prefix that overrides every other place.
PREFIX_ENV = "SPDK_IO_PREFIX"
#: Comma-separated library file names not to load (their subsystems then do not exist).
SKIP_ENV = "SPDK_IO_SKIP_LIBS"
_DEFAULT_PREFIX = Path("/usr/local")
_LIBDIR_NAMES = ("lib", "lib64", "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu")


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


# --------------------------------------------------------------------------- release


def header_version(includedir: Path) -> str:
    """SPDK's release (e.g. ``26.05.0``) as ``<includedir>/spdk/version.h`` states it.

    ``"unknown"`` when the file is missing or names no major version.
    """
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


def check_version(install: SpdkInstall, generated_from: str) -> None:
    """Raise :class:`SpdkVersionError` unless ``install`` is release ``generated_from``."""
    if install.version != generated_from:
        raise SpdkVersionError(
            f"spdk_io was built against SPDK {generated_from}, but the SPDK found at "
            f"{install.prefix} is {install.version}: its structs and functions may differ. "
            "Rebuild spdk_io against the installed SPDK (pip install --force-reinstall "
            "--no-deps --no-binary spdk-io spdk-io; from a checkout, pip install -e .), "
            f"or point ${PREFIX_ENV} at an SPDK {generated_from} install."
        )


# --------------------------------------------------------------------------- the install


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
            version=header_version(includedir),
            syslibs=tuple(dict.fromkeys(lib for lib in syslibs if not lib.startswith("spdk"))),
            dpdk_libdirs=dpdk_libdirs,
            dpdk_libs=tuple(dict.fromkeys(lib for lib in dpdk_libs if lib.startswith("rte_"))),
            searched=tuple(searched),
        )
    return None


def find_spdk(prefix: Path | None = None) -> SpdkInstall:
    """Locate the SPDK installation without loading anything.

    ``prefix`` (else ``$SPDK_IO_PREFIX``) names the install prefix and is the only
    place looked at.  Raises :class:`SpdkNotFoundError` that lists every place tried.
    """
    searched: list[str] = []
    override = str(prefix) if prefix is not None else os.environ.get(PREFIX_ENV)
    if override:
        found = _install_at(Path(override), searched)
        if found is None:
            origin = "prefix" if prefix is not None else f"${PREFIX_ENV}"
            raise SpdkNotFoundError(
                f"{origin}={override} holds no SPDK install; looked for: " + ", ".join(searched)
            )
        return found
    pc_prefix = _pkg_config_prefix(searched)
    for candidate in (pc_prefix, _DEFAULT_PREFIX):
        if candidate is not None:
            found = _install_at(candidate, searched)
            if found is not None:
                return found
    raise SpdkNotFoundError(
        "SPDK is not installed (built with --with-shared and its pkg-config files). Looked for: "
        + ", ".join(searched)
        + f". Set ${PREFIX_ENV} to the prefix SPDK was installed under."
    )


# --------------------------------------------------------------------------- libraries

#: Libraries not loaded, with the reason.  Loading a library registers its subsystem,
#: and every registered subsystem is initialised by ``spdk_subsystem_init``.
SKIPPED_LIBS = {
    # The iSCSI target allocates large PDU pools at init and fails without hugepages;
    # spdk_io does not offer an iSCSI target.
    "libspdk_event_iscsi.so": "iSCSI target subsystem (not offered; needs large pools)",
}


def _is_test_library(name: str) -> bool:
    """SPDK's unit-test helpers (``libspdk_ut.so``, ``libspdk_ut_mock.so``), never loaded."""
    return name == "libspdk_ut.so" or name.startswith("libspdk_ut_")


def spdk_libraries(libdir: Path) -> list[Path]:
    """The SPDK shared objects to load: those ``libspdk.so`` groups, plus the env layer.

    ``libspdk.so`` is a linker script naming every library of the installed build
    (without it: every ``libspdk_*.so``); the env layer (``libspdk_env_dpdk.so``) is
    kept out of it on purpose.  Test-only libraries, :data:`SKIPPED_LIBS` and the
    names in ``$SPDK_IO_SKIP_LIBS`` are left out.
    """
    script = libdir / "libspdk.so"
    try:
        text = script.read_text(errors="replace") if script.stat().st_size < 65536 else ""
    except OSError:
        text = ""
    m = re.search(r"GROUP\s*\(([^)]*)\)", text)
    names = m.group(1).split() if m else [p.name for p in sorted(libdir.glob("libspdk_*.so"))]
    names.append("libspdk_env_dpdk.so")
    skipped = set(SKIPPED_LIBS) | {
        n.strip() for n in os.environ.get(SKIP_ENV, "").split(",") if n.strip()
    }
    return [
        libdir / n
        for n in dict.fromkeys(names)
        if n != "libspdk.so" and n not in skipped and not _is_test_library(n)
    ]
