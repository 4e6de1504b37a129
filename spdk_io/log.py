"""SPDK's log in Python's :mod:`logging`.

While an :class:`~spdk_io.env.Env` or :class:`~spdk_io.app.App` is up (unless its
options say ``log_to_python=False``), or after :func:`install`, every message SPDK
logs becomes a :class:`logging.LogRecord`, and SPDK no longer prints to stderr:

* on the logger ``spdk.<component>``, named for the SPDK library and the C source
  file of the message: ``tcp.c`` in ``libspdk_nvmf.so`` -> ``spdk.nvmf.tcp``,
  ``bdev_malloc.c`` in ``libspdk_bdev_malloc.so`` -> ``spdk.bdev.malloc``, ``bdev.c`` in
  ``libspdk_bdev.so`` -> ``spdk.bdev`` (see :func:`logger_name`); messages without a
  source file (``SPDK_PRINTF``) go to ``spdk``;
* at SPDK's level mapped onto logging's (``ERROR``, ``WARNING``; ``NOTICE`` and
  ``INFO`` -> ``INFO``; ``DEBUG``);
* with the record's ``pathname``/``filename``, ``lineno`` and ``funcName`` set to SPDK's.

A message is formatted (libc ``vsnprintf``) only if its logger is enabled for its
level, at once: SPDK's ``va_list`` is valid only during the callback.  SPDK may log
from any OS thread (DPDK's and SPDK's own too), before, during and after a loop runs;
the callback never raises into C.  A ``KeyboardInterrupt`` raised while it runs
(Ctrl-C in the main thread) is delivered again once SPDK returns; any other exception
raised while a record is handled (a failing filter) is reported through
:func:`sys.unraisablehook`.

While installed, SPDK hands every message to the callback whatever SPDK's own level;
what reaches a handler is decided by logging alone.  SPDK's log and print level still
follow the ``spdk`` logger's effective level (:func:`sync_level` re-applies it after a
logging configuration change): SPDK consults them itself, and prints at them once the
log is given back.  SPDK's ``INFO``/``DEBUG`` messages are per log flag:
:func:`enable_flags` turns them on.

The callback takes the GIL.  SPDK logs a few errors while holding one of its own
locks (``spdk_for_each_channel`` on a device being unregistered); if another OS
thread then waits for that lock inside a call made with the GIL held (a poll), the
two wait for each other.  No spdk_io path is known to reach this; a program that
runs into it can opt out with ``log_to_python=False``.

Only on x86-64 (where a ``va_list`` argument is a pointer that may be copied as 24
bytes) and only in the main interpreter (SPDK has one log callback per process);
elsewhere :func:`install` returns ``False`` and SPDK keeps printing to stderr.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import platform
import re
import signal
from collections.abc import Collection
from pathlib import Path, PurePosixPath
from typing import Any

from spdk_io import _generated as g
from spdk_io._loader import load, main_interpreter
from spdk_io._validate import text

__all__ = [
    "acquire",
    "callback",
    "disable_flags",
    "enable_flags",
    "install",
    "installed",
    "library_of",
    "logger_for",
    "logger_name",
    "release",
    "resume",
    "set_spdk_level",
    "spdk_level_for",
    "supported",
    "suspend",
    "sync_level",
    "uninstall",
]

#: SPDK's level -> logging's.
LEVELS: dict[int, int] = {
    g.SPDK_LOG_ERROR: logging.ERROR,
    g.SPDK_LOG_WARN: logging.WARNING,
    g.SPDK_LOG_NOTICE: logging.INFO,
    g.SPDK_LOG_INFO: logging.INFO,
    g.SPDK_LOG_DEBUG: logging.DEBUG,
}
#: A message longer than this is formatted a second time into a buffer of its size.
FIRST_BUFFER = 1024
_VA_LIST_BYTES = 24  # x86-64 SysV: struct __va_list_tag {u32, u32, void *, void *}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=False)
_vsnprintf = _libc.vsnprintf
_vsnprintf.restype = ctypes.c_int
_vsnprintf.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def _find_dladdr() -> Any:
    for lib in (_libc, ctypes.CDLL(None)):  # glibc >= 2.34 has it in libc, older in libdl
        try:
            fn = lib.dladdr
        except AttributeError:
            continue
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        return fn
    return None


_dladdr = _find_dladdr()
_SPDK_LIB = re.compile(r"libspdk_(\w+)\.so")


# -- logger names ------------------------------------------------------------------------


def _library_parts(library: str, libraries: Collection[str]) -> list[str]:
    """``bdev_zone_block`` -> ``[bdev, zone_block]``: split after the longest prefix that
    is a library itself (``libspdk_bdev``), recursively."""
    cut = library.rfind("_")
    while cut > 0:
        if library[:cut] in libraries:
            return [*_library_parts(library[:cut], libraries), library[cut + 1 :]]
        cut = library.rfind("_", 0, cut)
    return [library]


def logger_name(
    file: str | None, library: str | None = None, libraries: Collection[str] = ()
) -> str:
    """The logger name of a message from the C source ``file`` in ``libspdk_<library>.so``.

    ``libraries`` are the names of SPDK's libraries (``bdev``, ``bdev_malloc``, ...): a
    library whose name extends another's is under it (``bdev_malloc`` -> ``bdev.malloc``).
    A file stem that repeats the library is dropped or stripped (``bdev_malloc.c``,
    ``vbdev_passthru.c``; ``bdev_malloc_rpc.c`` -> ``rpc``).  Without ``library``, the
    name comes from the file alone (``bdev.c`` -> ``spdk.bdev``; a path under ``lib/``
    keeps its directory: ``lib/nvmf/tcp.c`` -> ``spdk.nvmf.tcp``).  Pure.
    """
    if not file:
        return "spdk"
    path = PurePosixPath(file)
    if library is None:
        parts = [p for p in path.with_suffix("").parts if p not in ("/", "..", ".")]
        if "lib" in parts:  # .../lib/nvmf/tcp.c -> nvmf.tcp
            parts = parts[len(parts) - parts[::-1].index("lib") :]
        return ".".join(["spdk", *parts[-2:]]) if parts else "spdk"
    lib_parts = _library_parts(library, {*libraries, library})
    stem = path.stem
    for own in (library, "v" + library):
        if stem == own:
            stem = ""
        elif stem.startswith(own + "_"):
            stem = stem[len(own) + 1 :]
        else:
            continue
        break
    if stem == lib_parts[-1]:
        stem = ""
    return ".".join(["spdk", *lib_parts, *([stem] if stem else [])])


# Loggers by SPDK source file name (fallback rule), and by the address of the ``file``
# string SPDK passes (``__FILE__``, static in the library that logged: no parsing and no
# dladdr per message).  Only addresses dladdr places in a loaded object are cached.
_loggers: dict[bytes, logging.Logger] = {}
_at_address: dict[int, tuple[logging.Logger, str]] = {}
_known: list[frozenset[str]] = []


def logger_for(file: bytes | None) -> logging.Logger:
    """The logger of messages from the C source ``file`` by its name alone (``spdk`` if none)."""
    if not file:
        return logging.getLogger("spdk")
    found = _loggers.get(file)
    if found is None:
        found = logging.getLogger(logger_name(file.decode(errors="replace")))
        _loggers[file] = found
    return found


def _libraries() -> frozenset[str]:
    """The names of the installed SPDK libraries (``nvmf``, ``bdev_malloc``, ...)."""
    if not _known:
        libdir = Path(load().libdir)
        names = (_SPDK_LIB.match(p.name) for p in libdir.glob("libspdk_*.so"))
        _known.append(frozenset(m.group(1) for m in names if m))
    return _known[0]


def library_of(address: int) -> tuple[bool, str | None]:
    """Whether ``address`` is in a loaded object, and which SPDK library that is
    (``"nvmf"`` for ``libspdk_nvmf.so``; ``None`` for anything else)."""
    if _dladdr is None:
        return False, None
    info = _DlInfo()
    if not _dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return False, None
    m = _SPDK_LIB.match(PurePosixPath(info.dli_fname.decode(errors="replace")).name)
    return True, m.group(1) if m else None


def _logger_at(address: int) -> tuple[logging.Logger, str]:
    """The logger and path of SPDK's ``file`` string at ``address``."""
    path = ctypes.string_at(address).decode(errors="replace")
    static, library = library_of(address)
    if library is None:
        entry = (logger_for(path.encode()), path)
    else:
        entry = (logging.getLogger(logger_name(path, library, _libraries())), path)
    if static:
        _at_address[address] = entry
    return entry


