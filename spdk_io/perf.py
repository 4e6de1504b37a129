"""``python -m spdk_io perf``: the Python counterpart of SPDK's bdevperf and spdk_nvme_perf.

On a bdev, an :class:`~spdk_io.bdev.IoStream` with one slot per queue entry: each
completion resubmits its slot's next I/O directly (no task switch per I/O), as
bdevperf does in C.  With ``-r TRID``, one task per queue slot drives an
:class:`~spdk_io.nvme.NvmeSlot` on an NVMe queue pair of the controller at TRID (its
first active namespace), as ``spdk_nvme_perf -r`` does.  Offsets come
from a precomputed table and latencies go into a fixed-size histogram
(:mod:`spdk_io.stats`: constant memory however long the run), so what is measured is
the binding.

Exit status: 0, 2 for bad arguments (one line on stderr), 130 on Ctrl-C.

    python -m spdk_io perf -q 128 -o 4096 -w randread -t 5 --bdev malloc --json
    python -m spdk_io perf -q 128 -o 4096 -w randread -t 5 \
        -r 'trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:cnode1'
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from spdk_io import bdev_modules as bm
from spdk_io import cores
from spdk_io._cli import Parser, parse
from spdk_io._validate import duration, integer, text
from spdk_io.bdev import BdevDesc, StreamSlot
from spdk_io.dma import DmaBuf
from spdk_io.env import min_mem_size_mb, parse_core_mask, run
from spdk_io.errors import CoreError, SpdkError
from spdk_io.loop import Op, gather, spawn, wait, wait_for
from spdk_io.nvme import Controller, QpairOptions, TransportId
from spdk_io.stats import BUCKETS, LatencyHistogram, bucket_index
from spdk_io.thread import Poller

__all__ = [
    "WORKLOADS",
    "PerfConfig",
    "PerfResult",
    "Workload",
    "core_job",
    "main",
    "run_perf",
    "run_perf_cores",
]

Workload = Literal["read", "write", "randread", "randwrite", "rw", "randrw"]
WORKLOADS: tuple[Workload, ...] = get_args(Workload)
_TABLE = 1 << 16  # precomputed offsets / read-write choices per worker, cycled
#: The range of _Stats.fine: from 2 us (where buckets are 16 ns wide or more, so an
#: 8 ns step never straddles two) to 4 ms.
_FINE_LO, _FINE_HI = 2048, 1 << 22

MIB = 1 << 20
#: Memory of the tool's SPDK environment (``mem_size_mb``).
ENV_MEM_MIB = 1024
#: How much of it I/O buffers plus the malloc bdev may use: SPDK's own pools take
#: the rest (about 640 MiB is left for us in a 1024 MiB env; this keeps a margin).
DMA_BUDGET_MIB = 576
#: Each buffer is 4 KiB aligned, which costs up to 4 KiB more per buffer.
BUF_ALIGN = 4096
MAX_QUEUE_DEPTH = 4096
#: The longest run ``-t`` accepts (one week).
MAX_SECONDS = 7 * 24 * 3600
_MALLOC_BLOCK = 4096
_NULL_BLOCKS, _NULL_BLOCK = 1 << 20, 4096
#: Request objects of perf's NVMe queue pair, at least (SPDK's default).
_NVME_REQUESTS = 512


@dataclass(frozen=True)
class PerfConfig:
    """What to run.  :meth:`validate` checks everything that can be checked before SPDK starts."""

    queue_depth: int = 128
    io_size: int = 4096
    workload: Workload = "randread"
    read_pct: int = 50
    seconds: float = 5.0
    bdev: str = "malloc"
    json_config: str | None = None
    malloc_mib: int = 128
    seed: int = 1
    #: An NVMe transport ID (``-r``): drive its controller's first namespace, not a bdev.
    trid: str | None = None

    def validate(self) -> None:
        """Raise ``TypeError``/``ValueError`` naming the argument (and its flag) if any is bad."""
        qd = integer(self.queue_depth, "queue_depth (-q)", 1, MAX_QUEUE_DEPTH)
        io = integer(self.io_size, "io_size (-o)", 512)
        if io % 512:
            raise ValueError(f"io_size (-o) must be a multiple of 512, got {io}")
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload (-w) must be one of {WORKLOADS}, got {self.workload!r}")
        integer(self.read_pct, "read_pct (-M)", 0, 100)
        try:
            seconds = duration(self.seconds, "seconds (-t)")  # TypeError for a non-number
        except ValueError:  # NaN, negative
            seconds = math.nan
        if not 0 < seconds <= MAX_SECONDS:  # duration() maps inf and 1e300 to inf
            raise ValueError(
                f"seconds (-t) must be a finite number of seconds, > 0 and <= {MAX_SECONDS} "
                f"(one week), got {self.seconds!r}"
            )
        text(self.bdev, "bdev (--bdev)")
        if self.json_config is not None:
            text(self.json_config, "json_config (--json-config)")
        malloc = integer(self.malloc_mib, "malloc_mib (--malloc-mib)", 1, DMA_BUDGET_MIB)
        integer(self.seed, "seed")
        if self.trid is not None:
            self.transport_id()
            if self.bdev != "malloc":
                raise ValueError("trid (-r) and bdev (--bdev) exclude each other: pick one")
        # What can be known of the memory and the bdev before SPDK starts.
        bufs_mib = math.ceil(qd * (io + BUF_ALIGN) / MIB)
        bdev_mib = malloc if self.bdev == "malloc" and self.trid is None else 0
        if bufs_mib + bdev_mib > DMA_BUDGET_MIB:
            plus = f" plus {bdev_mib} MiB for the malloc bdev (--malloc-mib)" if bdev_mib else ""
            raise ValueError(
                f"-q {qd} x -o {io} needs {bufs_mib} MiB of DMA buffers{plus}, over the limit "
                f"of {DMA_BUDGET_MIB} MiB (perf's SPDK env has {ENV_MEM_MIB} MiB; SPDK's own "
                "pools use the rest): lower -q or -o"
            )
        if self.bdev == "malloc" and self.trid is None and io > malloc * MIB:
            raise ValueError(
                f"io_size (-o) {io} is larger than the malloc bdev (--malloc-mib {malloc} MiB)"
            )
        if self.bdev == "null" and io > _NULL_BLOCKS * _NULL_BLOCK:
            raise ValueError(f"io_size (-o) {io} is larger than the null bdev (4 GiB)")

    def transport_id(self) -> TransportId:
        """``-r`` parsed (``ValueError`` naming it if it is malformed)."""
        try:
            return TransportId.parse(text(self.trid, "trid (-r)"))
        except ValueError as exc:
            raise ValueError(f"trid (-r): {exc}") from None

    def config(self) -> dict[str, Any] | None:
        """The ``--json-config`` file's content (a JSON object), read and checked now."""
        path = self.json_config
        if path is None:
            return None
        what = "json_config (--json-config)"
        try:
            content = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"{what}: cannot read {path!r}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{what}: {path!r} is not text: {exc.reason}") from None
        try:
            obj = json.loads(content)
        except ValueError as exc:
            raise ValueError(f"{what}: {path!r} is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError(
                f"{what}: {path!r} must hold a JSON object (SPDK's config format), "
                f"not a {type(obj).__name__}"
            )
        return obj


