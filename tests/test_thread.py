"""SPDK threads, messages, spawn/join across OS threads, pollers, and thread-binding checks."""

from __future__ import annotations

import inspect
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import spdk_io
from spdk_io import SpdkThread, ThreadHandle
from spdk_io.errors import CallbackError, Cancelled, WrongThreadError
from spdk_io.thread import MAX_PERIOD_US, Poller, current_thread

Run = Callable[[Awaitable[Any]], Any]


def test_current_thread_is_app_thread(run: Run) -> None:
    async def main() -> str:
        return current_thread().name

    assert run(main()) == "app_thread"


def test_send_runs_on_target_thread(run: Run) -> None:
    async def main() -> list[int]:
        seen: list[int] = []
        ThreadHandle.current().send(lambda: seen.append(threading.get_ident()))
        while not seen:
            await spdk_io.sleep(0)
        return seen

    assert run(main()) == [threading.get_ident()]


def test_spawn_join_sync_and_async(run: Run) -> None:
    def plain(x: int) -> tuple[int, str]:
        return x * 2, current_thread().name

    async def coro(x: int) -> int:
        await spdk_io.sleep(0.001)
        return x + 1

    h1 = SpdkThread.spawn(plain, 21, name="w1")
    assert h1.join(timeout=10) == (42, "w1")

    async def main() -> int:
        h2 = SpdkThread.spawn(coro, 1, name="w2")
        return await h2

    assert run(main()) == 2


def test_spawned_exception_reaches_joiner(env: Any) -> None:
    def bad() -> None:
        raise ValueError("from worker")

    h = SpdkThread.spawn(bad, name="bad")
    with pytest.raises(ValueError, match="from worker"):
        h.join(timeout=10)


def test_call_round_trips_between_several_threads(run: Run) -> None:
    n = 3
    app = None

    async def worker(i: int) -> list[str]:
        assert app is not None
        names = []
        for _ in range(5):
            # call back into the app thread, and into ourselves
            names.append(await app.call(lambda: current_thread().name))
            names.append(await ThreadHandle.current().call(lambda: current_thread().name))
        return names

    async def main() -> list[list[str]]:
        nonlocal app
        app = ThreadHandle.current()
        handles = [SpdkThread.spawn(worker, i, name=f"w{i}") for i in range(n)]
        return [await h for h in handles]

    results = run(main())
    for i, names in enumerate(results):
        assert names == ["app_thread", f"w{i}"] * 5


def test_call_propagates_exception_and_async_functions(run: Run) -> None:
    async def remote_coro() -> str:
        await spdk_io.sleep(0.001)
        return current_thread().name

    def remote_fail() -> None:
        raise LookupError("remote")

    async def main() -> str:
        ready = threading.Event()
        handle_box: list[ThreadHandle] = []

        async def server() -> None:
            handle_box.append(ThreadHandle.current())
            ready.set()
            await spdk_io.sleep(0.3)

        h = SpdkThread.spawn(server, name="server")
        while not ready.is_set():
            await spdk_io.sleep(0.001)
        target = handle_box[0]
        with pytest.raises(LookupError, match="remote"):
            await target.call(remote_fail)
        name = await target.call(remote_coro)
        await h
        return name

    assert run(main()) == "server"


def test_cancel_while_cross_thread_reply_pending_is_harmless(run: Run) -> None:
    async def main() -> str:
        started = threading.Event()
        box: list[ThreadHandle] = []

        async def server() -> None:
            box.append(ThreadHandle.current())
            started.set()
            await spdk_io.sleep(0.2)

        h = SpdkThread.spawn(server, name="slow")
        while not started.is_set():
            await spdk_io.sleep(0.001)

        def slow() -> str:
            time.sleep(0.05)  # the reply arrives after the caller gave up
            return "late"

        async def caller() -> str:
            return await box[0].call(slow)

        task = spdk_io.spawn(caller())
        await spdk_io.sleep(0)
        task.cancel()
        with pytest.raises(Cancelled):
            await task
        await h  # the late reply was delivered (and dropped) while we waited
        await spdk_io.sleep(0.01)
        return "ok"

    assert run(main()) == "ok"


def test_poller_counts_pauses_and_unregisters(run: Run) -> None:
    async def main() -> tuple[int, int, int]:
        count = 0

        def tick() -> bool:
            nonlocal count
            count += 1
            return True

        with Poller(tick, name="counter") as p:
            while count < 10:
                await spdk_io.sleep(0)
            p.pause()
            paused_at = count
            await spdk_io.sleep(0.005)
            after_pause = count
            p.resume()
            while count < after_pause + 5:
                await spdk_io.sleep(0)
        assert not p.registered
        stopped = count
        await spdk_io.sleep(0.005)
        assert count == stopped
        return paused_at, after_pause, count

    paused_at, after_pause, final = run(main())
    assert paused_at == after_pause
    assert final >= after_pause + 5


def test_periodic_poller_runs_at_its_period(run: Run) -> None:
    async def main() -> int:
        hits = 0

        def tick() -> bool:
            nonlocal hits
            hits += 1
            return False

        with Poller(tick, period_us=10_000, name="periodic"):
            await spdk_io.sleep(0.055)
        return hits

    hits = run(main())
    assert 2 <= hits <= 7


