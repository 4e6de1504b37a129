"""Latency statistics in constant memory: a log-linear (HDR-style) histogram.

:class:`LatencyHistogram` counts non-negative integer samples (nanoseconds)
in :data:`BUCKETS` fixed buckets covering every 64-bit value: values below 256
each have their own bucket, and every power of two above is split into 128
equal sub-buckets.  A bucket's width is therefore at most 1/128 (0.8 %) of
the values it holds, and memory never grows with the number of samples.

``count``, ``total``, ``mean`` and ``max`` are exact.  ``percentile(p)``
returns the upper end of the bucket holding the exact nearest-rank percentile
(clamped to ``max``): it never under-reports, and over-reports by less than
1/128 of the value.

The bucket of a value is defined by :func:`bucket_index`; hot loops may inline
its formula, count into a list of :data:`BUCKETS` zeros, and build a histogram
with :meth:`LatencyHistogram.from_buckets`.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from fractions import Fraction
from itertools import accumulate

from spdk_io._validate import integer

__all__ = [
    "BUCKETS",
    "MAX_VALUE",
    "SUB_BITS",
    "LatencyHistogram",
    "bucket_bounds",
    "bucket_index",
]

#: log2 of the sub-buckets per power of two (128: about 0.8 % resolution).
SUB_BITS = 7
#: The largest value a histogram records (any 64-bit latency).
MAX_VALUE = (1 << 64) - 1


def bucket_index(ns: int) -> int:
    """The bucket of ``ns`` (``0 <= ns <= MAX_VALUE``, not checked here).

    The formula is part of the interface (hot loops inline it)::

        e = ns.bit_length() - 8
        index = (e << 7) + (ns >> e) if e > 0 else ns   # below 256: exact
    """
    e = ns.bit_length() - 8
    return (e << 7) + (ns >> e) if e > 0 else ns


def bucket_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest value (inclusive) counted in bucket ``index``."""
    index = integer(index, "index", 0, BUCKETS - 1)
    if index < 256:
        return index, index
    e = (index >> SUB_BITS) - 1
    lo = (index - (e << SUB_BITS)) << e
    return lo, lo + (1 << e) - 1


#: The number of buckets: enough for every value up to :data:`MAX_VALUE`.
BUCKETS = bucket_index(MAX_VALUE) + 1


class LatencyHistogram:
    """Counts of integer samples (ns) in fixed log-linear buckets: constant memory.

    Not thread-safe: record from one OS thread (or merge per-thread histograms).
    """

    __slots__ = ("_count", "_counts", "_max", "_total")

    def __init__(self) -> None:
        self._counts = [0] * BUCKETS
        self._count = 0
        self._total = 0
        self._max = 0

    def __repr__(self) -> str:
        return f"<LatencyHistogram count={self._count} mean={self.mean:.1f} max={self._max}>"

    @classmethod
    def from_buckets(cls, counts: Sequence[int], *, total: int, max: int) -> LatencyHistogram:
        """A histogram from per-bucket ``counts`` (indexed by :func:`bucket_index`).

        ``total`` (sum of the samples) and ``max`` must be consistent with the
        counts, else ``ValueError`` naming the argument.  ``counts`` is copied.
        """
        if len(counts) != BUCKETS:
            raise ValueError(f"counts must have {BUCKETS} entries, got {len(counts)}")
        copy = [integer(c, "counts[i]", 0) for c in counts]
        total = integer(total, "total", 0)
        mx = integer(max, "max", 0)
        lowest = sum(bucket_bounds(i)[0] * c for i, c in enumerate(copy) if c)
        highest = sum(bucket_bounds(i)[1] * c for i, c in enumerate(copy) if c)
        if not lowest <= total <= highest:
            raise ValueError(f"total {total} is impossible for these counts")
        top = next((i for i in range(BUCKETS - 1, -1, -1) if copy[i]), None)
        lo, hi = (0, 0) if top is None else bucket_bounds(top)
        if not lo <= mx <= hi:
            raise ValueError(f"max {mx} is not in the highest non-empty bucket [{lo}, {hi}]")
        self = cls()
        self._counts = copy
        self._count = sum(copy)
        self._total = total
        self._max = mx
        return self

    def record(self, ns: int) -> None:
        """Count one sample of ``ns`` (an int, ``0 <= ns <= MAX_VALUE``)."""
        ns = integer(ns, "ns", 0, MAX_VALUE)
        e = ns.bit_length() - 8
        self._counts[(e << 7) + (ns >> e) if e > 0 else ns] += 1
        self._count += 1
        self._total += ns
        if ns > self._max:
            self._max = ns

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s samples to this histogram (``other`` is unchanged)."""
        if not isinstance(other, LatencyHistogram):
            raise TypeError(f"other must be a LatencyHistogram, not {type(other).__name__}")
        self._counts = [a + b for a, b in zip(self._counts, other._counts, strict=True)]
        self._count += other._count
        self._total += other._total
        self._max = self._max if self._max >= other._max else other._max

    @property
    def count(self) -> int:
        """The number of samples."""
        return self._count

    @property
    def total(self) -> int:
        """The exact sum of the samples."""
        return self._total

    @property
    def max(self) -> int:
        """The exact largest sample (0 when empty)."""
        return self._max

    @property
    def mean(self) -> float:
        """The exact mean (0.0 when empty)."""
        return self._total / self._count if self._count else 0.0

    def percentile(self, p: float) -> int:
        """The nearest-rank ``p``-th percentile (``0 <= p <= 100``), 0 when empty.

        Never below the exact value, and above it by less than 1/128 of it.
        """
        if isinstance(p, bool) or not isinstance(p, int | float):
            raise TypeError(f"p must be a number of percent, not {type(p).__name__}")
        if not 0 <= p <= 100:  # also refuses NaN
            raise ValueError(f"p must be in 0..100, got {p!r}")
        if not self._count:
            return 0
        # Exact arithmetic on the decimal the caller wrote: 99.9 % of 1000 is rank 999.
        rank = max(1, math.ceil(Fraction(repr(float(p))) * self._count / 100))
        index = bisect_left(list(accumulate(self._counts)), rank)
        hi = bucket_bounds(index)[1]
        return hi if hi < self._max else self._max

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """``(lowest, highest, count)`` of each non-empty bucket, in increasing order."""
        for i, c in enumerate(self._counts):
            if c:
                lo, hi = bucket_bounds(i)
                yield lo, hi, c