@dataclass(frozen=True)
class PerfResult:
    """One run's numbers; latencies in microseconds (percentiles within 0.8 %, the maximum
    within 8 ns; never under)."""

    bdev: str
    workload: str
    queue_depth: int
    io_size: int
    seconds: float
    ios: int
    iops: float
    mib_s: float
    avg_lat_us: float
    p50_lat_us: float
    p99_lat_us: float
    p999_lat_us: float
    max_lat_us: float
    io_errors: int


class _Stats:
    """What the workers share: per-bucket latency counts (constant size), totals, stop flag."""

    __slots__ = ("counts", "errors", "fine", "ios", "max", "stop", "total")

    def __init__(self) -> None:
        self.ios = 0
        self.errors = 0
        self.stop = False
        self.counts = [0] * BUCKETS  # indexed by spdk_io.stats.bucket_index(ns)
        #: Latencies from _FINE_LO up to _FINE_HI ns in 8 ns steps (``fine[ns >> 3]``):
        #: cheaper per I/O than bucket_index, and each step lies inside one bucket.
        self.fine = [0] * (_FINE_HI >> 3)
        self.total = 0
        self.max = 0

    def fine_max(self) -> int:
        """The top of the highest step of ``fine`` that counted something (0 if none)."""
        fine = self.fine
        for k in range(len(fine) - 1, -1, -1):
            if fine[k]:
                return (k << 3) + 7
        return 0

    def completed(self) -> int:
        """The I/Os counted in the histogram so far."""
        return sum(self.counts) + sum(self.fine)

    def bucket_counts(self) -> list[int]:
        """Per-bucket counts with ``fine`` folded in (what another core's numbers add to)."""
        counts = list(self.counts)
        for k, c in enumerate(self.fine):
            if c:
                counts[bucket_index(k << 3)] += c
        return counts

    def histogram(self) -> LatencyHistogram:
        return LatencyHistogram.from_buckets(self.bucket_counts(), total=self.total, max=self.max)


