"""Issue #7, loop part: waits that could never finish, cancellation at plain yields,
fail-fast gather, durations, and callback errors raised on the right OS thread."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import spdk_io
from spdk_io import _bridge
from spdk_io import loop as L
from spdk_io.errors import CallbackError, Cancelled
from spdk_io.loop import Op
from spdk_io.thread import SpdkThread

Run = Callable[[Awaitable[Any]], Any]


async def _sleep(seconds: float) -> None:
    await spdk_io.sleep(seconds)


# -- a task awaiting itself, or a cycle of tasks ------------------------------------------


def test_task_awaiting_itself_raises(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="awaits itself"):
            await spdk_io.wait_for(spdk_io.current_task(), 1)

    run(main())


def test_task_awaiting_itself_through_a_cycle_raises(run: Run) -> None:
    async def main() -> None:
        tasks: dict[str, L.Task[Any]] = {}

        async def a() -> None:
            await spdk_io.sleep(0)
            await tasks["b"]

        async def b() -> None:
            await spdk_io.sleep(0)
            await spdk_io.sleep(0)  # a is parked on b by now
            await tasks["a"]

        tasks["a"] = spdk_io.spawn(a(), name="a")
        tasks["b"] = spdk_io.spawn(b(), name="b")
        await spdk_io.sleep(0.2)
        done = [t.done() for t in tasks.values()]
        for t in tasks.values():
            t.cancel()
        await L.wait(tasks.values())
        assert done == [True, True], "the cycle was not broken"
        with pytest.raises(RuntimeError, match="deadlock"):
            tasks["b"].result()
        with pytest.raises(RuntimeError, match="deadlock"):
            tasks["a"].result()  # a awaited b and got its error

    run(main())


def test_awaiting_a_task_of_another_loop_is_refused(run: Run) -> None:
    async def main() -> None:
        mine = spdk_io.spawn(_sleep(0.2), name="mine")

        async def other() -> None:
            await mine

        with pytest.raises(RuntimeError, match="another OS thread"):
            await SpdkThread.spawn(other, name="other-loop")
        await mine

    run(main())


# -- cancellation and timeouts reach a task that only yields ------------------------------


async def _spin(seconds: float) -> str:
    """Only plain yields, bounded in time so a broken loop cannot spin forever."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await spdk_io.sleep(0)
    return "spun to the end"


def test_yielding_task_can_be_cancelled(run: Run) -> None:
    async def main() -> None:
        task = spdk_io.spawn(_spin(3), name="spinner")
        await spdk_io.sleep(0)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(Cancelled):
            await task
        assert time.monotonic() - t0 < 2

    run(main())


def test_timeout_fires_while_body_only_yields(run: Run) -> None:
    async def main() -> None:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            async with spdk_io.timeout(0.02):
                await _spin(3)
        assert time.monotonic() - t0 < 2

    run(main())


def test_expired_timeout_leaves_no_stray_cancel_behind(run: Run) -> None:
    """The deadline passes while the task is ready, and the block ends without suspending
    again: the block completed, and the next await after it must not raise ``Cancelled``."""

    async def main() -> str:
        # Enough ready tasks that the loop polls SPDK after every round of them.
        helpers = [spdk_io.spawn(_spin(0.5), name=f"h{i}") for i in range(L.POLL_EVERY * 2)]
        await spdk_io.sleep(0)  # from now on this task runs in the same rounds as the helpers
        async with spdk_io.timeout(0.01):
            time.sleep(0.03)  # past the deadline, without letting the loop run
            await spdk_io.sleep(0)  # the loop polls SPDK here: the timer fires now
        await spdk_io.sleep(0)
        await spdk_io.sleep(0.001)
        for h in helpers:
            h.cancel()
        await L.wait(helpers)
        return "no stray Cancelled"

    assert run(main()) == "no stray Cancelled"


def test_cancel_pending_at_yield_is_delivered_there(run: Run) -> None:
    async def main() -> list[str]:
        log: list[str] = []

        async def victim() -> None:
            spdk_io.current_task().cancel()  # cancel itself: delivered at its next suspension
            log.append("still running")
            try:
                await spdk_io.sleep(0)
            except Cancelled:
                log.append("cancelled at the yield")
                raise

        t = spdk_io.spawn(victim())
        with pytest.raises(Cancelled):
            await t
        return log

    assert run(main()) == ["still running", "cancelled at the yield"]


