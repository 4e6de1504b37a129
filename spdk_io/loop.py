"""Tasks, the one suspension trap, and the loop that drives an SPDK thread.

Model
-----
* A task is a coroutine (``async def``).  It suspends in exactly one way: by
  awaiting an :class:`Op`, which yields that ``Op`` to the loop (the *trap*).
  Every awaitable in spdk_io - sleeps, I/O, RPCs, cross-thread calls, joins -
  is an ``Op`` or awaits one.
* An ``Op`` is a pending operation with one waiter.  Whoever finishes it (a C
  callback, a timer, another task) calls :meth:`Op.set_result` or
  :meth:`Op.set_exception`, which only records the outcome and puts the waiter
  on the ready queue.  Tasks are never resumed inside a C callback's stack.
* A :class:`Loop` belongs to one SPDK thread and one OS thread.  Each turn it
  runs the tasks that are ready, then calls ``spdk_thread_poll`` once, and the
  direct polls (:meth:`Loop.add_direct_poll`: NVMe queue pairs) once each.  While
  anything is ready or SPDK reports work it turns without sleeping; when idle
  it sleeps until the next timed poller is due or another thread wakes it.

Invariants
----------
* An ``Op`` is completed at most once; completing it again raises.
* A task waits on at most one ``Op``; an ``Op`` has at most one waiter.
* Everything here runs on the loop's OS thread.  Other threads reach a loop
  only through :meth:`Loop.wake` (and SPDK's message rings).
* A task never waits on itself: awaiting the running task, or a task that
  (through other tasks) awaits it, raises ``RuntimeError``.

Ctrl-C
------
While a loop runs on the main thread and SIGINT has Python's default handler,
the loop installs its own handler, which only records the interrupt and wakes
the loop: a ``KeyboardInterrupt`` can then never be raised inside a ctypes
callback, where it would be lost.  The loop raises ``KeyboardInterrupt`` from
its own frame, cancels every task and lets them unwind, and re-raises it; the
previous handler is restored afterwards.  A second Ctrl-C while the tasks
unwind is recorded, not raised.  :class:`interrupts_deferred` does the same for
teardown code (``spdk_io.run`` tears SPDK down under it): a Ctrl-C during
teardown lets the teardown finish (it is bounded in time) and is raised as
``KeyboardInterrupt`` at its end.

Error context and debug mode
----------------------------
An :class:`~spdk_io.errors.SpdkError` names the SPDK thread (the loop's name) and
the task it was created in; one that a C callback creates (no task runs then)
gets the task that awaits the failed ``Op`` when it is delivered.  In debug mode
(:func:`debug`, or ``SPDK_IO_DEBUG=1`` in the environment at import, or
``python -X dev``) every ``Op`` records where it was submitted - the innermost
frames outside spdk_io, when it is created or rearmed - and an exception it fails
with gets the note ``submitted at file:line in function`` with that traceback,
like asyncio's debug mode.  Turning it on swaps ``Op.__init__`` and ``Op.rearm`` for
recording ones, so off, creating or rearming an ``Op`` runs exactly the code it runs
without debug mode (a failing one tests one module global); what Ops recorded is
forgotten when it is turned off.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import os
import signal
import sys
import threading
import time
import traceback
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from typing import Any, Generic, TypeVar, cast

from spdk_io._validate import duration, integer, text
from spdk_io.errors import (
    CallbackError,
    Cancelled,
    InvalidStateError,
    SpdkError,
    error_context,
    set_context_provider,
)

__all__ = [
    "Loop",
    "Op",
    "Task",
    "callback_failed",
    "current_loop",
    "current_task",
    "debug",
    "gather",
    "interrupts_deferred",
    "orphan_errors",
    "sleep",
    "spawn",
    "timeout",
    "wait",
    "wait_for",
]

T = TypeVar("T")

_PENDING = 0
_DONE = 1
_FAILED = 2


def _debug_from_environment() -> bool:
    """Debug mode at import: ``python -X dev``, or ``SPDK_IO_DEBUG`` set to anything but
    ``""``, ``0``, ``false``, ``no`` or ``off`` (ignored under ``python -E``)."""
    if sys.flags.dev_mode:
        return True
    if sys.flags.ignore_environment:
        return False
    value = os.environ.get("SPDK_IO_DEBUG", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


# Per interpreter (each imports its own spdk_io): whether Ops record their submitter,
# and how many times that changed (what an Op recorded before the last change is stale).
_debug = _debug_from_environment()
_debug_period = 0

#: The most frames a submission traceback keeps (debug mode).
DEBUG_STACK_DEPTH = 10
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

#: Where an Op was submitted: ``(filename, line, function)``, innermost first.
_Frames = tuple[tuple[str, int, str], ...]
#: What an Op records in debug mode: the debug period, and its submitter's frames.
_Source = tuple[int, _Frames]


def debug(enabled: bool | None = None) -> bool:
    """Turn debug mode on or off (``debug()`` only asks); return whether it is on.

    In debug mode each :class:`Op` a task submits (creates or rearms) records
    where, and an exception it fails with gets the note ``submitted at
    file:line in function`` with the submission traceback, so a failure a C
    callback reports points at the line that started the operation.  Only
    failures of Ops submitted since debug mode was last turned on get the note
    (turning it off forgets what Ops recorded), once per exception object: one
    object failing several Ops at once gets ``failed N operations at once ...``
    instead.  Per interpreter; the environment variable ``SPDK_IO_DEBUG=1``
    turns it on at import.
    """
    global _debug, _debug_period
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, not {type(enabled).__name__}")
        if enabled != _debug:
            _debug_period += 1
            _debug = enabled
            _record_submissions(enabled)
    return _debug


def _running_task() -> Task[Any] | None:
    """The task running now on this OS thread's loop, or ``None`` (between tasks: a C
    callback, a poller, a message, or no loop)."""
    loop: Loop | None = getattr(_local, "loop", None)
    if loop is None:
        return None
    task = loop.current  # the task last stepped: is it running now?
    if task is not None and (
        getattr(task._coro, "cr_running", False) or getattr(task._coro, "gi_running", False)
    ):
        return task
    return None


def _submitter() -> _Source:
    """What an Op records in debug mode: the frames that submit it (the innermost outside
    spdk_io, and its callers up to the next spdk_io frame: the loop that runs the task).
    Nothing when no task runs (a poller or a message made the Op: the first frame outside
    spdk_io is then whatever started the loop, not a submission site).
    Called by Op's methods only."""
    if _running_task() is None:
        return _debug_period, ()
    f: types.FrameType | None = sys._getframe(2)  # past this function and the Op method
    while f is not None and f.f_code.co_filename.startswith(_PACKAGE_DIR):
        f = f.f_back
    frames: list[tuple[str, int, str]] = []
    while f is not None and len(frames) < DEBUG_STACK_DEPTH:
        code = f.f_code
        if code.co_filename.startswith(_PACKAGE_DIR):
            break
        frames.append((code.co_filename, f.f_lineno, code.co_name))
        f = f.f_back
    return _debug_period, tuple(frames)


