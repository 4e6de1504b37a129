"""spdk_io.trio: SPDK on its own OS thread, awaited from trio (issue #11).

Each test runs in a fresh process (``run_py``): a runtime brings its own SPDK up
and down, and the session's SPDK is already up in this one.
"""

from __future__ import annotations

import signal
import textwrap

import pytest

from tests.conftest import finish_within, run_py, start_py, wait_ready

pytest.importorskip("trio")

PRELUDE = """
import concurrent.futures, threading
import trio
import spdk_io
import spdk_io.trio
from spdk_io.trio import Runtime, RuntimeStoppedError
from spdk_io.env import is_up

def spdk_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("spdk_io-trio")]

async def version():
    return (await spdk_io.rpc.call("spdk_get_version"))["version"]
"""


def child(code: str, timeout: float = 60) -> str:
    """Run ``PRELUDE + code`` in a fresh process; its stdout (the test fails on a
    non-zero exit)."""
    proc = run_py(PRELUDE + textwrap.dedent(code), timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout


def test_run_submit_and_exceptions() -> None:
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
            for i in range(2):  # the second runtime brings SPDK up again in this process
                async with Runtime(mem_size_mb=512) as rt:
                    print(i, "threads in:", spdk_threads(), "up:", is_up(), flush=True)
                    print(i, "run:", await rt.run(version), flush=True)
                    print(i, "args:", await rt.run(lambda a, b: a + b, 2, 3), flush=True)
                    fut = rt.submit(version)
                    print(i, "submit:", await trio.to_thread.run_sync(fut.result), flush=True)
                    try:
                        await rt.run(fail)
                    except ValueError as exc:
                        print(i, "same object:", exc is raised[-1], repr(exc.__cause__),
                              exc.__notes__, flush=True)
                print(i, "threads out:", spdk_threads(), "up:", is_up(), flush=True)
            try:
                await rt.run(version)
            except RuntimeStoppedError as exc:
                print("after:", exc, flush=True)

        trio.run(main)
        """
    )
    for i in range(2):
        assert f"{i} threads in: ['spdk_io-trio'] up: True" in out
        assert f"{i} run: SPDK v26.05" in out
        assert f"{i} args: 5" in out
        assert f"{i} submit: SPDK v26.05" in out
        assert f"{i} same object: True KeyError('inner') [\"a note from SPDK's side\"]" in out
        assert f"{i} threads out: [] up: False" in out
    assert "after: runtime spdk_io-trio is not running" in out


def test_cancellation_crosses_both_ways() -> None:
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

        async def cancel_myself():
            spdk_io.current_task().cancel()
            await spdk_io.sleep(10)

        async def main():
            async with Runtime(mem_size_mb=512) as rt:
                async with trio.open_nursery() as nursery:
                    async def job():
                        await rt.run(long_job, "a")
                        log.append("a returned")  # never: trio.Cancelled is raised
                    nursery.start_soon(job)
                    while "a started" not in await rt.run(lambda: list(log)):
                        await trio.sleep(0.001)
                    nursery.cancel_scope.cancel()
                print("a on trio.Cancelled:", log, flush=True)
                with trio.move_on_after(0.05) as scope:
                    await rt.run(long_job, "b")
                print("b timed out:", scope.cancelled_caught, log[-3:], flush=True)
                try:
                    await rt.run(cancel_myself)
                except spdk_io.Cancelled as exc:
                    print("cancelled on SPDK's side:", type(exc).__name__, flush=True)
                print("still serving:", await rt.run(version), flush=True)

        trio.run(main)
        """
    )
    assert "a on trio.Cancelled: ['a started', 'a got Cancelled', 'a cleanup done']" in out
    assert "b timed out: True ['b started', 'b got Cancelled', 'b cleanup done']" in out
    assert "cancelled on SPDK's side: Cancelled" in out
    assert "still serving: SPDK v26.05" in out


def test_neither_loop_blocks_the_other_and_teardown_on_error() -> None:
    out = child(
        """
        log = []

        async def spdk_steps(n):
            for _ in range(n):
                await spdk_io.sleep(0.001)
            return n

        async def until(flag):
            while not flag:
                await spdk_io.sleep(0.001)
            return "flag seen"

        async def guarded():
            try:
                await spdk_io.sleep(float("inf"))
            finally:
                log.append("cleanup ran")

        async def main():
            async with Runtime(mem_size_mb=512) as rt:
                # trio's thread blocks until SPDK has done 20 timed steps
                print("while trio was blocked:", rt.submit(spdk_steps, 20).result(timeout=30),
                      flush=True)
                flag = []
                async with trio.open_nursery() as nursery:
                    async def wait_flag():
                        print("SPDK:", await rt.run(until, flag), flush=True)
                    nursery.start_soon(wait_flag)
                    for _ in range(200):
                        await trio.sleep(0)
                    print("after 200 trio turns:", log, flush=True)
                    flag.append(1)
            try:
                async with Runtime(mem_size_mb=512) as rt:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(rt.run, guarded)
                        await trio.sleep(0.05)
                        raise LookupError("from the block")
            except LookupError as exc:  # trio < 0.25: raised as itself
                print("raised:", exc, log, spdk_threads(), is_up(), flush=True)
            except BaseExceptionGroup as group:  # newer trio: in a group
                print("raised:", group.exceptions[0], log, spdk_threads(), is_up(), flush=True)

        trio.run(main)
        """
    )
    assert "while trio was blocked: 20" in out
    assert "after 200 trio turns: []" in out
    assert "SPDK: flag seen" in out
    assert "raised: from the block ['cleanup ran'] [] False" in out


