"""SPDK on a dedicated OS thread, serving calls from other threads: the one mechanism
behind :mod:`spdk_io.aio` and :mod:`spdk_io.trio`.

A :class:`Host` owns an OS thread that starts an :class:`~spdk_io.env.Env`, runs
its app thread's loop until asked to stop, and tears SPDK down again.  Other
threads hand it :class:`Call` objects (an spdk_io coroutine function, its
arguments, and a completion callback); each runs as a task on the app thread, and
its completion callback is called there with the outcome.  :meth:`Call.cancel`
(from any thread) cancels that task.  Framework adapters only translate: they
pass a ``deliver`` function that runs a callable on their own event loop, and
completion callbacks that wake their awaiters.

Nothing here blocks either side: crossing threads is a :class:`Courier` post (a
lock held for a deque append, plus one wake-up per batch), never a wait.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar, cast, overload

from spdk_io import env as env_mod
from spdk_io._validate import duration
from spdk_io.errors import Cancelled, RuntimeStoppedError
from spdk_io.loop import IDLE_SLEEP_MAX, Op, Task, current_loop, sleep, wait, wait_for
from spdk_io.thread import RELEASE_TIMEOUT, Poller, ThreadHandle

T = TypeVar("T")

#: How often (in microseconds) the SPDK thread checks that the thread which started
#: it is still alive; if it has ended without stopping the runtime, SPDK stops.
WATCH_PERIOD_US = 50_000
#: Seconds a cancelled call may take to unwind: the calls still running at stop (as
#: an SPDK thread's served calls at its exit), and the wait of a cancelled awaiter
#: for its spdk_io task (after which the awaiter is cancelled anyway).  Read at use.
UNWIND_TIMEOUT = RELEASE_TIMEOUT
#: Seconds a framework waits for the runtime's OS thread to end once it said it stopped.
JOIN_TIMEOUT = 5.0
#: How long SPDK's loop sleeps when idle while pollers keep it spinning, by default: the
#: GIL is then free for the framework's thread (:meth:`~spdk_io.loop.Loop.set_idle_pause`).
IDLE_PAUSE = 0.0001
#: ... after this many idle turns (a loop alone on its thread waits longer: 64).
IDLE_TURNS = 8


class Courier:
    """Carries callables to one consumer thread, in batches, without blocking.

    ``schedule(drain)`` must arrange for ``drain()`` to run soon on the consumer
    thread (asyncio's ``call_soon_threadsafe``, trio's ``run_sync_soon``, an SPDK
    message) or raise.  :meth:`post` calls it for the first item of a batch only:
    while a drain is pending, posting just appends.  Callables run in the order they
    were posted; if one raises, the rest still run and the first error is raised
    from the drain afterwards.

    If ``schedule`` raises, only the item of the :meth:`post` that called it is
    dropped (the error is raised to that caller); items other threads appended
    meanwhile stay queued, and scheduling is tried once more for them (failing
    that, the next post tries again).  An interrupted drain (``KeyboardInterrupt``
    before it took its batch) leaves the batch queued and reschedules it the same way.
    """

    __slots__ = ("_items", "_lock", "_schedule", "_scheduled")

    def __init__(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        self._schedule = schedule
        self._lock = threading.Lock()
        self._items: deque[Callable[[], None]] = deque()
        self._scheduled = False

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the consumer thread soon (safe from any thread); if this
        raises, ``fn`` was not posted."""
        scheduling = False
        try:
            with self._lock:
                self._items.append(fn)
                if self._scheduled:
                    return
                self._scheduled = scheduling = True
            self._schedule(self._drain)
        except BaseException:
            with self._lock:
                for i in range(len(self._items) - 1, -1, -1):  # this caller's item only
                    if self._items[i] is fn:
                        del self._items[i]
                        break
            if scheduling:
                self._reschedule()
            raise

    def _reschedule(self) -> None:
        """After a failed or interrupted scheduling: schedule a drain for the items
        still queued, if any (once; failing that, the next post tries again)."""
        with self._lock:
            self._scheduled = bool(self._items)
            if not self._scheduled:
                return
        try:
            self._schedule(self._drain)
        except Exception:
            with self._lock:
                self._scheduled = False

    def _drain(self) -> None:
        items: deque[Callable[[], None]] | None = None
        try:
            with self._lock:
                items, self._items = self._items, deque()
                self._scheduled = False
        except BaseException:  # interrupted around the swap: keep the batch, drain it soon
            with self._lock:
                if items is not None:
                    items.extend(self._items)
                    self._items = items
            self._reschedule()
            raise
        first: BaseException | None = None
        for fn in items:  # one failing callable does not drop the rest of the batch
            try:
                fn()
            except BaseException as exc:
                first = first or exc
        if first is not None:
            raise first  # to the consumer's own error handling