class _Noted:
    """What :func:`_note_submission` remembers on an exception it noted (as the attribute
    ``_spdk_io_noted``): the Op's record, the exception's traceback then, the note, where
    that Op was submitted, and how many Ops have failed with the exception, unraised."""

    __slots__ = ("count", "note", "site", "source", "tb")

    def __init__(
        self, source: _Source, tb: types.TracebackType | None, note: str, site: str
    ) -> None:
        self.source = source
        self.tb = tb
        self.note = note
        self.site = site
        self.count = 1

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        # A traceback cannot be pickled: a pickled (or deep-copied) exception forgets
        # which Op noted it, keeping the note.
        return _forgotten, ()


def _forgotten() -> None:
    """What a pickled :class:`_Noted` becomes."""


def _note_submission(exc: BaseException, source: _Source) -> None:
    """Add ``submitted at ...`` to ``exc`` if ``source`` is current and names a frame,
    unless another Op noted this exception object already.

    If that Op failed with it and it was not raised since (one exception object handed
    to several Ops at once: its traceback is unchanged), no single line submitted it:
    the note becomes ``failed N operations at once ...``.  If it was raised since, it
    came out of the first Op's failure (through a task, a join, a call): that note
    stays, the origin's.

    An exception raised in code outside spdk_io before it fails an Op (a spawned
    thread's outcome that joins deliver, a function ``call`` ran) gets no note: like a
    task's failure, its traceback says where it comes from."""
    period, frames = source
    if period != _debug_period or not frames:
        return  # recorded before debug mode was turned off (or no task submitted it)
    noted = getattr(exc, "_spdk_io_noted", None)
    if isinstance(noted, _Noted):
        notes = getattr(exc, "__notes__", None)
        if noted.source is source or noted.tb is not exc.__traceback__ or not notes:
            return  # this Op's own record, or the exception came out of that failure
        noted.count += 1
        shared = (
            f"failed {noted.count} operations at once (one exception object): "
            f"no single submission site; the first was submitted at {noted.site}"
        )
        for i, n in enumerate(notes):
            if n is noted.note:
                notes[i] = noted.note = shared
                break
        return
    tb = exc.__traceback__
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            return  # raised outside spdk_io: not an SPDK failure of this Op's
        tb = tb.tb_next
    filename, line, function = frames[0]
    stack = traceback.StackSummary.from_list(
        [traceback.FrameSummary(f, n, fn) for f, n, fn in reversed(frames)]
    )
    site = f"{filename}:{line} in {function}"
    note = (
        f"submitted at {site}\n"
        "submission traceback (most recent call last):\n" + "".join(stack.format()).rstrip()
    )
    try:
        exc._spdk_io_noted = _Noted(source, exc.__traceback__, note, site)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return  # cannot be marked: better no note than one that may be another Op's
    exc.add_note(note)


class Op(Generic[T]):
    """A pending operation: the only thing a task can wait on.

    ``abort`` (optional) is called if the waiting task is cancelled while the
    operation is still pending; it may release resources (unregister a timer)
    but the ``Op`` itself stays completable, so a late C callback is harmless.
    ``keep`` holds Python objects that must stay alive until the operation
    completes (buffers handed to SPDK, ctypes arguments).
    """

    __slots__ = ("_abort", "_source", "_state", "_value", "_waiter", "keep", "what")
    #: Where it was submitted (debug mode only: unset otherwise, see _record_submissions).
    _source: _Source

    def __init__(self, what: str = "", abort: Callable[[], None] | None = None) -> None:
        self._state = _PENDING
        self._value: Any = None
        self._waiter: Task[Any] | None = None
        self._abort = abort
        self.keep: object = None
        self.what = what

    def __repr__(self) -> str:
        state = ("pending", "done", "failed")[self._state]
        return f"<Op {self.what or '?'} {state}>"

    def done(self) -> bool:
        return self._state != _PENDING

    def result(self) -> T:
        """The value, or raise the exception, the operation finished with."""
        if self._state == _DONE:
            return cast(T, self._value)
        if self._state == _FAILED:
            raise cast(BaseException, self._value)
        raise InvalidStateError(f"{self!r} has not finished")

    def set_result(self, value: T) -> None:
        # _finish(_DONE, value), inlined: every completion comes here (subclasses that
        # extend _finish override this too).
        if self._state != _PENDING:
            raise InvalidStateError(f"{self!r} finished twice")
        self._state = _DONE
        self._value = value
        self.keep = None
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter._op = None
            waiter._loop._ready.append(waiter)

    def set_exception(self, exc: BaseException) -> None:
        waiter = self._waiter
        self._finish(_FAILED, exc)
        if isinstance(exc, SpdkError) and exc.task is not None and waiter is not None:
            # Made in a task that completes another task's Op (an abort completing
            # inline, a synchronous poll): that task only created it.
            running = _running_task()
            if running is not None and running is not waiter and exc.task == running.name:
                exc.created_elsewhere()
        if _debug:  # off, a record made before is stale (and reading an unset slot raises)
            source = getattr(self, "_source", None)  # where it was submitted
            if source is not None:
                _note_submission(exc, source)

    def rearm(self) -> None:
        """Make a finished ``Op`` pending again, for a hot path that reuses one
        (:class:`~spdk_io.bdev.IoSlot`); ``InvalidStateError`` while it is pending.
        In debug mode the rearming call is its new submitter."""
        if self._state == _PENDING:
            raise InvalidStateError(f"{self!r} is still pending")
        self._state = _PENDING
        self._value = None
        self._abort = None

    def _finish(self, state: int, value: object) -> None:
        """Record the outcome, drop what was kept alive, and make the waiter ready."""
        if self._state != _PENDING:
            raise InvalidStateError(f"{self!r} finished twice")
        self._state = state
        self._value = value
        self.keep = None
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter._op = None
            waiter._loop._ready.append(waiter)

    def _release(self) -> None:
        """Call ``abort`` (once): its waiter gave up.  Never raises: an error in it stops
        this OS thread's loop instead of the caller (a cancel, a timer, teardown)."""
        abort, self._abort = self._abort, None
        if abort is not None:
            try:
                abort()
            except BaseException as exc:
                callback_failed(exc, f"releasing {self!r}")

    def __await__(self) -> Generator[Op[Any], None, T]:
        if self._state == _PENDING:
            yield self  # the trap: the loop parks the task until this Op finishes
        if self._state == _DONE:
            return cast(T, self._value)
        if self._state == _FAILED:
            exc = self._value
            if isinstance(exc, SpdkError):  # its thread and task where unknown (made in a
                exc.add_context(*error_context())  # C callback: this task), or noted awaited
            raise exc
        return self.result()


