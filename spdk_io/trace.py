"""SPDK's tracepoints, recorded for SPDK's ``spdk_trace`` tool to read.

``EnvOptions(tpoint_group_mask="bdev")`` (SPDK's ``-e``/``--tpoint-group``) makes an
:class:`~spdk_io.env.Env` or :class:`~spdk_io.app.App` set up SPDK's trace in shared
memory, as SPDK's applications do: ``/dev/shm/<name>_trace.pid<pid>``, or
``/dev/shm/<name>_trace.<shm_id>`` with an ``shm_id``, with ``trace_entries`` entries
per core.  Read it with ``spdk_trace -s <name> -p <pid>`` (``-i <shm_id>``) while the
process runs, or ``spdk_trace -f <file>``.  When SPDK stops, the file stays if
anything was recorded (for reading after the process ended: delete it then), and is
removed otherwise.

Tracepoints are recorded on the threads of the Env's cores (the OS thread that
started the Env, SPDK's reactors under an App).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

from spdk_io import _generated as g
from spdk_io._validate import integer, text
from spdk_io.errors import SpdkError

__all__ = [
    "DEFAULT_ENTRIES",
    "check_entries",
    "check_mask",
    "groups",
    "parse_mask",
    "shm_name",
    "shm_path",
]

#: Trace entries per core unless ``trace_entries`` says otherwise (SPDK's default).
DEFAULT_ENTRIES = int(g.SPDK_DEFAULT_NUM_TRACE_ENTRIES)
_HEX = re.compile(r"(0[xX])?[0-9a-fA-F]+")
_NAME_BYTES = 64  # SPDK formats the shm name into char[64]


def groups() -> dict[str, int]:
    """SPDK's tracepoint groups by name (``bdev``, ``nvmf_tcp``, ...) and their ids."""
    found: dict[str, int] = {}
    fn: Any = g.spdk_trace_get_first_register_fn()
    while fn:
        found[fn.contents.name.decode()] = int(fn.contents.tgroup_id)
        fn = g.spdk_trace_get_next_register_fn(fn)
    return found


def _group_mask(item: str, known: dict[str, int], whole: str) -> int:
    if _HEX.fullmatch(item):
        value = int(item, 16)
        if value >= 1 << 64:
            raise ValueError(f"tpoint_group_mask {whole!r}: {item} is wider than 64 bits")
        return value
    if item == "all":
        return sum(1 << i for i in set(known.values()))
    if item not in known:
        raise ValueError(
            f"tpoint_group_mask {whole!r}: no tracepoint group {item!r}; SPDK has "
            + ", ".join(sorted(known))
        )
    return 1 << known[item]


def parse_mask(mask: object) -> list[tuple[int, int | tuple[str, ...]]]:
    """``mask`` as SPDK's ``-e`` parser reads it: ``(group bits, tracepoints)`` per item,
    the tracepoints a mask (all of the groups: ``-1``) or names.  ``TypeError`` or
    ``ValueError`` naming what is wrong."""
    whole = text(mask, "tpoint_group_mask")
    known = groups()
    plan: list[tuple[int, int | tuple[str, ...]]] = []
    for item in whole.split(","):
        group, colon, tpoints = item.partition(":")
        if not group:
            raise ValueError(f"tpoint_group_mask {whole!r} has an empty group")
        bits = _group_mask(group, known, whole)
        if not colon:
            plan.append((bits, -1))
            continue
        if bits & (bits - 1) or not bits:
            raise ValueError(
                f"tpoint_group_mask {whole!r}: {group}:{tpoints} must name one group "
                "(SPDK refuses tracepoints of several at once)"
            )
        names = tuple(tpoints.split("+"))
        if not tpoints or ":" in tpoints or not all(names):
            raise ValueError(
                f"tpoint_group_mask {whole!r}: after {group}: come tracepoints, as a hex "
                "mask or names joined by '+'"
            )
        plan.append((bits, int(tpoints, 16) if _HEX.fullmatch(tpoints) else names))
    return plan


