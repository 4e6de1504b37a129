"""The perf tool's latency histogram (spdk_io.stats), SPDK-free."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spdk_io.stats import BUCKETS, MAX_VALUE, LatencyHistogram, bucket_bounds, bucket_index

# Latencies at every scale: exact small values, typical ns..ms, and the 64-bit extremes.
pytestmark = pytest.mark.spdk_free  # runs where SPDK is not installed

values = st.one_of(
    st.integers(0, 300),
    st.integers(0, 10**10),
    st.integers(0, MAX_VALUE),
)
percents = st.one_of(
    st.sampled_from([0, 0.1, 1, 50, 90, 99, 99.9, 99.99, 100]),
    st.floats(0, 100, allow_nan=False),
)


def exact_percentile(sorted_values: list[int], p: float) -> int:
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    n = len(sorted_values)
    rank = max(1, math.ceil(Fraction(repr(float(p))) * n / 100))
    return sorted_values[rank - 1]


def histogram_of(samples: list[int]) -> LatencyHistogram:
    h = LatencyHistogram()
    for v in samples:
        h.record(v)
    return h


@given(values)
def test_every_value_lies_in_its_bucket_within_the_resolution(v: int) -> None:
    i = bucket_index(v)
    assert 0 <= i < BUCKETS
    lo, hi = bucket_bounds(i)
    assert lo <= v <= hi
    assert hi - lo <= lo // 128  # ~0.8 %; values below 256 are exact
    if v < 256:
        assert lo == hi == v


def test_buckets_tile_the_whole_64_bit_range() -> None:
    prev_hi = -1
    for i in range(BUCKETS):
        lo, hi = bucket_bounds(i)
        assert lo == prev_hi + 1 and bucket_index(lo) == i and bucket_index(hi) == i
        prev_hi = hi
    assert prev_hi == MAX_VALUE


@settings(max_examples=300)
@given(st.lists(values, min_size=1, max_size=400), st.lists(percents, min_size=1, max_size=5))
def test_percentiles_match_a_sorted_list_within_the_resolution(
    samples: list[int], ps: list[float]
) -> None:
    h = histogram_of(samples)
    s = sorted(samples)
    assert h.count == len(s)
    assert h.max == s[-1]
    assert h.total == sum(s)
    assert h.mean == pytest.approx(sum(s) / len(s), rel=1e-12)
    for p in ps:
        exact = exact_percentile(s, p)
        got = h.percentile(p)
        # Never under-reports, and over-reports by less than 1/128 of the value.
        assert exact <= got <= exact + exact // 128, (p, exact, got)
    assert h.percentile(100) == s[-1]


@given(st.lists(values, max_size=200), st.lists(values, max_size=200))
def test_merge_equals_recording_everything_in_one(a: list[int], b: list[int]) -> None:
    ha, hb = histogram_of(a), histogram_of(b)
    ha.merge(hb)
    both = histogram_of(a + b)
    assert (ha.count, ha.total, ha.max) == (both.count, both.total, both.max)
    assert list(ha.buckets()) == list(both.buckets())
    assert hb.count == len(b)  # the merged-in histogram is unchanged


@given(st.lists(values, max_size=200))
def test_from_buckets_round_trips(samples: list[int]) -> None:
    h = histogram_of(samples)
    counts = [0] * BUCKETS
    for lo, _hi, n in h.buckets():
        counts[bucket_index(lo)] = n
    again = LatencyHistogram.from_buckets(counts, total=h.total, max=h.max)
    assert (again.count, again.total, again.max) == (h.count, h.total, h.max)
    assert list(again.buckets()) == list(h.buckets())


def test_empty_histogram_reports_zeros() -> None:
    h = LatencyHistogram()
    assert (h.count, h.total, h.max, h.mean, h.percentile(99)) == (0, 0, 0, 0.0, 0)
    assert list(h.buckets()) == []


@pytest.mark.parametrize(
    ("bad", "exc"),
    [(-1, ValueError), (MAX_VALUE + 1, ValueError), (1.5, TypeError), (True, TypeError),
     ("5", TypeError), (None, TypeError)],
)  # fmt: skip
def test_record_refuses_bad_values_and_changes_nothing(bad: object, exc: type[Exception]) -> None:
    h = histogram_of([10, 1000])
    with pytest.raises(exc, match="ns"):
        h.record(bad)  # type: ignore[arg-type]  # the point of the test
    assert (h.count, h.total, h.max, list(h.buckets())) == (
        2, 1010, 1000, [(10, 10, 1), (1000, 1003, 1)]
    )  # fmt: skip


@pytest.mark.parametrize("bad", [-0.1, 100.1, math.nan, math.inf, "50", None, True])
def test_percentile_refuses_bad_p(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="p"):
        histogram_of([1, 2, 3]).percentile(bad)  # type: ignore[arg-type]  # the point


def test_merge_refuses_non_histograms() -> None:
    with pytest.raises(TypeError, match="other"):
        LatencyHistogram().merge([1, 2])  # type: ignore[arg-type]  # the point


@pytest.mark.parametrize(
    ("counts", "total", "mx", "what"),
    [
        ([0] * (BUCKETS - 1), 0, 0, "counts"),  # wrong length
        ([-1] + [0] * (BUCKETS - 1), 0, 0, "counts"),  # negative count
        ([1] + [0] * (BUCKETS - 1), 5, 0, "total"),  # one sample of 0 cannot total 5
        ([0, 1] + [0] * (BUCKETS - 2), 1, 7, "max"),  # one sample of 1 cannot have max 7
        ([0] * BUCKETS, 0, 3, "max"),  # no samples, but a max
    ],
)
def test_from_buckets_refuses_inconsistent_input(
    counts: list[int], total: int, mx: int, what: str
) -> None:
    with pytest.raises(ValueError, match=what):
        LatencyHistogram.from_buckets(counts, total=total, max=mx)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_stays_flat_over_ten_million_samples() -> None:
    """An hour at 400k IOPS must not need more memory than a second (issue #8)."""
    h = LatencyHistogram()
    record = h.record
    # Warm up: every bucket holds a count beyond the small-int cache.
    for i in range(BUCKETS):
        lo, _hi = bucket_bounds(i)
        for _ in range(300):
            record(lo)
    before = _rss_bytes()
    x = 12345
    for _ in range(10_000_000):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF  # cheap pseudo-random latencies
        record(x >> 8)
    grown = _rss_bytes() - before
    assert h.count == BUCKETS * 300 + 10_000_000
    # An array of the samples would need 80 MB; the histogram needs nothing more.
    assert grown < 2 << 20, f"RSS grew by {grown} bytes"