_QUEUED = 0
_RUNNING = 1
_DONE = 2

#: ``Call._stopped_by`` while SPDK's loop unwinds after a crash whose error is not known yet
_CRASHED = object()


class Call(Generic[T]):
    """One call of ``fn(*args)`` on the host's SPDK thread, and its outcome.

    ``on_done(call)`` is called exactly once, on the host's OS thread (the SPDK
    thread, or teardown after it), after which :attr:`value`/:attr:`error` hold the
    outcome and :attr:`cancel_delivered` tells whether :meth:`cancel` reached the
    call before it finished (else it finished on its own, or the runtime stopped it).

    A call the runtime stops (it stops, or crashes, while the call runs or before it
    ran) finishes with :class:`RuntimeStoppedError`, caused by the runtime's error
    (if it crashed) or by the ``Cancelled`` the task got; ``Cancelled`` is left for
    calls cancelled through :meth:`cancel` or by code on the SPDK side.
    """

    __slots__ = (
        "_cancel_requested",
        "_host",
        "_on_done",
        "_state",
        "_stopped_by",
        "_task",
        "args",
        "cancel_delivered",
        "error",
        "fn",
        "name",
        "value",
    )

    def __init__(
        self,
        host: Host,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        on_done: Callable[[Call[T]], None],
        name: str,
    ) -> None:
        self._host = host
        self.fn = fn
        self.args = args
        self.name = name
        self._on_done = on_done
        self._state = _QUEUED
        self._task: Task[None] | None = None
        self._cancel_requested = False
        self.cancel_delivered = False
        # set when the runtime stops the call: the runtime itself, or its crash error
        # (_CRASHED until it is known)
        self._stopped_by: object = None
        self.value: T | None = None
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<Call {self.name} {('queued', 'running', 'done')[self._state]}>"

    def done(self) -> bool:
        return self._state == _DONE

    def result(self) -> T:
        """The value, or raise the exception (the very object, with its cause,
        context and notes), the call finished with."""
        if self._state != _DONE:
            raise RuntimeError(f"{self!r} has not finished")
        if self.error is not None:
            raise self.error
        return cast(T, self.value)

    def cancel(self) -> None:
        """Cancel the call (safe from any thread; idempotent).

        A call that has not started yet finishes with :class:`Cancelled` without
        running; a running one gets :class:`Cancelled` thrown into its task, which
        unwinds (its ``finally`` blocks and ``async with`` exits run) and then
        finishes with whatever it ends with.
        """
        if self._cancel_requested or self._state == _DONE:
            return
        self._cancel_requested = True
        with contextlib.suppress(RuntimeStoppedError):  # stopping cancels it anyway
            self._host.post(self._deliver_cancel)

    # -- on the SPDK thread --------------------------------------------------------------

    def _start(self) -> None:
        if self._state != _QUEUED:
            return
        if self._cancel_requested:
            self.cancel_delivered = True
            self._finish(None, Cancelled(f"call {self.name} was cancelled before it started"))
            return
        if not self._host._accepting:
            self._finish(None, RuntimeStoppedError("the SPDK runtime stopped before the call ran"))
            return
        self._state = _RUNNING
        self._task = current_loop().spawn(self._run(), self.name)
        self._host._running.add(self)

    async def _run(self) -> None:
        try:
            value = self.fn(*self.args)
            if inspect.isawaitable(value):
                value = await value
        except GeneratorExit:  # closed unfinished at teardown (it ignored its cancellation)
            self._finish(None, RuntimeStoppedError(f"call {self.name} was abandoned at stop"))
            raise
        except Cancelled as exc:
            cancelled = exc
        except BaseException as exc:
            self._finish(None, exc)
            return
        else:
            self._finish(value, None)
            return
        if not self.cancel_delivered and self._stopped_by is None:
            # Cancelled by code on SPDK's side, or by SPDK's loop unwinding after a crash:
            # then the runtime's serving task, cancelled with this one, marks its calls
            # as stopped by the runtime when it runs, which it does before this resumes.
            try:
                await sleep(0)
            except Cancelled:
                pass
            except GeneratorExit:
                self._finish(None, self._stop_error(cancelled))
                raise
        self._finish(None, self._stop_error(cancelled))

    def _stop_error(self, cancelled: Cancelled) -> BaseException:
        """The error for a task that ended with ``cancelled``: :class:`RuntimeStoppedError`
        if the runtime stopped it (and nobody cancelled it before), else ``cancelled``."""
        by = self._stopped_by
        if by is None or self.cancel_delivered:
            return cancelled
        how = f"crashed ({by!r})" if isinstance(by, BaseException) else "stopped"
        err = RuntimeStoppedError(f"runtime {self._host.name} {how} while call {self.name} ran")
        err.__cause__ = by if isinstance(by, BaseException) else cancelled
        return err

    def _stop(self, by: BaseException | Host) -> Task[None] | None:
        """The runtime stops: cancel the task (return it, to wait for)."""
        task = self._task
        if task is None or task.done():
            return None
        if self._stopped_by is None:
            self._stopped_by = by
        task.cancel(Cancelled(f"runtime {self._host.name} stopped while call {self.name} ran"))
        return task

    def _deliver_cancel(self) -> None:
        task = self._task
        if task is not None and not task.done() and self._stopped_by is None:
            self.cancel_delivered = True
            task.cancel()

    def _finish(self, value: Any, error: BaseException | None) -> None:
        if self._state == _DONE:
            return
        self._state = _DONE
        self.value, self.error = value, error
        self._task = None
        self._host.forget(self)
        if self._stopped_by is _CRASHED and isinstance(error, RuntimeStoppedError):
            self._host._crashed.append(self)  # told once the crash's error is known
            return
        self._tell()

    def _tell(self) -> None:
        with contextlib.suppress(Exception):  # an adapter whose loop is gone: nobody to tell
            self._on_done(self)


