"""spdk_io from asyncio: SPDK on its own OS thread, its coroutines awaited from asyncio.

    async with spdk_io.aio.Runtime(mem_size_mb=512) as rt:
        version = await rt.run(get_version)          # an spdk_io coroutine function
        future = rt.submit(get_version)              # concurrent.futures.Future

:class:`Runtime` starts SPDK (an :class:`~spdk_io.env.Env`) with its loop on a
dedicated OS thread and stops it when the block ends, also when the block raises
or is cancelled.  Neither loop ever waits for the other: requests and results
cross in batches (an SPDK message one way, ``call_soon_threadsafe`` the other).

Cancellation crosses in both directions.  Cancelling the asyncio task that awaits
:meth:`Runtime.run` throws :class:`~spdk_io.errors.Cancelled` into the spdk_io
task; the awaiter gets ``CancelledError`` once that task has unwound (its
``finally`` blocks ran), or after :data:`spdk_io._runtime.UNWIND_TIMEOUT` seconds
if it does not (with a ``RuntimeWarning`` and a note: it still runs).  If the
spdk_io task had already finished when the cancellation reached it, the finished
call wins: its result is returned (or its exception raised) and the cancellation
stays pending, raised at the awaiter's next ``await`` (as trio does), so that a
result such as an open descriptor is never lost.  An spdk_io task cancelled on the
SPDK side gives its awaiter ``asyncio.CancelledError`` (its cause is the
``Cancelled``).  A call the runtime stops (leaving the block with calls running,
or SPDK's loop crashing) raises :class:`~spdk_io.errors.RuntimeStoppedError`
(caused by the crash, or by the ``Cancelled`` its task got), not
``CancelledError``: nobody cancelled the awaiter.  Any other exception is raised
in the awaiter as the very object, with its cause, context and notes.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from spdk_io import _runtime
from spdk_io._runtime import IDLE_PAUSE, Call, Courier, RuntimeBase
from spdk_io.env import EnvOptions
from spdk_io.errors import Cancelled, RuntimeStoppedError

if TYPE_CHECKING:  # typing_extensions is only needed by the type checker (Python < 3.12)
    from typing_extensions import Unpack

    from spdk_io.env import EnvKwargs

__all__ = ["Runtime", "RuntimeStoppedError"]

T = TypeVar("T")


class Runtime(RuntimeBase):
    """SPDK on a dedicated OS thread, for one asyncio event loop: ``async with``.

    Options are an :class:`~spdk_io.env.EnvOptions` or its fields as keywords,
    plus a JSON ``config`` as for :class:`~spdk_io.env.Env`; they are checked
    here, before anything starts.  Entering starts SPDK without blocking the
    event loop and raises what the start raised; it refuses with ``RuntimeError``
    if SPDK is already up in this process.  Leaving cancels the calls still
    running, tears SPDK down and joins its OS thread; a teardown failure is
    raised (or added as a note to the exception leaving the block).  If the
    thread that entered ends without leaving (the interpreter exits), SPDK stops
    by itself and the interpreter joins its thread.  A runtime is used once.

    ``idle_pause`` (seconds, at most 1 ms; 0 spins) is how long SPDK's loop sleeps
    when idle, so that asyncio's thread gets the GIL (see
    :meth:`~spdk_io.loop.Loop.set_idle_pause`); ``thread_name`` names its OS thread.
    """

    def __init__(
        self,
        options: EnvOptions | None = None,
        *,
        config: str | Path | Mapping[str, Any] | None = None,
        stop_on_error: bool = True,
        thread_name: str = "spdk_io-aio",
        idle_pause: float = IDLE_PAUSE,
        **kwargs: Unpack[EnvKwargs],
    ) -> None:
        super().__init__(options, config, stop_on_error, kwargs, thread_name, idle_pause)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._courier: Courier | None = None
        self._stopped: asyncio.Future[BaseException | None] | None = None

    async def __aenter__(self) -> Runtime:
        loop = asyncio.get_running_loop()
        courier = Courier(loop.call_soon_threadsafe)
        started: asyncio.Future[BaseException | None] = loop.create_future()
        stopped: asyncio.Future[BaseException | None] = loop.create_future()
        self._host.start(courier.post, _setter(started), _setter(stopped))
        self._loop, self._courier, self._stopped = loop, courier, stopped
        try:
            error = await asyncio.shield(started)
        except asyncio.CancelledError:
            self._host.stop()  # cancelled while SPDK came up: take it down again
            await self._wait_stopped()
            raise
        if error is not None:
            await self._wait_stopped()
            raise error
        return self

    async def _wait_stopped(self) -> BaseException | None:
        """Wait until SPDK is down and its OS thread has ended (joined in a worker
        thread: the event loop never blocks); cancelling this wait does not cut the
        (time-bounded) teardown short: it is raised afterwards."""
        stopped = self._stopped
        loop = self._loop
        assert stopped is not None and loop is not None
        cancelled: asyncio.CancelledError | None = None
        joined: asyncio.Future[None] | None = None
        while joined is None or not joined.done():
            try:
                if not stopped.done():
                    await asyncio.shield(stopped)
                    continue
                if joined is None:
                    if not self._host.thread_alive:
                        break
                    joined = loop.run_in_executor(None, self._host.join)
                await asyncio.shield(joined)
            except asyncio.CancelledError as exc:
                cancelled = exc
        if cancelled is not None:
            raise cancelled
        return stopped.result()

    @overload
    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T: ...

    @overload
    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``await fn(*args)`` as a task on SPDK's app thread; return its result here
        (a plain function's return value as it is).

        Must be awaited on the event loop that entered the runtime.  Exceptions
        are raised as the very objects the spdk_io task raised; cancellation
        crosses in both directions (see the module's documentation).  Raises
        :class:`RuntimeStoppedError` outside the runtime's block, and when the
        runtime stops the call.
        """
        loop, courier = self._check_loop()
        waiter = _Waiter(loop.create_future())
        call: Call[Any] = self._host.call(fn, args, lambda _c: courier.post(waiter.wake))
        try:
            await waiter.fut
        except asyncio.CancelledError as cancel:
            call.cancel()
            if not waiter.woken:  # the spdk_io task unwinds first (for a bounded time)
                timeout = _runtime.UNWIND_TIMEOUT
                timer = loop.call_later(timeout, waiter.expire)
                try:
                    while not waiter.woken and not waiter.expired:
                        waiter.fut = loop.create_future()  # asyncio cancelled the one awaited
                        try:
                            await waiter.fut
                        except asyncio.CancelledError:
                            continue
                finally:
                    timer.cancel()
                if not waiter.woken:
                    msg = (
                        f"spdk_io task {call.name} did not unwind within {timeout} s of its "
                        "cancellation: the awaiter is cancelled, the task still runs"
                    )
                    cancel.add_note(msg)
                    warnings.warn(msg, RuntimeWarning, stacklevel=2)
                    raise
            if call.cancel_delivered:
                raise
            # The call had finished before the cancellation reached it: its outcome wins,
            # the cancellation stays pending for the next await.
            task = asyncio.current_task()
            assert task is not None
            task.cancel(*cancel.args[:1])
            task.uncancel()  # re-armed, not requested twice (asyncio.timeout counts them)
        return _outcome(call)

    def _check_loop(self) -> tuple[asyncio.AbstractEventLoop, Courier]:
        loop, courier = self._loop, self._courier
        if loop is None or courier is None:
            raise RuntimeStoppedError("the runtime is not running: use it inside `async with`")
        if asyncio.get_running_loop() is not loop:
            raise RuntimeError(
                "Runtime.run must be awaited on the event loop that entered the runtime; "
                "from elsewhere use asyncio.wrap_future(rt.submit(...))"
            )
        return loop, courier


class _Waiter:
    """Wakes the task awaiting a call (on asyncio's thread, once the call finished)."""

    __slots__ = ("expired", "fut", "woken")

    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut
        self.woken = False
        self.expired = False

    def wake(self) -> None:
        self.woken = True
        if not self.fut.done():
            self.fut.set_result(None)

    def expire(self) -> None:
        self.expired = True
        if not self.fut.done():
            self.fut.set_result(None)


def _setter(
    fut: asyncio.Future[BaseException | None],
) -> Callable[[BaseException | None], None]:
    def set_(value: BaseException | None) -> None:
        if not fut.done():
            fut.set_result(value)

    return set_


def _outcome(call: Call[T]) -> T:
    """The call's result in asyncio's terms: an spdk_io ``Cancelled`` (the task was
    cancelled on the SPDK side) becomes ``asyncio.CancelledError`` (caused by it);
    anything else is raised as it is."""
    err = call.error
    if isinstance(err, Cancelled):
        raise asyncio.CancelledError(f"the spdk_io task was cancelled: {err}") from err
    return call.result()
