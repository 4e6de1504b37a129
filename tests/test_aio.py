"""spdk_io.aio: SPDK on its own OS thread, awaited from asyncio (issue #11).

Each test runs in a fresh process (``run_py``): a runtime brings its own SPDK up
and down, and the session's SPDK is already up in this one.
"""

from __future__ import annotations

import signal
import textwrap
from typing import Any

import pytest

from tests.conftest import finish_within, run_py, start_py, wait_ready

PRELUDE = """
import asyncio, concurrent.futures, threading
import spdk_io
import spdk_io.aio
from spdk_io.aio import Runtime, RuntimeStoppedError
from spdk_io.env import is_up

def spdk_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("spdk_io-aio")]

async def version():
    return (await spdk_io.rpc.call("spdk_get_version"))["version"]
"""


def child(code: str, timeout: float = 60) -> str:
    """Run ``PRELUDE + code`` in a fresh process; its stdout (the test fails on a
    non-zero exit)."""
    proc = run_py(PRELUDE + textwrap.dedent(code), timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout


def test_run_and_submit_return_results_and_the_runtime_restarts() -> None:
    out = child(
        """
        async def main():
            for i in range(2):  # the second runtime brings SPDK up again in this process
                async with Runtime(mem_size_mb=512) as rt:
                    print(i, "threads in:", spdk_threads(), "up:", is_up(), flush=True)
                    print(i, "run:", await rt.run(version), flush=True)
                    print(i, "args:", await rt.run(lambda a, b: a + b, 2, 3), flush=True)
                    fut = rt.submit(version)
                    print(i, "submit:", await asyncio.wrap_future(fut), flush=True)
                    # SPDK's thread id is not asyncio's: the call ran on the runtime's thread
                    here = threading.get_ident()
                    there = await rt.run(lambda: threading.get_ident())
                    print(i, "elsewhere:", here != there, flush=True)
                print(i, "threads out:", spdk_threads(), "up:", is_up(), flush=True)
            try:
                await rt.run(version)
            except RuntimeStoppedError as exc:
                print("after:", exc, flush=True)

        asyncio.run(main())
        """
    )
    for i in range(2):
        assert f"{i} threads in: ['spdk_io-aio'] up: True" in out
        assert f"{i} run: SPDK v26.05" in out
        assert f"{i} args: 5" in out
        assert f"{i} submit: SPDK v26.05" in out
        assert f"{i} elsewhere: True" in out
        assert f"{i} threads out: [] up: False" in out
    assert "after: runtime spdk_io-aio is not running" in out


def test_exceptions_cross_as_the_same_object_with_cause_and_notes() -> None:
    out = child(
        """
        raised = []

        async def fail():
            await spdk_io.sleep(0.001)
            try:
                raise KeyError("inner")
            except KeyError as inner:
                err = ValueError("outer")
                err.add_note("a note from SPDK's side")
                raised.append(err)
                raise err from inner

        async def main():
            async with Runtime(mem_size_mb=512) as rt:
                try:
                    await rt.run(fail)
                except ValueError as exc:
                    print("same object:", exc is raised[0], flush=True)
                    print("cause:", repr(exc.__cause__), flush=True)
                    print("notes:", exc.__notes__, flush=True)
                try:
                    rt.submit(fail).result(timeout=30)
                except ValueError as exc:
                    print("submit same object:", exc is raised[1], flush=True)
                # a plain function's exception, raised before any await
                try:
                    await rt.run(lambda: 1 // 0)
                except ZeroDivisionError as exc:
                    print("plain:", exc, flush=True)

        asyncio.run(main())
        """
    )
    assert "same object: True" in out
    assert "cause: KeyError('inner')" in out
    assert 'notes: ["a note from SPDK\'s side"]' in out
    assert "submit same object: True" in out
    assert "plain: integer division or modulo by zero" in out


def test_cancelling_the_asyncio_task_cancels_the_spdk_task_after_its_cleanup() -> None:
    out = child(
        """
        log = []

        async def long_job(tag):
            log.append(f"{tag} started")
            try:
                await spdk_io.sleep(float("inf"))
            except spdk_io.Cancelled:
                log.append(f"{tag} got Cancelled")
                raise
            finally:
                await spdk_io.sleep(0.01)  # asynchronous cleanup, on SPDK's loop
                log.append(f"{tag} cleanup done")

        async def started(rt, tag):
            while f"{tag} started" not in await rt.run(lambda: list(log)):
                await asyncio.sleep(0.001)

        async def main():
            async with Runtime(mem_size_mb=512) as rt:
                task = asyncio.create_task(rt.run(long_job, "a"))
                await started(rt, "a")
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    # the spdk_io task had unwound before the awaiter was told
                    print("a on CancelledError:", log, flush=True)
                # asyncio's own timeouts cancel the same way
                try:
                    async with asyncio.timeout(0.05):
                        await rt.run(long_job, "b")
                except TimeoutError:
                    print("b on TimeoutError:", log[-3:], flush=True)
                # cancelled via submit's future
                fut = rt.submit(long_job, "c")
                await started(rt, "c")
                print("c cancel:", fut.cancel(), flush=True)
                while "c cleanup done" not in await rt.run(lambda: list(log)):
                    await asyncio.sleep(0.001)
                print("c log:", log[-3:], flush=True)
                print("still serving:", await rt.run(version), flush=True)

        asyncio.run(main())
        """
    )
    assert "a on CancelledError: ['a started', 'a got Cancelled', 'a cleanup done']" in out
    assert "b on TimeoutError: ['b started', 'b got Cancelled', 'b cleanup done']" in out
    assert "c cancel: True" in out
    assert "c log: ['c started', 'c got Cancelled', 'c cleanup done']" in out
    assert "still serving: SPDK v26.05" in out


def test_cancellation_on_the_spdk_side_reaches_the_awaiter() -> None:
    out = child(
        """
        async def cancel_myself():
            spdk_io.current_task().cancel()
            await spdk_io.sleep(10)

        async def main():
            async with Runtime(mem_size_mb=512) as rt:
                task = asyncio.create_task(rt.run(cancel_myself))
                try:
                    await task
                except asyncio.CancelledError as exc:
                    print("CancelledError caused by:", type(exc.__cause__).__name__, flush=True)
                print("task cancelled:", task.cancelled(), flush=True)
                fut = rt.submit(cancel_myself)
                try:
                    fut.result(timeout=30)
                except concurrent.futures.CancelledError:
                    print("future cancelled:", fut.cancelled(), flush=True)
                # the runtime stopping cancels what still runs on SPDK's side
                task = asyncio.create_task(rt.run(spdk_io.sleep, float("inf")))
                await asyncio.sleep(0.05)
            try:
                await task
            except asyncio.CancelledError as exc:
                print("stopping cancelled it:", exc.__cause__, flush=True)

        asyncio.run(main())
        """
    )
    assert "CancelledError caused by: Cancelled" in out
    assert "task cancelled: True" in out
    assert "future cancelled: True" in out
    assert "stopping cancelled it: runtime spdk_io-aio stopped while call sleep ran" in out


def test_neither_loop_blocks_the_other() -> None:
    out = child(
        """
        async def spdk_steps(n):
            for _ in range(n):
                await spdk_io.sleep(0.001)
            return n

        async def until(flag):
            turns = 0
            while not flag:
                await spdk_io.sleep(0.001)
                turns += 1
            return turns

        async def main():
            async with Runtime(mem_size_mb=512) as rt:
                # asyncio's thread blocks (no await) until SPDK has done 20 timed steps:
                # only possible if SPDK's loop runs while asyncio's cannot.
                fut = rt.submit(spdk_steps, 20)
                print("while asyncio was blocked:", fut.result(timeout=30), flush=True)
                # an SPDK call that finishes only after asyncio has run 200 turns of its own
                flag = []
                call = asyncio.create_task(rt.run(until, flag))
                for _ in range(200):
                    await asyncio.sleep(0)
                print("call still pending:", not call.done(), flush=True)
                flag.append(1)
                print("SPDK turns:", await call > 0, flush=True)

        asyncio.run(main())
        """
    )
    assert "while asyncio was blocked: 20" in out
    assert "call still pending: True" in out
    assert "SPDK turns: True" in out


def test_the_block_raising_or_being_cancelled_stops_spdk() -> None:
    out = child(
        """
        log = []

        async def guarded():
            try:
                await spdk_io.sleep(float("inf"))
            finally:
                log.append("cleanup ran")

        async def raises():
            async with Runtime(mem_size_mb=512) as rt:
                asyncio.create_task(rt.run(guarded))
                await asyncio.sleep(0.05)
                raise LookupError("from the block")

        async def cancelled():
            async with Runtime(mem_size_mb=512) as rt:
                await rt.run(guarded)

        async def main():
            try:
                await raises()
            except LookupError as exc:
                print("raised:", exc, log, spdk_threads(), is_up(), flush=True)
            task = asyncio.create_task(cancelled())
            await asyncio.sleep(0.5)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                print("cancelled:", log, spdk_threads(), is_up(), flush=True)
            # cancelled while SPDK comes up: it goes down again, nothing is left
            task = asyncio.create_task(cancelled())
            await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                print("cancelled at start:", spdk_threads(), is_up(), flush=True)

        asyncio.run(main())
        """
    )
    assert "raised: from the block ['cleanup ran'] [] False" in out
    assert "cancelled: ['cleanup ran', 'cleanup ran'] [] False" in out
    assert "cancelled at start: [] False" in out


def test_bad_use_is_refused_clearly() -> None:
    out = child(
        """
        import time
        for bad in ({"mem_size_mb": 1}, {"no_such_option": 1}, {"idle_pause": 0.5},
                    {"idle_pause": "1"}):
            try:
                Runtime(**bad)
            except (TypeError, ValueError) as exc:
                print("refused options:", type(exc).__name__, spdk_threads(), flush=True)

        async def nested():
            async with Runtime(mem_size_mb=512) as rt:
                try:
                    async with Runtime(mem_size_mb=512):
                        pass
                except RuntimeError as exc:
                    print("nested:", exc, flush=True)
                for bad in (42, version()):
                    try:
                        await rt.run(bad)
                    except TypeError as exc:
                        print("not a function:", exc, flush=True)
                print("still serving:", await rt.run(version), flush=True)
                try:
                    async with rt:
                        pass
                except RuntimeError as exc:
                    print("again:", exc, flush=True)

        asyncio.run(nested())

        with spdk_io.Env(mem_size_mb=512):
            async def while_up():
                t0 = time.monotonic()
                try:
                    async with Runtime():
                        pass
                except RuntimeError as exc:
                    print("while up:", exc, spdk_threads(), time.monotonic() - t0 < 5,
                          flush=True)
            asyncio.run(while_up())
        """
    )
    assert out.count("refused options: ValueError []") == 2
    assert out.count("refused options: TypeError []") == 2
    assert "nested: SPDK is already up in this process" in out
    assert out.count("not a function: ") == 2
    assert "still serving: SPDK v26.05" in out
    assert "again: runtime spdk_io-aio was started already" in out
    assert "while up: SPDK is already up in this process" in out
    assert "[] True" in out


def test_ctrl_c_stops_spdk_and_the_process_exits() -> None:
    proc = start_py(
        PRELUDE
        + textwrap.dedent(
            """
            async def forever():
                print("READY", flush=True)  # from SPDK's thread: the call runs
                try:
                    await spdk_io.sleep(float("inf"))
                finally:
                    print("spdk cleanup ran", flush=True)

            async def main():
                async with Runtime(mem_size_mb=512) as rt:
                    await rt.run(forever)

            try:
                asyncio.run(main())
            except KeyboardInterrupt:
                print("KeyboardInterrupt;", "threads:", spdk_threads(), "up:", is_up(),
                      flush=True)
            """
        )
    )
    wait_ready(proc)
    proc.send_signal(signal.SIGINT)
    out, err, _ = finish_within(proc, 30)
    assert proc.returncode == 0, err[-3000:]
    assert "spdk cleanup ran\n" in out
    assert "KeyboardInterrupt; threads: [] up: False" in out


def test_spdk_stops_when_the_interpreter_exits_without_leaving_the_block() -> None:
    out = child(
        """
        loop = asyncio.new_event_loop()
        rt = Runtime(mem_size_mb=512)
        loop.run_until_complete(rt.__aenter__())
        print("entered:", spdk_threads(), flush=True)
        fut = rt.submit(version)
        print("submit:", fut.result(timeout=30), flush=True)
        # the main thread ends here: SPDK notices, stops, and the interpreter joins it
        """
    )
    assert "entered: ['spdk_io-aio']" in out
    assert "submit: SPDK v26.05" in out


def test_loop_idle_pause_is_checked(env: Any) -> None:
    """The knob the runtime sets on SPDK's loop refuses what would stall it."""
    loop = env.thread.loop
    with pytest.raises(ValueError, match="at most"):
        loop.set_idle_pause(0.5)
    with pytest.raises(TypeError):
        loop.set_idle_pause("0.0001")
    with pytest.raises(ValueError, match="after_turns"):
        loop.set_idle_pause(0.0001, 0)
    loop.set_idle_pause(0.0001, 8)
    loop.set_idle_pause(0)


def test_courier_batches_keeps_order_and_survives_a_failing_item() -> None:
    """The one crossing mechanism: one wake-up per batch, in order, nothing dropped."""
    import functools
    from collections.abc import Callable

    from spdk_io._runtime import Courier

    drains: list[Callable[[], None]] = []
    courier = Courier(drains.append)  # "schedule": the test runs the drain itself
    seen: list[int] = []

    def fail() -> None:
        raise KeyError("item")

    for i in range(3):
        courier.post(functools.partial(seen.append, i))
    courier.post(fail)
    courier.post(lambda: seen.append(3))
    assert len(drains) == 1  # five posts, one wake-up
    with pytest.raises(KeyError):
        drains[0]()
    assert seen == [0, 1, 2, 3]
    courier.post(lambda: seen.append(4))
    assert len(drains) == 2  # a new batch after the drain
    drains[1]()
    assert seen == [0, 1, 2, 3, 4]

    def gone(drain: Callable[[], None]) -> None:
        raise RuntimeError("Event loop is closed")

    broken = Courier(gone)
    with pytest.raises(RuntimeError, match="closed"):
        broken.post(lambda: seen.append(5))
    with pytest.raises(RuntimeError, match="closed"):  # not stuck "scheduled"
        broken.post(lambda: seen.append(6))
    assert seen == [0, 1, 2, 3, 4]