# -- the callback ------------------------------------------------------------------------


def _format(fmt: int, ap: int) -> str:
    """``fmt`` with the arguments of ``ap`` (valid only now), as text."""
    saved = ctypes.create_string_buffer(ctypes.string_at(ap, _VA_LIST_BYTES), _VA_LIST_BYTES)
    buf = ctypes.create_string_buffer(FIRST_BUFFER)
    n = _vsnprintf(buf, FIRST_BUFFER, fmt, ctypes.addressof(saved))  # va_copy: a 24-byte copy
    if n >= FIRST_BUFFER:
        buf = ctypes.create_string_buffer(n + 1)
        n = _vsnprintf(buf, n + 1, fmt, ap)
    if n < 0:
        return ctypes.string_at(fmt).decode(errors="replace")
    return buf.raw[:n].decode(errors="replace").rstrip("\n")


_root = logging.getLogger("spdk")
_add_pending_call = ctypes.pythonapi.Py_AddPendingCall
_add_pending_call.restype = ctypes.c_int
_add_pending_call.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
# int PyErr_SetInterruptEx(int signum) as a pending call's int (*)(void *arg): on x86-64
# both take their argument in the same register (the only platform this module runs on).
_set_interrupt = ctypes.cast(ctypes.pythonapi.PyErr_SetInterruptEx, ctypes.c_void_p)


