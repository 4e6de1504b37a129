"""spdk_io from trio: SPDK on its own OS thread, its coroutines awaited from trio.

    async with spdk_io.trio.Runtime(mem_size_mb=512) as rt:
        version = await rt.run(get_version)          # an spdk_io coroutine function
        future = rt.submit(get_version)              # concurrent.futures.Future

The same mechanism as :mod:`spdk_io.aio` (see there), with trio's terms for
cancellation.  A cancelled trio scope around :meth:`Runtime.run` throws
:class:`~spdk_io.errors.Cancelled` into the spdk_io task; once that task has
unwound (its ``finally`` blocks ran) the awaiter gets ``trio.Cancelled``.  An
spdk_io task that ends with ``Cancelled`` on the SPDK side (cancelled there, or
by the runtime stopping) raises that :class:`~spdk_io.errors.Cancelled` in the
awaiter (trio has no cancellation without a cancel scope); any other exception is
raised as the very object, with its cause, context and notes.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import trio

from spdk_io._runtime import IDLE_PAUSE, Call, Courier, Host
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


class Runtime:
    """SPDK on a dedicated OS thread, for one ``trio.run``: ``async with``.

    As :class:`spdk_io.aio.Runtime`: options are checked on creation; entering
    starts SPDK without blocking trio (refusing with ``RuntimeError`` if SPDK is
    already up in this process); leaving cancels the calls still running, tears
    SPDK down (shielded from cancellation: it is bounded in time) and joins its
    OS thread.  A runtime is used once.  ``idle_pause`` and ``thread_name`` as there.
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
        self._host = Host(options, config, stop_on_error, kwargs, thread_name, idle_pause)
        self._token: trio.lowlevel.TrioToken | None = None
        self._courier: Courier | None = None
        self._stopped = _Signal()

    def __repr__(self) -> str:
        return f"<spdk_io.trio.Runtime {'up' if self._host.up else 'down'}>"

    @property
    def options(self) -> EnvOptions:
        """The environment options, resolved for this machine."""
        return self._host.env.options

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

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._host.stop()
        error = await self._wait_stopped()
        if error is not None:
            if ev is None:
                raise error
            ev.add_note(f"stopping SPDK failed too: {error!r}")

    async def _wait_stopped(self) -> BaseException | None:
        with trio.CancelScope(shield=True):
            await self._stopped.event.wait()
        self._host.join()
        return self._stopped.value

    @overload
    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T: ...

    @overload
    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``await fn(*args)`` as a task on SPDK's app thread; return its result here
        (a plain function's return value as it is).

        Must be awaited in the ``trio.run`` that entered the runtime.  Raises
        :class:`RuntimeStoppedError` outside the runtime's block.
        """
        courier = self._check_token()
        await trio.lowlevel.checkpoint_if_cancelled()
        task = trio.lowlevel.current_task()
        call: Call[Any] = self._host.call(
            fn, args, lambda _c: courier.post(lambda: trio.lowlevel.reschedule(task))
        )
        aborted = False

        def abort(raise_cancel: object) -> trio.lowlevel.Abort:
            nonlocal aborted
            aborted = True
            call.cancel()
            return trio.lowlevel.Abort.FAILED  # woken once the spdk_io task has unwound

        await trio.lowlevel.wait_task_rescheduled(abort)
        if aborted:
            # Our scope is still cancelled: this raises trio.Cancelled, whatever the
            # spdk_io task ended with after it was told to stop.
            await trio.lowlevel.checkpoint()
        err = call.error
        if isinstance(err, Cancelled):
            raise err
        return call.result()

    @overload
    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> concurrent.futures.Future[T]: ...

    @overload
    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]: ...

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Start ``await fn(*args)`` on SPDK's app thread; return a
        :class:`concurrent.futures.Future` of its result, for synchronous callers
        (as :meth:`spdk_io.aio.Runtime.submit`)."""
        return self._host.submit(fn, args)

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