# Debug mode swaps Op's __init__ and rearm for recording ones, and back: off, creating
# or rearming an Op runs exactly the code it runs without debug mode (no test of a flag).
_plain_init = Op.__init__
_plain_rearm = Op.rearm


def _recording_init(self: Op[Any], what: str = "", abort: Callable[[], None] | None = None) -> None:
    _plain_init(self, what, abort)
    self._source = _submitter()


def _recording_rearm(self: Op[Any]) -> None:
    _plain_rearm(self)
    self._source = _submitter()  # the rearming call is the new submitter


def _record_submissions(on: bool) -> None:
    """Make every Op created or rearmed from now on record its submitter (``on``), or not.
    Per interpreter: each has its own ``Op`` class."""
    setattr(Op, "__init__", _recording_init if on else _plain_init)  # noqa: B010
    setattr(Op, "rearm", _recording_rearm if on else _plain_rearm)  # noqa: B010


if _debug:
    _record_submissions(True)


class _Yield:
    """The message a plain yield sends the loop: run this task again after the others.

    Not an ``Op``: nothing completes it and nobody waits on it.  It reads like a
    finished one to the trap (``_state``), which keeps the loop's hot path to one test.
    """

    __slots__ = ()
    _state = _DONE
    _waiter = None

    def __repr__(self) -> str:
        return "<yield>"


_YIELD = _Yield()


@types.coroutine
def _yield_now() -> Generator[_Yield, None, None]:
    """Reschedule the task behind every ready task (what ``sleep(0)`` returns)."""
    yield _YIELD  # the loop re-queues the task at the back


class _TaskDone(Op[T]):
    """The ``Op`` a task finishes: knows its task, so waits on tasks can be followed.

    An ``Op`` has one waiter; a task may have many.  Every awaiter after the first
    waits on a *follower* that a callback finishes with the same outcome.
    """

    __slots__ = ("callbacks", "task")

    def __init__(self, task: Task[T]) -> None:
        # Op.__init__ without debug mode's record: a task's failure is never noted with a
        # submission site (its traceback says where), so recording one is wasted.
        self._state = _PENDING
        self._value: Any = None
        self._waiter: Task[Any] | None = None
        self._abort: Callable[[], None] | None = None
        self.keep: object = None
        self.what = f"task {task.name}"
        self.task = task
        #: Called with the task once it has finished (followers, ``gather``); they only
        #: record and complete Ops, like every completion.
        self.callbacks: list[Callable[[Task[T]], None]] = []

    def set_result(self, value: T) -> None:
        self._finish(_DONE, value)

    def set_exception(self, exc: BaseException) -> None:
        self._finish(_FAILED, exc)  # the task's own failure: its traceback says where

    def _finish(self, state: int, value: object) -> None:
        super()._finish(state, value)
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback(self.task)


class Task(Generic[T]):
    """A coroutine scheduled on a :class:`Loop`.  Await it to get its result.

    A task that ends with :class:`Cancelled` after :meth:`cancel` was called is
    not a failure: it is never reported as "failed and never awaited".
    """

    __slots__ = (
        "_cancel",
        "_cancelled",
        "_coro",
        "_done",
        "_loop",
        "_observed",
        "_op",
        "_throw",
        "name",
    )

    def __init__(self, loop: Loop, coro: Coroutine[Any, Any, T], name: str) -> None:
        self._loop = loop
        self._coro = coro
        self.name = name
        self._op: Op[Any] | None = None  # what the task waits on
        self._throw: BaseException | None = None  # thrown in at the next resume
        self._cancel: BaseException | None = None  # cancellation not yet delivered
        self._cancelled = False  # cancel() was called
        self._done: _TaskDone[T] = _TaskDone(self)
        self._observed = False

    def __repr__(self) -> str:
        state = "done" if self._done.done() else ("waiting" if self._op else "ready")
        return f"<Task {self.name} {state}>"

    def done(self) -> bool:
        return self._done.done()

    def result(self) -> T:
        self._observed = True
        return self._done.result()

    def cancel(self, exc: BaseException | None = None) -> bool:
        """Ask the task to stop: ``Cancelled`` (or ``exc``) is thrown in at its next suspension.

        A parked task is woken at once; a ready or running task gets it at its
        next ``await`` that suspends, a plain yield (``sleep(0)``) included.
        Returns False if the task had already finished.  Safe to call more than once.
        """
        if exc is not None and not isinstance(exc, BaseException):
            raise TypeError(f"exc must be an exception instance, not {type(exc).__name__}")
        if self._done.done():
            return False
        self._cancelled = True
        if self._cancel is None and self._throw is None:
            self._cancel = exc if exc is not None else Cancelled(f"task {self.name} was cancelled")
        op = self._op
        if op is not None:
            # Parked: detach from the Op (a late completion then wakes nobody) and wake up.
            self._op = None
            op._waiter = None
            self._throw, self._cancel = self._cancel, None
            self._loop._ready.append(self)
            op._release()
        return True

    def _abandon(self) -> None:
        """Close a task that did not finish when cancelled (teardown); it is never resumed."""
        op = self._op
        if op is not None:  # detached: a late completion wakes nobody
            self._op = None
            op._waiter = None
            op._release()
        self._throw = self._cancel = None
        with contextlib.suppress(Exception):  # it awaits in a finally block: abandoned there
            self._coro.close()
        if not self._done._state:
            self._done.set_exception(Cancelled(f"task {self.name} did not finish when cancelled"))

    def mark_observed(self) -> None:
        """Someone else handles this task's outcome: never report it as "never awaited"."""
        self._observed = True

    def failed(self) -> bool:
        """Whether the task finished with an exception (cancellation included)."""
        return self._done._state == _FAILED

    def __await__(self) -> Generator[Op[Any], None, T]:
        loop: Loop | None = getattr(_local, "loop", None)
        if loop is not self._loop:
            raise RuntimeError(
                f"task {self.name} runs on loop {self._loop.name} of another OS thread: "
                "await it there (ThreadHandle.call), or use a JoinHandle"
            )
        done = self._done
        if not done._state:
            self._refuse_deadlock(loop.current)
        self._observed = True
        if not done._state and done._waiter is not None:  # awaited already: follow it
            follower: _TaskDone[T] = _TaskDone(self)
            done.callbacks.append(lambda t: follower._finish(t._done._state, t._done._value))
            return follower.__await__()
        return done.__await__()

    def _refuse_deadlock(self, me: Task[Any] | None) -> None:
        """Raise if ``me`` (the running task) awaiting this task would wait forever."""
        chain = [self]
        t: Task[Any] = self
        while t is not me:
            op = t._op
            if type(op) is not _TaskDone or len(chain) > len(self._loop._tasks):
                return  # t waits on something else (or nothing): no cycle through tasks
            t = op.task
            chain.append(t)
        if t is self:
            raise RuntimeError(f"task {self.name} awaits itself: it would wait forever (deadlock)")
        path = " -> ".join(x.name for x in chain)
        raise RuntimeError(
            f"task {t.name} awaiting task {self.name} would deadlock: "
            f"{path}, each waiting for the next"
        )