class _Slot(Protocol):
    """What a worker drives: a bdev :class:`IoSlot` or an NVMe slot."""

    def read_blocks(self, lba: int, num_blocks: int, /) -> Op[None]: ...
    def write_blocks(self, lba: int, num_blocks: int, /) -> Op[None]: ...
    def close(self) -> None: ...


async def _worker(
    slot: _Slot, offsets: list[int], reads: list[bool], start: int, blocks: int, stats: _Stats
) -> None:
    read, write = slot.read_blocks, slot.write_blocks
    counts = stats.counts
    now = time.perf_counter_ns
    i = start
    mask = len(offsets) - 1
    total = longest = 0
    try:
        while not stats.stop:
            j = i & mask
            t0 = now()
            try:
                await (read if reads[j] else write)(offsets[j], blocks)
            except SpdkError:  # NvmeError too
                stats.errors += 1
            d = now() - t0
            # counts[spdk_io.stats.bucket_index(d)] += 1, inlined (a call per I/O costs more)
            e = d.bit_length() - 8
            if e > 0:
                counts[(e << 7) + (d >> e)] += 1
            else:
                counts[d] += 1
            total += d
            if d > longest:
                longest = d
            i += 1
    finally:
        stats.ios += i - start
        stats.total += total
        if longest > stats.max:
            stats.max = longest


def _tables(cfg: PerfConfig, blocks: int, capacity: int) -> tuple[list[int], list[bool]]:
    """Offsets and read/write choices, shared by the workers (each starts elsewhere in them)."""
    rng = random.Random(cfg.seed)
    slots = capacity // blocks  # >= 1: _geometry checked
    if cfg.workload.startswith("rand"):
        offsets = [rng.randrange(slots) * blocks for _ in range(_TABLE)]
    else:  # sequential
        offsets = [(k % slots) * blocks for k in range(_TABLE)]
    if cfg.workload in ("read", "randread"):
        reads = [True] * _TABLE
    elif cfg.workload in ("write", "randwrite"):
        reads = [False] * _TABLE
    else:
        reads = [rng.randrange(100) < cfg.read_pct for _ in range(_TABLE)]
    return offsets, reads