def check_mask(mask: object) -> str:
    """``mask`` if it is a tracepoint group mask as SPDK's ``-e`` takes it: comma-separated
    groups, each a hex group mask (``0x8``) or a group name (``bdev``, ``all``), or
    ``GROUP:TPOINTS`` for some tracepoints of one group (a hex mask or names joined by
    ``+``; the names are checked when tracing starts).  ``TypeError``/``ValueError``
    otherwise."""
    parse_mask(mask)
    return str(mask)


def check_entries(entries: object) -> int:
    """``entries`` if it is a power of two, as SPDK requires of trace entries per core."""
    n = integer(entries, "trace_entries", lo=1, hi=2**32)
    if n & (n - 1):
        raise ValueError(f"trace_entries must be a power of 2, got {n}")
    return n


def shm_name(name: str, shm_id: int = -1, pid: int | None = None) -> str:
    """The shared-memory name SPDK traces ``name`` into (``/<name>_trace.pid<pid>``, or
    ``/<name>_trace.<shm_id>`` with an ``shm_id``), cut as SPDK cuts it."""
    suffix = str(shm_id) if shm_id >= 0 else f"pid{os.getpid() if pid is None else pid}"
    full = f"/{name}{g.SPDK_TRACE_SHM_NAME_BASE.decode()}{suffix}".encode()
    return full[: _NAME_BYTES - 1].decode(errors="ignore")


def shm_path(name: str, shm_id: int = -1, pid: int | None = None) -> Path:
    """The file of :func:`shm_name` (``spdk_trace -f`` reads it)."""
    return Path("/dev/shm" + shm_name(name, shm_id, pid))


def app_opts_fields(mask: str | None, entries: int) -> dict[str, Any]:
    """The ``struct spdk_app_opts`` trace fields for ``mask`` (None: no tracing)."""
    if mask is None:
        return {"num_entries": 0, "tpoint_group_mask": None}
    return {"num_entries": entries, "tpoint_group_mask": mask.encode()}


def _main_only(what: str) -> None:
    from spdk_io import env  # env imports this module: look it up when called

    env.main_interpreter_only(what)


def start(name: str, shm_id: int, mask: str, entries: int) -> Path:
    """Set up SPDK's trace after ``spdk_env_init`` as SPDK's app framework does (its
    shared memory, then the tracepoints of ``mask``); returns the trace file.

    ``ValueError`` for a tracepoint name SPDK does not have, :class:`SpdkError` if the
    shared memory cannot be set up; nothing is left behind then.  Main interpreter
    only (SPDK's trace is process-wide)."""
    _main_only("spdk_io.trace.start")
    shm = shm_name(name, shm_id)
    if g.spdk_trace_init(shm.encode(), entries, 0) != 0:
        raise SpdkError(
            errno.ENOMEM, "spdk_trace_init", shm,
            f"{entries} trace entries per core do not fit in /dev/shm or in the memory "
            "this process may lock (ulimit -l); see SPDK's log",
        )  # fmt: skip
    try:
        for bits, tpoints in parse_mask(mask):
            if isinstance(tpoints, tuple):
                group_id = bits.bit_length() - 1
                tpoint_mask = 0
                for tpoint in tpoints:
                    one = g.spdk_trace_create_tpoint_mask(group_id, tpoint.encode())
                    if not one:
                        raise ValueError(
                            f"tpoint_group_mask {mask!r}: tracepoint group {group_id} has "
                            f"no tracepoint {tpoint!r}"
                        )
                    tpoint_mask |= one
            else:
                tpoint_mask = tpoints & (2**64 - 1)
            for group_id in range(g.SPDK_TRACE_MAX_GROUP_ID):
                if bits >> group_id & 1:
                    g.spdk_trace_set_tpoints(group_id, tpoint_mask)
    except BaseException:
        g.spdk_trace_cleanup()
        raise
    return shm_path(name, shm_id)


def stop() -> None:
    """SPDK's ``spdk_trace_cleanup`` (the file stays if anything was recorded).  Main
    interpreter only (SPDK's trace is process-wide)."""
    _main_only("spdk_io.trace.stop")
    g.spdk_trace_cleanup()
