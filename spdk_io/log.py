"""SPDK's log in Python's :mod:`logging`.

While installed (``spdk_io.log.install()``, after which SPDK no longer prints to
stderr; :func:`uninstall` gives it back), every message SPDK logs becomes a
:class:`logging.LogRecord`:

* on the logger ``spdk.<component>``, named for the C source file the message comes
  from: SPDK passes its base name (``bdev.c`` -> ``spdk.bdev``; a path under ``lib/``
  keeps its directory, ``lib/nvmf/tcp.c`` -> ``spdk.nvmf.tcp``);
* at SPDK's level mapped onto logging's (``ERROR``, ``WARNING``; ``NOTICE`` and
  ``INFO`` -> ``INFO``; ``DEBUG``);
* with the record's ``pathname``/``filename``, ``lineno`` and ``funcName`` set to SPDK's.

A message is formatted (libc ``vsnprintf``) only if its logger is enabled for its
level, at once: SPDK's ``va_list`` is valid only during the callback.  SPDK may log from
any OS thread; the callback never raises into C.  :func:`enable_flags` turns SPDK's
debug log flags on (``SPDK_DEBUGLOG`` messages also need SPDK's log level at debug,
:func:`set_spdk_level`).

Only on x86-64 (where a ``va_list`` argument is a pointer that may be copied as 24
bytes) and only in the main interpreter (SPDK has one log callback per process);
elsewhere :func:`install` returns ``False`` and SPDK keeps printing to stderr.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import sys
from pathlib import PurePosixPath
from typing import Any

from spdk_io import _generated as g
from spdk_io._validate import text

__all__ = ["disable_flags", "enable_flags", "install", "installed", "logger_for", "uninstall"]

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
_vsnprintf.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]

# Loggers by SPDK source file (a few dozen files log): no path parsing per message.
_loggers: dict[bytes, logging.Logger] = {}


def logger_for(file: bytes | None) -> logging.Logger:
    """The logger of messages from the C source ``file`` (``spdk`` if none)."""
    if not file:
        return logging.getLogger("spdk")
    found = _loggers.get(file)
    if found is None:
        path = PurePosixPath(file.decode(errors="replace"))
        parts = [p for p in path.with_suffix("").parts if p not in ("/", "..", ".")]
        if "lib" in parts:  # .../lib/nvmf/tcp.c -> nvmf.tcp
            parts = parts[len(parts) - parts[::-1].index("lib") :]
        found = logging.getLogger(".".join(["spdk", *parts[-2:]]) if parts else "spdk")
        _loggers[file] = found
    return found


def _format(fmt: bytes, ap: int) -> str:
    """``fmt`` with the arguments of ``ap`` (valid only now), as text."""
    saved = ctypes.create_string_buffer(ctypes.string_at(ap, _VA_LIST_BYTES), _VA_LIST_BYTES)
    buf = ctypes.create_string_buffer(FIRST_BUFFER)
    n = _vsnprintf(buf, FIRST_BUFFER, fmt, ctypes.addressof(saved))  # va_copy: a 24-byte copy
    if n >= FIRST_BUFFER:
        buf = ctypes.create_string_buffer(n + 1)
        n = _vsnprintf(buf, n + 1, fmt, ap)
    if n < 0:
        return fmt.decode(errors="replace")
    return buf.raw[:n].decode(errors="replace").rstrip("\n")


def _on_log(level: int, file: bytes | None, line: int, func: bytes | None, fmt: bytes | None,
            ap: int | None) -> None:  # fmt: skip
    """``spdk_log_cb``: SPDK logged a message (on any OS thread)."""
    try:
        pylevel = LEVELS.get(level, logging.INFO)
        logger = logger_for(file)
        if not logger.isEnabledFor(pylevel) or fmt is None or not ap:
            return
        msg = _format(fmt, ap)
        pathname = file.decode(errors="replace") if file else "?"
        record = logger.makeRecord(
            logger.name, pylevel, pathname, line, msg, (), None,
            func.decode(errors="replace") if func else None,
        )  # fmt: skip
        logger.handle(record)
    except BaseException:  # nothing may unwind into C; the message is lost
        pass


_log_cb = g.spdk_log_cb(_on_log)
_state = {"installed": False}


def _main_interpreter() -> bool:
    if sys.version_info < (3, 12):
        return True
    try:
        import _interpreters  # type: ignore[import-not-found]  # CPython 3.13+
    except ImportError:
        return True
    return bool(_interpreters.get_current()[0] == _interpreters.get_main()[0])


def supported() -> bool:
    """Whether SPDK's log can come to Python here (x86-64, main interpreter)."""
    return platform.machine() in ("x86_64", "AMD64") and _main_interpreter()


def install() -> bool:
    """Send SPDK's log to :mod:`logging` (idempotent); ``False`` where unsupported."""
    if not supported():
        return False
    if not _state["installed"]:
        g.spdk_log_open(_log_cb)
        _state["installed"] = True
    return True


def uninstall() -> None:
    """Give SPDK's log back to SPDK (stderr at its print level).  Idempotent."""
    if _state["installed"]:
        g.spdk_log_close()
        _state["installed"] = False


def installed() -> bool:
    return _state["installed"]


def set_spdk_level(level: int) -> None:
    """SPDK's own log level (``SPDK_LOG_*``): messages above it are dropped by SPDK's
    debug-log macros before they reach anyone."""
    g.spdk_log_set_level(level)
    g.spdk_log_set_print_level(level)


def enable_flags(*flags: str) -> None:
    """Turn SPDK log flags on (``"bdev"``, ``"nvmf"``, ``"blob"``, or ``"all"``);
    ``ValueError`` for a flag SPDK does not know, nothing changed then."""
    names = [text(f, "flag").encode() for f in flags]
    for name in names:
        if name != b"all" and not _known(name):
            raise ValueError(f"SPDK has no log flag {name.decode()!r}")
    for name in names:
        g.spdk_log_set_flag(name)


def disable_flags(*flags: str) -> None:
    """Turn SPDK log flags off."""
    for f in flags:
        g.spdk_log_clear_flag(text(f, "flag").encode())


def _known(name: bytes) -> bool:
    flag: Any = g.spdk_log_get_first_flag()
    while flag:
        if flag.contents.name == name:
            return True
        flag = g.spdk_log_get_next_flag(flag)
    return False