# -- gather fails fast ---------------------------------------------------------------------


async def _fails_after(seconds: float) -> None:
    await spdk_io.sleep(seconds)
    raise ValueError("failed early")


def test_gather_fails_fast_when_an_earlier_awaitable_never_finishes(run: Run) -> None:
    async def main() -> list[str]:
        log: list[str] = []

        async def forever() -> None:
            try:
                await spdk_io.sleep(math.inf)
            except Cancelled:
                log.append("forever cancelled")
                raise

        with pytest.raises(ValueError, match="failed early"):
            await spdk_io.wait_for(spdk_io.gather(forever(), _fails_after(0.01)), 2)
        return log

    assert run(main()) == ["forever cancelled"]


def test_gather_raises_at_the_first_failure_not_in_order(run: Run) -> None:
    async def main() -> float:
        t0 = time.monotonic()
        with pytest.raises(ValueError):
            await spdk_io.gather(spdk_io.sleep(3), _fails_after(0.01))
        return time.monotonic() - t0

    assert run(main()) < 1.5


def test_gather_cancels_task_arguments_and_reports_nothing_lost(run: Run) -> None:
    async def main() -> None:
        sleeper = spdk_io.spawn(_sleep(10), name="sleeper")
        with pytest.raises(ValueError):
            await spdk_io.gather(sleeper, _fails_after(0.001))
        assert sleeper.done()
        with pytest.raises(Cancelled):
            sleeper.result()

    run(main())  # no CallbackError about tasks never awaited


def test_gather_edge_cases(run: Run) -> None:
    async def main() -> None:
        assert await spdk_io.gather() == []
        op: Op[int] = Op("ready")
        op.set_result(7)
        assert await spdk_io.gather(op, spdk_io.spawn(_value(8))) == [7, 8]
        with pytest.raises(TypeError, match="argument 2"):
            _ = spdk_io.gather(spdk_io.sleep(0), 5)  # type: ignore[arg-type]  # the check under test

    run(main())


async def _value(v: int) -> int:
    await spdk_io.sleep(0)
    return v


def test_gather_cancelled_from_outside_cancels_children(run: Run) -> None:
    async def main() -> list[str]:
        log: list[str] = []

        async def child(i: int) -> None:
            try:
                await spdk_io.sleep(10)
            except Cancelled:
                log.append(f"child {i}")
                raise

        g = spdk_io.spawn(spdk_io.gather(child(1), child(2)))
        await spdk_io.sleep(0.01)
        g.cancel()
        with pytest.raises(Cancelled):
            await g
        return sorted(log)

    assert run(main()) == ["child 1", "child 2"]


# -- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1e300, 2**70, math.inf, 1e9 + 1])
def test_huge_sleep_waits_until_cancelled(run: Run, seconds: float) -> None:
    async def main() -> None:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await spdk_io.wait_for(spdk_io.sleep(seconds), 0.05)
        assert time.monotonic() - t0 >= 0.05

    run(main())


@pytest.mark.parametrize("seconds", [1e300, 2**70, math.inf])
def test_huge_timeout_never_fires(run: Run, seconds: float) -> None:
    async def main() -> str:
        async with spdk_io.timeout(seconds):
            await spdk_io.sleep(0.02)
        return await spdk_io.wait_for(_text("ok"), seconds)

    assert run(main()) == "ok"


async def _text(v: str) -> str:
    await spdk_io.sleep(0.001)
    return v


def test_duration_arguments_are_checked_before_anything_happens(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="seconds"):
            spdk_io.sleep("1")  # type: ignore[arg-type]  # the check under test
        with pytest.raises(TypeError, match="seconds"):
            spdk_io.sleep(True)
        with pytest.raises(TypeError, match="seconds"):
            spdk_io.timeout("1")  # type: ignore[arg-type]  # the check under test
        with pytest.raises(ValueError, match="seconds"):
            spdk_io.timeout(-1)
        coro = _text("unused")
        try:
            with pytest.raises(TypeError, match="seconds"):
                _ = spdk_io.wait_for(coro, "1")  # type: ignore[arg-type]  # the check under test
            with pytest.raises(TypeError, match="awaitable"):
                _ = spdk_io.wait_for(5, 1)  # type: ignore[arg-type]  # the check under test
        finally:
            coro.close()

    run(main())


