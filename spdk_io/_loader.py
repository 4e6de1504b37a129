"""Load the installed SPDK's shared libraries into this process (once).

SPDK's shared objects cannot simply be dlopen'ed one by one:

* ``libspdk.so`` is a GNU ld linker script (``GROUP ( ... )``), not an ELF file;
* the ``libspdk_*.so`` files do not record their system dependencies
  (libcrypto, libaio, libnuma, libuuid, isa-l, ...): ``spdk_syslibs.pc`` lists
  them, and they must be loaded first;
* DPDK's ring mempool driver (``rte_mempool_ring``, in ``spdk_env_dpdk.pc``) is a
  plug-in that nothing links against, yet mempool creation fails without it;
* subsystems, bdev modules, transports and RPC methods register themselves in
  ELF constructors, so every library is loaded with ``RTLD_GLOBAL``.

Finding SPDK (where, which libraries, which release) is :mod:`spdk_io._discover`,
which loads nothing; its names are re-exported here.  :func:`load` does the
loading once per process and raises :class:`SpdkNotFoundError` naming what is
missing.  Importing this module loads SPDK.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path
from typing import Any

from spdk_io._discover import SpdkInstall, check_version, find_spdk, spdk_libraries
from spdk_io.errors import SpdkNotFoundError

__all__ = ["fast", "lib", "load", "main_interpreter", "pylib", "require_version"]


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
        spdk = spdk_libraries(install.libdir)
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
    check_version(install, generated_from)
    return install


load()

#: Every SPDK symbol, through the process's global scope.  Calls release the GIL: the
#: generated layer binds here the functions that can block (its ``RELEASES_GIL``).
lib = ctypes.CDLL(None)
#: The same symbols, called with the GIL held: cheaper for short, non-blocking calls.
#: The generated layer binds every other function here.
pylib = ctypes.PyDLL(None)


def main_interpreter() -> bool:
    """Whether this code runs in Python's main interpreter: the one that owns SPDK's
    process-wide state (its log, its threads' hooks), not a core's worker interpreter."""
    try:
        import _interpreters  # type: ignore[import-not-found]  # CPython 3.13+
    except ImportError:
        return True  # before 3.13 spdk_io cannot run in another interpreter (no _ctypes)
    return bool(_interpreters.get_current()[0] == _interpreters.get_main()[0])


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
