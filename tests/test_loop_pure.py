"""The loop with no SPDK at all: driven by a Python poll function and Python timers.

The Loop takes everything it uses in its constructor (poll, timers, idle hints), so
its scheduling rules can be checked anywhere; the SPDK tier checks them again on real
SPDK threads (tests/test_loop.py).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from spdk_io.errors import CallbackError, Cancelled, InvalidStateError
from spdk_io.loop import Loop, Op, current_task, gather, sleep, spawn, timeout, wait_for

pytestmark = pytest.mark.spdk_free


class PyTimers:
    """A timer wheel in Python: what an SPDK thread's timed pollers give the loop."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self.polls = 0

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        ident = next(self._ids)
        heapq.heappush(self._heap, (time.monotonic() + seconds, ident, fn))
        return lambda: self._cancelled.add(ident)

    def poll(self) -> int:
        self.polls += 1
        fired = 0
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            _, ident, fn = heapq.heappop(self._heap)
            if ident not in self._cancelled:
                fn()
                fired += 1
        return fired

    def next_timer(self) -> float | None:
        return max(0.0, self._heap[0][0] - time.monotonic()) if self._heap else None


def make_loop() -> tuple[Loop, PyTimers]:
    timers = PyTimers()
    loop = Loop(timers.poll, call_later=timers.call_later, next_timer=timers.next_timer)
    return loop, timers


def run(coro: Any) -> Any:
    loop, _ = make_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_tasks_interleave_at_yields_in_order() -> None:
    log: list[str] = []

    async def worker(name: str) -> None:
        for i in range(3):
            log.append(f"{name}{i}")
            await sleep(0)

    async def main() -> None:
        await gather(worker("a"), worker("b"))

    run(main())
    assert log == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_sleep_and_timers_come_from_the_constructor() -> None:
    async def main() -> float:
        t0 = time.monotonic()
        await sleep(0.02)
        return time.monotonic() - t0

    loop, timers = make_loop()
    try:
        assert loop.run_until_complete(main()) >= 0.02
    finally:
        loop.close()
    assert timers.polls > 0


def test_a_loop_without_timers_says_so() -> None:
    loop = Loop(lambda: 0)

    async def main() -> None:
        await sleep(0.01)

    try:
        with pytest.raises(RuntimeError, match="without timers"):
            loop.run_until_complete(main())
    finally:
        loop.close()


def test_timeout_cancels_a_task_that_only_yields() -> None:
    async def main() -> str:
        try:
            async with timeout(0.02):
                while True:
                    await sleep(0)
        except TimeoutError:
            return "timed out"
        raise AssertionError("unreachable: the loop only ends by the timeout")

    assert run(main()) == "timed out"


def test_wait_for_returns_in_time_and_times_out_late() -> None:
    async def quick() -> int:
        await sleep(0.001)
        return 7

    async def main() -> tuple[int, str]:
        value = await wait_for(quick(), 1.0)
        try:
            await wait_for(sleep(10), 0.01)
        except TimeoutError:
            return value, "late"
        return value, "no timeout"

    assert run(main()) == (7, "late")


def test_gather_fails_fast_and_cancels_the_others() -> None:
    cancelled: list[str] = []

    async def forever() -> None:
        try:
            await sleep(float("inf"))
        except Cancelled:
            cancelled.append("forever")
            raise

    async def fails() -> None:
        await sleep(0.005)
        raise KeyError("boom")

    async def main() -> None:
        await gather(forever(), fails())

    t0 = time.monotonic()
    with pytest.raises(KeyError, match="boom"):
        run(main())
    assert time.monotonic() - t0 < 5 and cancelled == ["forever"]


def test_a_task_awaiting_itself_raises() -> None:
    async def main() -> None:
        await current_task()

    with pytest.raises(RuntimeError, match="itself"):
        run(main())


def test_an_op_completes_once_and_wakes_its_waiter() -> None:
    op: Op[int] = Op("external")

    async def main() -> int:
        return await op

    loop, timers = make_loop()
    timers.call_later(0.005, lambda: op.set_result(42))
    try:
        assert loop.run_until_complete(main()) == 42
    finally:
        loop.close()
    with pytest.raises(InvalidStateError):
        op.set_result(1)


def test_rearm_reuses_a_finished_op_and_refuses_a_pending_one() -> None:
    op: Op[None] = Op("slot")
    with pytest.raises(InvalidStateError):
        op.rearm()
    op.set_result(None)
    op.rearm()
    assert not op.done()
    op.set_exception(OSError("again"))
    with pytest.raises(OSError, match="again"):
        op.result()