def test_refuses_while_spdk_is_up_and_stops_when_cancelled_at_start() -> None:
    out = child(
        """
        async def nested():
            async with Runtime(mem_size_mb=512) as rt:
                try:
                    async with Runtime(mem_size_mb=512):
                        pass
                except RuntimeError as exc:
                    print("nested:", exc, flush=True)
                print("still serving:", await rt.run(version), flush=True)

        trio.run(nested)
        print("threads:", spdk_threads(), "up:", is_up(), flush=True)

        async def cancelled_at_start():
            # cancelled while SPDK comes up: it goes down again, nothing is left
            with trio.CancelScope() as scope:
                scope.cancel()  # delivered at the first checkpoint: after the start began
                async with Runtime(mem_size_mb=512):
                    print("entered", flush=True)  # never
            print("start cancelled:", scope.cancelled_caught, spdk_threads(), is_up(),
                  flush=True)

        trio.run(cancelled_at_start)
        """
    )
    assert "nested: SPDK is already up in this process" in out
    assert "still serving: SPDK v26.05" in out
    assert "threads: [] up: False" in out
    assert "start cancelled: True [] False" in out
    assert "entered" not in out


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
                trio.run(main)
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


def test_finished_calls_beat_cancels_stubborn_tasks_are_bounded_and_stops_are_not_cancels() -> None:
    out = child(
        """
        import warnings
        import spdk_io._runtime
        release = threading.Event()
        log = []

        gate = threading.Event()
        returned = []

        async def opened():
            while not gate.is_set():
                await spdk_io.sleep(0.001)
            returned.append(1)  # in the step that returns and posts the result
            return "descriptor"

        async def after_opened():
            while not returned:
                await spdk_io.sleep(0.001)

        async def stubborn():
            log.append("started")
            try:
                await spdk_io.sleep(float("inf"))
            except spdk_io.Cancelled:
                log.append("ignores Cancelled")
                while not release.is_set():  # until trio's side has given up
                    await spdk_io.sleep(0.001)
                log.append("finished late")
                return "late"

        async def in_flight(rt):
            try:
                await rt.run(sleeper)
            except RuntimeStoppedError as exc:
                print("stopping stopped it:", exc, type(exc.__cause__).__name__, flush=True)

        async def sleeper():
            log.append("sleeping")
            await spdk_io.sleep(float("inf"))

        async def main():
            async with trio.open_nursery() as outer:
                async with Runtime(mem_size_mb=512) as rt:
                    # 1. the call finished before the cancellation reached it: its value is
                    # returned, the scope (still cancelled) raises at the next checkpoint
                    got = []
                    with trio.CancelScope() as scope:
                        async with trio.open_nursery() as nursery:
                            async def user():
                                got.append(await rt.run(opened))
                                await trio.sleep(0)
                                got.append("not reached")
                            nursery.start_soon(user)
                            await trio.testing.wait_all_tasks_blocked()  # user's call is sent
                            # let it finish, blocking trio's thread until its result has
                            # been posted: that result waits in trio's queue
                            gate.set()
                            rt.submit(after_opened).result(timeout=30)
                            scope.cancel()
                    print("finished first:", got, scope.cancelled_caught, flush=True)
                    # 2. a task that ignores its cancellation holds the awaiter only so long
                    spdk_io._runtime.UNWIND_TIMEOUT = 0.2  # (read at use) keep the test short
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        with trio.CancelScope() as scope:
                            async with trio.open_nursery() as nursery:
                                nursery.start_soon(rt.run, stubborn)
                                while "started" not in await rt.run(lambda: list(log)):
                                    await trio.sleep(0.001)
                                scope.cancel()
                    # (whether SPDK's side has seen its Cancelled yet is a matter of timing)
                    print("cancelled anyway:", scope.cancelled_caught, flush=True)
                    print("warned:", [str(w.message) for w in caught], flush=True)
                    release.set()
                    while "finished late" not in await rt.run(lambda: list(log)):
                        await trio.sleep(0.001)
                    print("the task:", log, flush=True)
                    # 3. the runtime stopping (leaving its block) ends a call in flight with
                    # RuntimeStoppedError: nobody cancelled its awaiter
                    outer.start_soon(in_flight, rt)
                    while "sleeping" not in await rt.run(lambda: list(log)):
                        await trio.sleep(0.001)

        import trio.testing
        trio.run(main)
        """
    )
    assert "finished first: ['descriptor'] True" in out
    assert "cancelled anyway: True" in out
    assert "the task: ['started', 'ignores Cancelled', 'finished late']" in out
    assert "warned: ['spdk_io task stubborn did not unwind within 0.2 s" in out
    assert (
        "stopping stopped it: runtime spdk_io-trio stopped while call sleeper ran Cancelled" in out
    )
