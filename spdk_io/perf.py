"""``python -m spdk_io perf``: the Python counterpart of SPDK's bdevperf.

One task per queue slot drives an :class:`~spdk_io.bdev.IoSlot` on the app
thread, as application code would.  Offsets come from a precomputed table,
latencies go into a preallocated array, so what is measured is the binding.

    python -m spdk_io perf -q 128 -o 4096 -w randread -t 5 --bdev malloc --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spdk_io import bdev_modules as bm
from spdk_io.bdev import BdevDesc, IoSlot
from spdk_io.dma import DmaBuf
from spdk_io.env import run
from spdk_io.errors import SpdkError
from spdk_io.loop import gather, sleep, spawn
from spdk_io.thread import Poller

__all__ = ["PerfConfig", "PerfResult", "main", "run_perf"]

WORKLOADS = ("read", "write", "randread", "randwrite", "rw", "randrw")
_TABLE = 1 << 16  # precomputed offsets / read-write choices per worker, cycled


@dataclass(frozen=True)
class PerfConfig:
    queue_depth: int = 128
    io_size: int = 4096
    workload: str = "randread"
    read_pct: int = 50
    seconds: float = 5.0
    bdev: str = "malloc"
    json_config: str | None = None
    malloc_mib: int = 128
    seed: int = 1

    def validate(self) -> None:
        if not 1 <= self.queue_depth <= 4096:
            raise ValueError(f"queue depth must be 1..4096, got {self.queue_depth}")
        if self.io_size <= 0 or self.io_size % 512:
            raise ValueError(f"I/O size must be a positive multiple of 512, got {self.io_size}")
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {WORKLOADS}, got {self.workload!r}")
        if not 0 <= self.read_pct <= 100:
            raise ValueError(f"-M must be 0..100, got {self.read_pct}")
        if not self.seconds > 0:
            raise ValueError(f"time must be positive, got {self.seconds}")


@dataclass(frozen=True)
class PerfResult:
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
    max_lat_us: float
    io_errors: int


class _Stats:
    __slots__ = ("errors", "ios", "lat", "stop")

    def __init__(self) -> None:
        self.ios = 0
        self.errors = 0
        self.stop = False
        self.lat = array("Q")


async def _worker(
    slot: IoSlot, offsets: list[int], reads: list[bool], start: int, blocks: int, stats: _Stats
) -> None:
    read, write = slot.read_blocks, slot.write_blocks
    lat = stats.lat.append
    now = time.perf_counter_ns
    i = start
    mask = len(offsets) - 1
    while not stats.stop:
        t0 = now()
        try:
            await (read if reads[i & mask] else write)(offsets[i & mask], blocks)
        except SpdkError:
            stats.errors += 1
        lat(now() - t0)
        i += 1
    stats.ios += i - start


def _tables(cfg: PerfConfig, blocks: int, capacity: int) -> tuple[list[int], list[bool]]:
    """Offsets and read/write choices, shared by the workers (each starts elsewhere in them)."""
    rng = random.Random(cfg.seed)
    slots = capacity // blocks
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


async def _bdev(cfg: PerfConfig) -> tuple[str, bool]:
    """The bdev to test, and whether we created it."""
    if cfg.bdev == "malloc":
        block = 4096
        await bm.create_malloc("Perf_Malloc0", cfg.malloc_mib * (1 << 20) // block, block)
        return "Perf_Malloc0", True
    if cfg.bdev == "null":
        await bm.create_null("Perf_Null0", 1 << 20, 4096)
        return "Perf_Null0", True
    return cfg.bdev, False


async def _run(cfg: PerfConfig, progress: bool) -> PerfResult:
    name, created = await _bdev(cfg)
    stats = _Stats()
    try:
        with BdevDesc.open(name, write=cfg.workload not in ("read", "randread")) as desc:
            bs = desc.block_size
            if cfg.io_size % bs:
                raise ValueError(
                    f"I/O size {cfg.io_size} is not a multiple of {name}'s block size {bs}"
                )
            blocks = cfg.io_size // bs
            bufs = [
                DmaBuf.alloc(cfg.io_size, max(4096, desc.bdev.required_alignment))
                for _ in range(cfg.queue_depth)
            ]
            slots = [desc.slot(b) for b in bufs]
            try:
                offsets, reads = _tables(cfg, blocks, desc.num_blocks)
                workers = [
                    _worker(
                        s, offsets, reads, _start(cfg, i, blocks, desc.num_blocks), blocks, stats
                    )
                    for i, s in enumerate(slots)
                ]
                reporter = _Progress(stats, cfg.seconds) if progress else None
                t0 = time.perf_counter()
                task = spawn(gather(*workers), name="perf-workers")
                await sleep(cfg.seconds)
                stats.stop = True
                await task
                elapsed = time.perf_counter() - t0
                if reporter is not None:
                    reporter.close()
            finally:
                for s in slots:
                    s.close()
                for b in bufs:
                    b.free()
    finally:
        if created:
            await (bm.delete_malloc(name) if cfg.bdev == "malloc" else bm.delete_null(name))
    return _result(cfg, name, stats, elapsed)


def _result(cfg: PerfConfig, name: str, stats: _Stats, elapsed: float) -> PerfResult:
    lat = sorted(stats.lat)
    n = len(lat)

    def pct(p: float) -> float:
        return lat[min(n - 1, int(p * n))] / 1000 if n else 0.0

    return PerfResult(
        bdev=name,
        workload=cfg.workload,
        queue_depth=cfg.queue_depth,
        io_size=cfg.io_size,
        seconds=round(elapsed, 3),
        ios=stats.ios,
        iops=round(stats.ios / elapsed, 1),
        mib_s=round(stats.ios * cfg.io_size / elapsed / (1 << 20), 2),
        avg_lat_us=round(sum(lat) / n / 1000, 3) if n else 0.0,
        p50_lat_us=round(pct(0.50), 3),
        p99_lat_us=round(pct(0.99), 3),
        max_lat_us=round(lat[-1] / 1000, 3) if n else 0.0,
        io_errors=stats.errors,
    )


class _Progress:
    """A live progress line on stderr, once a second."""

    def __init__(self, stats: _Stats, seconds: float) -> None:
        self.stats = stats
        self.t0 = time.perf_counter()
        self.last = (self.t0, 0)
        self.poller = Poller(self.tick, period_us=1_000_000, name="perf_progress")

    def tick(self) -> bool:
        now = time.perf_counter()
        done = len(self.stats.lat)
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
    """Bring SPDK up, run the workload, tear down, return the numbers."""
    cfg.validate()
    config = Path(cfg.json_config) if cfg.json_config else None
    return run(_run(cfg, progress), config=config, name="spdk_io_perf", mem_size_mb=1024)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spdk_io perf", description="bdevperf in Python")
    p.add_argument("-q", type=int, default=128, dest="queue_depth", help="queue depth")
    p.add_argument("-o", type=int, default=4096, dest="io_size", help="I/O size in bytes")
    p.add_argument("-w", default="randread", dest="workload", choices=WORKLOADS)
    p.add_argument("-M", type=int, default=50, dest="read_pct", help="read percentage for rw")
    p.add_argument("-t", type=float, default=5.0, dest="seconds", help="run time in seconds")
    p.add_argument("--bdev", default="malloc", help="malloc, null, or the name of a bdev")
    p.add_argument("--json-config", default=None, help="SPDK JSON config to load first")
    p.add_argument("--malloc-mib", type=int, default=128, help="size of the malloc bdev")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    opts: dict[str, Any] = vars(args)
    as_json = opts.pop("json")
    cfg = PerfConfig(**opts)
    try:
        result = run_perf(cfg, progress=sys.stderr.isatty() and not as_json)
    except (ValueError, LookupError, SpdkError) as exc:
        print(f"perf: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(asdict(result)))
    else:
        r = result
        print(
            f"{r.bdev} {r.workload} qd={r.queue_depth} {r.io_size} B: {r.iops:,.0f} IOPS, "
            f"{r.mib_s:,.1f} MiB/s, avg {r.avg_lat_us:.2f} us, p99 {r.p99_lat_us:.2f} us, "
            f"errors {r.io_errors}"
        )
    return 0
