"""Taking snapshots: SPDK's counters, read where SPDK keeps them.

Every function here runs in a task on an SPDK thread (``spdk_io.run``); the NVMe-oF
part (through SPDK's ``nvmf_get_stats``) and so :func:`snapshot` with ``nvmf=True``
on SPDK's app thread.  Threads and channels are visited with SPDK's own iterations
(``spdk_for_each_thread``, ``spdk_bdev_for_each_channel``), each on the thread that
owns what is read, as SPDK's RPCs do it.  Reading changes nothing (no counter is reset).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import time
from typing import Any

from spdk_io import _bridge, rpc
from spdk_io import _generated as g
from spdk_io._loader import fast
from spdk_io._validate import text
from spdk_io.errors import SpdkError
from spdk_io.loop import Loop, current_loop
from spdk_io.stats.model import (
    BdevStats,
    ChannelStats,
    Histogram,
    IoStat,
    LoopStats,
    NvmfPollGroupStats,
    NvmfTargetStats,
    OpStat,
    PollerStats,
    Snapshot,
    ThreadStats,
    ticks_to_ns,
)
from spdk_io.thread import current_thread

__all__ = [
    "bdev_histogram",
    "bdev_stats",
    "disable_histogram",
    "enable_histogram",
    "loop_stats",
    "nvmf_stats",
    "snapshot",
    "thread_stats",
]

_log = logging.getLogger("spdk_io")
_U64_MAX = (1 << 64) - 1
#: ``struct spdk_bdev_io_error_stat`` counts failures by status: entry ``-status - 1``
#: for SPDK_BDEV_IO_STATUS_FAILED (-1) down to SPDK_MIN_BDEV_IO_STATUS (-8).
_ERROR_NAMES = (
    "failed",
    "nvme_error",
    "scsi_error",
    "nomem",
    "miscompare",
    "first_fused_failed",
    "aborted",
    "aio_error",
)
_ErrorCounts = ctypes.c_uint32 * 16  # room to spare past the 8 entries SPDK copies
_KINDS = (("read", "read"), ("write", "written"), ("unmap", "unmapped"), ("copy", "copied"))


def _io_stat(s: g.struct_spdk_bdev_io_stat, errors: ctypes.Array[ctypes.c_uint32]) -> IoStat:
    hz = g.spdk_get_ticks_hz()  # the device stat leaves ``ticks_rate`` unset

    def op(kind: str, done: str) -> OpStat:
        low = getattr(s, f"min_{kind}_latency_ticks")
        return OpStat(
            ops=getattr(s, f"num_{kind}_ops"),
            bytes=getattr(s, f"bytes_{done}"),
            latency_ns=ticks_to_ns(getattr(s, f"{kind}_latency_ticks"), hz),
            min_latency_ns=0 if low == _U64_MAX else ticks_to_ns(low, hz),
            max_latency_ns=ticks_to_ns(getattr(s, f"max_{kind}_latency_ticks"), hz),
        )

    read, write, unmap, copy = (op(kind, done) for kind, done in _KINDS)
    failed = {name: errors[i] for i, name in enumerate(_ERROR_NAMES) if errors[i]}
    return IoStat(read=read, write=write, unmap=unmap, copy=copy, errors=failed)


def _new_stat() -> tuple[g.struct_spdk_bdev_io_stat, ctypes.Array[ctypes.c_uint32]]:
    stat = g.struct_spdk_bdev_io_stat()
    errors = _ErrorCounts()
    stat.io_error = ctypes.cast(errors, ctypes.POINTER(g.struct_spdk_bdev_io_error_stat))
    return stat, errors


def _bdev_ptr(name: str) -> Any:
    # Every bdev call here goes through this lookup first.  Off an SPDK thread, SPDK
    # would abort the process (its spinlocks and iterations need spdk_get_thread()):
    # refuse with the RuntimeError every spdk_io call raises there instead.
    current_thread()
    ptr = g.spdk_bdev_get_by_name(name.encode())
    if not ptr:
        raise LookupError(f"no bdev named {name!r}")
    return ptr


def _bdev_names(name: str | None) -> list[str]:
    current_thread()  # bdev lists are read on SPDK threads only
    if name is not None:
        _bdev_ptr(text(name, "name"))
        return [name]
    names = []
    ptr = g.spdk_bdev_first()
    while ptr:
        names.append((g.spdk_bdev_get_name(ptr) or b"").decode())
        ptr = g.spdk_bdev_next(ptr)
    return names


async def _device_stat(name: str) -> IoStat:
    """The bdev's statistics over all its channels (``spdk_bdev_get_device_stat``)."""
    ptr = _bdev_ptr(name)  # before the Op: a bdev that is gone registers nothing
    stat, errors = _new_stat()
    op = _bridge.submit(
        "spdk_bdev_get_device_stat",
        name,
        lambda key: g.spdk_bdev_get_device_stat(
            ptr, ctypes.byref(stat), g.SPDK_BDEV_RESET_STAT_NONE, _bridge.device_stat_cb, key
        ),
    )
    op.keep = (stat, errors)
    await op
    return _io_stat(stat, errors)