# -- tasks that end cancelled are not "failed and never awaited" -----------------------------


def test_cancelled_unawaited_task_is_not_reported_lost(run: Run) -> None:
    async def main() -> None:
        t = spdk_io.spawn(_sleep(10), name="dropped")
        await spdk_io.sleep(0)
        t.cancel()
        await spdk_io.sleep(0.001)

    run(main())  # before: CallbackError("task(s) dropped failed and were never awaited")


def test_tasks_cancelled_by_a_stopped_run_do_not_poison_the_next_run(run: Run) -> None:
    """A run stopped by a callback error cancels every task; the next run starts clean."""

    def boom() -> None:
        raise ValueError("callback failed")

    async def first() -> None:
        for i in range(3):
            spdk_io.spawn(_sleep(10), name=f"left{i}")
        await spdk_io.sleep(0)
        _bridge.ctx_cb(_bridge.once(boom))
        await spdk_io.sleep(10)

    async def second() -> str:
        await spdk_io.sleep(0)
        return "clean"

    with pytest.raises(CallbackError, match="callback failed"):
        run(first())
    assert run(second()) == "clean"


def test_failure_of_an_unawaited_task_is_noted_when_main_fails(run: Run) -> None:
    async def bad() -> None:
        raise KeyError("side failure")

    async def main() -> None:
        spdk_io.spawn(bad(), name="side")
        await spdk_io.sleep(0)
        raise ValueError("main failed")

    with pytest.raises(ValueError, match="main failed") as info:
        run(main())
    notes = getattr(info.value, "__notes__", [])
    assert any("side" in n and "KeyError" in n for n in notes), notes


# -- errors raised in callbacks -------------------------------------------------------------


def test_orphan_callback_error_is_raised_by_the_next_loop_on_that_os_thread(run: Run) -> None:
    """A callback that fails while no loop exists on its OS thread: that thread's next loop
    raises it, and no other thread's loop sees it."""

    outcome: list[object] = []

    def body() -> None:
        def boom() -> None:
            raise ZeroDivisionError("orphaned")

        _bridge.ctx_cb(_bridge.once(boom))  # through C, while this OS thread has no loop
        thread = SpdkThread.create("orphan-test")
        try:
            thread.block_on(spdk_io.sleep(0))
            outcome.append("nothing raised")
        except CallbackError as exc:
            outcome.append(exc)
        finally:
            thread.close()

    worker = threading.Thread(target=body)
    worker.start()

    async def main() -> str:
        for _ in range(100):  # the app thread's loop keeps turning meanwhile
            await spdk_io.sleep(0.001)
        return "app thread unaffected"

    assert run(main()) == "app thread unaffected"
    worker.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], CallbackError), outcome
    assert isinstance(outcome[0].__cause__, ZeroDivisionError)


def test_callback_error_whose_str_raises_is_still_reported(run: Run) -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    def boom() -> None:
        raise Weird

    async def main() -> None:
        _bridge.ctx_cb(_bridge.once(boom))
        for _ in range(50):
            await spdk_io.sleep(0)

    with pytest.raises(CallbackError) as info:
        run(main())
    assert isinstance(info.value.__cause__, Weird)


def test_keyboard_interrupt_in_a_callback_also_finishes_its_op(run: Run) -> None:
    """The op a failing callback was to complete is finished too: nobody waits on it forever."""
    seen: list[object] = []

    async def main() -> None:
        op: Op[None] = Op("interrupted callback")

        def boom() -> None:
            raise KeyboardInterrupt

        _bridge.ctx_cb(_bridge.once(boom, op))
        seen.append(op.done())
        if op.done():
            try:
                op.result()
            except BaseException as exc:
                seen.append(type(exc).__name__)
        await spdk_io.sleep(0.01)

    with pytest.raises(KeyboardInterrupt):
        run(main())
    assert seen == [True, "KeyboardInterrupt"]


# -- audit: the same classes of problem elsewhere in the loop ------------------------------


