"""spdk_io from trio: SPDK on its own OS thread, its coroutines awaited from trio.

    async with spdk_io.trio.Runtime(mem_size_mb=512) as rt:
        version = await rt.run(get_version)          # an spdk_io coroutine function
        future = rt.submit(get_version)              # concurrent.futures.Future

The same mechanism as :mod:`spdk_io.aio` (see there), with trio's terms for
cancellation.  A cancelled trio scope around :meth:`Runtime.run` throws
:class:`~spdk_io.errors.Cancelled` into the spdk_io task; once that task has
unwound (its ``finally`` blocks ran) the awaiter gets ``trio.Cancelled`` (or after
:data:`spdk_io._runtime.UNWIND_TIMEOUT` seconds if it does not, with a
``RuntimeWarning``: it still runs).  If the spdk_io task had already finished when
the cancellation reached it, the finished call wins (trio's own convention): its
result is returned (or its exception raised), and the scope, still cancelled,
raises ``trio.Cancelled`` at the next checkpoint.  An spdk_io task cancelled on the
SPDK side raises that :class:`~spdk_io.errors.Cancelled` in the awaiter (trio has
no cancellation without a cancel scope); a call the runtime stops (or that its
crash ends) raises :class:`~spdk_io.errors.RuntimeStoppedError`; any other
exception is raised as the very object, with its cause, context and notes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import trio

from spdk_io import _runtime
from spdk_io._runtime import IDLE_PAUSE, Call, Courier, RuntimeBase
from spdk_io.env import EnvOptions
from spdk_io.errors import Cancelled, RuntimeStoppedError

if TYPE_CHECKING:  # typing_extensions is only needed by the type checker (Python < 3.12)
    from typing_extensions import Unpack

    from spdk_io.env import EnvKwargs

__all__ = ["Runtime", "RuntimeStoppedError"]

T = TypeVar("T")


class _Signal:
    """A value set once from a callback on trio's thread, and a ``trio.Event`` for it."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: BaseException | None = None

    def set(self, value: BaseException | None) -> None:
        if not self.event.is_set():
            self.value = value
            self.event.set()


class _Waiter:
    """Wakes the task awaiting a call (on trio's thread, once the call finished): it
    reschedules the task while parked, else sets an event a cancelled awaiter waits on."""

    __slots__ = ("event", "task", "woken")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task: trio.lowlevel.Task | None = task
        self.event: trio.Event | None = None  # made once the awaiter is cancelled
        self.woken = False

    def wake(self) -> None:
        self.woken = True
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)
        elif self.event is not None:
            self.event.set()


class Runtime(RuntimeBase):
    """SPDK on a dedicated OS thread, for one ``trio.run``: ``async with``.

    As :class:`spdk_io.aio.Runtime`: options are checked on creation; entering
    starts SPDK without blocking trio (refusing with ``RuntimeError`` if SPDK is
    already up in this process); leaving cancels the calls still running, tears
    SPDK down (shielded from cancellation: it is bounded in time) and joins its
    OS thread (in a worker thread: trio's never blocks).  A runtime is used once.
    ``idle_pause`` and ``thread_name`` as there.
    """

    def __init__(
        self,
        options: EnvOptions | None = None,
        *,
        config: str | Path | Mapping[str, Any] | None = None,
        stop_on_error: bool = True,
        thread_name: str = "spdk_io-trio",
        idle_pause: float = IDLE_PAUSE,
        **kwargs: Unpack[EnvKwargs],
    ) -> None:
        super().__init__(options, config, stop_on_error, kwargs, thread_name, idle_pause)
        self._token: trio.lowlevel.TrioToken | None = None
        self._courier: Courier | None = None
        self._stopped = _Signal()

    async def __aenter__(self) -> Runtime:
        token = trio.lowlevel.current_trio_token()
        courier = Courier(token.run_sync_soon)
        started = _Signal()
        self._host.start(courier.post, started.set, self._stopped.set)
        self._token, self._courier = token, courier
        try:
            await started.event.wait()
        except BaseException:  # cancelled (or interrupted) while SPDK came up
            self._host.stop()
            await self._wait_stopped()
            raise
        if started.value is not None:
            await self._wait_stopped()
            raise started.value
        return self

    async def _wait_stopped(self) -> BaseException | None:
        with trio.CancelScope(shield=True):
            await self._stopped.event.wait()
            if self._host.thread_alive:
                await trio.to_thread.run_sync(self._host.join)
        return self._stopped.value

    @overload
    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T: ...

    @overload
    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``await fn(*args)`` as a task on SPDK's app thread; return its result here
        (a plain function's return value as it is).

        Must be awaited in the ``trio.run`` that entered the runtime.  Raises
        :class:`RuntimeStoppedError` outside the runtime's block, and when the
        runtime stops the call.
        """
        courier = self._check_token()
        await trio.lowlevel.checkpoint_if_cancelled()
        waiter = _Waiter(trio.lowlevel.current_task())
        call: Call[Any] = self._host.call(fn, args, lambda _c: courier.post(waiter.wake))

        def abort(raise_cancel: object) -> trio.lowlevel.Abort:
            waiter.task = None  # no longer parked: wake() now sets the event
            call.cancel()
            return trio.lowlevel.Abort.SUCCEEDED

        try:
            await trio.lowlevel.wait_task_rescheduled(abort)
        except trio.Cancelled:
            if not waiter.woken:  # the spdk_io task unwinds first (for a bounded time)
                timeout = _runtime.UNWIND_TIMEOUT
                waiter.event = trio.Event()
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + timeout
                    await waiter.event.wait()
                if not waiter.woken:
                    warnings.warn(
                        f"spdk_io task {call.name} did not unwind within {timeout} s of its "
                        "cancellation: the awaiter is cancelled, the task still runs",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    raise
            if call.cancel_delivered:
                raise  # whatever the spdk_io task ended with after it was told to stop
            # It had finished before the cancellation reached it: its outcome wins; the
            # scope, still cancelled, raises at the next checkpoint.
        err = call.error
        if isinstance(err, Cancelled):
            raise err
        return call.result()

    def _check_token(self) -> Courier:
        token, courier = self._token, self._courier
        if token is None or courier is None:
            raise RuntimeStoppedError("the runtime is not running: use it inside `async with`")
        if trio.lowlevel.current_trio_token() is not token:
            raise RuntimeError(
                "Runtime.run must be awaited in the trio.run that entered the runtime; "
                "from elsewhere use rt.submit(...)"
            )
        return courier