def _thread_ident() -> tuple[str, int]:
    t = g.spdk_get_thread()
    return (g.spdk_thread_get_name(t) or b"").decode(errors="replace"), g.spdk_thread_get_id(t)


async def _channel_stats(name: str) -> tuple[ChannelStats, ...]:
    """Each channel's statistics, read on the channel's thread (``spdk_bdev_get_io_stat``)."""
    found: list[ChannelStats] = []
    ptr = _bdev_ptr(name)
    addr = ctypes.cast(ptr, ctypes.c_void_p).value

    def visit(ch: int) -> None:
        stat, errors = _new_stat()
        _get_io_stat(addr, ch, ctypes.byref(stat), g.SPDK_BDEV_RESET_STAT_NONE)
        thread, thread_id = _thread_ident()
        found.append(ChannelStats(name, thread, thread_id, _io_stat(stat, errors)))

    await _bridge.iterate(
        "spdk_bdev_for_each_channel",
        visit,
        lambda key: g.spdk_bdev_for_each_channel(
            ptr, _bridge.each_channel_cb, key, _bridge.each_channel_done_cb
        ),
    )
    return tuple(sorted(found, key=lambda c: c.thread_id))


_get_io_stat = fast(
    "spdk_bdev_get_io_stat", None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
)


# -------------------------------------------------------------------------- histograms


async def enable_histogram(name: str) -> None:
    """Make SPDK keep a latency histogram of every I/O of the bdev ``name`` (all channels)."""
    await _histogram_switch(text(name, "name"), True)


async def disable_histogram(name: str) -> None:
    """Stop (and drop) the bdev's latency histogram."""
    await _histogram_switch(text(name, "name"), False)


async def _histogram_switch(name: str, on: bool) -> None:
    ptr = _bdev_ptr(name)
    await _bridge.submit(
        "spdk_bdev_histogram_enable",
        name,
        lambda key: g.spdk_bdev_histogram_enable(ptr, _bridge.histogram_status_cb, key, on),
    )


def _range(value: int, granularity: int) -> int:
    """The bucket range of ``value`` (``__spdk_histogram_data_get_bucket_range``)."""
    return max(value.bit_length() - granularity, 0)


def _bucket_bounds(rng: int, index: int, granularity: int) -> tuple[int, int]:
    """The lowest and highest value (inclusive) of bucket ``index`` of range ``rng``
    (the bucket layout of histogram_data.h: ranges 0 and 1 one value per bucket, each
    further range twice as wide)."""
    if rng == 0:
        return index, index
    lo = (1 << (rng + granularity - 1)) + (index << (rng - 1))
    return lo, lo + (1 << (rng - 1)) - 1


