"""spdk_io's statistics as a ``prometheus_client`` collector (the ``spdk-io[metrics]`` extra).

prometheus_client calls :meth:`SnapshotCollector.collect` on its own HTTP thread, where
SPDK must not be touched: the collector only turns the latest
:class:`~spdk_io.stats.Snapshot` it was given into metrics.  A task on SPDK's app
thread keeps that snapshot fresh (:meth:`SnapshotCollector.keep_fresh`)::

    collector = SnapshotCollector()
    prometheus_client.REGISTRY.register(collector)
    spdk_io.spawn(collector.keep_fresh(period=1.0))
    prometheus_client.start_http_server(9100, "127.0.0.1")

``python -m spdk_io serve --metrics-port N`` does this.  Times are in seconds, as
Prometheus prefers; labels name the ``bdev``, ``thread``, ``poller``, ``loop``,
``target`` and ``poll_group``, with ``thread_id`` and ``loop_id`` beside ``thread`` and
``loop`` (names may repeat; a poller's ``id`` counts within its thread).  The latency
histogram's ``_sum`` is an estimate from its buckets
(:attr:`~spdk_io.stats.Histogram.sum_ns`: SPDK's histogram keeps no sum).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "spdk_io.stats.prometheus needs prometheus_client: pip install 'spdk-io[metrics]'"
    ) from exc

from spdk_io._validate import duration
from spdk_io.stats.model import Snapshot

__all__ = ["HISTOGRAM_BOUNDS_NS", "SnapshotCollector", "metrics"]

#: The ``le`` bounds of the latency histograms: 1-2-5 steps from 1 us to 10 s (in ns).
HISTOGRAM_BOUNDS_NS = (*(m * 10**e for e in range(3, 10) for m in (1, 2, 5)), 10**10)
_S = 1e-9  # seconds per ns
_log = logging.getLogger("spdk_io")
_OPS = ("read", "write", "unmap", "copy")


def _le(ns: int) -> str:
    """A bound in seconds as Prometheus writes it (``1e-06``, ``0.002``, ``5.0``)."""
    return repr(ns / 1e9)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _bdev_metrics(snap: Snapshot) -> Iterator[Metric]:
    ops = _counter("spdk_bdev_ops", "I/O operations completed", ["bdev", "op"])
    nbytes = _counter("spdk_bdev_bytes", "bytes transferred", ["bdev", "op"])
    lat = _counter("spdk_bdev_latency_seconds", "sum of I/O latencies", ["bdev", "op"])
    worst = _gauge("spdk_bdev_max_latency_seconds", "longest I/O latency", ["bdev", "op"])
    errors = _counter("spdk_bdev_io_errors", "failed I/Os by status", ["bdev", "status"])
    ch_labels = ["bdev", "thread", "thread_id", "op"]
    ch_ops = _counter("spdk_bdev_channel_ops", "I/O operations per channel", ch_labels)
    ch_bytes = _counter("spdk_bdev_channel_bytes", "bytes per channel", ch_labels)
    hist = HistogramMetricFamily(
        "spdk_bdev_io_latency_seconds", "I/O latency (SPDK's bdev histogram)", labels=["bdev"]
    )
    for b in snap.bdevs:
        for op in _OPS:
            s = getattr(b.io, op)
            ops.add_metric([b.name, op], s.ops)
            nbytes.add_metric([b.name, op], s.bytes)
            lat.add_metric([b.name, op], s.latency_ns * _S)
            worst.add_metric([b.name, op], s.max_latency_ns * _S)
        for status, n in sorted(b.io.errors.items()):
            errors.add_metric([b.name, status], n)
        for c in b.channels:
            for op in _OPS:
                s = getattr(c.io, op)
                ch_ops.add_metric([b.name, c.thread, str(c.thread_id), op], s.ops)
                ch_bytes.add_metric([b.name, c.thread, str(c.thread_id), op], s.bytes)
        if b.histogram is not None:
            buckets: list[tuple[str, float]] = [
                (_le(bound), n) for bound, n in b.histogram.cumulative(HISTOGRAM_BOUNDS_NS)
            ]
            buckets.append(("+Inf", b.histogram.count))
            hist.add_metric([b.name], buckets, b.histogram.sum_ns * _S)
    yield from (ops, nbytes, lat, worst, errors, ch_ops, ch_bytes, hist)


def _thread_metrics(snap: Snapshot) -> Iterator[Metric]:
    thread = ["thread", "thread_id"]
    busy = _counter("spdk_thread_busy_seconds", "time polling with work", thread)
    idle = _counter("spdk_thread_idle_seconds", "time polling without work", thread)
    labels = [*thread, "poller", "id"]
    runs = _counter("spdk_poller_runs", "times the poller ran", labels)
    busy_runs = _counter("spdk_poller_busy_runs", "runs that found work", labels)
    for t in snap.threads:
        tid = [t.name, str(t.id)]
        busy.add_metric(tid, t.busy_ns * _S)
        idle.add_metric(tid, t.idle_ns * _S)
        for p in t.pollers:
            runs.add_metric([*tid, p.name, str(p.id)], p.run_count)
            busy_runs.add_metric([*tid, p.name, str(p.id)], p.busy_count)
    loop = ["loop", "loop_id"]
    turns = _counter("spdk_io_loop_turns", "loop turns", loop)
    ran = _counter("spdk_io_loop_tasks_run", "task steps run", loop)
    high = _gauge("spdk_io_loop_ready_high_water", "most tasks ready at once", loop)
    for lo in snap.loops:
        lid = [lo.name, str(lo.id)]
        turns.add_metric(lid, lo.turns)
        ran.add_metric(lid, lo.tasks_run)
        high.add_metric(lid, lo.ready_high_water)
    yield from (busy, idle, runs, busy_runs, turns, ran, high)


def _nvmf_metrics(snap: Snapshot) -> Iterator[Metric]:
    labels = ["target", "poll_group"]
    families: dict[str, Any] = {
        "completed_nvme_io": _counter("spdk_nvmf_completed_nvme_io", "NVMe I/O done", labels),
        "admin_qpairs": _counter("spdk_nvmf_admin_qpairs", "admin qpairs added", labels),
        "io_qpairs": _counter("spdk_nvmf_io_qpairs", "I/O qpairs added", labels),
        "current_admin_qpairs": _gauge("spdk_nvmf_current_admin_qpairs", "admin qpairs", labels),
        "current_io_qpairs": _gauge("spdk_nvmf_current_io_qpairs", "I/O qpairs", labels),
        "pending_bdev_io": _gauge("spdk_nvmf_pending_bdev_io", "bdev I/O pending", labels),
    }
    for target in snap.nvmf:
        for pg in target.poll_groups:
            for field, family in families.items():
                family.add_metric([target.name, pg.name], getattr(pg, field))
    yield from families.values()


def metrics(snap: Snapshot) -> list[Metric]:
    """The metric families of ``snap`` (what :meth:`SnapshotCollector.collect` yields)."""
    if not isinstance(snap, Snapshot):
        raise TypeError(f"snap must be a Snapshot, not {type(snap).__name__}")
    when = _gauge("spdk_io_snapshot_timestamp_seconds", "when the snapshot was taken", [])
    when.add_metric([], snap.time)
    return [when, *_bdev_metrics(snap), *_thread_metrics(snap), *_nvmf_metrics(snap)]


class SnapshotCollector(Collector):
    """A collector of the latest snapshot given to :meth:`update` (none: no metrics).

    :meth:`update` and :meth:`collect` may be called from any OS thread;
    :meth:`keep_fresh` runs on SPDK's app thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: Snapshot | None = None

    @property
    def latest(self) -> Snapshot | None:
        """The snapshot the metrics come from."""
        with self._lock:
            return self._latest

    def update(self, snap: Snapshot) -> None:
        """Serve ``snap`` from now on."""
        if not isinstance(snap, Snapshot):
            raise TypeError(f"snap must be a Snapshot, not {type(snap).__name__}")
        with self._lock:
            self._latest = snap

    def collect(self) -> Iterator[Metric]:
        snap = self.latest
        if snap is not None:
            yield from metrics(snap)

    async def keep_fresh(self, period: float = 1.0) -> None:
        """Take a snapshot every ``period`` seconds and serve it, until cancelled (a
        failed snapshot is logged and the last one kept).  A task on SPDK's app thread
        (``spdk_io.spawn``)."""
        from spdk_io.loop import sleep
        from spdk_io.stats.collect import snapshot

        period = duration(period, "period")
        while True:
            try:
                self.update(await snapshot())
            except Exception:  # the next period tries again; scrapes see the last snapshot
                _log.warning("spdk_io.stats: taking a snapshot failed", exc_info=True)
            await sleep(period)