def test_cancel_never_raises_and_the_task_still_ends_when_releasing_its_op_fails(
    run: Run,
) -> None:
    """``cancel()`` releases the op the task waits on; if that raises, the task must still be
    woken (not left detached forever) and the error must stop the loop, not the canceller."""

    def bad_release() -> None:
        raise ZeroDivisionError("release failed")

    async def main() -> list[str]:
        log: list[str] = []
        op: Op[None] = Op("held", abort=bad_release)

        async def holder() -> None:
            await op

        t = spdk_io.spawn(holder(), name="holder")
        await spdk_io.sleep(0)
        t.cancel()  # must not raise here
        log.append("cancel returned")
        try:
            await spdk_io.wait_for(t, 1)
        except Cancelled:
            log.append("holder cancelled")
        await spdk_io.sleep(0.01)
        return log

    with pytest.raises(CallbackError, match="release failed") as info:
        run(main())
    notes = getattr(info.value, "__notes__", [])
    assert not notes, notes


def test_loop_arguments_are_checked(run: Run, env: Any) -> None:
    async def main() -> None:
        coro = _text("unused")
        try:
            with pytest.raises(TypeError, match="name"):
                spdk_io.spawn(coro, name=5)  # type: ignore[arg-type]  # the check under test
        finally:
            coro.close()
        t = spdk_io.spawn(_sleep(10), name="victim")
        with pytest.raises(TypeError, match="exc"):
            t.cancel("stop")  # type: ignore[arg-type]  # the check under test
        assert not t.done()
        t.cancel()
        with pytest.raises(TypeError, match="tasks"):
            await L.wait([t, "not a task"])  # type: ignore[list-item]  # the check under test
        await L.wait([t])

    run(main())
    with pytest.raises(TypeError, match="main"):
        env.block_on(5)


def test_block_on_a_task_of_another_loop_is_refused(run: Run) -> None:
    async def main() -> None:
        mine = spdk_io.spawn(_sleep(0.05), name="mine")

        def other() -> None:
            spdk_io.current_thread().block_on(mine)

        with pytest.raises(RuntimeError, match="another"):
            await SpdkThread.spawn(other, name="other-block-on")
        await mine

    run(main())


def test_tasks_still_stuck_after_cancel_all_are_finished(run: Run) -> None:
    """A task that ignores cancellation is closed; whoever awaits it is woken."""

    async def stubborn() -> None:
        while True:
            try:
                await spdk_io.sleep(0.05)
            except Cancelled:
                continue

    async def main() -> L.Task[None]:
        return spdk_io.spawn(stubborn(), name="stubborn")

    t = run(main())
    loop = spdk_io.current_thread().loop

    async def inside() -> None:
        loop.cancel_all()

    with pytest.raises(RuntimeError, match="running"):
        run(inside())
    with pytest.raises(TypeError, match="budget"):
        loop.cancel_all("1")  # type: ignore[arg-type]  # the check under test
    t0 = time.monotonic()
    loop.cancel_all(0.2)
    assert time.monotonic() - t0 < 5
    assert t.done()
    with pytest.raises(Cancelled):
        t.result()
    assert run(_value(3)) == 3  # the closed task is never resumed again ...
    assert run(_sleep(0.2)) is None  # ... not even when the op it waited on completes


def test_public_task_and_loop_state_for_other_modules(run: Run) -> None:
    """``mark_observed``, ``failed`` and ``take_crash``: what app/thread need, without privates."""

    async def bad() -> None:
        raise KeyError("handled elsewhere")

    async def main() -> None:
        t = spdk_io.spawn(bad(), name="handled")
        t.mark_observed()
        ok = spdk_io.spawn(_value(1))
        await spdk_io.sleep(0.001)
        assert t.failed() and not ok.failed() and ok.done()
        loop = spdk_io.current_thread().loop
        loop.crash(ValueError("to be taken"))
        taken = loop.take_crash()
        assert isinstance(taken, ValueError) and loop.take_crash() is None

    run(main())  # no CallbackError for "handled", no crash left


def test_stuck_tasks_awaiting_each_other_are_all_closed(run: Run) -> None:
    async def stubborn() -> None:
        while True:
            try:
                await spdk_io.sleep(0.05)
            except Cancelled:
                continue

    async def waiter(t: L.Task[None]) -> None:
        while True:
            try:
                await t
            except Cancelled:
                continue

    async def main() -> list[L.Task[None]]:
        inner = spdk_io.spawn(stubborn(), name="inner")
        return [inner, spdk_io.spawn(waiter(inner), name="outer")]

    tasks = run(main())
    spdk_io.current_thread().loop.cancel_all(0.2)
    assert all(t.done() for t in tasks)
    assert run(_sleep(0.2)) is None  # neither is resumed again