def _no_timers(seconds: float, fn: Callable[[], None]) -> Callable[[], None]:
    raise RuntimeError("this loop was created without timers (no call_later)")


def running_loop() -> Loop | None:
    """The loop that :meth:`Loop.run_until_complete` drives on this OS thread now, if any."""
    loop: Loop | None = getattr(_local, "loop", None)
    return loop if loop is not None and loop.running else None


def current_loop() -> Loop:
    """The loop of this OS thread's SPDK thread; raises RuntimeError if there is none."""
    loop: Loop | None = getattr(_local, "loop", None)
    if loop is None:
        raise RuntimeError("no spdk_io loop on this OS thread (use spdk_io.run or block_on)")
    return loop


_local = threading.local()
_loop_ids = itertools.count(1).__next__

#: The longest an idle loop sleeps before polling again, in seconds.  SPDK threads
#: that are woken only through SPDK's own message rings are noticed this late.
IDLE_SLEEP_MAX = 0.001
#: Idle turns before the loop considers sleeping (keeps the idle path to one C call).
IDLE_SPIN = 64
#: While tasks stay ready (they only yield), SPDK is polled after this many task steps.
POLL_EVERY = 64


class Loop:
    """Runs tasks and polls one SPDK thread, on the OS thread that created it.

    ``poll(*poll_args)`` polls the SPDK thread once and returns its busy count
    (a C function with prebuilt arguments, so a turn costs one C call).
    ``extra``, if given, polls further work (SPDK's own threads) on every 8th
    turn, or on every turn while it reports work.  ``should_spin`` says
    whether SPDK has work that needs polling (active pollers); ``next_timer``
    returns seconds until the next timed poller, or ``None``.  ``call_later(seconds,
    fn)`` runs ``fn()`` once after ``seconds`` (an SPDK timed poller) and returns a
    function that cancels it (harmless after it ran); ``sleep`` and ``timeout`` use
    it.  The :mod:`spdk_io.thread` module supplies them all.
    """

    def __init__(
        self,
        poll: Callable[..., int],
        poll_args: tuple[Any, ...] = (),
        *,
        extra: Callable[[], int] | None = None,
        should_spin: Callable[[], bool] = lambda: False,
        next_timer: Callable[[], float | None] = lambda: None,
        call_later: Callable[[float, Callable[[], None]], Callable[[], None]] | None = None,
        name: str = "loop",
    ) -> None:
        self.name = name
        #: A number no other loop of this process has (names may repeat).
        self.id = _loop_ids()
        self._call_later = call_later if call_later is not None else _no_timers
        self._ready: deque[Task[Any]] = deque()
        self._cpoll = poll
        self._poll_args = poll_args
        self._extra = extra
        self._should_spin = should_spin
        self._next_timer = next_timer
        self._wake = threading.Event()
        self._owner = threading.get_ident()
        self._tasks: set[Task[Any]] = set()
        self._crash: BaseException | None = None
        self._interrupted = False  # Ctrl-C arrived while this loop ran
        self._unwinding = False  # tasks are being cancelled after the loop stopped
        self._running = False
        self._unobserved: list[Task[Any]] = []
        self.current: Task[Any] | None = None  # the task last stepped (the running one, in a task)
        # The loop's own counters (spdk_io.stats reads them): turns driven (here, or by a
        # framework poller through drive_once), task steps run, and the most tasks ever
        # ready at once.  While the loop runs they are published
        # every few turns (counted in locals in between, so the hot loop stays cheap).
        self.turns = 0
        self.tasks_run = 0
        self.ready_high_water = 0
        # Direct polls (add_direct_poll): (fn, args, failed), called every turn.
        self._direct: tuple[tuple[Callable[..., int], tuple[Any, ...], Callable[[int], None]], ...]
        self._direct = ()
        self._idle_pause = 0.0  # set_idle_pause
        self._idle_turns = IDLE_SPIN
        if getattr(_local, "loop", None) is None:
            _local.loop = self  # the loop of this OS thread, running or not
        self._take_orphans()

    def close(self) -> None:
        """Forget this loop as its OS thread's loop (its SPDK thread is gone).

        An error a callback reported that this loop never raised goes to the
        OS thread's next loop (see :func:`orphan_errors`).
        """
        if getattr(_local, "loop", None) is self:
            _local.loop = None
            if self._crash is not None:
                orphan_errors().append(self._crash)
                self._crash = None

    def _take_orphans(self) -> None:
        """Errors callbacks raised on this OS thread while it had no loop: raise them here."""
        errors = orphan_errors()
        if not errors:
            return
        first = errors.pop(0)
        for other in errors:
            first.add_note(f"also raised in a callback: {_describe(other)}")
        errors.clear()
        self.crash(first)

    # -- scheduling ---------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> Task[T]:
        """Schedule ``coro`` to run as a new task on this loop."""
        if not isinstance(coro, Coroutine):
            raise TypeError(f"spawn() needs a coroutine, got {type(coro).__name__}")
        if name is not None:
            text(name, "name", empty=True)
        task = Task(self, coro, name or str(getattr(coro, "__qualname__", "task")))
        self._tasks.add(task)
        self._ready.append(task)
        return task

    def add_direct_poll(
        self, fn: Callable[..., int], args: tuple[Any, ...], failed: Callable[[int], None]
    ) -> Callable[[], None]:
        """Call ``fn(*args)`` once every turn, with no SPDK poller in between; return a
        function that removes it (idempotent).

        For a C function that polls a queue (``spdk_nvme_qpair_process_completions``):
        ``fn`` is a ctypes function with prebuilt arguments, so a turn costs one C call
        more.  A positive result is work done; a negative one is passed to
        ``failed(rc)``, whose errors stop the loop (:class:`CallbackError`).  While any
        direct poll is registered the loop never sleeps (as with an active poller).
        Only from the loop's OS thread.
        """
        if not callable(fn) or not callable(failed):
            raise TypeError("fn and failed must be callable")
        if not isinstance(args, tuple):
            raise TypeError(f"args must be a tuple, not {type(args).__name__}")
        if threading.get_ident() != self._owner:
            raise RuntimeError(f"loop {self.name} belongs to another OS thread")
        entry = (fn, args, failed)
        self._direct = (*self._direct, entry)

        def remove() -> None:
            self._direct = tuple(e for e in self._direct if e is not entry)

        return remove

    def poll_direct(self) -> int:
        """Run the direct polls once (:meth:`add_direct_poll`); the work they did.  For
        whoever drives the loop without :meth:`run_until_complete` (a framework poller)."""
        n = 0
        for fn, args, failed in self._direct:
            rc = fn(*args)
            if rc > 0:
                n += rc
            elif rc < 0:
                try:
                    failed(rc)
                except BaseException as exc:
                    callback_failed(exc, "direct poll")
        return n

    def drive_once(self) -> int:
        """One turn for whoever drives the loop without :meth:`run_until_complete` (a
        framework poller): the tasks ready now, then the direct polls; counted in
        :attr:`turns`.  Returns the work done (tasks run plus what the polls did)."""
        self.turns += 1
        return self.run_ready() + self.poll_direct()

    def crash(self, exc: BaseException) -> None:
        """Stop ``run_until_complete`` with ``exc`` (used for errors nobody awaits)."""
        if self._crash is None:
            self._crash = exc
        self.wake()

    def report_callback_error(self, exc: BaseException, what: str) -> None:
        """A Python callable invoked from C raised: stop the loop with a clear error."""
        self.crash(_callback_error(exc, what))

    def _on_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        """The SIGINT handler while this loop runs: record it and wake the loop.

        It raises only when the loop has not taken up an earlier Ctrl-C yet (a task
        blocks without awaiting), as Python and asyncio do on a second Ctrl-C; while
        tasks unwind, it only records.
        """
        if isinstance(self._crash, KeyboardInterrupt) and not self._unwinding:
            raise KeyboardInterrupt
        self._interrupted = True
        if not isinstance(self._crash, KeyboardInterrupt):
            exc = KeyboardInterrupt()
            exc.__context__ = self._crash  # an error that was about to stop the loop anyway
            self._crash = exc
        self._wake.set()

    def wake(self) -> None:
        """Wake the loop if it sleeps (safe from any OS thread)."""
        self._wake.set()

    def _step(self, task: Task[Any]) -> None:
        """Resume ``task`` once (``_drive`` inlines the common case of this)."""
        self.current = task
        try:
            exc = task._throw
            if exc is None:
                op = task._coro.send(None)
            else:
                task._throw = None
                op = task._coro.throw(exc)
        except BaseException as err:
            self._finished(task, err)
            return
        self._park(task, op)

    def _finished(self, task: Task[Any], err: BaseException) -> None:
        """``task``'s coroutine ended with ``err`` (``StopIteration`` when it returned)."""
        self._tasks.discard(task)
        if isinstance(err, StopIteration):
            task._done.set_result(err.value)
            return
        task._done.set_exception(err)
        if isinstance(err, KeyboardInterrupt | SystemExit):
            self.crash(err)
        elif (
            not task._observed
            and task._done._waiter is None
            and not (task._cancelled and isinstance(err, Cancelled))  # cancelled: not a failure
        ):
            self._unobserved.append(task)

    def _park(self, task: Task[Any], op: Op[Any]) -> None:
        """``task`` yielded ``op`` (the trap): requeue it, or make it ``op``'s waiter."""
        try:
            state = op._state
        except AttributeError:
            task._throw = TypeError(f"task {task.name} awaited {op!r}, not an spdk_io awaitable")
            self._ready.append(task)
            return
        if task._cancel is not None:  # a pending cancel is delivered at any suspension
            task._throw, task._cancel = task._cancel, None
            self._ready.append(task)
            if not state and op._waiter is None:
                op._release()  # nobody else waits on it
        elif state:  # already finished (or a plain yield): run again after the others
            self._ready.append(task)
        elif op._waiter is not None:
            task._throw = RuntimeError(f"{op!r} is already awaited by {op._waiter!r}")
            self._ready.append(task)
        else:
            op._waiter = task
            task._op = op

    # -- driving ------------------------------------------------------------------------

    def run_ready(self) -> int:
        """Run every task that is ready now (not those it makes ready); return the count."""
        ready = self._ready
        n = len(ready)
        step = self._step
        self.tasks_run += n
        if n > self.ready_high_water:
            self.ready_high_water = n
        for _ in range(n):
            step(ready.popleft())
        return n

    def set_idle_pause(self, seconds: float, after_turns: int = IDLE_SPIN) -> None:
        """Let the loop sleep up to ``seconds`` once it has been idle for ``after_turns``
        turns, even while SPDK keeps it spinning (active pollers, direct polls);
        :meth:`wake` ends the sleep early.  ``seconds=0`` (the default) spins;
        ``seconds`` is at most :data:`IDLE_SLEEP_MAX`.  ``seconds`` takes effect at
        once, ``after_turns`` at the next :meth:`run_until_complete`.

        For a loop that shares its process with other Python threads (:mod:`spdk_io.aio`):
        a spinning loop holds the GIL, and they wait up to Python's switch interval
        (5 ms) for it.  It costs completions that arrive meanwhile up to ``seconds``.
        """
        seconds = duration(seconds, "seconds")
        if seconds > IDLE_SLEEP_MAX:
            raise ValueError(f"seconds must be at most {IDLE_SLEEP_MAX}, got {seconds}")
        self._idle_turns = integer(after_turns, "after_turns", lo=1, hi=1 << 20)
        self._idle_pause = seconds

    def _idle(self) -> None:
        if self._direct or self._should_spin():
            if self._idle_pause:
                self._wake.wait(self._idle_pause)  # releases the GIL to other threads
                self._wake.clear()
            return
        delay = IDLE_SLEEP_MAX
        nxt = self._next_timer()
        if nxt is not None and nxt < delay:
            delay = nxt
        if delay > 0:
            self._wake.wait(delay)
        self._wake.clear()

    def poll(self) -> int:
        """Poll SPDK once (and the extra work); return how much work was done."""
        n = self._cpoll(*self._poll_args)
        if self._direct:
            n += self.poll_direct()
        if self._extra is not None:
            n += self._extra()
        return n

    def run_until_complete(self, main: Awaitable[T]) -> T:
        """Drive the loop until ``main`` finishes; return its result or raise its exception.

        If the loop stops early (Ctrl-C, an error in a callback), every task is
        cancelled and unwound before the exception propagates.  Failed tasks that
        nobody awaited are reported: as a :class:`CallbackError` if ``main``
        succeeded, as notes on the exception otherwise.
        """
        if threading.get_ident() != self._owner:
            raise RuntimeError(f"loop {self.name} belongs to another OS thread")
        if self._running or getattr(_local, "running", False):
            raise RuntimeError("an spdk_io loop is already running on this OS thread")
        task: Task[T]
        if isinstance(main, Task):
            if main._loop is not self:
                raise RuntimeError(f"task {main.name} belongs to another loop ({main._loop.name})")
            task = cast("Task[T]", main)
        else:
            _check_awaitable(main, "main")
            task = self.spawn(_as_coro(main))
        task._observed = True  # its outcome is returned or raised below
        self._take_orphans()
        self._interrupted = False
        outer = getattr(_local, "loop", None)  # another loop of this OS thread, idle now
        _local.loop = self  # while it runs, this is the OS thread's loop
        _local.running = True
        self._running = True
        handler = _take_sigint(self._on_sigint)
        try:
            try:
                self._drive(task._done)
                _give_back_sigint(handler)  # a Ctrl-C from here on raises itself
                handler = None
                if self._crash is not None:
                    raise self._crash
            except BaseException as exc:
                self._crash = None
                lost = self._take_lost()
                self._unwinding = True
                try:
                    self._shutdown_tasks(exc)
                finally:
                    self._unwinding = False
                self._take_lost()  # failures while unwinding follow from ``exc``
                _note_lost(exc, lost)
                if self._interrupted and not isinstance(exc, KeyboardInterrupt):
                    raise KeyboardInterrupt from exc
                raise
        finally:
            self._running = False
            _local.running = False
            _local.loop = outer if outer is not None else self
            _give_back_sigint(handler)
        lost = self._take_lost()
        if task._done._state == _FAILED:
            _note_lost(task._done._value, lost)
        elif lost:
            names = ", ".join(t.name for t in lost)
            raise CallbackError(
                f"task(s) {names} failed and were never awaited"
            ) from lost[0]._done._value
        return task.result()

    def _take_lost(self) -> list[Task[Any]]:
        """The tasks that failed with nobody awaiting them (and forget them)."""
        lost = [t for t in self._unobserved if not t._observed]
        self._unobserved.clear()
        return lost

    def _drive(self, done: Op[Any]) -> None:
        # The hot loop: everything it touches is a local.  One turn = the ready
        # tasks, one C poll, and bookkeeping; an idle turn is the C poll plus a
        # few integer operations.
        ready = self._ready
        popleft = ready.popleft
        append = ready.append
        step = self._step
        park = self._park
        finished = self._finished
        cpoll = self._cpoll
        a1, a2, a3 = (*self._poll_args, None, None, None)[:3]
        nargs = len(self._poll_args)
        if nargs != 3:
            args = self._poll_args

            def cpoll3(_a: Any, _b: Any, _c: Any) -> int:
                return cpoll(*args)

            poll3 = cpoll3
        else:
            poll3 = cpoll
        extra = self._extra
        spin = self._idle_turns
        idle = 0
        turns = 0
        since_poll = 0
        extra_busy = 0
        # The counters, in locals; published with the periodic bookkeeping and at the end.
        turns0, ran0, ran, high = self.turns, self.tasks_run, 0, self.ready_high_water
        try:
            while not done._state:
                if ready:
                    n = len(ready)
                    ran += n
                    if n > high:
                        high = n
                    for _ in range(n):
                        # _step, inlined for the common case: resume with no exception,
                        # the task yields an Op, and it is finished or nobody waits on it.
                        task = popleft()
                        if task._throw is not None:
                            step(task)
                            continue
                        self.current = task
                        try:
                            op = task._coro.send(None)
                        except BaseException as err:
                            finished(task, err)
                            continue
                        try:
                            if task._cancel is None:  # else park() delivers the cancel
                                if op._state:
                                    append(task)
                                    continue
                                if op._waiter is None:
                                    op._waiter = task
                                    task._op = op
                                    continue
                        except AttributeError:
                            pass
                        park(task, op)
                    if done._state:
                        break
                    if ready:  # tasks that only yielded: poll SPDK every POLL_EVERY steps
                        since_poll += n
                        if since_poll < POLL_EVERY:
                            continue
                    since_poll = 0
                busy = poll3(a1, a2, a3)
                direct = self._direct
                if direct:  # add_direct_poll: a C call each, no SPDK poller in between
                    for dfn, dargs, dfailed in direct:
                        rc = dfn(*dargs)
                        if rc:
                            if rc > 0:
                                busy = 1
                            else:
                                try:
                                    dfailed(rc)
                                except BaseException as exc:
                                    callback_failed(exc, "direct poll")
                if busy or ready:
                    idle = 0
                else:
                    idle += 1
                    if idle >= spin:
                        idle = 0
                        self._idle()

                turns += 1
                # Every 8th turn (every turn while it is busy): the extra work, and
                # errors that callbacks reported.
                if extra_busy or not turns & 7:
                    self.turns, self.tasks_run = turns0 + turns, ran0 + ran
                    self.ready_high_water = high
                    if extra is not None:
                        extra_busy = extra()
                    if self._crash is not None:
                        raise self._crash
            if self._crash is not None:
                raise self._crash
        finally:
            self.turns, self.tasks_run = turns0 + turns, ran0 + ran
            self.ready_high_water = high

    def cancel_all(self, budget: float = 5.0) -> None:
        """Cancel every task of this loop and let them unwind, for at most ``budget`` s.

        Tasks still running after that are closed (their ``finally`` blocks run,
        without awaiting).  For teardown: call it before the SPDK thread exits.
        """
        budget = duration(budget, "budget")
        if threading.get_ident() != self._owner:
            raise RuntimeError(f"loop {self.name} belongs to another OS thread")
        if self._running:
            raise RuntimeError("cancel_all() is for teardown: the loop is running")
        self._shutdown_tasks(None, budget)

    @property
    def running(self) -> bool:
        """Whether :meth:`run_until_complete` is driving this loop now."""
        return self._running

    def take_crash(self) -> BaseException | None:
        """The error that is to stop this loop (a failed callback, Ctrl-C), now handled by
        the caller; ``None`` if there is none."""
        crash, self._crash = self._crash, None
        return crash

    def _shutdown_tasks(self, reason: BaseException | None, budget: float = 5.0) -> None:
        """Cancel every task and let them unwind (``finally`` blocks run), for ``budget`` s."""
        for t in list(self._tasks):
            t.cancel()
        deadline = time.monotonic() + budget
        while self._tasks and time.monotonic() < deadline:
            self.run_ready()
            self.poll()
        stuck = set(self._tasks)
        if stuck:  # close them so their frames unwind; nothing may resume them again
            self._tasks.clear()
            for t in stuck:
                t._abandon()  # may wake another stuck task that awaited it: purge after
            kept = [t for t in self._ready if t not in stuck]
            self._ready.clear()
            self._ready.extend(kept)
        if reason is not None:
            self._crash = None  # errors while unwinding follow from ``reason``, which propagates

    def _sleep_impl(self, seconds: float) -> Op[None]:
        op: Op[None] = Op("sleep")
        op._abort = self._call_later(
            seconds, lambda: op.set_result(None) if not op.done() else None
        )
        return op