async def bdev_histogram(name: str) -> Histogram | None:
    """The bdev's latency histogram (ns), or ``None`` if it has none enabled.

    Read with the bdev's own histogram parameters (an RPC may have chosen them); values
    SPDK clamped into the first or last bucket (outside ``min_nsec``/``max_nsec``)
    count there.  ``SpdkError`` if SPDK fails to read it (``EFAULT``: a channel has
    none yet, while it is being enabled or after that failed)."""
    name = text(name, "name")
    ptr = _bdev_ptr(name)
    internal = ptr.contents.internal  # struct spdk_bdev (bdev_module.h), as SPDK's RPC reads it
    if not internal.histogram_enabled:
        return None
    gran = internal.histogram_granularity
    h = g.struct_spdk_histogram_data()
    h.granularity = gran
    h.min_range = _range(internal.histogram_min_val, gran)
    h.max_range = _range(max(internal.histogram_max_val, 1) - 1, gran)
    try:  # parameters no channel could allocate either (SPDK's RPC fails the same way)
        buckets = (ctypes.c_uint64 * ((h.max_range - h.min_range + 1) << gran))()
    except (MemoryError, OverflowError, ValueError) as exc:
        raise SpdkError(errno.ENOMEM, "spdk_bdev_histogram_get", name, str(exc)) from None
    h.bucket = ctypes.cast(buckets, type(h.bucket))
    op = _bridge.submit(
        "spdk_bdev_histogram_get",
        name,
        lambda key: g.spdk_bdev_histogram_get(ptr, ctypes.byref(h), _bridge.histogram_data_cb, key),
    )
    op.keep = (h, buckets)
    await op
    hz = g.spdk_get_ticks_hz()
    mask = (1 << gran) - 1
    out = []
    for i, count in enumerate(buckets):
        if count:
            lo, hi = _bucket_bounds(h.min_range + (i >> gran), i & mask, gran)  # in ticks
            out.append((ticks_to_ns(lo, hz), ticks_to_ns(hi, hz), count))
    return Histogram(tuple(out))


async def bdev_stats(
    name: str | None = None, *, channels: bool = True, histograms: bool = True
) -> tuple[BdevStats, ...]:
    """The bdev ``name``'s statistics (every bdev's if ``None``), with each channel's
    (``channels``) and the latency histogram where one is enabled (``histograms``).
    ``LookupError`` for a ``name`` that is no bdev.

    A histogram SPDK fails to read (``EFAULT`` while it is being enabled, or after it
    failed to be) counts as none.  Reading every bdev, a bdev that is deleted meanwhile
    or whose statistics SPDK fails to read is left out (logged at debug level): one
    bdev does not fail the whole answer."""
    out = []
    for n in _bdev_names(name):
        try:
            io = await _device_stat(n)
            chans = await _channel_stats(n) if channels else ()
            hist = await _histogram_or_none(n) if histograms else None
        except (LookupError, SpdkError) as exc:
            if name is not None:
                raise
            _log.debug("spdk_io.stats: bdev %s left out: %s", n, exc)
            continue
        out.append(BdevStats(n, io, chans, hist))
    return tuple(out)


async def _histogram_or_none(name: str) -> Histogram | None:
    try:
        return await bdev_histogram(name)
    except SpdkError as exc:
        _log.debug("spdk_io.stats: bdev %s's histogram left out: %s", name, exc)
        return None


# ----------------------------------------------------------------------- threads, loops

_VP = ctypes.c_void_p


class _PollerStats(ctypes.Structure):
    """``struct spdk_poller_stats`` (spdk_internal/thread.h, not installed)."""

    _fields_ = (("run_count", ctypes.c_uint64), ("busy_count", ctypes.c_uint64))


# The poller iteration of spdk_internal/thread.h (exported by libspdk_thread, as
# SPDK's thread_get_pollers RPC uses it; not in the generated layer).
_POLLER_LISTS = tuple(
    (
        kind,
        fast(f"spdk_thread_get_first_{kind}_poller", _VP, [_VP]),
        fast(f"spdk_thread_get_next_{kind}_poller", _VP, [_VP]),
    )
    for kind in ("active", "timed", "paused")
)
_poller_name = fast("spdk_poller_get_name", ctypes.c_char_p, [_VP])
_poller_id = fast("spdk_poller_get_id", ctypes.c_uint64, [_VP])
_poller_state = fast("spdk_poller_get_state_str", ctypes.c_char_p, [_VP])
_poller_period = fast("spdk_poller_get_period_ticks", ctypes.c_uint64, [_VP])
_poller_stats = fast("spdk_poller_get_stats", None, [_VP, _VP])


def _pollers(thread: int, hz: int) -> tuple[PollerStats, ...]:
    out = []
    stats = _PollerStats()
    for kind, first, after in _POLLER_LISTS:
        p = first(thread)
        while p:
            _poller_stats(p, ctypes.byref(stats))
            out.append(
                PollerStats(
                    name=(_poller_name(p) or b"").decode(errors="replace"),
                    id=_poller_id(p),
                    kind=kind,
                    state=(_poller_state(p) or b"").decode(),
                    run_count=stats.run_count,
                    busy_count=stats.busy_count,
                    period_ns=ticks_to_ns(_poller_period(p), hz),
                )
            )
            p = after(p)
    return tuple(out)