def _on_log(
    level: int, file: int | None, line: int, func: int | None, fmt: int | None, ap: int | None
) -> None:
    """``spdk_log_cb``: SPDK logged a message (on any OS thread)."""
    try:
        pylevel = LEVELS.get(level, logging.INFO)
        if file:
            found = _at_address.get(file)
            logger, pathname = found if found is not None else _logger_at(file)
        else:
            logger, pathname = _root, "?"
        if not logger.isEnabledFor(pylevel) or not fmt or not ap:
            return
        msg = _format(fmt, ap)
        funcname = ctypes.string_at(func).decode(errors="replace") if func else None
        record = logger.makeRecord(
            logger.name, pylevel, pathname, line, msg, (), None, funcname
        )  # fmt: skip
        logger.handle(record)
    except KeyboardInterrupt:
        # Python's SIGINT handler ran while SPDK waits for this callback: nothing may
        # unwind into C, so Ctrl-C is delivered again once SPDK returned to Python.
        # Not with _thread.interrupt_main(): the handler would run again right after
        # that call, still in here.  A pending call (run at the main thread's next check,
        # which handles signals before pending calls) sets the interrupt when this
        # function has nothing left to run: SPDK's caller gets the KeyboardInterrupt.
        # This must stay the last call in this function.
        _add_pending_call(_set_interrupt, signal.SIGINT)
    # Anything else is reported by ctypes (sys.unraisablehook) and never reaches C.


#: ``void (*)(int level, const char *file, int line, const char *func, const char *fmt,
#: va_list ap)``: ``spdk_log_cb`` with every pointer as an address (``file`` is looked
#: up by address, the others are read only when the message is wanted).
_LogCallback = ctypes.CFUNCTYPE(
    None, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
    ctypes.c_void_p,
)  # fmt: skip
_log_thunk = _LogCallback(_on_log)
#: The callback as SPDK's ``spdk_log_cb`` (for ``spdk_log_open`` and ``spdk_app_opts.log``).
callback = ctypes.cast(_log_thunk, g.spdk_log_cb)
# SPDK may call it until the process ends (a thread of its own, while Python finalizes):
# its code must outlive this module's teardown.
ctypes.pythonapi.Py_IncRef(ctypes.py_object(_log_thunk))

_state: dict[str, Any] = {"installed": False, "saved_levels": None, "suspended": False}


def supported() -> bool:
    """Whether SPDK's log can come to Python here (x86-64, main interpreter)."""
    return platform.machine() in ("x86_64", "AMD64") and main_interpreter()


def install() -> bool:
    """Send SPDK's log to :mod:`logging` (idempotent) and set SPDK's level from the
    ``spdk`` logger's; ``False`` where unsupported."""
    if not supported():
        return False
    if not _state["installed"]:
        _state["saved_levels"] = (g.spdk_log_get_level(), g.spdk_log_get_print_level())
        if not _state["suspended"]:
            g.spdk_log_open(callback)
        _state["installed"] = True
    sync_level()
    return True