async def _await(aw: Awaitable[T]) -> T:
    return await aw


def _as_coro(aw: Awaitable[T]) -> Coroutine[Any, Any, T]:
    return aw if isinstance(aw, Coroutine) else _await(aw)


def _describe(exc: BaseException) -> str:
    """``Type: message`` for ``exc``, even if its ``__str__`` raises."""
    try:
        message = str(exc)
    except BaseException:  # a broken __str__ must not hide the error itself
        message = "<str() failed>"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _callback_error(exc: BaseException, what: str, where: str = "") -> BaseException:
    """What a failing callback stops a loop with: ``exc`` itself for Ctrl-C and exit."""
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return exc
    err = CallbackError(f"{what} raised {_describe(exc)}{where}")
    err.__cause__ = exc
    return err


def _note_lost(exc: BaseException, lost: list[Task[Any]]) -> None:
    for t in lost:
        exc.add_note(f"task {t.name} also failed, never awaited: {_describe(t._done._value)}")


def orphan_errors() -> list[BaseException]:
    """Errors raised in callbacks on this OS thread while it had no loop.

    The OS thread's next loop raises them (when it is created and at its next
    ``run_until_complete``).  The list is per OS thread (and per interpreter).
    """
    errors: list[BaseException] | None = getattr(_local, "orphans", None)
    if errors is None:
        errors = _local.orphans = []
    return errors


