"""SPDK threads, cross-thread messages, pollers, and spawning threads with loops.

An SPDK thread (``struct spdk_thread``) is a lightweight scheduling context
that some OS thread must poll.  In spdk_io each :class:`SpdkThread` is polled by
exactly one OS thread through its :class:`~spdk_io.loop.Loop`; objects bound to
an SPDK thread (pollers, I/O channels, descriptors) refuse to be used from any
other OS thread with :class:`~spdk_io.errors.WrongThreadError`.

* :class:`ThreadHandle` is a cheap, thread-safe reference used to send work to
  a thread: :meth:`ThreadHandle.send` (fire and forget) and
  :meth:`ThreadHandle.call` (awaitable result), both on ``spdk_thread_send_msg``.
* :meth:`SpdkThread.spawn` starts a new OS thread with its own SPDK thread and
  loop and returns a :class:`JoinHandle`.
* :class:`Poller` runs a Python callable as an SPDK poller.

Exit.  Before an SPDK thread that spdk_io drives exits (a spawned thread when its
function returns, the app thread at teardown), :func:`release_current` answers
the calls it still serves with :class:`ThreadExitedError` and runs the
:func:`on_release` hooks, which release what the thread holds (open
descriptors, channels); :meth:`SpdkThread.close` then unregisters the pollers
left registered.  From the moment a thread starts to close, messages to it are
refused with :class:`ThreadExitedError`: a :class:`ThreadHandle` never passes
SPDK a thread that has exited or been destroyed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar, overload

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io._loader import fast
from spdk_io._validate import FOREVER, MAX_TIMER_SECONDS, duration, integer, text
from spdk_io.errors import Cancelled, SpdkError, ThreadExitedError, WrongThreadError
from spdk_io.loop import (
    Loop,
    Op,
    Task,
    current_loop,
    current_task,
    running_loop,
    sleep,
    wait,
    wait_for,
)
from spdk_io.resource import Resource

__all__ = [
    "JoinHandle",
    "Poller",
    "SpdkThread",
    "ThreadHandle",
    "current_thread",
    "on_release",
    "release_current",
]

T = TypeVar("T")

#: Seconds an exiting SPDK thread may take to release what it holds.
EXIT_TIMEOUT = 10.0
#: Seconds each release step (answering served calls, each :func:`on_release` hook) may take.
RELEASE_TIMEOUT = 10.0
#: The longest poller period in microseconds: SPDK converts periods to TSC ticks in 64 bits.
MAX_PERIOD_US = int(MAX_TIMER_SECONDS * 1_000_000)
#: SPDK keeps this many bytes of a thread's or poller's name.
MAX_NAME_LEN = 256

_log = logging.getLogger("spdk_io")
_local = threading.local()
# SPDK thread id -> the SpdkThread that polls it, while it accepts messages.  A thread
# leaves it (under the lock) before it starts to exit; senders look it up and send
# under the same lock, so no message is ever sent to an exited or destroyed thread.
_by_id: dict[int, SpdkThread] = {}
_registry_lock = threading.Lock()


# TODO(errors.py): move to spdk_io.errors and export it from there.
def _never() -> None:
    """The cancel function of a timer that never fires."""


def _refuse_under_framework() -> None:
    """SPDK's app framework hands every SPDK thread created to a reactor: one of ours
    would then be polled by two OS threads at once, so none is created under it."""
    from spdk_io import env  # env imports this module: look it up when called

    if env.framework_running():
        raise RuntimeError(
            "SPDK threads cannot be created while SPDK's app framework (spdk_io.App) runs: "
            "its reactors would poll them too; use spdk_io.run / Env to spawn threads"
        )


def _main_only(what: str) -> None:
    """SPDK calls back into the interpreter that registered the new-thread hook (the
    main one) on the OS thread that creates a thread: a worker interpreter must not."""
    from spdk_io import env  # env imports this module: look it up when called

    env.main_interpreter_only(what)


def create_for_core(name: str, core: int) -> int:
    """Create an SPDK thread for another interpreter's OS thread pinned to ``core``
    (:mod:`spdk_io.cores`); return its id.  Not made current here and not polled by this
    interpreter: the worker wraps it with :meth:`SpdkThread.attach`, polls it, exits and
    destroys it (or, if no worker took it, :func:`destroy_unpolled` does)."""
    text(name, "name", max_len=MAX_NAME_LEN)
    core = integer(core, "core", lo=0, hi=1023)  # SPDK_CPUSET_SIZE: unchecked in C
    _refuse_under_framework()
    _main_only("creating a core's SPDK thread")
    mask = g.struct_spdk_cpuset()
    g.spdk_cpuset_zero(ctypes.byref(mask))
    g.spdk_cpuset_set_cpu(ctypes.byref(mask), core, True)
    _local.creating = True  # ours: the new-thread hook must not adopt it as a guest
    try:
        ptr = g.spdk_thread_create(name.encode(), ctypes.byref(mask))
    finally:
        _local.creating = False
    if not ptr:
        raise SpdkError(errno.ENOMEM, "spdk_thread_create", name)
    return int(g.spdk_thread_get_id(ptr))


def _check_callable(fn: object, what: str = "fn", *, plain: bool = False) -> None:
    """Refuse a non-callable ``fn`` (and, if ``plain``, a coroutine function)."""
    if inspect.iscoroutine(fn):
        fn.close()  # never run: close it so Python does not warn it was never awaited
        raise TypeError(f"{what} must be callable, not a coroutine (pass the function)")
    if not callable(fn):
        raise TypeError(f"{what} must be callable, not {type(fn).__name__}")
    if plain and inspect.iscoroutinefunction(fn):
        raise TypeError(f"{what} must be a plain function, not a coroutine function")


def _addr(ptr: Any) -> int:
    """The address a ctypes pointer holds (0 for NULL)."""
    return ctypes.cast(ptr, ctypes.c_void_p).value or 0


class SpdkThread:
    """An SPDK thread owned and polled by the OS thread that created it.

    Create one with :meth:`create` (inside an initialised environment).  The
    owning OS thread drives it with :meth:`block_on`; when done,
    :meth:`close` exits it, polls until SPDK says it has exited, and destroys it.
    """

    def __init__(self, ptr: Any, name: str, host: bool = False) -> None:
        if not ptr:
            raise SpdkError(errno.ENOMEM, "spdk_thread_create", name)  # SPDK returns NULL
        self._ptr = ptr
        self.name = name
        self.id: int = g.spdk_thread_get_id(ptr)
        self.owner = threading.get_ident()
        self._closed = False
        self._exiting = False  # set once it starts to exit: new calls are refused
        # Open resources owned by this thread (pollers, descriptors, channels, RPC
        # servers), in order of creation and held strongly: a poller runs until it is
        # unregistered or its thread exits, whether or not the user keeps a reference.
        self._resources: dict[int, Resource] = {}
        # Tasks running calls from other threads (answered with an error at exit).
        self._serving: set[Task[Any]] = set()
        # Keys of messages sent here and not yet run (guarded by _registry_lock),
        # with what to do if they never run (the thread was forced out).
        self._inbox: dict[int, Callable[[], None] | None] = {}
        addr = ctypes.c_void_p(_addr(ptr))
        self._arg = addr
        self.is_host = host
        self.loop = Loop(
            _poll,
            (addr, _ZERO32, _ZERO64),
            extra=_poll_guests if host else None,
            should_spin=self._has_active_pollers,
            next_timer=self._next_timer,
            call_later=self._call_later,
            name=name,
        )
        with _registry_lock:
            _by_id[self.id] = self

    @classmethod
    def create(cls, name: str, *, host: bool = False) -> SpdkThread:
        """Create an SPDK thread and make it current on this OS thread.

        The ``host`` thread (the app thread) also polls the SPDK threads that
        SPDK creates by itself, such as the NVMe-oF target's poll groups.
        """
        global _host
        text(name, "name", max_len=MAX_NAME_LEN)
        _refuse_under_framework()
        _main_only("SpdkThread.create")
        if getattr(_local, "thread", None) is not None:
            raise RuntimeError(f"OS thread already polls SPDK thread {_local.thread.name}")
        _local.creating = True
        try:
            ptr = g.spdk_thread_create(name.encode(), None)
        finally:
            _local.creating = False
        thread = cls(ptr, name, host)
        if host:
            _host = thread
        g.spdk_set_thread(ptr)
        _local.thread = thread
        return thread

    @classmethod
    def wrap_current(cls, name: str) -> SpdkThread:
        """Wrap the SPDK thread this OS thread runs now, created by someone else (a reactor).

        Its creator polls, exits and destroys it; call :meth:`forget` when it is gone.
        """
        text(name, "name", max_len=MAX_NAME_LEN)
        if getattr(_local, "thread", None) is not None:
            raise RuntimeError(f"OS thread already polls SPDK thread {_local.thread.name}")
        ptr = g.spdk_get_thread()
        if not ptr:
            raise RuntimeError("no SPDK thread is current on this OS thread")
        thread = cls(ptr, name)
        _local.thread = thread
        return thread

    @classmethod
    def attach(cls, thread_id: int, name: str) -> SpdkThread:
        """Wrap the SPDK thread ``thread_id``, created for this OS thread by another
        interpreter (:func:`create_for_core`), and make it current here.  From then on
        this OS thread owns it: it polls it, and :meth:`close` exits and destroys it.
        ``ValueError`` (nothing changed) if no live SPDK thread has that id;
        ``RuntimeError`` if this interpreter already polls an SPDK thread (a worker
        attaches exactly one, its core's, before anything else: a thread someone polls
        must never get a second poller)."""
        text(name, "name", max_len=MAX_NAME_LEN)
        thread_id = integer(thread_id, "thread_id", lo=1, hi=2**64 - 1)
        if getattr(_local, "thread", None) is not None:
            raise RuntimeError(f"OS thread already polls SPDK thread {_local.thread.name}")
        ptr = g.spdk_thread_get_by_id(thread_id)
        if not ptr or g.spdk_thread_is_exited(ptr):
            raise ValueError(f"no live SPDK thread has id {thread_id}")
        with _registry_lock:
            polled = next(iter(_by_id.values()), None)
        if polled is not None:
            raise RuntimeError(
                f"this interpreter already polls SPDK thread {polled.name}: attach is for a "
                "core's worker interpreter (spdk_io.cores), once"
            )
        thread = cls(ptr, name)
        g.spdk_set_thread(ptr)
        _local.thread = thread
        return thread

    def forget(self) -> None:
        """Drop a wrapped thread whose owner destroyed it (SPDK freed its pollers)."""
        self._closed = True
        for resource in reversed(self.resources()):
            resource.abandon()
        self._refuse_messages()
        self._drop_inbox()
        self.loop.close()
        if getattr(_local, "thread", None) is self:
            _local.thread = None

    def __repr__(self) -> str:
        return f"<SpdkThread {self.name} id={self.id}{' closed' if self._closed else ''}>"

    @property
    def ptr(self) -> Any:
        """The raw ``struct spdk_thread *`` (for the generated layer)."""
        return self._ptr

    def check_owner(self) -> None:
        """Raise :class:`WrongThreadError` unless called on the owning OS thread."""
        if threading.get_ident() != self.owner:
            raise WrongThreadError(
                f"SPDK thread {self.name} belongs to another OS thread; "
                "use ThreadHandle.send/call to reach it"
            )

    def handle(self) -> ThreadHandle:
        """A thread-safe reference other OS threads use to send this thread work."""
        return ThreadHandle(self.id, self.name)

    # -- polling -------------------------------------------------------------------------

    def poll(self) -> int:
        """Poll the SPDK thread once; return how much work it did (>0 means busy)."""
        self.check_owner()
        return self.loop.poll()

    def _polled(self) -> list[ctypes.c_void_p]:
        return [self._arg, *_guests] if self.is_host else [self._arg]

    def _has_active_pollers(self) -> bool:
        if self.is_host and _guests:
            _reap_guests()
        return any(_has_active(t) for t in self._polled())

    def _next_timer(self) -> float | None:
        due = [e for e in (_next_expiration(t) for t in self._polled()) if e]
        if not due:
            return None
        ticks_left: int = min(due) - g.spdk_get_ticks()
        return max(0.0, ticks_left / g.spdk_get_ticks_hz())

    def block_on(self, aw: Awaitable[T]) -> T:
        """Run ``aw`` on this thread's loop until it finishes (synchronous callers)."""
        self.check_owner()
        return self.loop.run_until_complete(aw)

    # -- timers --------------------------------------------------------------------------

    def _call_later(self, seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
        """Run ``fn()`` once after ``seconds`` on a timed poller; return its cancel function.

        :data:`~spdk_io._validate.FOREVER` (or anything longer than
        :data:`~spdk_io._validate.MAX_TIMER_SECONDS`) registers nothing and returns a
        no-op cancel.  The cancel function is harmless after the timer fired.
        """
        seconds = duration(seconds, "seconds")
        if seconds == FOREVER:
            return _never

        def fire() -> bool:
            poller.unregister()
            fn()
            return True

        period = min(_max_period_us(), max(1, round(seconds * 1e6)))
        poller = Poller(fire, period_us=period, name="timer")
        return poller.unregister

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """Exit the SPDK thread, poll until it has exited, destroy it.  Idempotent.

        Call :func:`release_current` (on this thread's loop) first to release what
        the thread holds; tasks still on the loop are cancelled and unwound here.
        From here on, messages to the thread are refused with
        :class:`ThreadExitedError`; those already queued still run.  Raises
        :class:`WrongThreadError`, changing nothing, from another OS thread.
        """
        if self._closed:
            return
        self.check_owner()
        if self.loop.running:
            raise RuntimeError(f"SPDK thread {self.name} cannot close from inside its own loop")
        self.loop.cancel_all()  # tasks still running unwind now, while the thread is alive
        self._refuse_messages()
        g.spdk_set_thread(self._ptr)  # SPDK's calls below act on the current thread
        self._close_leftovers()
        self._closed = True
        g.spdk_thread_exit(self._ptr)
        deadline = time.monotonic() + EXIT_TIMEOUT
        while not g.spdk_thread_is_exited(self._ptr):
            g.spdk_thread_poll(self._ptr, 0, 0)
            if time.monotonic() > deadline:
                # Destroying a thread that has not exited would corrupt SPDK: leak it instead.
                raise SpdkError(
                    errno.EBUSY,
                    "spdk_thread_exit",
                    self.name,
                    "pollers, I/O channels or messages are still outstanding",
                )
        g.spdk_thread_destroy(self._ptr)
        self._drop_inbox()
        if self.is_host:
            globals()["_host"] = None
        self.loop.close()
        if getattr(_local, "thread", None) is self:
            _local.thread = None
            g.spdk_set_thread(None)

    # -- the registry of what this thread owns (spdk_io.resource) ----------------------

    def register(self, resource: Resource) -> None:
        """Record an open resource owned by this thread (called by :class:`Resource`)."""
        self._resources[id(resource)] = resource

    def unregister(self, resource: Resource) -> None:
        """Forget a resource that has closed (called by :class:`Resource`)."""
        self._resources.pop(id(resource), None)

    def resources(self) -> list[Resource]:
        """The open resources this thread owns, oldest first."""
        return list(self._resources.values())

    def _roots(self) -> list[Resource]:
        """The open resources without a parent, newest first: what releasing closes
        (children close with their parent)."""
        return [r for r in reversed(self.resources()) if not r.closed and r.parent is None]

    def _close_leftovers(self) -> None:
        """Close what is still open, newest first (pollers left registered would make
        SPDK wait 5 s).  A busy one stays open: the thread's exit then times out and
        leaks it rather than freeing memory the device still uses."""
        for resource in self._roots():
            if resource.closed:  # closed with another in the meantime
                continue
            try:
                resource.close()
            except BlockingIOError as exc:
                _log.warning("thread %s exits with %r still busy: %s", self.name, resource, exc)

    def _refuse_messages(self) -> None:
        """From now on, sending to this thread raises :class:`ThreadExitedError`."""
        self._exiting = True
        with _registry_lock:
            _by_id.pop(self.id, None)

    def _drop_inbox(self) -> None:
        """Forget messages that never ran (SPDK forced the thread out); tell their senders."""
        with _registry_lock:
            left, self._inbox = self._inbox, {}
        for key, dropped in left.items():
            _bridge.forget(key)
            if dropped is not None:
                dropped()

    async def _stop_serving(self) -> None:
        """Answer the calls this thread still runs with :class:`ThreadExitedError`."""
        self._exiting = True
        tasks = list(self._serving)
        for task in tasks:
            task.cancel(ThreadExitedError(self.name, "call"))
        if tasks:
            try:
                await wait_for(wait(tasks), RELEASE_TIMEOUT)
            except TimeoutError:
                _log.warning("thread %s: calls it served did not stop", self.name)

    # -- spawning ------------------------------------------------------------------------

    @overload
    @staticmethod
    def spawn(
        fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, name: str = ...
    ) -> JoinHandle[T]: ...

    @overload
    @staticmethod
    def spawn(fn: Callable[..., T], *args: Any, name: str = ...) -> JoinHandle[T]: ...

    @staticmethod
    def spawn(fn: Callable[..., Any], *args: Any, name: str = "spdk_io-worker") -> JoinHandle[Any]:
        """Run ``fn(*args)`` on a new OS thread with its own SPDK thread and loop.

        ``fn`` may be a coroutine function (run on the new thread's loop) or a
        plain function (called with the new SPDK thread current).  When ``fn``
        returns, the thread releases what it holds (:func:`release_current`:
        descriptors it left open, calls it still serves), unregisters its pollers,
        exits and is destroyed; then the :class:`JoinHandle` completes.  A
        non-callable ``fn`` or a bad ``name`` raises before any thread starts.
        """
        _check_callable(fn)
        text(name, "name", max_len=MAX_NAME_LEN)
        _refuse_under_framework()
        _main_only("SpdkThread.spawn")
        join: JoinHandle[Any] = JoinHandle(name)

        def main() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                thread = SpdkThread.create(name)
            except BaseException as exc:
                join._finish(None, exc)
                join._notify()
                return
            try:
                result = fn(*args)
                if inspect.iscoroutine(result):
                    task = thread.loop.spawn(result, name)
                    join._started(thread.handle(), task)
                    result = thread.block_on(task)
            except BaseException as exc:
                error = exc
            try:
                try:
                    thread.block_on(release_current())
                finally:
                    thread.close()
            except BaseException as exc:  # the thread could not exit cleanly
                if error is None:
                    error = exc
            finally:
                join._finish(result, error)
                join._notify()

        os_thread = threading.Thread(target=main, name=name, daemon=True)
        join._os_thread = os_thread
        with _registry_lock:
            _running_joins.add(join)
        os_thread.start()
        return join


# -- threads SPDK creates by itself ------------------------------------------------------
# SPDK libraries create threads of their own (the NVMe-oF target makes one poll group
# thread per core) and expect the application's scheduler to poll them.  spdk_io's
# scheduler is simple: the host (app) thread's loop polls them, on its OS thread.

_poll = fast("spdk_thread_poll", ctypes.c_int)
_has_active = fast("spdk_thread_has_active_pollers", ctypes.c_int)
_next_expiration = fast("spdk_thread_next_poller_expiration", ctypes.c_uint64)
_is_exited = fast("spdk_thread_is_exited", ctypes.c_bool)
_destroy = fast("spdk_thread_destroy", None)
_guests: list[ctypes.c_void_p] = []
_host: SpdkThread | None = None
#: Threads started by SpdkThread.spawn that have not finished (guarded by _registry_lock).
_running_joins: set[JoinHandle[Any]] = set()


_ZERO32 = ctypes.c_uint32(0)
_ZERO64 = ctypes.c_uint64(0)


def _poll_guests() -> int:
    n = 0
    for guest in _guests:
        n += _poll(guest, _ZERO32, _ZERO64)
    return n


def _adopt(addr: int) -> None:
    if getattr(_local, "creating", False):
        return  # one of ours: its creator polls it
    with _registry_lock:
        _guests.append(ctypes.c_void_p(addr))
    if _host is not None:
        _host.loop.wake()


def _reap_guests() -> None:
    """Destroy guest threads that have exited."""
    for guest in list(_guests):
        if _is_exited(guest):
            with _registry_lock:
                _guests.remove(guest)
            _destroy(guest)


def shutdown_guests(timeout: float = 5.0) -> None:
    """Poll guest threads until they exit (after subsystem fini), then destroy them."""
    previous = g.spdk_get_thread()
    deadline = time.monotonic() + timeout
    zero32, zero64 = _ZERO32, _ZERO64
    while _guests and time.monotonic() < deadline:
        for guest in list(_guests):
            _poll(guest, zero32, zero64)
        _reap_guests()
    for guest in list(_guests):  # still running: make it exit from its own context
        thread_id = int(
            g.spdk_thread_get_id(ctypes.cast(guest, ctypes.POINTER(g.struct_spdk_thread)))
        )
        with _registry_lock:
            _guests.remove(guest)
        if not destroy_unpolled(thread_id, timeout):
            with _registry_lock:
                _guests.append(guest)  # not exited: leaked rather than destroyed live
    g.spdk_set_thread(previous)  # SPDK calls on this OS thread go to its own thread again


def destroy_unpolled(thread_id: int, timeout: float = EXIT_TIMEOUT) -> bool:
    """Exit and destroy the SPDK thread ``thread_id`` that no OS thread polls (a guest
    left over, a core's thread its worker never took), polling it here meanwhile.
    Whether it is gone: ``True`` also if no such thread exists; ``False`` if it did not
    exit within ``timeout`` s (it is then left alone: destroying it would corrupt SPDK).
    The caller's current SPDK thread is restored."""
    ptr = g.spdk_thread_get_by_id(thread_id)
    if not ptr:
        return True
    previous = g.spdk_get_thread()
    g.spdk_set_thread(ptr)  # SPDK's exit acts on the current thread
    try:
        if not g.spdk_thread_is_exited(ptr):
            g.spdk_thread_exit(ptr)
        deadline = time.monotonic() + timeout
        while not g.spdk_thread_is_exited(ptr):
            if time.monotonic() > deadline:
                return False
            g.spdk_thread_poll(ptr, 0, 0)
        g.spdk_thread_destroy(ptr)
        return True
    finally:
        g.spdk_set_thread(previous)


_bridge.new_thread_hook = _adopt


def current_thread() -> SpdkThread:
    """The :class:`SpdkThread` this OS thread polls."""
    thread: SpdkThread | None = getattr(_local, "thread", None)
    if thread is None:
        raise RuntimeError(
            "this OS thread polls no SPDK thread (use spdk_io.run or SpdkThread.spawn)"
        )
    return thread


class ThreadHandle:
    """A reference to an SPDK thread that any OS thread may use to send it work.

    Sending to a thread that has exited (or started to exit) raises
    :class:`ThreadExitedError` and changes nothing.  It holds no pointer: the live
    thread is looked up by id for every message, so it can never dangle.
    """

    __slots__ = ("id", "name")

    def __init__(self, thread_id: int, name: str) -> None:
        self.id = thread_id
        self.name = name

    def __repr__(self) -> str:
        return f"<ThreadHandle {self.name} id={self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ThreadHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @staticmethod
    def current() -> ThreadHandle:
        return current_thread().handle()

    def send(
        self, fn: Callable[[], object], *, dropped: Callable[[], None] | None = None
    ) -> None:
        """Run ``fn()`` on this SPDK thread soon (fire and forget).

        An exception from ``fn`` stops the target thread's loop with a
        :class:`~spdk_io.errors.CallbackError`.  Raises :class:`ThreadExitedError`
        if the thread has exited, ``TypeError`` if ``fn`` (or ``dropped``) is not a
        plain function (use :meth:`call` to run a coroutine function there).
        ``dropped()``, if given, runs instead of ``fn`` (on the target's OS thread)
        if the message is never run: SPDK forced the thread out with it still queued.
        """
        _check_callable(fn, plain=True)
        if dropped is not None:
            _check_callable(dropped, "dropped", plain=True)
        self._post(fn, dropped)

    def _post(self, fn: Callable[[], object], dropped: Callable[[], None] | None) -> None:
        """Send ``fn`` as an SPDK message, or raise :class:`ThreadExitedError`.

        ``dropped()`` runs (on the target's OS thread) if the message is never run
        because SPDK forced the thread out with messages still queued.
        """
        def run() -> None:
            with _registry_lock:
                inbox.pop(key, None)
            fn()

        with _registry_lock:
            target = _by_id.get(self.id)
            if target is None:
                _refuse_foreign(self)
                raise ThreadExitedError(self.name)
            inbox = target._inbox
            key = _bridge.once(run)
            inbox[key] = dropped
            rc = g.spdk_thread_send_msg(target._ptr, _bridge.ctx_cb, key)
            if rc != 0:
                del inbox[key]
                _bridge.forget(key)
                raise SpdkError(-rc, "spdk_thread_send_msg", self.name)
        target.loop.wake()

    @overload
    def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> Op[T]: ...

    @overload
    def call(self, fn: Callable[[], T]) -> Op[T]: ...

    def call(self, fn: Callable[[], Any]) -> Op[Any]:
        """Run ``fn()`` on this SPDK thread and await its result here.

        ``fn`` may return a coroutine; it then runs as a task on the target
        thread's loop and its result is sent back.  Exceptions travel back too.
        If the target exits before it answers, the call fails with
        :class:`ThreadExitedError` (raised at once if it has already exited);
        if the calling thread exits first, the answer is dropped.
        """
        _check_callable(fn)
        origin = current_thread().handle()
        op: Op[Any] = Op(f"call on {self.name}")
        name = self.name

        def reply(value: Any, exc: BaseException | None) -> None:
            def deliver() -> None:
                if op.done():
                    return  # the caller was cancelled and gave up: drop the result
                if exc is None:
                    op.set_result(value)
                else:
                    op.set_exception(exc)

            with contextlib.suppress(ThreadExitedError):  # the caller's thread exited:
                origin._post(deliver, None)  # nobody is left to tell

        def exited(cause: BaseException | None = None) -> None:
            err = ThreadExitedError(name, "call")
            err.__cause__ = cause
            reply(None, err)

        async def relay(coro: Coroutine[Any, Any, Any], me: SpdkThread) -> None:
            task = current_task()
            try:
                result = await coro
            except Cancelled as exc:  # the target's loop shut its tasks down
                exited(exc)
            except BaseException as exc:
                reply(None, exc)
            else:
                reply(result, None)
            finally:
                me._serving.discard(task)

        def remote() -> None:
            me = current_thread()
            if me._exiting:
                exited()  # too late: the thread is on its way out
                return
            try:
                value: Any = fn()
            except BaseException as exc:
                reply(None, exc)
                return
            if inspect.iscoroutine(value):
                me._serving.add(current_loop().spawn(relay(value, me), f"call from {origin.name}"))
            else:
                reply(value, None)

        self._post(remote, exited)
        return op


def _refuse_foreign(handle: ThreadHandle) -> None:
    """Raise :class:`WrongThreadError` if ``handle``'s thread is polled by another
    interpreter (a core of :mod:`spdk_io.cores`): SPDK would run this interpreter's
    callback on that interpreter's OS thread, which corrupts memory."""
    from spdk_io import cores  # cores imports this module: look it up when called

    if cores.polled_elsewhere(handle.id):
        raise WrongThreadError(
            f"SPDK thread {handle.name} (id {handle.id}) is polled by another interpreter "
            "(a core of spdk_io.cores): messages carry callbacks of the sending interpreter "
            "only; place work on that core with spdk_io.cores.run_on"
        )


class JoinHandle(Generic[T]):
    """The result of :meth:`SpdkThread.spawn`: join it synchronously or await it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._value: Any = None
        self._exc: BaseException | None = None
        self._waiters: list[tuple[ThreadHandle, Op[T]]] = []
        self._os_thread: threading.Thread | None = None
        # The spawned coroutine's task and its thread, once it runs (guarded by _lock).
        self._task: tuple[ThreadHandle, Task[Any]] | None = None

    def _started(self, thread: ThreadHandle, task: Task[Any]) -> None:
        with self._lock:
            self._task = (thread, task)

    def cancel(self) -> bool:
        """Ask the spawned coroutine to stop (``Cancelled`` is thrown into it on its
        thread); it then releases what it holds and the thread exits.  Returns False
        when there is nothing to cancel (finished, or a plain function that runs on)."""
        with self._lock:
            started = self._task
        if started is None or self._finished.is_set():
            return False
        thread, task = started
        try:
            thread.send(task.cancel)
        except ThreadExitedError:
            return False
        return True

    def _finish(self, value: Any, exc: BaseException | None) -> None:
        self._value, self._exc = value, exc

    def _notify(self) -> None:
        with _registry_lock:
            _running_joins.discard(self)
        with self._lock:
            self._finished.set()
            waiters, self._waiters = self._waiters, []
        for origin, op in waiters:
            # If the awaiting thread has exited, nobody is left to tell.
            with contextlib.suppress(SpdkError):
                origin._post(lambda op=op: self._deliver(op), None)  # type: ignore[misc]

    def _deliver(self, op: Op[T]) -> None:
        if op.done():
            return
        if self._exc is not None:
            op.set_exception(self._exc)
        else:
            op.set_result(self._value)

    def is_finished(self) -> bool:
        return self._finished.is_set()

    def join(self, timeout: float | None = None) -> T:
        """Block this OS thread until the spawned thread ends; return or raise its result.

        ``timeout`` is in seconds (``None`` or :data:`~spdk_io._validate.FOREVER`:
        no limit); :class:`TimeoutError` when it passes.  Joining from the
        spawned thread itself, or from inside a running loop (both could wait
        forever), raises ``RuntimeError``: in a task, ``await`` the handle.
        """
        if timeout is not None:
            timeout = duration(timeout, "timeout")
            if timeout == FOREVER:
                timeout = None
        if self._os_thread is threading.current_thread() and not self._finished.is_set():
            raise RuntimeError(f"thread {self.name} cannot join itself")
        if running_loop() is not None and not self._finished.is_set():
            raise RuntimeError(
                f"join() of thread {self.name} would block this thread's running loop "
                "(and whatever the spawned thread waits for there): await the JoinHandle"
            )
        if not self._finished.wait(timeout):
            raise TimeoutError(f"thread {self.name} did not finish within {timeout} s")
        if self._os_thread is not None:
            self._os_thread.join()
        if self._exc is not None:
            raise self._exc
        return self._value  # type: ignore[no-any-return]

    def __await__(self) -> Generator[Op[Any], None, T]:
        op: Op[T] = Op(f"join {self.name}")
        with self._lock:
            if self._finished.is_set():
                self._deliver(op)
            else:
                self._waiters.append((current_thread().handle(), op))
        return op.__await__()


class Poller(Resource):
    """A Python callable run by SPDK as a poller on the current SPDK thread.

    ``fn()`` returns truthy when it did work.  ``period_us=0`` runs it on every
    poll; otherwise every ``period_us`` microseconds (at most
    :data:`MAX_PERIOD_US`).  A registered poller runs until :meth:`unregister`
    (``close``, the context manager's exit) or until its thread exits, whether
    or not a reference to it is kept.  An exception in ``fn`` stops the loop
    with a :class:`~spdk_io.errors.CallbackError`.  Bad arguments raise before
    anything is registered.  With ``parent``, it is unregistered when that
    resource closes.
    """

    def __init__(
        self,
        fn: Callable[[], object],
        period_us: int = 0,
        name: str = "python",
        *,
        parent: Resource | None = None,
    ) -> None:
        _check_callable(fn, plain=True)
        period_us = integer(period_us, "period_us", 0, _max_period_us())
        text(name, "name", max_len=MAX_NAME_LEN)
        self.thread = current_thread()
        self._key = _bridge.persistent(fn)
        self._ptr: Any = g.spdk_poller_register_named(
            _bridge.poll_cb, self._key, period_us, name.encode()
        )
        if not self._ptr:
            _bridge.forget(self._key)
            raise SpdkError(errno.ENOMEM, "spdk_poller_register", name)
        self.period_us = period_us
        self.name = name
        self.paused = False
        super().__init__(self.thread, parent)

    def __repr__(self) -> str:
        state = "unregistered" if self.closed else ("paused" if self.paused else "active")
        return f"<Poller {self.name} {state}>"

    @property
    def registered(self) -> bool:
        return not self.closed

    def _check(self) -> None:
        if self.closed:
            raise RuntimeError(f"poller {self.name} is unregistered")
        self.thread.check_owner()

    def pause(self) -> None:
        self._check()
        if not self.paused:
            g.spdk_poller_pause(self._ptr)
            self.paused = True

    def resume(self) -> None:
        self._check()
        if self.paused:
            g.spdk_poller_resume(self._ptr)
            self.paused = False

    def _release(self) -> None:
        g.spdk_poller_unregister(ctypes.byref(self._ptr))
        self._abandoned()

    def _abandoned(self) -> None:
        self._ptr = None
        _bridge.forget(self._key)

    def unregister(self) -> None:
        """Stop the poller (the same as :meth:`close`).  Idempotent."""
        self.close()


def _max_period_us() -> int:
    """The longest period SPDK turns into ticks here without overflowing 64 bits."""
    hz: int = g.spdk_get_ticks_hz()
    return min(MAX_PERIOD_US, (2**63 // max(hz, 1)) * 1_000_000)


# -- releasing what a thread holds before it exits ----------------------------------------

_release_hooks: list[Callable[[], Awaitable[None]]] = []


def on_release(hook: Callable[[], Awaitable[None]]) -> None:
    """Run ``await hook()`` on every SPDK thread spdk_io exits, before it exits.

    ``hook`` releases what the *current* SPDK thread holds (descriptors and
    channels the user left open) so the thread can exit at once and nothing
    outlives it.  It runs on spawned threads when their function returns and
    on the app thread at teardown (:func:`release_current`).  Registering the
    same hook twice registers it once.
    """
    _check_callable(hook, "hook")
    if hook not in _release_hooks:
        _release_hooks.append(hook)


async def stop_spawned(timeout: float = RELEASE_TIMEOUT) -> None:
    """Stop every thread :meth:`SpdkThread.spawn` started that still runs, and wait
    until each has released what it holds and exited (Env teardown, before SPDK's
    subsystems finish).  Raises :class:`~spdk_io.errors.SpdkError` (``EBUSY``) naming
    those still running after ``timeout`` s: SPDK must not be torn down under them."""
    with _registry_lock:
        running = list(_running_joins)
    for join in running:
        join.cancel()
    deadline = time.monotonic() + timeout
    for join in running:
        while not join.is_finished() and time.monotonic() < deadline:
            await sleep(0.001)
    stuck = [j.name for j in running if not j.is_finished()]
    if stuck:
        raise SpdkError(
            errno.EBUSY,
            "stop spawned threads",
            ", ".join(stuck),
            f"still running after {timeout} s (a plain function, or a task that ignores "
            "cancellation)",
        )
    for join in running:  # their OS threads end right after notifying
        if join._os_thread is not None:
            join._os_thread.join(1.0)


async def release_current() -> None:
    """Prepare the current SPDK thread to exit: release what it holds.

    Calls from other threads that it still runs are cancelled and answered with
    :class:`ThreadExitedError` (calls arriving from now on get that answer at
    once), then every :func:`on_release` hook runs, then every resource the thread
    still owns is closed, newest first (``aclose``: after its I/O), then the thread refuses new
    messages with :class:`ThreadExitedError`: its owner is about to exit it (for
    a thread SPDK's app framework owns, out of spdk_io's sight).  Each step is bounded by
    :data:`RELEASE_TIMEOUT`; a failing hook is logged, never raised, so
    teardown always goes on.
    """
    me = current_thread()
    await me._stop_serving()
    for hook in list(_release_hooks):
        try:
            await wait_for(hook(), RELEASE_TIMEOUT)
        except Exception as exc:
            name = getattr(hook, "__qualname__", hook)
            _log.warning("release hook %s failed on thread %s: %s", name, me.name, exc)
    for resource in me._roots():
        if resource.closed:  # closed with another in the meantime
            continue
        try:
            await wait_for(resource.aclose(), RELEASE_TIMEOUT)
        except Exception as exc:
            _log.warning("closing %r on thread %s failed: %s", resource, me.name, exc)
    me._refuse_messages()