def uninstall() -> None:
    """Give SPDK's log back to SPDK (stderr at its print level, which is restored to what
    it was before :func:`install`).  Idempotent."""
    if _state["installed"]:
        if not _state["suspended"]:
            g.spdk_log_close()
        _state["installed"] = False
        saved = _state["saved_levels"]
        if saved is not None:
            set_spdk_level(saved[0], saved[1])


def installed() -> bool:
    """Whether SPDK's log goes to :mod:`logging` now."""
    return bool(_state["installed"])


def acquire() -> bool:
    """For an Env/App coming up: :func:`install` unless already installed.  Returns
    whether this call installed it (pass that to :func:`release`)."""
    return not _state["installed"] and install()


def release(token: bool, *, closed_by_spdk: bool = False) -> None:
    """For an Env/App gone down: :func:`uninstall` if its :func:`acquire` installed the
    log.  ``closed_by_spdk``: SPDK's teardown closed the log itself (``spdk_app_fini``);
    an installation that was not this holder's is then opened again."""
    if token:
        uninstall()
    elif closed_by_spdk and _state["installed"] and not _state["suspended"]:
        g.spdk_log_open(callback)


def suspend() -> None:
    """While other interpreters run SPDK code (:mod:`spdk_io.cores`): SPDK prints its log
    itself (stderr, at its print level) instead of calling this interpreter's callback,
    which it would call on their OS threads.  :func:`resume` brings it back."""
    if not _state["suspended"]:
        _state["suspended"] = True
        if _state["installed"]:
            g.spdk_log_close()


def resume() -> None:
    """Undo :func:`suspend` (every other interpreter has stopped running SPDK code)."""
    if _state["suspended"]:
        _state["suspended"] = False
        if _state["installed"]:
            g.spdk_log_open(callback)


@atexit.register
def _at_exit() -> None:
    # SPDK's threads may still log while Python finalizes: from here on they print.
    uninstall()


# -- levels and flags --------------------------------------------------------------------


def spdk_level_for(level: int) -> int:
    """The SPDK level (``SPDK_LOG_*``) that lets through what logging's ``level`` does."""
    if level <= logging.DEBUG:
        return int(g.SPDK_LOG_DEBUG)
    if level <= logging.INFO:
        return int(g.SPDK_LOG_INFO)
    if level <= logging.WARNING:
        return int(g.SPDK_LOG_WARN)
    if level <= logging.ERROR:
        return int(g.SPDK_LOG_ERROR)
    return int(g.SPDK_LOG_DISABLED)


def sync_level() -> int:
    """Set SPDK's log and print level from the ``spdk`` logger's effective level (as
    :func:`install` does), so SPDK's own view of its level matches logging's.  Which
    records reach handlers does not depend on it (logging decides), so calling it after
    a logging configuration change is optional.  Returns the SPDK level set.  Does
    nothing (and returns SPDK's level) while not installed."""
    if not _state["installed"]:
        return int(g.spdk_log_get_level())
    level = spdk_level_for(_root.getEffectiveLevel())
    set_spdk_level(level)
    return level


def set_spdk_level(level: int, print_level: int | None = None) -> None:
    """SPDK's own log level (``SPDK_LOG_*``) and print level (the same by default):
    what SPDK writes to syslog and stderr while its log is not in Python."""
    g.spdk_log_set_level(level)
    g.spdk_log_set_print_level(level if print_level is None else print_level)


def enable_flags(*flags: str) -> None:
    """Turn SPDK log flags on (``"bdev"``, ``"nvmf"``, ``"blob"``, or ``"all"``): their
    ``INFO`` (and, in a debug build of SPDK, ``DEBUG``) messages are logged.
    ``ValueError`` for a flag SPDK does not know, nothing changed then."""
    names = [text(f, "flag").encode() for f in flags]
    for name in names:
        if name != b"all" and not _known_flag(name):
            raise ValueError(f"SPDK has no log flag {name.decode()!r}")
    for name in names:
        g.spdk_log_set_flag(name)


def disable_flags(*flags: str) -> None:
    """Turn SPDK log flags off."""
    for f in flags:
        g.spdk_log_clear_flag(text(f, "flag").encode())


def _known_flag(name: bytes) -> bool:
    flag: Any = g.spdk_log_get_first_flag()
    while flag:
        if flag.contents.name == name:
            return True
        flag = g.spdk_log_get_next_flag(flag)
    return False
