"""spdk_io.aio: SPDK on its own OS thread, awaited from asyncio (issue #11).

Each test runs in a fresh process (``run_py``): a runtime brings its own SPDK up
and down, and the session's SPDK is already up in this one.
"""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Callable
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
                # the runtime stopping stops what still runs on SPDK's side: nobody
                # cancelled the awaiter, so it is told the runtime stopped
                task = asyncio.create_task(rt.run(spdk_io.sleep, float("inf")))
                await asyncio.sleep(0.05)
            try:
                await task
            except RuntimeStoppedError as exc:
                print("stopping stopped it:", exc, type(exc.__cause__).__name__, flush=True)

        asyncio.run(main())
        """
    )
    assert "CancelledError caused by: Cancelled" in out
    assert "task cancelled: True" in out
    assert "future cancelled: True" in out
    assert "stopping stopped it: runtime spdk_io-aio stopped while call sleep ran Cancelled" in out


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


def test_a_crash_of_spdks_loop_fails_the_calls_in_flight_with_runtime_stopped() -> None:
    """Calls the runtime ends are not cancellations of their awaiters: a TaskGroup
    would swallow those, and the crash would vanish."""
    out = child(
        """
        def boom():
            raise LookupError("a bug on SPDK's side")

        async def main():
            try:
                async with Runtime(mem_size_mb=512) as rt:
                    task = asyncio.create_task(rt.run(spdk_io.sleep, float("inf")))
                    await rt.run(lambda: None)  # after this, the sleep runs
                    rt.submit(lambda: spdk_io.ThreadHandle.current().send(boom))
                    try:
                        await task
                    except RuntimeStoppedError as exc:
                        print("in flight:", exc, "| cause:", repr(exc.__cause__), flush=True)
                    try:
                        await rt.run(version)
                    except RuntimeStoppedError as exc:
                        print("after the crash:", exc, flush=True)
            except spdk_io.CallbackError as exc:
                print("the block raised:", repr(exc.__cause__), flush=True)
            print("down:", spdk_threads(), is_up(), flush=True)

        asyncio.run(main())
        """
    )
    assert "in flight: runtime spdk_io-aio crashed (CallbackError(" in out
    assert "| cause: CallbackError(" in out
    assert "after the crash: runtime spdk_io-aio is " in out
    assert 'the block raised: LookupError("a bug on SPDK\'s side")' in out
    assert "down: [] False" in out


def test_a_call_that_finished_before_its_cancellation_returns_its_result() -> None:
    """A finished call beats a cancel (trio's convention): its result (an open
    descriptor, say) is not lost; the cancellation hits at the next await."""
    out = child(
        """
        async def opened():
            return "descriptor"

        async def main():
            async with Runtime(mem_size_mb=512) as rt:
                got = []

                async def user():
                    got.append(await rt.run(opened))
                    await asyncio.sleep(0)  # the pending cancellation is raised here
                    got.append("not reached")

                task = asyncio.create_task(user())
                await asyncio.sleep(0)  # user's call is sent
                # Block asyncio's thread until SPDK has run a later call: the first one
                # has finished too, and its result waits in asyncio's queue.
                rt.submit(lambda: None).result(timeout=30)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    print("got:", got, "cancelled:", task.cancelled(), flush=True)
                # the same when asyncio.timeout expires: the value, then TimeoutError
                got = []
                try:
                    async with asyncio.timeout(None) as cm:

                        async def expire_once_spdk_ran():
                            rt.submit(lambda: None).result(timeout=30)
                            cm.reschedule(asyncio.get_running_loop().time())

                        helper = asyncio.create_task(expire_once_spdk_ran())
                        got.append(await rt.run(opened))
                        await asyncio.sleep(0)
                        got.append("not reached")
                except TimeoutError:
                    print("timeout:", got, flush=True)
                await helper

        asyncio.run(main())
        """
    )
    assert "got: ['descriptor'] cancelled: True" in out
    assert "timeout: ['descriptor']" in out


def test_an_spdk_task_ignoring_its_cancellation_does_not_hold_the_awaiter_forever() -> None:
    out = child(
        """
        import warnings
        import spdk_io._runtime
        spdk_io._runtime.UNWIND_TIMEOUT = 0.2  # keep the test short
        release = threading.Event()
        log = []

        async def stubborn():
            log.append("started")
            try:
                await spdk_io.sleep(float("inf"))
            except spdk_io.Cancelled:
                log.append("ignores Cancelled")
                while not release.is_set():  # until asyncio's side has given up
                    await spdk_io.sleep(0.001)
                log.append("finished late")
                return "late"

        async def main():
            async with Runtime(mem_size_mb=512) as rt:
                task = asyncio.create_task(rt.run(stubborn))
                while "started" not in await rt.run(lambda: list(log)):
                    await asyncio.sleep(0.001)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    task.cancel()
                    await asyncio.sleep(0)
                    task.cancel()  # cancelling again does not hurt
                    try:
                        await task
                    except asyncio.CancelledError:
                        print("cancelled anyway", flush=True)
                print("warned:", [str(w.message) for w in caught], flush=True)
                release.set()
                while "finished late" not in await rt.run(lambda: list(log)):
                    await asyncio.sleep(0.001)
                print("the task:", log, flush=True)
                print("still serving:", await rt.run(version), flush=True)

        asyncio.run(main())
        """
    )
    assert "cancelled anyway" in out
    assert "the task: ['started', 'ignores Cancelled', 'finished late']" in out
    assert "warned: ['spdk_io task stubborn did not unwind within 0.2 s" in out
    assert "still serving: SPDK v26.05" in out


def test_stopping_does_not_depend_on_one_message() -> None:
    """A post whose wake-up fails drops only its own item; a stop request caught in
    that batch is still noticed (the watch poller), and the block ends."""
    out = child(
        """
        async def main():
            async with Runtime(mem_size_mb=512) as rt:
                courier = rt._host._courier
                entered, go = threading.Event(), threading.Event()

                def failing(drain):  # SPDK could not queue the message (ENOMEM)
                    entered.set()
                    go.wait(30)
                    raise OSError(12, "no message buffer (injected)")

                courier._schedule = failing
                refused = []

                def third_thread():
                    try:
                        rt.submit(version)
                    except RuntimeStoppedError as exc:
                        refused.append(repr(exc.__cause__))

                thread = threading.Thread(target=third_thread)
                thread.start()
                await asyncio.to_thread(entered.wait, 30)
                rt._host.stop()  # joins the batch whose wake-up is being scheduled
                go.set()
                await asyncio.to_thread(thread.join, 30)
                print("refused:", refused, flush=True)
            print("stopped:", spdk_threads(), is_up(), flush=True)

        asyncio.run(main())
        """,
        timeout=30,
    )
    assert "refused: [\"OSError(12, 'no message buffer (injected)')\"]" in out
    assert "stopped: [] False" in out


def test_courier_a_failed_wake_up_drops_only_the_callers_item() -> None:
    import threading

    from spdk_io._runtime import Courier

    entered, go = threading.Event(), threading.Event()
    drains: list[Callable[[], None]] = []

    def schedule(drain: Callable[[], None]) -> None:
        if not entered.is_set():  # the first wake-up fails, after another post joined
            entered.set()
            go.wait(30)
            raise OSError(12, "injected")
        drains.append(drain)

    courier = Courier(schedule)
    seen: list[str] = []
    errors: list[BaseException] = []

    def poster() -> None:
        try:
            courier.post(lambda: seen.append("mine"))
        except OSError as exc:
            errors.append(exc)

    thread = threading.Thread(target=poster)
    thread.start()
    assert entered.wait(30)
    courier.post(lambda: seen.append("other"))  # a wake-up is pending: only appended
    go.set()
    thread.join(30)
    assert len(errors) == 1  # the poster whose wake-up failed is told
    assert len(drains) == 1  # the other item is scheduled again
    drains[0]()
    assert seen == ["other"]


def test_courier_an_interrupted_drain_keeps_its_batch() -> None:
    import threading

    from spdk_io._runtime import Courier

    class InterruptibleLock:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.interrupt = False

        def __enter__(self) -> None:
            if self.interrupt:
                self.interrupt = False
                raise KeyboardInterrupt
            self.lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    drains: list[Callable[[], None]] = []
    courier = Courier(drains.append)
    lock = InterruptibleLock()
    courier._lock = lock  # type: ignore[assignment]
    seen: list[int] = []
    courier.post(lambda: seen.append(1))
    lock.interrupt = True  # Ctrl-C as the drain starts
    with pytest.raises(KeyboardInterrupt):
        drains[0]()
    assert len(drains) == 2  # the batch is scheduled again
    courier.post(lambda: seen.append(2))
    drains[1]()
    assert seen == [1, 2]


def test_thread_handle_send_checks_its_dropped_callback(env: Any) -> None:
    handle = env.thread.handle()
    with pytest.raises(TypeError, match="dropped"):
        handle.send(lambda: None, dropped=42)
    ran: list[str] = []
    handle.send(lambda: ran.append("ran"), dropped=lambda: ran.append("dropped"))
    env.block_on(_until(lambda: bool(ran)))
    assert ran == ["ran"]


async def _until(predicate: Callable[[], bool]) -> None:
    import spdk_io

    while not predicate():
        await spdk_io.sleep(0.001)
