"""What debug mode costs: Op creation, failure and bdev I/O, ``spdk_io.debug`` off, on, before it.

    PYTHONPATH=. python benchmarks/bench_debug.py [--seconds 0.3] [--repeat 5] [--json]

Debug mode (``spdk_io.debug(True)``, ``SPDK_IO_DEBUG=1``) makes every ``Op`` record
where it was submitted.  Off, it must cost nothing measurable; this measures, in one
process on a real SPDK app thread:

* ``op_*``: an ``Op`` created and completed (``Op(what)``, ``set_result``), the cost
  of every one-shot operation; ``before`` is a verbatim copy of ``Op`` as it was before
  debug mode (its methods used here), the baseline;
* ``rearm_*``: a reused ``Op`` completed and rearmed, what the hot I/O paths
  (``IoSlot``, ``NvmeSlot``) do per I/O, against the same copy;
* ``fail_*``: the failure path: an ``Op`` created, failed (``set_exception`` with a new
  ``OSError``) and awaited (its ``__await__`` driven until it raises), against the same
  copy (its ``set_exception`` and ``__await__`` too);
* ``slot_read_*``: 4 KiB reads at queue depth 1 on a null bdev through an
  :class:`~spdk_io.bdev.IoSlot` (a rearmed ``Op`` per I/O), debug off and on;
* ``desc_read_*``: the same through :meth:`BdevDesc.read_blocks` (a new ``Op`` per I/O).

Samples alternate (off, on, before, then the next measurement; the order rotates every
repeat) so noise hits every variant alike; medians are reported, in ns of the thread's
CPU time per operation (wall time suffers more from a shared core), with the ratios
``off/before`` (the target: 1.00 within noise; ``fail`` also pays what every failure
costs since error context, ``isinstance`` tests of the exception), ``on/off`` (what
debug mode costs when it is on), and ``off_added_share_of_*_read``: what ``off`` adds
to an ``Op`` over ``before``, as a share of the I/O that uses it (the target: well
under 1 %, below what an I/O measurement resolves).  Exit status: 0, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar, cast

import spdk_io
from spdk_io import bdev_modules as bm
from spdk_io.bdev import BdevDesc
from spdk_io.dma import DmaBuf
from spdk_io.errors import InvalidStateError
from spdk_io.loop import Op

T = TypeVar("T")
#: This thread's CPU time: what the code costs, much less sensitive than wall time to
#: sharing the core (SPDK's null bdev completes only when this thread polls it).
_clock = time.thread_time
_PENDING = 0  # as spdk_io.loop has them: the copy below reads globals as the original does
_DONE = 1
_FAILED = 2
BLOCK = 4096
NULL_BLOCKS = 1 << 16
BDEV = "BenchDebug0"


class OpBefore(Generic[T]):
    """``spdk_io.loop.Op`` before debug mode, verbatim (what a one-shot and a rearmed
    operation cost then): the baseline of ``off``."""

    __slots__ = ("_abort", "_state", "_value", "_waiter", "keep", "what")

    def __init__(self, what: str = "", abort: Callable[[], None] | None = None) -> None:
        self._state = _PENDING
        self._value: Any = None
        self._waiter: Any = None
        self._abort = abort
        self.keep: object = None
        self.what = what

    def set_result(self, value: T) -> None:
        if self._state != _PENDING:
            raise InvalidStateError(f"{self!r} finished twice")
        self._state = _DONE
        self._value = value
        self.keep = None
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter._op = None
            waiter._loop._ready.append(waiter)

    def set_exception(self, exc: BaseException) -> None:
        self._finish(_FAILED, exc)

    def rearm(self) -> None:
        if self._state == _PENDING:
            raise InvalidStateError(f"{self!r} is still pending")
        self._state = _PENDING
        self._value = None
        self._abort = None

    def _finish(self, state: int, value: object) -> None:
        if self._state != _PENDING:
            raise InvalidStateError(f"{self!r} finished twice")
        self._state = state
        self._value = value
        self.keep = None
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter._op = None
            waiter._loop._ready.append(waiter)

    def result(self) -> T:
        if self._state == _DONE:
            return cast(T, self._value)
        if self._state == _FAILED:
            raise cast(BaseException, self._value)
        raise InvalidStateError(f"{self!r} has not finished")

    def __await__(self) -> Generator[Any, None, T]:
        if self._state == _PENDING:
            yield self
        if self._state == _DONE:
            return cast(T, self._value)
        return self.result()


def _timed(seconds: float, chunk: Callable[[], int]) -> float:
    """ns per operation: ``chunk()`` (which returns how many it did) until ``seconds`` pass."""
    n = 0
    t0 = _clock()
    while True:
        n += chunk()
        elapsed = _clock() - t0
        if elapsed >= seconds:
            return elapsed / n * 1e9


def op_ns(cls: Callable[[str], Any], seconds: float) -> float:
    def chunk() -> int:
        for _ in range(10_000):
            op = cls("bench")
            op.set_result(None)
        return 10_000

    return _timed(seconds, chunk)


def rearm_ns(cls: Callable[[str], Any], seconds: float) -> float:
    op = cls("bench")

    def chunk() -> int:
        for _ in range(10_000):
            op.set_result(None)
            op.rearm()
        return 10_000

    return _timed(seconds, chunk)


def fail_ns(cls: Callable[[str], Any], seconds: float) -> float:
    def chunk() -> int:
        for _ in range(10_000):
            op = cls("bench")
            op.set_exception(OSError(5, "bench"))  # a new one each time, as in real failures
            try:  # noqa: SIM105  # contextlib.suppress would cost more than what is measured
                op.__await__().send(None)  # finished: raises without suspending
            except OSError:
                pass
        return 10_000

    return _timed(seconds, chunk)


async def slot_read_ns(desc: BdevDesc, buf: DmaBuf, seconds: float) -> float:
    mask = NULL_BLOCKS - 1
    with desc.slot(buf) as slot:
        read = slot.read_blocks
        n = 0
        t0 = _clock()
        while True:
            for i in range(n, n + 1000):
                await read(i & mask, 1)
            n += 1000
            elapsed = _clock() - t0
            if elapsed >= seconds:
                return elapsed / n * 1e9


async def desc_read_ns(desc: BdevDesc, buf: DmaBuf, seconds: float) -> float:
    mask = NULL_BLOCKS - 1
    read = desc.read_blocks
    n = 0
    t0 = _clock()
    while True:
        for i in range(n, n + 1000):
            await read(buf, i & mask, 1)
        n += 1000
        elapsed = _clock() - t0
        if elapsed >= seconds:
            return elapsed / n * 1e9


async def measure(seconds: float, repeat: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    await bm.create_null(BDEV, NULL_BLOCKS, BLOCK)
    try:
        with BdevDesc.open(BDEV) as desc, DmaBuf.alloc(BLOCK) as buf:
            for r in range(repeat):
                variants = ["off", "on", "before"]
                variants = variants[r % 3 :] + variants[: r % 3]  # rotate the order
                for v in variants:
                    spdk_io.debug(v == "on")
                    cls: Callable[[str], Any] = OpBefore if v == "before" else Op
                    add(f"op_{v}_ns", op_ns(cls, seconds))
                    add(f"rearm_{v}_ns", rearm_ns(cls, seconds))
                    add(f"fail_{v}_ns", fail_ns(cls, seconds))
                for v in variants:
                    if v == "before":
                        continue  # the I/O paths use spdk_io's Op: no copy to swap in
                    spdk_io.debug(v == "on")
                    add(f"slot_read_{v}_ns", await slot_read_ns(desc, buf, seconds))
                    add(f"desc_read_{v}_ns", await desc_read_ns(desc, buf, seconds))
    finally:
        spdk_io.debug(False)
        await bm.delete_null(BDEV)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="per sample")
    parser.add_argument("--repeat", type=int, default=5, help="samples; medians are reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.seconds <= 0 or args.repeat < 1:
        parser.error("--seconds must be > 0 and --repeat >= 1")
    was = spdk_io.debug()
    with spdk_io.Env(name="bench_debug") as env:
        samples = env.block_on(measure(args.seconds, args.repeat))
    spdk_io.debug(was)
    med = {k: statistics.median(v) for k, v in samples.items()}
    results: dict[str, Any] = {k: round(v, 1) for k, v in med.items()}
    for what in ("op", "rearm", "fail"):
        results[f"{what}_off_over_before"] = round(
            med[f"{what}_off_ns"] / med[f"{what}_before_ns"], 3
        )
    for what in ("op", "rearm", "fail", "slot_read", "desc_read"):
        results[f"{what}_on_over_off"] = round(med[f"{what}_on_ns"] / med[f"{what}_off_ns"], 3)
    # What debug mode, off, adds to an I/O: the Op's extra cost over the copy from before,
    # as a share of the I/O (a slot rearms an Op per I/O, a descriptor creates one).
    results["off_added_share_of_slot_read"] = round(
        (med["rearm_off_ns"] - med["rearm_before_ns"]) / med["slot_read_off_ns"], 4
    )
    results["off_added_share_of_desc_read"] = round(
        (med["op_off_ns"] - med["op_before_ns"]) / med["desc_read_off_ns"], 4
    )
    if args.json:
        print(json.dumps(results))
    else:
        width = max(map(len, results))
        for k, v in results.items():
            print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
