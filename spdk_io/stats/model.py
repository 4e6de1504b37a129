"""The snapshot types: frozen dataclasses of plain values (ints, strs, tuples, dicts).

Times and latencies are in nanoseconds (SPDK's ticks converted with its tick rate).
Counters are cumulative since SPDK started counting, as SPDK's RPCs report them.
``to_dict()`` (``dataclasses.asdict``) and :func:`to_json` export any of them.
SPDK-free: building, comparing and exporting snapshots loads nothing of SPDK.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

__all__ = [
    "BdevStats",
    "ChannelStats",
    "Histogram",
    "IoStat",
    "LoopStats",
    "NvmfPollGroupStats",
    "NvmfTargetStats",
    "OpStat",
    "PollerStats",
    "Snapshot",
    "ThreadStats",
    "ticks_to_ns",
    "to_json",
]

NS = 1_000_000_000


def ticks_to_ns(ticks: int, hz: int) -> int:
    """``ticks`` of a ``hz`` clock in whole nanoseconds (rounded down; 0 if ``hz`` is 0)."""
    return ticks * NS // hz if hz > 0 else 0


def _plain(value: Any) -> Any:
    """``value`` with every tuple made a list (as JSON would give it back)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _Dict:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """This snapshot as nested dicts, lists and plain values (JSON-ready: what
        ``json.loads(to_json(x))`` gives back)."""
        out: dict[str, Any] = _plain(dataclasses.asdict(self))  # type: ignore[call-overload]  # a dataclass
        return out


@dataclass(frozen=True, slots=True)
class OpStat(_Dict):
    """One kind of I/O (read, write, unmap, copy): operations, bytes, latencies (ns).

    ``latency_ns`` is the sum over all operations; ``min``/``max`` are 0 when there
    were none."""

    ops: int
    bytes: int
    latency_ns: int
    min_latency_ns: int
    max_latency_ns: int

    @property
    def mean_latency_ns(self) -> float:
        """The mean latency (0.0 with no operations)."""
        return self.latency_ns / self.ops if self.ops else 0.0


@dataclass(frozen=True, slots=True)
class IoStat(_Dict):
    """A bdev's (or one channel's) I/O statistics (``struct spdk_bdev_io_stat``).

    ``errors`` counts failed I/Os by SPDK's status name (``"failed"``,
    ``"nvme_error"``, ...): only statuses that occurred."""

    read: OpStat
    write: OpStat
    unmap: OpStat
    copy: OpStat
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def ops(self) -> int:
        """Operations of every kind."""
        return self.read.ops + self.write.ops + self.unmap.ops + self.copy.ops


@dataclass(frozen=True, slots=True)
class ChannelStats(_Dict):
    """The I/O statistics of one I/O channel of a bdev: the I/O one SPDK thread did.

    ``io.errors`` is always empty: SPDK counts failed I/Os by status per bdev only
    (:attr:`BdevStats.io`), not per channel."""

    bdev: str
    thread: str
    thread_id: int
    io: IoStat


@dataclass(frozen=True, slots=True)
class Histogram(_Dict):
    """A bdev's latency histogram, as SPDK keeps it (``spdk_bdev_histogram_get``).

    ``buckets`` holds ``(lowest_ns, highest_ns, count)`` of each non-empty bucket in
    increasing order.  A percentile is the upper end of the bucket that holds the
    nearest-rank sample, so it never under-reports; how much it may over-report depends
    on the bdev's histogram granularity ``g``: a bucket is at most ``2**-g`` of its
    values wide, so by less than 1 % (plus a tick) at SPDK's default ``g`` of 7, but by
    up to about 3 % at ``g`` 5 (which ``bdev_enable_histogram`` may choose).  Samples
    SPDK clamped into the first or last bucket (outside the histogram's ``min_nsec`` and
    ``max_nsec``) are not bounded by it."""

    buckets: tuple[tuple[int, int, int], ...]

    @property
    def count(self) -> int:
        """The number of samples."""
        return sum(c for _, _, c in self.buckets)

    @property
    def sum_ns(self) -> int:
        """An estimate of the samples' sum (ns): each bucket's count times its midpoint.

        SPDK's histogram keeps counts only, and the bdev's exact latency sums
        (:class:`OpStat`) count other I/O: since the bdev came, and only successful
        reads, writes, unmaps and copies, where the histogram counts every I/O since it
        was enabled.  Each sample is off by at most half its bucket's width (a
        ``2**-(granularity + 1)`` part of it, under 0.4 % at SPDK's default granularity
        7); a sample SPDK clamped into the first or last bucket counts at its midpoint."""
        return sum((lo + hi) * c // 2 for lo, hi, c in self.buckets)

    def percentile(self, p: float) -> int:
        """The nearest-rank ``p``-th percentile in ns (``0 <= p <= 100``); 0 when empty."""
        if isinstance(p, bool) or not isinstance(p, int | float):
            raise TypeError(f"p must be a number of percent, not {type(p).__name__}")
        if not 0 <= p <= 100:  # also refuses NaN
            raise ValueError(f"p must be in 0..100, got {p!r}")
        count = self.count
        if not count:
            return 0
        rank = max(1, math.ceil(Fraction(repr(float(p))) * count / 100))
        seen = 0
        for _, hi, c in self.buckets:
            seen += c
            if seen >= rank:
                return hi
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def percentiles(self) -> dict[str, int]:
        """p50, p90, p99 and p99.9 in ns."""
        return {f"p{p:g}": self.percentile(p) for p in (50, 90, 99, 99.9)}

    def cumulative(self, bounds_ns: tuple[int, ...]) -> Iterator[tuple[int, int]]:
        """``(bound, samples counted at or below it)`` for each increasing bound: a bucket
        counts at the first bound that is at least its upper end (never below)."""
        it = iter(self.buckets)
        seen = 0
        pending = next(it, None)
        for bound in bounds_ns:
            while pending is not None and pending[1] <= bound:
                seen += pending[2]
                pending = next(it, None)
            yield bound, seen

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "percentiles_ns": self.percentiles,
            "buckets": [list(b) for b in self.buckets],
        }