class Host:
    """An :class:`~spdk_io.env.Env` on a dedicated OS thread that serves :class:`Call` s.

    Options and config are checked here, in the caller's thread, before anything
    starts.  :meth:`start` starts the OS thread (at most once); the callbacks
    given to it are run through ``deliver`` (the framework's own loop) with the
    start error (or ``None``) and, at the end, the stop error (or ``None``).
    After ``on_stopped``, :meth:`join` returns at once.
    """

    def __init__(
        self,
        options: env_mod.EnvOptions | None,
        config: str | Path | Mapping[str, Any] | None,
        stop_on_error: bool,
        kwargs: Mapping[str, Any],
        name: str,
        idle_pause: float = IDLE_PAUSE,
    ) -> None:
        self.idle_pause = duration(idle_pause, "idle_pause")
        if self.idle_pause > IDLE_SLEEP_MAX:
            raise ValueError(f"idle_pause must be at most {IDLE_SLEEP_MAX} s, got {idle_pause}")
        self.env = env_mod.Env(options, config=config, stop_on_error=stop_on_error, **kwargs)
        self.name = name
        self._lock = threading.Lock()
        self._started = False
        self._stop_requested = False
        self._handle: ThreadHandle | None = None  # the app thread, while calls are accepted
        self._courier: Courier | None = None
        self._pending: set[Call[Any]] = set()  # not finished (guarded by _lock)
        self._running: set[Call[Any]] = set()  # started tasks (SPDK thread only)
        self._accepting = False  # SPDK thread only: calls may start tasks
        self._crashed: list[Call[Any]] = []  # stopped by a crash, told after it (OS thread)
        self._stop_op: Op[None] | None = None
        self._os_thread: threading.Thread | None = None
        self._owner: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Host {self.name} {'up' if self._handle is not None else 'down'}>"

    @property
    def up(self) -> bool:
        """Whether calls are accepted now."""
        return self._handle is not None and not self._stop_requested

    def start(
        self,
        deliver: Callable[[Callable[[], None]], None],
        on_started: Callable[[BaseException | None], None],
        on_stopped: Callable[[BaseException | None], None],
    ) -> None:
        """Start the OS thread that brings SPDK up; return at once.

        Raises ``RuntimeError`` (and starts nothing) if this host was started
        before or if SPDK is already up in this process.
        """
        with self._lock:
            if self._started:
                raise RuntimeError(f"runtime {self.name} was started already; make a new one")
            if env_mod.is_up():
                raise RuntimeError(
                    "SPDK is already up in this process (an Env, spdk_io.run or an App): "
                    "a runtime brings up its own; use that one or stop it first"
                )
            self._started = True
        self._owner = threading.current_thread()
        thread = threading.Thread(
            target=self._main, args=(deliver, on_started, on_stopped), name=self.name
        )
        self._os_thread = thread
        thread.start()

    def stop(self) -> None:
        """Ask the runtime to stop (safe from any thread; idempotent, returns at once).

        New calls are refused from now on; calls still running are cancelled.  The
        request is posted to the SPDK thread, and its watch poller also notices it
        (within :data:`WATCH_PERIOD_US`), so stopping never depends on one message.
        """
        with self._lock:
            if self._stop_requested:
                return
            self._stop_requested = True
            courier = self._courier
        if courier is not None:
            with contextlib.suppress(Exception):  # the thread is stopping already
                courier.post(self._stop_now)

    @property
    def thread_alive(self) -> bool:
        """Whether the runtime's OS thread still runs (it may, briefly, after ``on_stopped``)."""
        thread = self._os_thread
        return thread is not None and thread.is_alive()

    def join(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Wait for the OS thread to end (it ends right after ``on_stopped``): a
        blocking wait, for a worker thread, not for an event loop's."""
        thread = self._os_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        on_done: Callable[[Call[T]], None],
        name: str | None = None,
    ) -> Call[T]:
        """Run ``fn(*args)`` as a task on the SPDK thread; ``on_done`` gets the outcome.

        ``fn`` is a coroutine function (or a plain function, whose return value is
        the result).  Raises ``TypeError`` for a non-callable and
        :class:`RuntimeStoppedError` when the runtime does not accept calls; then
        nothing was sent and ``on_done`` is never called.  Otherwise ``on_done`` is
        called exactly once (with :class:`RuntimeStoppedError` if the runtime stops
        first): every call has exactly one outcome, raised here or delivered there.
        """
        if inspect.iscoroutine(fn):
            fn.close()  # never run: close it so Python does not warn
            raise TypeError("fn must be a coroutine function, not a coroutine: pass fn, *args")
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        label = name if name is not None else str(getattr(fn, "__qualname__", "call"))
        call: Call[T] = Call(self, fn, args, on_done, label)
        with self._lock:
            self._refuse_unless_up()
            self._pending.add(call)
        try:
            self.post(call._start)
        except BaseException as exc:
            with self._lock:
                mine = call in self._pending  # else teardown took it and answers it
                self._pending.discard(call)
            if mine or not isinstance(exc, RuntimeStoppedError):
                raise
        return call

    def submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], name: str | None = None
    ) -> concurrent.futures.Future[Any]:
        """:meth:`call`, with a :class:`concurrent.futures.Future` for its outcome.

        Cancelling the future cancels the call (without waiting for it to unwind);
        a call cancelled on the SPDK side cancels the future; one the runtime stops
        fails it with :class:`RuntimeStoppedError`.
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def done(call: Call[Any]) -> None:
            err = call.error
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled
                if err is None:
                    future.set_result(call.value)
                elif isinstance(err, Cancelled):
                    future.cancel()
                else:
                    future.set_exception(err)

        call = self.call(fn, args, done, name)
        future.add_done_callback(lambda f: call.cancel() if f.cancelled() else None)
        return future

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the SPDK thread soon; :class:`RuntimeStoppedError` if it is gone."""
        courier = self._courier
        if courier is None:
            raise RuntimeStoppedError(f"runtime {self.name} is not running")
        try:
            courier.post(fn)
        except Exception as exc:  # ThreadExitedError: the app thread is exiting
            raise RuntimeStoppedError(f"runtime {self.name} is not running") from exc

    def forget(self, call: Call[Any]) -> None:
        """A call finished: it no longer needs an answer at shutdown."""
        self._running.discard(call)
        with self._lock:
            self._pending.discard(call)

    def _refuse_unless_up(self) -> None:
        if self._handle is None or self._stop_requested:
            state = "not running" if self._handle is None else "stopping"
            raise RuntimeStoppedError(
                f"runtime {self.name} is {state}: calls are accepted only inside its block"
            )

    # -- on the runtime's OS thread -------------------------------------------------------

    def _main(
        self,
        deliver: Callable[[Callable[[], None]], None],
        on_started: Callable[[BaseException | None], None],
        on_stopped: Callable[[BaseException | None], None],
    ) -> None:
        env = self.env
        try:
            env.start()
        except BaseException as exc:
            _tell(deliver, on_started, exc)
            _tell(deliver, on_stopped, None)
            return
        error: BaseException | None = None
        try:
            assert env.thread is not None  # started
            env.thread.loop.set_idle_pause(self.idle_pause, IDLE_TURNS)
            env.block_on(self._serve(deliver, on_started))
        except BaseException as exc:
            error = exc
        finally:
            self._accepting = False  # also after a crash: teardown runs no new calls
            with self._lock:
                self._handle = None
                self._courier = None
                self._stop_requested = True
            by: BaseException | Host = error if error is not None else self
            for call in list(self._running):  # teardown cancels them: the runtime stops them
                if call._stopped_by is None or call._stopped_by is _CRASHED:
                    call._stopped_by = by
            crashed, self._crashed = self._crashed, []
            for call in crashed:  # those that unwound already, with the crash
                call._stopped_by = by
                assert isinstance(call.error, RuntimeStoppedError)
                call.error = call._stop_error(cast(Cancelled, call.error.__cause__))
                call._tell()
            try:
                env.stop()
            except BaseException as exc:
                if error is None:
                    error = exc
            self._abandon_pending()
            _tell(deliver, on_stopped, error)

    def _abandon_pending(self) -> None:
        """Answer the calls sent but never run with :class:`RuntimeStoppedError`."""
        with self._lock:
            left, self._pending = list(self._pending), set()
        for call in left:
            call._finish(None, RuntimeStoppedError("the SPDK runtime stopped first"))

    async def _serve(
        self,
        deliver: Callable[[Callable[[], None]], None],
        on_started: Callable[[BaseException | None], None],
    ) -> None:
        """Serve calls until :meth:`stop` (or the starting thread ended); then cancel
        the calls still running and let them unwind."""
        assert self.env.thread is not None
        handle = self.env.thread.handle()
        self._stop_op = Op(f"runtime {self.name} stop")
        self._accepting = True

        def schedule(drain: Callable[[], None]) -> None:
            handle.send(drain, dropped=self._abandon_pending)  # SPDK forced its exit

        with self._lock:
            self._handle = handle
            self._courier = Courier(schedule)
            stopping = self._stop_requested
        _tell(deliver, on_started, None)
        if not stopping:
            try:
                with Poller(self._watch, period_us=WATCH_PERIOD_US, name="runtime watch"):
                    await self._stop_op
            except BaseException:  # SPDK's loop crashed: it cancels every task, ours too
                for call in list(self._running):
                    if call._stopped_by is None:
                        call._stopped_by = _CRASHED
                raise
        self._accepting = False
        tasks = [t for t in (call._stop(self) for call in list(self._running)) if t is not None]
        if tasks:
            with contextlib.suppress(TimeoutError):  # Env.stop abandons what is left
                await wait_for(wait(tasks), UNWIND_TIMEOUT)

    def _stop_now(self) -> None:
        op = self._stop_op
        if op is not None and not op.done():
            op.set_result(None)

    def _watch(self) -> bool:
        """Stop when asked to (a backstop: the posted request may have been lost) or
        when the thread that started the runtime has ended without stopping it (the
        interpreter is exiting: it joins this non-daemon thread next)."""
        owner = self._owner
        if self._stop_requested or (owner is not None and not owner.is_alive()):
            with self._lock:
                self._stop_requested = True
            self._stop_now()
            return True
        return False


