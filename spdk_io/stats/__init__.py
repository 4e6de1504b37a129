"""Statistics: latency histograms, and typed snapshots of what SPDK and spdk_io count.

* :class:`LatencyHistogram` (and :func:`bucket_index`, :func:`bucket_bounds`): a
  constant-memory histogram of latencies in ns (``python -m spdk_io perf`` uses it).
* ``await snapshot()`` returns a :class:`Snapshot` of the whole process: per-bdev and
  per-channel I/O counts, bytes, errors and latencies (ns), the bdevs' SPDK latency
  histograms with percentiles (:func:`enable_histogram`), each SPDK thread's busy and
  idle time with its pollers' run counts, the loops' own counters, and the NVMe-oF
  poll groups' statistics.  :func:`bdev_stats`, :func:`thread_stats`, :func:`loop_stats`
  and :func:`nvmf_stats` take one part each.  Snapshots are frozen dataclasses;
  :func:`to_json` (or ``.to_dict()``) exports them.
* :mod:`spdk_io.stats.prometheus` (the ``spdk-io[metrics]`` extra): a
  ``prometheus_client`` collector; ``python -m spdk_io serve --metrics-port N`` serves it.

Importing this package loads nothing of SPDK; the snapshot functions do.
"""

from typing import TYPE_CHECKING

from spdk_io._lazy import exports
from spdk_io.stats.histogram import (
    BUCKETS,
    MAX_VALUE,
    SUB_BITS,
    LatencyHistogram,
    bucket_bounds,
    bucket_index,
)
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
    to_json,
)

_LAZY = {
    name: "collect"
    for name in (
        "bdev_histogram",
        "bdev_stats",
        "disable_histogram",
        "enable_histogram",
        "loop_stats",
        "nvmf_stats",
        "snapshot",
        "thread_stats",
    )
}
__getattr__, _dir = exports(__name__, _LAZY)

__all__ = [
    "BUCKETS",
    "MAX_VALUE",
    "SUB_BITS",
    "BdevStats",
    "ChannelStats",
    "Histogram",
    "IoStat",
    "LatencyHistogram",
    "LoopStats",
    "NvmfPollGroupStats",
    "NvmfTargetStats",
    "OpStat",
    "PollerStats",
    "Snapshot",
    "ThreadStats",
    "bucket_bounds",
    "bucket_index",
    "to_json",
    *_LAZY,
]


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # the names __getattr__ provides, for type checkers
    from spdk_io.stats.collect import bdev_histogram as bdev_histogram
    from spdk_io.stats.collect import bdev_stats as bdev_stats
    from spdk_io.stats.collect import disable_histogram as disable_histogram
    from spdk_io.stats.collect import enable_histogram as enable_histogram
    from spdk_io.stats.collect import loop_stats as loop_stats
    from spdk_io.stats.collect import nvmf_stats as nvmf_stats
    from spdk_io.stats.collect import snapshot as snapshot
    from spdk_io.stats.collect import thread_stats as thread_stats
