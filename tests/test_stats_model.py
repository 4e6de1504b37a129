"""The snapshot types and their exports (JSON, Prometheus text), SPDK-free."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spdk_io.stats import (
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
    bucket_bounds,
    bucket_index,
    to_json,
)
from tests.conftest import run_py

pytestmark = pytest.mark.spdk_free  # runs where SPDK is not installed


def histogram_of(samples: list[int]) -> Histogram:
    """Samples put in buckets of the layout SPDK's default histogram shares."""
    counts: dict[int, int] = {}
    for s in samples:
        counts[bucket_index(s)] = counts.get(bucket_index(s), 0) + 1
    return Histogram(tuple((*bucket_bounds(i), c) for i, c in sorted(counts.items())))


def nearest_rank(samples: list[int], p: float) -> int:
    ordered = sorted(samples)
    k = max(1, -(-len(ordered) * int(p * 1000) // 100_000))  # ceil(p/100 * n), p in 0.001s
    return ordered[k - 1]


values = st.integers(0, 10**12)


@settings(max_examples=200, deadline=None)
@given(st.lists(values, min_size=1, max_size=300), st.sampled_from([0, 1, 50, 90, 99, 99.9, 100]))
def test_a_percentile_is_the_top_of_the_exact_samples_bucket(samples: list[int], p: float) -> None:
    h = histogram_of(samples)
    exact = nearest_rank(samples, p)
    got = h.percentile(p)
    assert got == bucket_bounds(bucket_index(exact))[1]
    assert exact <= got <= exact + exact // 128 + 1  # never under, under 1 % over
    assert h.count == len(samples)
    # The estimated sum: within half a bucket of each sample (and a unit per bucket).
    half_widths = sum((hi - lo) * c for lo, hi, c in h.buckets) / 2
    assert abs(h.sum_ns - sum(samples)) <= half_widths + len(h.buckets)
    assert abs(h.sum_ns - sum(samples)) <= sum(samples) / 256 + len(h.buckets)


@settings(max_examples=100, deadline=None)
@given(st.lists(values, max_size=200), st.lists(values, min_size=1, max_size=10))
def test_cumulative_counts_samples_whose_bucket_ends_at_or_below(
    samples: list[int], bounds: list[int]
) -> None:
    h = histogram_of(samples)
    ordered = tuple(sorted(set(bounds)))
    got = list(h.cumulative(ordered))
    assert [b for b, _ in got] == list(ordered)
    for bound, n in got:
        assert n == sum(1 for s in samples if bucket_bounds(bucket_index(s))[1] <= bound)


def test_percentile_refuses_bad_input() -> None:
    h = histogram_of([5, 7])
    with pytest.raises(ValueError):
        h.percentile(100.5)
    with pytest.raises(ValueError):
        h.percentile(float("nan"))
    with pytest.raises(TypeError):
        h.percentile("50")  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(TypeError):
        h.percentile(True)
    assert Histogram(()).percentile(99) == 0 and Histogram(()).count == 0


def op(ops: int, size: int = 4096) -> OpStat:
    return OpStat(ops, ops * size, ops * 2000, 1000 if ops else 0, 5000 if ops else 0)


def a_snapshot() -> Snapshot:
    io = IoStat(op(10), op(5), op(0), op(0), {"failed": 2})
    return Snapshot(
        time=1700000000.5,
        ticks_hz=2_000_000_000,
        bdevs=(
            BdevStats(
                "Malloc0",
                io,
                (ChannelStats("Malloc0", "app_thread", 1, io),),
                histogram_of([1500, 2500, 2600, 900_000]),
            ),
            BdevStats("Null0", IoStat(op(0), op(0), op(0), op(0))),
        ),
        threads=(
            ThreadStats(
                "app_thread",
                1,
                3_000_000_000,
                1_000_000_000,
                (PollerStats("rpc", 7, "active", "waiting", 100, 40, 0),),
                "app_thread",
                3,
            ),
        ),
        loops=(LoopStats("app_thread", 1000, 250, 12, 3),),
        nvmf=(
            NvmfTargetStats(
                "nvmf_tgt",
                (
                    NvmfPollGroupStats(
                        "pg0", 1, 2, 1, 2, 0, 77, {"TCP": {"pending_data_buffer": 0}}
                    ),
                ),
            ),
        ),
    )


def test_snapshots_export_as_json_that_reads_back_as_to_dict() -> None:
    snap = a_snapshot()
    data = json.loads(to_json(snap))
    assert data == snap.to_dict()
    assert data["bdevs"][0]["io"]["errors"] == {"failed": 2}
    assert data["bdevs"][0]["histogram"]["count"] == 4
    assert data["bdevs"][0]["histogram"]["percentiles_ns"]["p50"] == snap.bdevs[
        0
    ].histogram.percentile(50)  # type: ignore[union-attr]  # set above
    assert data["bdevs"][1]["histogram"] is None
    assert data["nvmf"][0]["poll_groups"][0]["transports"]["TCP"] == {"pending_data_buffer": 0}
    assert json.loads(to_json(snap.threads)) == [t.to_dict() for t in snap.threads]
    assert snap.bdev("Null0").io.ops == 0 and snap.bdevs[0].io.ops == 15
    assert snap.bdevs[0].io.read.mean_latency_ns == 2000.0
    with pytest.raises(TypeError):
        to_json({"not": "a snapshot"})
    with pytest.raises(TypeError):
        to_json([snap, 3])


def test_the_collector_serves_the_latest_snapshot_in_prometheus_text() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from spdk_io.stats.prometheus import HISTOGRAM_BOUNDS_NS, SnapshotCollector

    collector = SnapshotCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    assert generate_latest(registry) == b""  # nothing until a snapshot arrives
    with pytest.raises(TypeError):
        collector.update({"time": 0})  # type: ignore[arg-type]  # the point of the test
    snap = a_snapshot()
    collector.update(snap)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }

    def v(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert v("spdk_io_snapshot_timestamp_seconds") == snap.time
    assert v("spdk_bdev_ops_total", bdev="Malloc0", op="read") == 10
    assert v("spdk_bdev_bytes_total", bdev="Malloc0", op="write") == 5 * 4096
    assert v("spdk_bdev_latency_seconds_total", bdev="Malloc0", op="read") == pytest.approx(2e-5)
    assert v("spdk_bdev_io_errors_total", bdev="Malloc0", status="failed") == 2
    app = {"thread": "app_thread", "thread_id": "1"}
    assert v("spdk_bdev_channel_ops_total", bdev="Malloc0", op="read", **app) == 10
    assert v("spdk_bdev_io_latency_seconds_bucket", bdev="Malloc0", le="+Inf") == 4
    assert v("spdk_bdev_io_latency_seconds_bucket", bdev="Malloc0", le="5e-06") == 3
    assert v("spdk_bdev_io_latency_seconds_bucket", bdev="Malloc0", le="0.001") == 4
    # _count and _sum: the samples, and their estimated sum (between the buckets' ends).
    hist = snap.bdevs[0].histogram
    assert hist is not None
    assert v("spdk_bdev_io_latency_seconds_count", bdev="Malloc0") == 4 == hist.count
    total = v("spdk_bdev_io_latency_seconds_sum", bdev="Malloc0")
    assert total == pytest.approx(hist.sum_ns * 1e-9)
    low = sum(lo * c for lo, _, c in hist.buckets) * 1e-9
    high = sum(hi * c for _, hi, c in hist.buckets) * 1e-9
    assert low <= total <= high
    assert total == pytest.approx((1500 + 2500 + 2600 + 900_000) * 1e-9, rel=1 / 256)
    les = [k for (n, k) in samples if n == "spdk_bdev_io_latency_seconds_bucket"]
    assert len(les) == len(HISTOGRAM_BOUNDS_NS) + 1
    assert (
        "spdk_bdev_io_latency_seconds_bucket",
        (("bdev", "Null0"), ("le", "+Inf")),
    ) not in samples
    assert v("spdk_thread_busy_seconds_total", **app) == 3.0
    assert v("spdk_thread_idle_seconds_total", **app) == 1.0
    assert v("spdk_poller_runs_total", poller="rpc", id="7", **app) == 100
    assert v("spdk_poller_busy_runs_total", poller="rpc", id="7", **app) == 40
    loop = {"loop": "app_thread", "loop_id": "3"}
    assert v("spdk_io_loop_turns_total", **loop) == 1000
    assert v("spdk_io_loop_tasks_run_total", **loop) == 250
    assert v("spdk_io_loop_ready_high_water", **loop) == 12
    pg = {"target": "nvmf_tgt", "poll_group": "pg0"}
    assert v("spdk_nvmf_completed_nvme_io_total", **pg) == 77
    assert v("spdk_nvmf_io_qpairs_total", **pg) == 2
    assert v("spdk_nvmf_current_admin_qpairs", **pg) == 1


def test_without_prometheus_client_the_import_error_names_the_extra() -> None:
    done = run_py(
        """
        import sys
        sys.modules["prometheus_client"] = None  # as if it were not installed
        try:
            import spdk_io.stats.prometheus
        except ImportError as exc:
            print("ImportError:", exc)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "ImportError:" in done.stdout and "spdk-io[metrics]" in done.stdout, done.stdout