@dataclass(frozen=True, slots=True)
class BdevStats(_Dict):
    """One bdev: its I/O statistics over all channels, each channel's, and its latency
    histogram (``None`` unless histograms are enabled on it)."""

    name: str
    io: IoStat
    channels: tuple[ChannelStats, ...] = ()
    histogram: Histogram | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "io": self.io.to_dict(),
            "channels": [c.to_dict() for c in self.channels],
            "histogram": None if self.histogram is None else self.histogram.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class PollerStats(_Dict):
    """One SPDK poller: how often it ran and how often it found work.

    ``kind`` is ``"active"`` (runs every time its thread is polled), ``"timed"`` or
    ``"paused"``; ``period_ns`` is 0 for active pollers."""

    name: str
    id: int
    kind: str
    state: str
    run_count: int
    busy_count: int
    period_ns: int


@dataclass(frozen=True, slots=True)
class ThreadStats(_Dict):
    """One SPDK thread (``id`` is SPDK's thread id; names may repeat): time spent polling
    with and without work (ns), its pollers, and the name and id of the spdk_io loop of
    the OS thread that polls it (``""`` and 0 if none)."""

    name: str
    id: int
    busy_ns: int
    idle_ns: int
    pollers: tuple[PollerStats, ...] = ()
    loop: str = ""
    loop_id: int = 0


@dataclass(frozen=True, slots=True)
class LoopStats(_Dict):
    """An spdk_io loop's own counters: loop turns, task steps run, and the most tasks
    that were ever ready at once.  ``id`` tells loops apart (names may repeat): no other
    loop of the process has it."""

    name: str
    turns: int
    tasks_run: int
    ready_high_water: int
    id: int = 0


@dataclass(frozen=True, slots=True)
class NvmfPollGroupStats(_Dict):
    """One NVMe-oF poll group (one per SPDK thread serving a target), as
    ``nvmf_get_stats`` reports it.  ``admin_qpairs``/``io_qpairs`` count queue pairs
    ever added; ``current_*`` those connected now.  ``transports`` maps each
    transport type to its own counters (transport-specific)."""

    name: str
    admin_qpairs: int
    io_qpairs: int
    current_admin_qpairs: int
    current_io_qpairs: int
    pending_bdev_io: int
    completed_nvme_io: int
    transports: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NvmfTargetStats(_Dict):
    """One NVMe-oF target and its poll groups."""

    name: str
    poll_groups: tuple[NvmfPollGroupStats, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot(_Dict):
    """Everything at once (:func:`spdk_io.stats.snapshot`).  ``time`` is the Unix time
    it was taken; ``ticks_hz`` SPDK's tick rate, which converted ticks to ns."""

    time: float
    ticks_hz: int
    bdevs: tuple[BdevStats, ...] = ()
    threads: tuple[ThreadStats, ...] = ()
    loops: tuple[LoopStats, ...] = ()
    nvmf: tuple[NvmfTargetStats, ...] = ()

    def bdev(self, name: str) -> BdevStats:
        """The bdev ``name``; ``KeyError`` if the snapshot has none of that name."""
        for b in self.bdevs:
            if b.name == name:
                return b
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "ticks_hz": self.ticks_hz,
            "bdevs": [b.to_dict() for b in self.bdevs],
            "threads": [t.to_dict() for t in self.threads],
            "loops": [lo.to_dict() for lo in self.loops],
            "nvmf": [n.to_dict() for n in self.nvmf],
        }


def to_json(stats: Any, *, indent: int | None = None) -> str:
    """Any snapshot type (or a sequence of them) as JSON text."""
    if isinstance(stats, _Dict):
        return json.dumps(stats.to_dict(), indent=indent)
    if isinstance(stats, list | tuple) and all(isinstance(s, _Dict) for s in stats):
        return json.dumps([s.to_dict() for s in stats], indent=indent)
    raise TypeError(f"to_json() needs a spdk_io.stats snapshot, not {type(stats).__name__}")