def test_a_task_may_be_awaited_by_several_tasks() -> None:
    async def worker() -> int:
        await sleep(0.005)
        return 42

    async def failing() -> int:
        await sleep(0.005)
        raise KeyError("shared failure")

    async def main() -> tuple[list[Any], list[str]]:
        t = spawn(worker(), "worker")

        async def waiter() -> int:
            return await t

        results = await gather(waiter(), waiter(), waiter())
        f = spawn(failing(), "failing")
        errors: list[str] = []

        async def catcher() -> None:
            try:
                await f
            except KeyError as exc:
                errors.append(str(exc))

        await gather(catcher(), catcher())
        return results, errors

    assert run(main()) == ([42, 42, 42], ["'shared failure'", "'shared failure'"])


def test_cancelling_one_awaiter_leaves_the_others_waiting() -> None:
    async def main() -> int:
        gate: Op[int] = Op("gate")
        t = spawn(_await_op(gate), "worker")

        async def waiter() -> int:
            return await t

        first = spawn(waiter(), "first")
        second = spawn(waiter(), "second")
        await sleep(0)
        first.cancel()
        await sleep(0)
        gate.set_result(5)
        assert first.done() and first.failed()
        return await second

    assert run(main()) == 5


async def _await_op(op: Op[int]) -> int:
    return await op


class FakeQueue:
    """A queue a direct poll drains: ``process(tag, limit)`` completes what is pending."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.pending: list[Op[None]] = []
        self.rc = 0  # a negative value: the queue failed
        self.failures: list[int] = []

    def process(self, tag: str, limit: int) -> int:
        self.calls.append((tag, limit))
        if self.rc:
            return self.rc
        done, self.pending = self.pending, []
        for op in done:
            op.set_result(None)
        return len(done)


def test_a_direct_poll_runs_every_turn_and_completes_what_tasks_await() -> None:
    loop, _ = make_loop()
    q = FakeQueue()
    remove = loop.add_direct_poll(q.process, ("qp", 0), q.failures.append)

    async def main() -> int:
        for _ in range(3):
            op: Op[None] = Op("io")
            q.pending.append(op)
            await op  # only the direct poll completes it: no timer, no other task
        return len(q.calls)

    try:
        assert loop.run_until_complete(main()) >= 3
        assert set(q.calls) == {("qp", 0)}
        n = len(q.calls)
        assert loop.poll() == 0 and len(q.calls) == n + 1  # Loop.poll() runs it too
        remove()
        remove()  # idempotent
        loop.poll()
        assert len(q.calls) == n + 1  # removed: never called again
    finally:
        loop.close()
    assert q.failures == []


def test_a_direct_poll_keeps_the_loop_awake() -> None:
    """While a direct poll is registered the loop spins (it never sleeps in _idle), as
    with an active poller: a sleeping loop would not notice completions."""
    loop, _ = make_loop()
    q = FakeQueue()
    loop.add_direct_poll(q.process, ("qp", 0), q.failures.append)

    async def main() -> None:
        await sleep(0.05)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    # A sleeping loop turns about 50 times in 50 ms (IDLE_SLEEP_MAX is 1 ms); a spinning
    # one many thousand times, each calling the direct poll.
    assert len(q.calls) > 1000


def test_a_failing_direct_poll_reports_to_failed_and_errors_stop_the_loop() -> None:
    loop, _ = make_loop()
    q = FakeQueue()
    q.rc = -5
    loop.add_direct_poll(q.process, ("qp", 0), q.failures.append)
    try:
        loop.poll()
        assert q.failures == [-5]
    finally:
        loop.close()

    loop, _ = make_loop()

    def failed(rc: int) -> None:
        raise ValueError(f"rc {rc}")

    loop.add_direct_poll(q.process, ("qp", 0), failed)

    async def main() -> None:
        await sleep(10)

    try:
        with pytest.raises(CallbackError, match="direct poll raised ValueError: rc -5"):
            loop.run_until_complete(main())
    finally:
        loop.close()


def test_add_direct_poll_checks_its_arguments_and_its_thread() -> None:
    loop, _ = make_loop()
    q = FakeQueue()
    try:
        with pytest.raises(TypeError):
            loop.add_direct_poll(q.process, ["qp", 0], q.failures.append)  # type: ignore[arg-type]  # the check under test
        with pytest.raises(TypeError):
            loop.add_direct_poll(q.process, ("qp", 0), None)  # type: ignore[arg-type]  # the check under test
        errors: list[BaseException] = []

        def other() -> None:
            try:
                loop.add_direct_poll(q.process, ("qp", 0), q.failures.append)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
        loop.poll()
        assert q.calls == []  # nothing was registered
    finally:
        loop.close()