def _loop_stats(loop: Loop) -> LoopStats:
    return LoopStats(loop.name, loop.turns, loop.tasks_run, loop.ready_high_water, loop.id)


def _this_loop() -> Loop | None:
    try:
        return current_loop()
    except RuntimeError:
        return None


async def _visit_threads() -> tuple[tuple[ThreadStats, ...], tuple[LoopStats, ...]]:
    hz = g.spdk_get_ticks_hz()
    threads: list[ThreadStats] = []
    loops: dict[int, LoopStats] = {}

    def visit() -> None:
        t = g.spdk_get_thread()
        tstats = g.struct_spdk_thread_stats()
        g.spdk_thread_get_stats(ctypes.byref(tstats))
        name, tid = _thread_ident()
        loop = _this_loop()
        if loop is not None:
            loops[loop.id] = _loop_stats(loop)
        addr = ctypes.cast(t, ctypes.c_void_p).value
        threads.append(
            ThreadStats(
                name=name,
                id=tid,
                busy_ns=ticks_to_ns(tstats.busy_tsc, hz),
                idle_ns=ticks_to_ns(tstats.idle_tsc, hz),
                pollers=_pollers(addr or 0, hz),
                loop=loop.name if loop is not None else "",
                loop_id=loop.id if loop is not None else 0,
            )
        )

    current_thread()
    await _bridge.iterate(
        "spdk_for_each_thread",
        visit,
        lambda key: g.spdk_for_each_thread(
            _bridge.each_thread_cb, key, _bridge.each_thread_done_cb
        ),
    )
    return tuple(sorted(threads, key=lambda t: t.id)), tuple(loops.values())


async def thread_stats() -> tuple[ThreadStats, ...]:
    """Every SPDK thread's busy and idle time and its pollers, each read on its thread."""
    return (await _visit_threads())[0]


def loop_stats() -> LoopStats:
    """The counters of this OS thread's spdk_io loop (every loop's: :func:`snapshot`)."""
    return _loop_stats(current_loop())


# ---------------------------------------------------------------------------- NVMe-oF


def _target_names() -> list[str]:
    names = []
    t = g.spdk_nvmf_get_first_tgt()
    while t:
        names.append((g.spdk_nvmf_tgt_get_name(t) or b"").decode())
        t = g.spdk_nvmf_get_next_tgt(t)
    return names


_GROUP_FIELDS = (
    "admin_qpairs",
    "io_qpairs",
    "current_admin_qpairs",
    "current_io_qpairs",
    "pending_bdev_io",
    "completed_nvme_io",
)


def _poll_group(raw: dict[str, Any]) -> NvmfPollGroupStats:
    transports = {
        str(t.get("trtype", "?")): {k: v for k, v in t.items() if k != "trtype"}
        for t in raw.get("transports", ())
    }
    counts = {f: int(raw.get(f, 0)) for f in _GROUP_FIELDS}
    return NvmfPollGroupStats(name=str(raw.get("name", "")), transports=transports, **counts)


async def nvmf_stats() -> tuple[NvmfTargetStats, ...]:
    """Every NVMe-oF target's poll group statistics, from SPDK's ``nvmf_get_stats``
    (which visits each poll group on its thread).  On SPDK's app thread."""
    current_thread()
    out = []
    for name in _target_names():
        answer = await rpc.call("nvmf_get_stats", {"tgt_name": name})
        groups = tuple(_poll_group(pg) for pg in answer.get("poll_groups", ()))
        out.append(NvmfTargetStats(name, groups))
    return tuple(out)


# ---------------------------------------------------------------------------- snapshot


async def snapshot(
    *, channels: bool = True, histograms: bool = True, nvmf: bool = True
) -> Snapshot:
    """Everything: bdevs (with ``channels`` and ``histograms``), threads and their
    pollers, loops, and (``nvmf``, on SPDK's app thread) the NVMe-oF targets."""
    bdevs = await bdev_stats(channels=channels, histograms=histograms)
    threads, loops = await _visit_threads()
    targets = await nvmf_stats() if nvmf else ()
    return Snapshot(
        time=time.time(),
        ticks_hz=g.spdk_get_ticks_hz(),
        bdevs=bdevs,
        threads=threads,
        loops=loops,
        nvmf=targets,
    )
