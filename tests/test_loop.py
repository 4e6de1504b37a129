"""The event loop on a real SPDK app thread: ordering, sleeping, cancellation, timeouts, errors."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import spdk_io
from spdk_io import loop as L
from spdk_io.errors import CallbackError, Cancelled

Run = Callable[[Awaitable[Any]], Any]


def test_tasks_interleave_in_fifo_order(run: Run) -> None:
    trace: list[str] = []

    async def worker(tag: str) -> None:
        for i in range(3):
            trace.append(f"{tag}{i}")
            await spdk_io.sleep(0)

    async def main() -> None:
        tasks = [spdk_io.spawn(worker(t)) for t in "abc"]
        await L.wait(tasks)

    run(main())
    assert trace == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]


def test_task_result_and_exception_propagate(run: Run) -> None:
    async def ok() -> int:
        await spdk_io.sleep(0)
        return 42

    async def bad() -> None:
        await spdk_io.sleep(0)
        raise KeyError("boom")

    async def main() -> tuple[int, str]:
        t1 = spdk_io.spawn(ok())
        t2 = spdk_io.spawn(bad())
        value = await t1
        try:
            await t2
        except KeyError as exc:
            return value, str(exc)
        raise AssertionError("no exception")

    assert run(main()) == (42, "'boom'")


def test_sleep_waits_on_spdk_timer(run: Run) -> None:
    async def main() -> float:
        t0 = time.monotonic()
        await spdk_io.sleep(0.05)
        return time.monotonic() - t0

    assert run(main()) >= 0.05


def test_sleep_rejects_bad_durations(run: Run) -> None:
    async def main() -> None:
        for bad in (-1, float("nan")):
            with pytest.raises(ValueError):
                await spdk_io.sleep(bad)

    run(main())


def test_cancel_sleeping_task_unregisters_timer(run: Run) -> None:
    async def sleeper(log: list[str]) -> None:
        try:
            await spdk_io.sleep(10)
        except Cancelled:
            log.append("cancelled")
            raise

    async def main() -> list[str]:
        log: list[str] = []
        task = spdk_io.spawn(sleeper(log))
        await spdk_io.sleep(0.01)
        assert task.cancel()
        with pytest.raises(Cancelled):
            await task
        assert not task.cancel()  # already finished
        return log

    assert run(main()) == ["cancelled"]


def test_cancel_before_first_suspension(run: Run) -> None:
    async def victim() -> str:
        await spdk_io.sleep(1)
        return "finished"

    async def main() -> None:
        task = spdk_io.spawn(victim())
        task.cancel()
        with pytest.raises(Cancelled):
            await task

    run(main())


def test_cancelled_task_can_clean_up_with_awaits(run: Run) -> None:
    async def victim(log: list[str]) -> None:
        try:
            await spdk_io.sleep(10)
        finally:
            await spdk_io.sleep(0.001)  # awaiting in cleanup still works
            log.append("cleaned")

    async def main() -> list[str]:
        log: list[str] = []
        task = spdk_io.spawn(victim(log))
        await spdk_io.sleep(0)
        task.cancel()
        with pytest.raises(Cancelled):
            await task
        return log

    assert run(main()) == ["cleaned"]


def test_timeout_fires(run: Run) -> None:
    async def main() -> None:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await spdk_io.wait_for(spdk_io.sleep(5), 0.02)
        assert time.monotonic() - t0 < 5

    run(main())


def test_timeout_not_fired_leaves_task_alone(run: Run) -> None:
    async def main() -> str:
        async with spdk_io.timeout(0.02):
            await spdk_io.sleep(0)
        await spdk_io.sleep(0.05)  # past the old deadline: must not be cancelled now
        return await spdk_io.wait_for(_value("ok"), 1)

    assert run(main()) == "ok"


async def _value(v: str) -> str:
    await spdk_io.sleep(0)
    return v


def test_gather_results_in_order_and_cancels_on_error(run: Run) -> None:
    async def slow(v: int) -> int:
        await spdk_io.sleep(0.01 * v)
        return v

    async def fails() -> None:
        await spdk_io.sleep(0.001)
        raise ValueError("bad")

    async def forever(log: list[str]) -> None:
        try:
            await spdk_io.sleep(10)
        except Cancelled:
            log.append("sibling cancelled")
            raise

    async def main() -> list[str]:
        assert await spdk_io.gather(slow(3), slow(1), slow(2)) == [3, 1, 2]
        log: list[str] = []
        with pytest.raises(ValueError):
            await spdk_io.gather(fails(), forever(log))
        return log

    assert run(main()) == ["sibling cancelled"]


def test_awaiting_a_non_op_is_a_type_error(run: Run) -> None:
    class Bogus:
        def __await__(self) -> Any:
            yield "not an op"

    async def main() -> None:
        await Bogus()

    with pytest.raises(TypeError, match="not an spdk_io awaitable"):
        run(main())


def test_unawaited_failed_task_is_not_lost(run: Run) -> None:
    async def bad() -> None:
        raise RuntimeError("lost?")

    async def main() -> None:
        spdk_io.spawn(bad())
        await spdk_io.sleep(0.001)

    with pytest.raises(CallbackError, match="never awaited") as info:
        run(main())
    assert isinstance(info.value.__cause__, RuntimeError)


def test_block_on_nested_is_refused(run: Run, env: Any) -> None:
    async def main() -> None:
        coro = spdk_io.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            env.block_on(coro)

    run(main())
