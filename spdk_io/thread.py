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
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import inspect
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar, overload

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io._loader import fast
from spdk_io.errors import SpdkError, WrongThreadError
from spdk_io.loop import Loop, Op, current_loop

__all__ = ["JoinHandle", "Poller", "SpdkThread", "ThreadHandle", "current_thread"]

T = TypeVar("T")

#: Seconds an exiting SPDK thread may take to release what it holds.
EXIT_TIMEOUT = 10.0

_local = threading.local()
_by_id: dict[int, SpdkThread] = {}  # SPDK thread id -> the SpdkThread that polls it
_registry_lock = threading.Lock()


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
        self._pollers: weakref.WeakSet[Poller] = weakref.WeakSet()
        addr = ctypes.c_void_p(_addr(ptr))
        self._arg = addr
        self.is_host = host
        self.loop = Loop(
            _poll,
            (addr, _ZERO32, _ZERO64),
            extra=_poll_guests if host else None,
            should_spin=self._has_active_pollers,
            next_timer=self._next_timer,
            name=name,
        )
        self.loop._call_later = self._call_later
        with _registry_lock:
            _by_id[self.id] = self

    @classmethod
    def create(cls, name: str, *, host: bool = False) -> SpdkThread:
        """Create an SPDK thread and make it current on this OS thread.

        The ``host`` thread (the app thread) also polls the SPDK threads that
        SPDK creates by itself, such as the NVMe-oF target's poll groups.
        """
        global _host
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

        Its creator polls, exits and destroys it; call :meth:`_forget` when it is gone.
        """
        if getattr(_local, "thread", None) is not None:
            raise RuntimeError(f"OS thread already polls SPDK thread {_local.thread.name}")
        ptr = g.spdk_get_thread()
        if not ptr:
            raise RuntimeError("no SPDK thread is current on this OS thread")
        thread = cls(ptr, name)
        _local.thread = thread
        return thread

    def _forget(self) -> None:
        """Drop a wrapped thread whose owner destroyed it."""
        self._closed = True
        with _registry_lock:
            _by_id.pop(self.id, None)
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
        return ThreadHandle(self._ptr, self.id, self.name)

    # -- polling -------------------------------------------------------------------------

    def poll(self) -> int:
        """Poll the SPDK thread once; return how much work it did (>0 means busy)."""
        self.check_owner()
        if _bridge.orphan_errors:
            raise _bridge.orphan_errors.pop(0)
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
        """Run ``fn()`` once after ``seconds`` on a timed poller; return its cancel function."""

        def fire() -> bool:
            poller.unregister()
            fn()
            return True

        poller = Poller(fire, period_us=max(1, round(seconds * 1e6)), name="timer")
        return poller.unregister

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """Exit the SPDK thread, poll until it has exited, destroy it.  Idempotent."""
        if self._closed:
            return
        self.check_owner()
        g.spdk_set_thread(self._ptr)  # SPDK's calls below act on the current thread
        for poller in list(self._pollers):  # left registered by the user: SPDK would wait 5 s
            poller.unregister()
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
        with _registry_lock:
            _by_id.pop(self.id, None)
        if self.is_host:
            globals()["_host"] = None
        self.loop.close()
        if getattr(_local, "thread", None) is self:
            _local.thread = None
            g.spdk_set_thread(None)

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
        plain function (called with the new SPDK thread current).  The SPDK
        thread is exited and destroyed when ``fn`` returns.
        """
        join: JoinHandle[Any] = JoinHandle(name)

        def main() -> None:
            try:
                thread = SpdkThread.create(name)
            except BaseException as exc:
                join._finish(None, exc)
                return
            try:
                result = fn(*args)
                if inspect.iscoroutine(result):
                    result = thread.block_on(result)
                join._finish(result, None)
            except BaseException as exc:
                join._finish(None, exc)
            finally:
                thread.close()
                join._notify()

        os_thread = threading.Thread(target=main, name=name, daemon=True)
        join._os_thread = os_thread
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
        g.spdk_set_thread(ctypes.cast(guest, ctypes.POINTER(g.struct_spdk_thread)))
        g.spdk_thread_exit(ctypes.cast(guest, ctypes.POINTER(g.struct_spdk_thread)))
        while not _is_exited(guest) and time.monotonic() < deadline + timeout:
            _poll(guest, zero32, zero64)
        _reap_guests()
    g.spdk_set_thread(previous)  # SPDK calls on this OS thread go to its own thread again


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
    """A reference to an SPDK thread that any OS thread may use to send it work."""

    __slots__ = ("id", "name", "ptr")

    def __init__(self, ptr: Any, thread_id: int, name: str) -> None:
        self.ptr = ptr
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

    def send(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` on this SPDK thread soon (fire and forget).

        An exception from ``fn`` stops the target thread's loop with a
        :class:`~spdk_io.errors.CallbackError`.
        """
        self._post(fn, None)

    def _post(self, fn: Callable[[], object], op: Op[Any] | None) -> None:
        key = _bridge.once(fn, op)
        rc = g.spdk_thread_send_msg(self.ptr, _bridge.ctx_cb, key)
        if rc != 0:
            _bridge.forget(key)
            raise SpdkError(-rc, "spdk_thread_send_msg", self.name)
        target = _by_id.get(self.id)
        if target is not None:
            target.loop.wake()

    @overload
    def call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> Op[T]: ...

    @overload
    def call(self, fn: Callable[[], T]) -> Op[T]: ...

    def call(self, fn: Callable[[], Any]) -> Op[Any]:
        """Run ``fn()`` on this SPDK thread and await its result here.

        ``fn`` may return a coroutine; it then runs as a task on the target
        thread's loop and its result is sent back.  Exceptions travel back too.
        """
        origin = current_thread().handle()
        op: Op[Any] = Op(f"call on {self.name}")

        def reply(value: Any, exc: BaseException | None) -> None:
            def deliver() -> None:
                if op.done():
                    return  # the caller was cancelled and gave up: drop the result
                if exc is None:
                    op.set_result(value)
                else:
                    op.set_exception(exc)

            origin._post(deliver, None)

        def remote() -> None:
            try:
                value: Any = fn()
            except BaseException as exc:
                reply(None, exc)
                return
            if inspect.iscoroutine(value):
                task = current_loop().spawn(value)
                task._observed = True

                async def relay() -> None:
                    try:
                        result = await task
                    except BaseException as exc:
                        reply(None, exc)
                        return
                    reply(result, None)

                current_loop().spawn(relay(), name="call-relay")
            else:
                reply(value, None)

        self._post(remote, op)
        return op


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

    def _finish(self, value: Any, exc: BaseException | None) -> None:
        self._value, self._exc = value, exc

    def _notify(self) -> None:
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
        """Block this OS thread until the spawned thread ends; return or raise its result."""
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


class Poller:
    """A Python callable run by SPDK as a poller on the current SPDK thread.

    ``fn()`` returns truthy when it did work.  ``period_us=0`` runs it on every
    poll; otherwise every ``period_us`` microseconds.  Use as a context manager
    or call :meth:`unregister`.  An exception in ``fn`` stops the loop with a
    :class:`~spdk_io.errors.CallbackError`.
    """

    def __init__(self, fn: Callable[[], object], period_us: int = 0, name: str = "python") -> None:
        if period_us < 0:
            raise ValueError(f"period_us must be >= 0, got {period_us}")
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
        self.thread._pollers.add(self)

    def __repr__(self) -> str:
        state = "unregistered" if not self._ptr else ("paused" if self.paused else "active")
        return f"<Poller {self.name} {state}>"

    @property
    def registered(self) -> bool:
        return bool(self._ptr)

    def _check(self) -> None:
        self._forget_if_thread_gone()
        if not self._ptr:
            raise RuntimeError(f"poller {self.name} is unregistered")
        self.thread.check_owner()

    def _forget_if_thread_gone(self) -> None:
        """SPDK freed the pollers of an exited thread: never touch ours again."""
        if self._ptr and self.thread._closed:
            self._ptr = None
            _bridge.forget(self._key)

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

    def unregister(self) -> None:
        """Stop the poller.  Idempotent, and harmless once its thread has exited."""
        self._forget_if_thread_gone()
        if not self._ptr:
            return
        self.thread.check_owner()
        g.spdk_poller_unregister(ctypes.byref(self._ptr))
        self._ptr = None
        _bridge.forget(self._key)

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unregister()