def test_poller_exception_stops_run_with_clear_error(run: Run) -> None:
    holder: list[Poller] = []

    async def main() -> None:
        def boom() -> bool:
            raise ZeroDivisionError("in poller")

        holder.append(Poller(boom, name="boom"))
        await spdk_io.sleep(1)

    try:
        with pytest.raises(CallbackError, match="poller raised ZeroDivisionError") as info:
            run(main())
        assert isinstance(info.value.__cause__, ZeroDivisionError)
    finally:
        holder[0].unregister()

    async def still_works() -> int:
        await spdk_io.sleep(0.001)
        return 1

    assert run(still_works()) == 1  # the loop is usable after the failure


def test_message_exception_reaches_awaiting_task(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(ArithmeticError):
            await ThreadHandle.current().call(lambda: 1 // 0)

    run(main())


def test_thread_bound_objects_refuse_other_os_threads(run: Run) -> None:
    async def main() -> None:
        p = Poller(lambda: False, period_us=1000, name="bound")
        errors: list[BaseException] = []

        def elsewhere() -> None:
            try:
                p.unregister()
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
        assert p.registered
        p.unregister()
        assert len(errors) == 1 and isinstance(errors[0], WrongThreadError)

    run(main())


def test_poller_rejects_bad_period(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            Poller(lambda: False, period_us=-1)

    run(main())


def test_poller_refuses_bad_arguments_before_registering(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="fn"):
            Poller(5)  # type: ignore[arg-type]  # the point of the test
        with pytest.raises(TypeError, match="period_us"):
            Poller(lambda: False, period_us=True)
        with pytest.raises(TypeError, match="period_us"):
            Poller(lambda: False, period_us=1.5)  # type: ignore[arg-type]  # the point
        with pytest.raises(ValueError, match="period_us"):
            Poller(lambda: False, period_us=2**64)
        with pytest.raises(ValueError, match="period_us"):
            Poller(lambda: False, period_us=MAX_PERIOD_US + 1)
        with pytest.raises(TypeError, match="name"):
            Poller(lambda: False, name=5)  # type: ignore[arg-type]  # the point
        with pytest.raises(ValueError, match="name"):
            Poller(lambda: False, name="a\0b")
        with Poller(lambda: False, period_us=MAX_PERIOD_US, name="longest") as p:
            assert p.registered  # the largest period SPDK converts to ticks without overflow

    run(main())


def test_timers_accept_forever_and_huge_durations(run: Run) -> None:
    async def main() -> None:
        for forever in (math.inf, 1e300, 10**400):
            async with spdk_io.timeout(forever):
                await spdk_io.sleep(0.001)
        with pytest.raises(TimeoutError):
            async with spdk_io.timeout(0.01):
                await spdk_io.sleep(math.inf)  # registers nothing; cancelled by the timeout
        cancel = current_thread()._call_later(math.inf, lambda: None)
        cancel()  # a no-op, callable any number of times
        cancel()

    run(main())


def test_close_from_another_os_thread_is_refused_and_changes_nothing(run: Run, env: Any) -> None:
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            env.thread.close()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], WrongThreadError)

    async def main() -> int:
        await spdk_io.sleep(0.001)
        return int(await ThreadHandle.current().call(lambda: 3))

    assert run(main()) == 3


def test_spawn_send_and_call_refuse_non_callables(run: Run) -> None:
    before = threading.active_count()
    with pytest.raises(TypeError, match="fn"):
        SpdkThread.spawn(5)  # type: ignore[call-overload]  # the point of the test
    with pytest.raises(TypeError, match="name"):
        SpdkThread.spawn(lambda: None, name=7)  # type: ignore[call-overload]  # the point
    with pytest.raises(ValueError, match="name"):
        SpdkThread.spawn(lambda: None, name="")
    assert threading.active_count() == before  # no OS thread was started

    async def main() -> None:
        me = ThreadHandle.current()
        with pytest.raises(TypeError, match="fn"):
            me.send(None)  # type: ignore[arg-type]  # the point of the test
        with pytest.raises(TypeError, match="fn"):
            me.call("not a function")  # type: ignore[call-overload]  # the point

    run(main())


def test_send_whose_function_raises_stops_the_target_loop(run: Run) -> None:
    async def main() -> None:
        ThreadHandle.current().send(lambda: 1 // 0)
        await spdk_io.sleep(0.05)

    with pytest.raises(CallbackError, match="ZeroDivisionError"):
        run(main())


def test_join_checks_its_timeout_and_refuses_to_join_itself(env: Any) -> None:
    box: list[Any] = []
    started = threading.Event()

    def worker() -> str:
        started.wait(10)
        try:
            box[0].join(timeout=1)  # would wait for itself forever
        except RuntimeError as exc:
            return str(exc)
        return "joined itself"

    h = SpdkThread.spawn(worker, name="selfjoin")
    box.append(h)
    with pytest.raises(TypeError, match="timeout"):
        h.join(timeout="soon")  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(ValueError, match="timeout"):
        h.join(timeout=-1)
    started.set()
    assert "cannot join itself" in h.join(timeout=math.inf)


def test_coroutines_where_plain_functions_run_are_refused(run: Run) -> None:
    async def work() -> bool:
        return True

    coro = work()
    with pytest.raises(TypeError, match="not a coroutine"):
        SpdkThread.spawn(coro)  # type: ignore[call-overload]  # the point of the test
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # no "never awaited" warning

    async def main() -> None:
        with pytest.raises(TypeError, match="coroutine function"):
            Poller(work)
        with pytest.raises(TypeError, match="coroutine function"):
            ThreadHandle.current().send(work)

    run(main())