def callback_failed(exc: BaseException, what: str, op: Op[Any] | None = None) -> None:
    """A Python callable called from C raised ``exc``: deliver it where it cannot be lost.

    To ``op`` if it is still pending (the task awaiting it gets it); a
    ``KeyboardInterrupt``/``SystemExit`` also stops this OS thread's loop, and
    so does any error with no pending ``op``.  With no loop on this OS thread,
    the next one raises it (:func:`orphan_errors`).  Never raises: nothing may
    unwind into C.
    """
    try:
        fatal = isinstance(exc, KeyboardInterrupt | SystemExit)
        if op is not None and not op.done():
            op.set_exception(exc)
            if not fatal:
                return
        loop: Loop | None = getattr(_local, "loop", None)
        if loop is not None:
            loop.report_callback_error(exc, what)
        else:
            orphan_errors().append(
                _callback_error(exc, what, " (while no loop ran on this OS thread)")
            )
    except BaseException as err:  # pragma: no cover - a last resort, keeps C safe
        orphan_errors().append(err)


_SigintHandler = Callable[[int, types.FrameType | None], None]


def _take_sigint(handler: _SigintHandler) -> _SigintHandler | None:
    """Install ``handler`` for SIGINT if this is the main thread and Python's default
    handler is installed; return it, or ``None`` if nothing changed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return None  # the application handles SIGINT itself (or an outer scope does)
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main interpreter
        return None
    return handler


def _give_back_sigint(handler: _SigintHandler | None) -> None:
    if handler is not None and signal.getsignal(signal.SIGINT) is handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class interrupts_deferred:
    """Inside the block, Ctrl-C is recorded instead of raised; leaving it raises
    ``KeyboardInterrupt`` if one arrived (unless one is already propagating).

    For teardown that must not be cut short (and is bounded in time): loops run
    inside the block do not react to Ctrl-C, and no ``KeyboardInterrupt`` can
    land in a C callback.  Does nothing off the main thread or when SIGINT does
    not have Python's default handler.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._handler: _SigintHandler | None = None

    def _record(self, signum: int, frame: types.FrameType | None) -> None:
        self.interrupted = True

    def __enter__(self) -> interrupts_deferred:
        self.interrupted = False
        self._handler = _take_sigint(self._record)
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: Any
    ) -> None:
        _give_back_sigint(self._handler)
        self._handler = None
        if self.interrupted and not isinstance(ev, KeyboardInterrupt):
            raise KeyboardInterrupt