def _tell(
    deliver: Callable[[Callable[[], None]], None],
    fn: Callable[[BaseException | None], None],
    exc: BaseException | None,
) -> None:
    """``deliver(lambda: fn(exc))``; a framework loop that is gone is not an error here."""
    with contextlib.suppress(Exception):
        deliver(lambda: fn(exc))


class RuntimeBase:
    """What :class:`spdk_io.aio.Runtime` and :class:`spdk_io.trio.Runtime` share: their
    :class:`Host`, options, ``submit`` and leaving the block.  Each adapter adds entering,
    ``run`` and ``_wait_stopped`` (waiting for the Host's stop on its own event loop)."""

    def __init__(
        self,
        options: env_mod.EnvOptions | None,
        config: str | Path | Mapping[str, Any] | None,
        stop_on_error: bool,
        kwargs: Mapping[str, Any],
        thread_name: str,
        idle_pause: float,
    ) -> None:
        self._host = Host(options, config, stop_on_error, kwargs, thread_name, idle_pause)

    def __repr__(self) -> str:
        cls = type(self)
        return f"<{cls.__module__}.{cls.__qualname__} {'up' if self._host.up else 'down'}>"

    @property
    def options(self) -> env_mod.EnvOptions:
        """The environment options, resolved for this machine."""
        return self._host.env.options

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
        """Wait (on the adapter's event loop, never blocking it) until SPDK is down and
        its OS thread has ended; return the teardown's error, if any."""
        raise NotImplementedError

    @overload
    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> concurrent.futures.Future[T]: ...

    @overload
    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]: ...

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Start ``await fn(*args)`` on SPDK's app thread; return a
        :class:`concurrent.futures.Future` of its result, for synchronous callers.

        Safe from any thread while the runtime runs.  Cancelling the future
        cancels the spdk_io task (without waiting for it to unwind); a task
        cancelled on the SPDK side cancels the future; a call the runtime stops
        fails it with :class:`RuntimeStoppedError`.
        """
        return self._host.submit(fn, args)