def _start(cfg: PerfConfig, worker: int, blocks: int, capacity: int) -> int:
    """Where a worker starts in the tables: sequential workers walk their own stripes."""
    if cfg.workload.startswith("rand"):
        return worker * (_TABLE // cfg.queue_depth)
    slots = capacity // blocks
    return (worker * slots // cfg.queue_depth) % _TABLE if slots >= cfg.queue_depth else 0


def _geometry(
    cfg: PerfConfig, name: str, block_size: int, num_blocks: int, max_io: int | None = None
) -> int:
    """Blocks per I/O, once the bdev's geometry is known; ``ValueError`` naming ``-o``."""
    if max_io is not None and cfg.io_size > max_io:
        raise ValueError(
            f"io_size (-o) {cfg.io_size} is more than one command of {name} transfers ({max_io})"
        )
    if cfg.io_size % block_size:
        raise ValueError(
            f"io_size (-o) {cfg.io_size} is not a multiple of {name}'s block size {block_size}"
        )
    blocks = cfg.io_size // block_size
    if blocks > num_blocks:
        raise ValueError(
            f"io_size (-o) {cfg.io_size} is larger than bdev {name} "
            f"({num_blocks} blocks of {block_size} bytes)"
        )
    return blocks


async def _bdev(cfg: PerfConfig) -> tuple[str, bool]:
    """The bdev to test, and whether we created it."""
    if cfg.bdev == "malloc":
        await bm.create_malloc("Perf_Malloc0", cfg.malloc_mib * MIB // _MALLOC_BLOCK, _MALLOC_BLOCK)
        return "Perf_Malloc0", True
    if cfg.bdev == "null":
        await bm.create_null("Perf_Null0", _NULL_BLOCKS, _NULL_BLOCK)
        return "Perf_Null0", True
    return cfg.bdev, False


async def _run(cfg: PerfConfig, progress: bool) -> PerfResult:
    if cfg.trid is not None:
        name, stats, elapsed = await _on_nvme(cfg, progress)
        return _result(cfg, name, stats, elapsed)
    name, created = await _bdev(cfg)
    try:
        stats, elapsed = await _on_bdev(cfg, name, progress)
    except BaseException:
        if created:
            with suppress(Exception):  # the first error is the one that propagates
                await _delete(cfg, name)
        raise
    if created:
        await _delete(cfg, name)
    return _result(cfg, name, stats, elapsed)


async def _delete(cfg: PerfConfig, name: str) -> None:
    await (bm.delete_malloc(name) if cfg.bdev == "malloc" else bm.delete_null(name))


async def _on_bdev(cfg: PerfConfig, name: str, progress: bool) -> tuple[_Stats, float]:
    """Open ``name``, allocate one buffer per slot, measure; everything is released after."""
    try:
        desc = BdevDesc.open(name, write=cfg.workload not in ("read", "randread"))
    except LookupError as exc:
        raise LookupError(f"bdev (--bdev): {exc}") from None
    with desc:
        blocks = _geometry(cfg, name, desc.block_size, desc.num_blocks)
        align = max(BUF_ALIGN, desc.bdev.required_alignment)
        bufs = _buffers(cfg, align)
        try:
            return await _stream(cfg, desc, bufs, blocks, progress)
        finally:
            for b in bufs:
                if not b.pins:  # (pinned: I/O still in flight after an interrupted drain)
                    b.free()


def _buffers(cfg: PerfConfig, align: int) -> list[DmaBuf]:
    """One I/O buffer per queue slot (all or none); ``ValueError`` if they do not fit."""
    bufs: list[DmaBuf] = []
    try:
        for _ in range(cfg.queue_depth):
            bufs.append(DmaBuf.alloc(cfg.io_size, align))
    except MemoryError as exc:
        for b in bufs:
            b.free()
        raise ValueError(
            f"-q {cfg.queue_depth} x -o {cfg.io_size} does not fit in perf's "
            f"SPDK memory ({exc}): lower -q or -o"
        ) from None
    return bufs


async def _stream(
    cfg: PerfConfig, desc: BdevDesc, bufs: list[DmaBuf], blocks: int, progress: bool
) -> tuple[_Stats, float]:
    """Run the workload on an :class:`IoStream` over ``bufs`` for ``cfg.seconds``; every
    I/O has completed on return (the stream is closed)."""
    stats = _Stats()
    offsets, reads = _tables(cfg, blocks, desc.num_blocks)
    mask = len(offsets) - 1
    counts, fine = stats.counts, stats.fine
    lo, hi = _FINE_LO, _FINE_HI
    now = time.perf_counter_ns
    starts = [0] * len(bufs)
    pos = longest = 0
    stop = False
    mixed = cfg.workload in ("rw", "randrw")
    # Per I/O: one clock read, the latency into the histogram, the next offset.  The sum
    # of the latencies needs no addition per I/O: a slot's next I/O starts when its last
    # one completes (starts[i] = t), so each slot's latencies add up to its last
    # completion minus its first start.  The longest latency is kept exactly outside the
    # fine table, and within its 8 ns steps (never under) inside it.

    def record(slot: StreamSlot, ok: bool) -> int:
        """Account one completion (latency into the histogram); the next table index."""
        nonlocal pos, longest
        t = now()
        i = slot.index
        d = t - starts[i]
        starts[i] = t
        if lo <= d < hi:
            fine[d >> 3] += 1
        else:  # counts[spdk_io.stats.bucket_index(d)] += 1, inlined
            e = d.bit_length() - 8
            counts[(e << 7) + (d >> e) if e > 0 else d] += 1
            if d > longest:
                longest = d
        if not ok:
            stats.errors += 1
        j = pos
        pos = j + 1
        return j & mask

    def same_kind(slot: StreamSlot, ok: bool) -> int | None:
        # record(), inlined: this is the whole per-I/O cost of the tool.
        nonlocal pos, longest
        t = now()
        i = slot.index
        d = t - starts[i]
        starts[i] = t
        if lo <= d < hi:
            fine[d >> 3] += 1
        else:
            e = d.bit_length() - 8
            counts[(e << 7) + (d >> e) if e > 0 else d] += 1
            if d > longest:
                longest = d
        if not ok:
            stats.errors += 1
        if stop:
            return None
        j = pos
        pos = j + 1
        return offsets[j & mask]

    def mixed_kind(slot: StreamSlot, ok: bool) -> None:
        j = record(slot, ok)
        if not stop:
            (slot.read_blocks if reads[j] else slot.write_blocks)(offsets[j], blocks)

    # Completions so far: every one advanced ``pos`` once, after the first submissions
    # (summing the fine table instead would stall the I/O ~2.5 ms a second).
    stream = desc.stream(bufs, mixed_kind if mixed else same_kind)
    reporter = _Progress(stats, lambda: pos - len(bufs)) if progress else None
    t0 = time.perf_counter()
    try:
        for slot in stream.slots:
            starts[slot.index] = now()
            j = pos & mask
            pos += 1
            (slot.read_blocks if reads[j] else slot.write_blocks)(offsets[j], blocks)
        first = sum(starts)
        with suppress(TimeoutError):
            await wait_for(stream.wait(), cfg.seconds)  # early only if it fails
        stop = True
        await stream.wait()
    except BaseException:
        # Interrupted or failed: let the in-flight I/Os finish before the stream closes.
        stop = True
        with suppress(BaseException):  # the first error is the one that propagates
            await stream.aclose()
        raise
    finally:
        if reporter is not None:
            reporter.close()
        if not stream.inflight:
            stream.close()
        # else (the drain was cut short): SPDK still holds I/O, so the stream stays open
        # with its buffers pinned; the error that propagates is the original one.
    stats.ios = stats.completed()
    stats.total = sum(starts) - first
    stats.max = max(longest, stats.fine_max())
    return stats, time.perf_counter() - t0


async def _on_nvme(cfg: PerfConfig, progress: bool) -> tuple[str, _Stats, float]:
    """Connect to ``-r``, open a queue pair on its first namespace, measure; everything
    is released (the controller detached) after."""
    ctrlr = await Controller.connect(cfg.transport_id())
    async with ctrlr:
        ids = ctrlr.namespace_ids()
        if not ids:
            raise LookupError(f"trid (-r): {ctrlr.trid} has no active namespace")
        ns = ctrlr.namespace(ids[0])
        name = str(ns)
        blocks = _geometry(cfg, name, ns.sector_size, ns.num_sectors, ctrlr.max_transfer_bytes)
        # As spdk_nvme_perf: at least a request object per command in flight.
        opts = QpairOptions(io_queue_requests=max(_NVME_REQUESTS, cfg.queue_depth))
        with await ctrlr.alloc_qpair(opts) as qp:

            def slot(buf: DmaBuf) -> _Slot:
                return qp.slot(ns, buf)

            stats, elapsed = await _with_slots(
                cfg, slot, BUF_ALIGN, blocks, ns.num_sectors, progress
            )
    return name, stats, elapsed


async def _with_slots(
    cfg: PerfConfig,
    make_slot: Callable[[DmaBuf], _Slot],
    align: int,
    blocks: int,
    capacity: int,
    progress: bool,
) -> tuple[_Stats, float]:
    """One buffer and slot per queue slot, measured; all released after."""
    bufs: list[DmaBuf] = []
    slots: list[_Slot] = []
    try:
        for _ in range(cfg.queue_depth):
            try:
                bufs.append(DmaBuf.alloc(cfg.io_size, align))
            except MemoryError as exc:
                raise ValueError(
                    f"-q {cfg.queue_depth} x -o {cfg.io_size} does not fit in perf's "
                    f"SPDK memory ({exc}): lower -q or -o"
                ) from None
            slots.append(make_slot(bufs[-1]))
        return await _measure(cfg, slots, blocks, capacity, progress)
    finally:
        for s in slots:
            s.close()
        for b in bufs:
            b.free()


async def _measure(
    cfg: PerfConfig, slots: list[_Slot], blocks: int, num_blocks: int, progress: bool
) -> tuple[_Stats, float]:
    """Run one worker per slot for ``cfg.seconds``; every I/O has completed on return."""
    stats = _Stats()
    offsets, reads = _tables(cfg, blocks, num_blocks)
    workers = [
        _worker(s, offsets, reads, _start(cfg, i, blocks, num_blocks), blocks, stats)
        for i, s in enumerate(slots)
    ]
    # The workers add their latencies to the buckets as they go (no fine table here).
    reporter = _Progress(stats, lambda: sum(stats.counts)) if progress else None
    t0 = time.perf_counter()
    task = spawn(gather(*workers), name="perf-workers")
    try:
        with suppress(TimeoutError):
            await wait_for(task, cfg.seconds)  # returns early only if a worker fails
        stats.stop = True
        await task
    except BaseException:
        # Interrupted or failed: let the in-flight I/Os finish before the slots close.
        stats.stop = True
        if not task.done():
            with suppress(BaseException):  # the first error is the one that propagates
                await task
        raise
    finally:
        if reporter is not None:
            reporter.close()
    return stats, time.perf_counter() - t0


def _result(cfg: PerfConfig, name: str, stats: _Stats, elapsed: float) -> PerfResult:
    h = stats.histogram()

    def us(ns: float) -> float:
        return round(ns / 1000, 3)

    return PerfResult(
        bdev=name,
        workload=cfg.workload,
        queue_depth=cfg.queue_depth,
        io_size=cfg.io_size,
        seconds=round(elapsed, 3),
        ios=stats.ios,
        iops=round(stats.ios / elapsed, 1),
        mib_s=round(stats.ios * cfg.io_size / elapsed / MIB, 2),
        avg_lat_us=us(h.mean),
        p50_lat_us=us(h.percentile(50)),
        p99_lat_us=us(h.percentile(99)),
        p999_lat_us=us(h.percentile(99.9)),
        max_lat_us=us(h.max),
        io_errors=stats.errors,
    )


class _Progress:
    """A live progress line on stderr, once a second."""

    def __init__(self, stats: _Stats, done: Callable[[], int]) -> None:
        self.stats = stats
        self.done = done  # I/Os completed so far: cheap (it runs on the I/O thread)
        self.t0 = time.perf_counter()
        self.last = (self.t0, 0)
        self.poller = Poller(self.tick, period_us=1_000_000, name="perf_progress")

    def tick(self) -> bool:
        now = time.perf_counter()
        done = self.done()
        t_last, n_last = self.last
        self.last = (now, done)
        iops = (done - n_last) / (now - t_last)
        sys.stderr.write(
            f"\r{now - self.t0:6.1f} s  {iops:12,.0f} IOPS  errors {self.stats.errors}"
        )
        sys.stderr.flush()
        return False

    def close(self) -> None:
        self.poller.unregister()
        sys.stderr.write("\n")


def run_perf(cfg: PerfConfig, progress: bool = False) -> PerfResult:
    """Bring SPDK up, run the workload, tear down, return the numbers.

    Bad configuration raises ``TypeError``/``ValueError`` naming the argument
    before SPDK starts (or, for what depends on the bdev, before any I/O).
    """
    cfg.validate()
    config = cfg.config()
    return run(_run(cfg, progress), config=config, name="spdk_io_perf", mem_size_mb=ENV_MEM_MIB)


# -- several cores (spdk_io.cores): one measuring job per core, as bdevperf -m does ----------

#: What :func:`core_job` sends back: seconds, I/Os, errors, total and longest latency
#: (ns), and the latency histogram's bucket counts.
CoreNumbers = tuple[float, int, int, int, int, list[int]]


async def core_job(cfg: PerfConfig, name: str) -> CoreNumbers:
    """One core's share of :func:`run_perf_cores`, placed with ``spdk_io.cores.run_on``:
    the single-core measurement of bdev ``name``, on this core, as picklable numbers."""
    stats, elapsed = await _on_bdev(cfg, name, False)
    h = stats.histogram()  # the maximum as the histogram reports it (fine steps included)
    return elapsed, stats.ios, stats.errors, stats.total, h.max, stats.bucket_counts()


def _stats_of(numbers: list[CoreNumbers]) -> tuple[_Stats, float]:
    """The numbers of one or more cores as one :class:`_Stats` and the longest run time."""
    stats = _Stats()
    for _, ios, errors, total, longest, counts in numbers:
        stats.ios += ios
        stats.errors += errors
        stats.total += total
        stats.max = max(stats.max, longest)
        stats.counts = [a + b for a, b in zip(stats.counts, counts, strict=True)]
    return stats, max(n[0] for n in numbers)


async def _run_cores(cfg: PerfConfig) -> tuple[list[tuple[int, PerfResult]], PerfResult]:
    name, created = await _bdev(cfg)
    calls: list[Op[CoreNumbers]] = []
    try:
        every = cores.running()
        try:
            for i, c in enumerate(every):
                calls.append(cores.run_on(c, core_job, replace(cfg, seed=cfg.seed + i), name))
        except BaseException:  # a later core refused: the calls placed go before the bdev
            await _give_up(calls)
            raise
        numbers: list[CoreNumbers] = await gather(*calls)
    finally:
        if created:
            with suppress(Exception):  # an error of the run is the one that propagates
                await _delete(cfg, name)
    pairs = zip(every, numbers, strict=True)
    per_core = [(c, _result(cfg, name, *_stats_of([n]))) for c, n in pairs]
    return per_core, _result(cfg, name, *_stats_of(numbers))


async def _give_up(calls: list[Op[Any]]) -> None:
    """Cancel calls placed on cores that will not be awaited, until each has given up."""

    async def waiting(op: Op[Any]) -> None:
        await op

    waiters = [spawn(waiting(op), "perf: give up a core's job") for op in calls]
    for waiter in waiters:
        waiter.cancel()
    await wait(waiters)


def run_perf_cores(
    cfg: PerfConfig, core_mask: str
) -> tuple[list[tuple[int, PerfResult]], PerfResult]:
    """Run the workload on every core of ``core_mask`` at once (``-q`` per core, one
    bdev), as bdevperf ``-m`` does; each core's result and the total.  Needs Python 3.13+
    for more than one core (:mod:`spdk_io.cores`); bad arguments raise before SPDK starts."""
    cfg.validate()
    n = len(parse_core_mask(core_mask, "core_mask (-m)"))
    if cfg.trid is not None:
        raise ValueError("trid (-r) runs on one core: leave out core_mask (-m)")
    bufs_mib = math.ceil(cfg.queue_depth * (cfg.io_size + BUF_ALIGN) / MIB) * n
    if bufs_mib > DMA_BUDGET_MIB // 2:
        raise ValueError(
            f"-q {cfg.queue_depth} x -o {cfg.io_size} on {n} cores needs {bufs_mib} MiB of "
            "DMA buffers: lower -q or -o"
        )
    config = cfg.config()
    mem = ENV_MEM_MIB + min_mem_size_mb(n) - min_mem_size_mb(1)
    return run(
        _run_cores(cfg), config=config, name="spdk_io_perf", core_mask=core_mask, mem_size_mb=mem
    )


def _summary(r: PerfResult) -> str:
    return (
        f"{r.bdev} {r.workload} qd={r.queue_depth} {r.io_size} B: {r.iops:,.0f} IOPS, "
        f"{r.mib_s:,.1f} MiB/s, avg {r.avg_lat_us:.2f} us, p50 {r.p50_lat_us:.2f} us, "
        f"p99 {r.p99_lat_us:.2f} us, p99.9 {r.p999_lat_us:.2f} us, "
        f"max {r.max_lat_us:.2f} us, errors {r.io_errors}"
    )


def _main_cores(cfg: PerfConfig, core_mask: str, as_json: bool) -> int:
    try:
        per_core, total = run_perf_cores(cfg, core_mask)
    except (TypeError, ValueError, LookupError, CoreError) as exc:
        print(f"perf: {exc}", file=sys.stderr)
        return 2
    if as_json:
        doc = {"cores": {c: asdict(r) for c, r in per_core}, "total": asdict(total)}
        print(json.dumps(doc))
    else:
        for c, r in per_core:
            print(f"core {c}: {_summary(r)}")
        print(f"total: {_summary(total)}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m spdk_io perf", description="bdevperf in Python")
    p.add_argument(
        "-q", type=int, default=128, dest="queue_depth", help=f"queue depth (1..{MAX_QUEUE_DEPTH})"
    )
    p.add_argument(
        "-o",
        type=int,
        default=4096,
        dest="io_size",
        help="I/O size in bytes (a multiple of the bdev's block size)",
    )
    p.add_argument("-w", default="randread", dest="workload", choices=WORKLOADS)
    p.add_argument(
        "-M", type=int, default=50, dest="read_pct", help="read percentage for rw/randrw (0..100)"
    )
    p.add_argument(
        "-t",
        type=float,
        default=5.0,
        dest="seconds",
        help=f"run time in seconds (> 0, at most {MAX_SECONDS})",
    )
    p.add_argument("--bdev", default="malloc", help="malloc, null, or the name of a bdev")
    p.add_argument(
        "-r",
        default=None,
        dest="trid",
        metavar="TRID",
        help="an NVMe transport ID ('trtype:TCP adrfam:IPv4 traddr:... trsvcid:... "
        "subnqn:...'): drive its first namespace directly, as spdk_nvme_perf -r does",
    )
    p.add_argument("--json-config", default=None, help="SPDK JSON config to load first")
    p.add_argument("--malloc-mib", type=int, default=128, help="size of the malloc bdev in MiB")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.add_argument(
        "-m",
        default=None,
        dest="core_mask",
        metavar="MASK",
        help="core mask ('0x3'): one job per core, each with -q slots, reported per core "
        "and in total (Python 3.13+)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (one line on stderr) for bad arguments, 130 on Ctrl-C."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("perf: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    args = parse(_parser(), argv, "perf")
    if isinstance(args, int):
        return args
    opts: dict[str, Any] = vars(args)
    as_json = opts.pop("json")
    core_mask = opts.pop("core_mask")
    cfg = PerfConfig(**opts)
    if core_mask is not None:
        return _main_cores(cfg, core_mask, as_json)
    try:
        result = run_perf(cfg, progress=sys.stderr.isatty() and not as_json)
    except (TypeError, ValueError, LookupError) as exc:
        print(f"perf: {exc}", file=sys.stderr)
        return 2
    except SpdkError as exc:
        where = "json_config (--json-config): " if exc.op.startswith("spdk_subsystem_load") else ""
        print(f"perf: {where}{exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(asdict(result)))
    else:
        print(_summary(result))
    return 0