# ------------------------------------------------------------------------------ API


def spawn(coro: Coroutine[Any, Any, T], name: str | None = None) -> Task[T]:
    """Start ``coro`` as a task on the current loop and return its :class:`Task`."""
    return current_loop().spawn(coro, name)


def sleep(seconds: float = 0) -> Awaitable[None]:
    """Suspend the task for ``seconds`` (on an SPDK timed poller); ``sleep(0)`` just yields.

    ``inf`` (:data:`~spdk_io._validate.FOREVER`), or anything longer than SPDK's
    timers can count, waits until the task is cancelled, with no timer.
    """
    if seconds == 0 and type(seconds) is not bool:
        return _yield_now()  # the hot path of tasks that yield: any numeric zero
    seconds = duration(seconds, "seconds")
    if seconds == 0:
        return _yield_now()
    return current_loop()._sleep_impl(seconds)  # call_later registers nothing for FOREVER


class timeout:
    """Cancel the enclosed block after ``seconds``, raising :class:`TimeoutError`.

    ``async with spdk_io.timeout(0.5): await something()``.  The deadline is an
    SPDK timed poller that cancels the task when it fires; leaving the block
    unregisters it.  ``inf`` (or longer than SPDK's timers count) never fires.
    If the deadline passes but the block ends before the cancellation reaches
    it (it did not suspend again), the block completed: nothing is raised and
    the cancellation is withdrawn.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = duration(seconds, "seconds")
        self._cancel_timer: Callable[[], None] | None = None
        self._task: Task[Any] | None = None
        self._fired = False
        self._exc = Cancelled(f"timed out after {self.seconds} s")

    async def __aenter__(self) -> timeout:
        loop = current_loop()
        task = _current_task(loop)
        self._task = task

        def fire() -> None:
            self._fired = True
            task.cancel(self._exc)

        self._cancel_timer = loop._call_later(self.seconds, fire)  # FOREVER: never fires
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: Any
    ) -> bool:
        if self._cancel_timer is not None:
            self._cancel_timer()  # a no-op if it fired
            self._cancel_timer = None
        if self._fired:
            if ev is self._exc:
                raise TimeoutError(f"timed out after {self.seconds} s") from None
            task = self._task
            if task is not None and task._cancel is self._exc:
                task._cancel = None  # not delivered: the block finished first
        return False


def _current_task(loop: Loop) -> Task[Any]:
    if loop.current is None:
        raise RuntimeError("not called from inside an spdk_io task")
    return loop.current


def current_task() -> Task[Any]:
    """The task that is running now."""
    return _current_task(current_loop())


def _error_context() -> tuple[str | None, str | None]:
    """The SPDK thread (this OS thread's loop's name) and the task running now; the task
    is ``None`` in a C callback, which runs between tasks."""
    loop: Loop | None = getattr(_local, "loop", None)
    if loop is None:
        return None, None
    task = _running_task()
    return loop.name, None if task is None else task.name


set_context_provider(_error_context)


def _check_awaitable(aw: object, what: str) -> None:
    if not inspect.isawaitable(aw):
        raise TypeError(f"{what} must be awaitable, not {type(aw).__name__}")


def wait_for(aw: Awaitable[T], seconds: float) -> Coroutine[Any, Any, T]:
    """Await ``aw`` but give up after ``seconds`` with :class:`TimeoutError` (``inf``: never).

    The arguments are checked here, before anything is awaited.
    """
    _check_awaitable(aw, "wait_for() awaitable")
    return _wait_for(aw, duration(seconds, "seconds"))


async def _wait_for(aw: Awaitable[T], seconds: float) -> T:
    async with timeout(seconds):
        return await aw
    raise AssertionError("unreachable")  # pragma: no cover


def gather(*aws: Awaitable[Any]) -> Coroutine[Any, Any, list[Any]]:
    """Run the awaitables concurrently; return their results in order.

    Fails fast: at the first failure of any of them (in time, not in argument
    order), the others (tasks passed in included) are cancelled and awaited,
    then that exception propagates.  Cancelling the gathering task cancels
    them all the same way.  The arguments are checked here.
    """
    for i, aw in enumerate(aws, 1):
        _check_awaitable(aw, f"gather() argument {i}")
    return _gather(aws)


async def _gather(aws: tuple[Awaitable[Any], ...]) -> list[Any]:
    if not aws:
        return []
    loop = current_loop()
    tasks: list[Task[Any]] = []
    for i, aw in enumerate(aws):
        if isinstance(aw, Task):
            tasks.append(aw)
        else:
            name = getattr(aw, "__qualname__", None)
            tasks.append(loop.spawn(_as_coro(aw), f"gather[{i}] {name or type(aw).__name__}"))
    outcome: Op[None] = Op("gather")
    pending = len(tasks)

    def on_done(task: Task[Any]) -> None:
        nonlocal pending
        if outcome.done():
            return
        if task._done._state == _FAILED:  # the first failure in time
            outcome._finish(_FAILED, task._done._value)  # a task's failure, as _TaskDone
            return
        pending -= 1
        if not pending:
            outcome.set_result(None)

    for task in tasks:
        task._observed = True  # a failure is raised by gather
        if task.done():
            on_done(task)
        else:
            task._done.callbacks.append(on_done)
    try:
        await outcome
    except BaseException:
        for task in tasks:
            task.cancel()
        await _wait_all(tasks, shielded=True)
        raise
    return [task.result() for task in tasks]


async def wait(tasks: Iterable[Task[Any]]) -> None:
    """Wait until every task in ``tasks`` has finished, whatever the outcome.

    If the waiting task itself is cancelled meanwhile, that propagates at once.
    """
    tasks = list(tasks)
    for i, t in enumerate(tasks):
        if not isinstance(t, Task):
            raise TypeError(f"tasks[{i}] must be a Task, not {type(t).__name__}")
    await _wait_all(tasks, shielded=False)


async def _wait_all(tasks: list[Task[Any]], shielded: bool) -> None:
    """Wait until ``tasks`` have finished, ignoring their outcomes (the caller raises its own).

    ``shielded``: if the waiting task is cancelled meanwhile, keep waiting (the
    tasks were cancelled already) and raise that cancellation at the end.
    """
    late: BaseException | None = None
    for t in tasks:
        while not t.done():
            try:
                await t
            except BaseException as exc:
                if t.done():
                    continue
                if not shielded or not isinstance(exc, Cancelled):
                    raise  # cancelled (unshielded), or this task cannot wait on t (a deadlock)
                if late is None:
                    late = exc
    if late is not None:
        raise late
