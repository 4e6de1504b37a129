"""More than one core: an isolated Python interpreter per extra core (Python 3.13+).

``spdk_io.run(main(), core_mask="0x3")`` (or an :class:`~spdk_io.env.Env` with that
mask) runs ``main`` on the main core's app thread as usual and starts, for every
other core of the mask, an OS thread pinned to that core running an isolated
subinterpreter (its own GIL) with its own spdk_io, SPDK thread and loop.  Work is
placed on a core by name::

    n = await spdk_io.cores.run_on(1, "mypkg.jobs:fill", "Malloc0", 4096)

The target is ``"package.module:function"`` or a module-level function (sent by its
name); it may be a coroutine function or a plain one.  Its arguments and result cross
as pickles (protocol 5), so only what pickles crosses: bytes, str, numbers, tuples
and data classes of them.  SPDK objects cross by what names them (a bdev name, a
blob id, an NQN) and are opened again on the far side; Python objects never cross,
and every callback runs in the interpreter that registered it.  An exception raised
on a core is re-raised in the caller with the remote traceback as a note; one that
cannot be pickled (and a result that cannot) becomes a :class:`CoreError` carrying
the traceback text.  Cancelling the awaiting task cancels the remote one.
``run_on`` the main core runs the function on the app thread, through pickle too,
so code behaves the same on every core.

What is refused while other cores run, and why (SPDK calls a callback on whatever OS
thread it runs, and a ctypes callback runs in the interpreter of that OS thread):

* in a worker, anything that makes SPDK create threads or register callbacks
  process-wide (SpdkThread.create/spawn, NVMe-oF targets, RPC calls and servers, bdev
  creation, Env/App, the NVMe driver, trace): :class:`~spdk_io.errors.MainInterpreterOnlyError`
  (an NVMe device on every core: attach it as a bdev in main, open the bdev anywhere);
* :class:`~spdk_io.thread.ThreadHandle` messages to an SPDK thread another interpreter
  polls: :class:`~spdk_io.errors.WrongThreadError`;
* iterations over every SPDK thread or channel (:mod:`spdk_io.stats`): :class:`CoreError`;
* SPDK's log goes to stderr (SPDK prints it) instead of :mod:`logging` while
  worker interpreters run; it comes back when they stop.

Leaving ``run`` (or ``Env.stop``) stops every core first: each cancels its tasks,
releases what it holds, exits its SPDK thread, and its interpreter is destroyed,
within :data:`STOP_TIMEOUT` s; a core whose SPDK thread is still there then is leaked
and SPDK marked unusable rather than torn down under it.  Jobs must join the Python
threads they start: an interpreter cannot end before them (it is leaked, with a
``ResourceWarning``; SPDK stays usable, its thread being gone).  Under SPDK's app framework
(:class:`~spdk_io.app.App`) reactors run the other cores in C and ``run_on`` refuses.

Transport: two non-blocking pipes per core carry length-prefixed pickles; each side
reads its pipe from a timed SPDK poller (:data:`POLL_US`), so nothing is added to
the loop's hot path and a one-core Env runs no poller at all.  Tested on CPython
3.13 with the GIL; state shared between OS threads of one interpreter (a core's
"ended" flag) is behind ``threading`` primitives, but free-threaded builds are untested.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import pickle
import sys
import threading
import time
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from spdk_io import _generated as g
from spdk_io import _interp, env, log
from spdk_io._interp import POLL_US
from spdk_io._validate import integer
from spdk_io.errors import CoreError, SpdkError, WrongThreadError
from spdk_io.loop import Op
from spdk_io.thread import Poller, SpdkThread, create_for_core, destroy_unpolled

if TYPE_CHECKING:
    from spdk_io.env import EnvOptions

__all__ = [
    "POLL_US",
    "STOP_TIMEOUT",
    "Cores",
    "current",
    "main_core",
    "polled_elsewhere",
    "refuse_iteration",
    "run_on",
    "running",
    "unsupported_reason",
]

T = TypeVar("T")

#: Seconds a worker interpreter may take to come up (it imports spdk_io).
START_TIMEOUT = 60.0
#: Seconds every core together may take to stop (read when a stop starts).  Above the
#: worker's own bounded steps (cancelling its tasks, releasing what it holds, exiting
#: its SPDK thread: 5-10 s each), so a worker that keeps its bounds is never leaked.
STOP_TIMEOUT = 30.0
_ROOT = str(Path(__file__).resolve().parent.parent)

# The main interpreter's running cores.  Written only by the app thread (Env start and
# stop); other OS threads of this interpreter only read it (ThreadHandle asks
# polled_elsewhere), and a module global's rebinding is atomic, so it needs no lock.
_cores: Cores | None = None


def unsupported_reason() -> str | None:
    """Why this Python cannot run extra cores (``None`` if it can): they need isolated
    subinterpreters with their own GIL that can import ctypes, Python 3.13+."""
    here = f"this is Python {sys.version_info.major}.{sys.version_info.minor}"
    if sys.version_info < (3, 13):
        return f"running more than one core needs Python 3.13+ (isolated interpreters); {here}"
    try:
        import _interpreters  # type: ignore[import-not-found]  # CPython 3.13+

        own = _interpreters.new_config("isolated").gil == "own"
    except (ImportError, AttributeError, ValueError):
        return f"this Python has no isolated subinterpreters ({here})"
    if not own:
        return f"this Python's isolated subinterpreters share one GIL ({here})"
    return None


# -- the public surface ----------------------------------------------------------------------


@overload
def run_on(core: int, target: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> Op[T]: ...


@overload
def run_on(core: int, target: Callable[..., T], *args: Any) -> Op[T]: ...


@overload
def run_on(core: int, target: str, *args: Any) -> Op[Any]: ...


def run_on(core: int, target: str | Callable[..., Any], *args: Any) -> Op[Any]:
    """Run ``target(*args)`` on ``core``; await the returned ``Op`` for its result.

    ``target`` is ``"package.module:function"`` or a module-level function (a
    coroutine function or a plain one); ``args`` and the result are pickled.  Called
    from the app thread of the main interpreter (any running core), or in a worker for
    its own core.  A bad target or core, or arguments that do not pickle, raise here
    and nothing is sent; a core that is not running raises :class:`CoreError`.
    """
    core = integer(core, "core", lo=0, hi=1023)
    name = _interp.target_name(target)
    try:
        blob = pickle.dumps(args, protocol=5)
    except Exception as exc:
        raise TypeError(
            f"the arguments for {name} cannot be pickled (only pickles cross cores): {exc}"
        ) from exc
    worker = _interp.worker()
    if worker is not None:
        if core != worker.core:
            raise CoreError(
                f"run_on core {core} from the worker of core {worker.core}: a worker "
                "reaches only its own core; place work from the main interpreter",
                core,
            )
        return _interp.local_call(core, name, blob)
    cores = _running_cores()
    if core not in cores.cores:
        raise ValueError(f"core {core} is not one of the cores running, {list(cores.cores)}")
    if threading.get_ident() != cores.owner:
        raise WrongThreadError(
            "run_on is called from the app thread (the one spdk_io.run drives); other "
            "threads reach it with ThreadHandle.call"
        )
    if core == cores.main_core:
        return _interp.local_call(core, name, blob)
    return cores.call(core, name, blob)


def _running_cores() -> Cores:
    cores = _cores
    if cores is not None:
        return cores
    if env.framework_running():
        raise CoreError(
            "run_on needs spdk_io.run or Env: under SPDK's app framework (App) every core "
            "is a reactor polled by C, which cannot run another interpreter's callbacks"
        )
    raise CoreError("no spdk_io Env runs in this process: start one with spdk_io.run or Env")


def current() -> int:
    """The core this code runs on: a worker's core, or the main core in the main
    interpreter (while an Env runs)."""
    worker = _interp.worker()
    if worker is not None:
        return worker.core
    return _running_cores().main_core


def main_core() -> int:
    """The main core: the one the app thread (and ``main``) runs on."""
    worker = _interp.worker()
    if worker is not None:
        return worker.main_core
    return _running_cores().main_core


def running() -> tuple[int, ...]:
    """Every core of the running Env, in order (the main core included)."""
    worker = _interp.worker()
    if worker is not None:
        return worker.cores
    return _running_cores().cores


def polled_elsewhere(thread_id: int) -> bool:
    """Whether the SPDK thread ``thread_id`` is polled by another interpreter (see
    :class:`~spdk_io.thread.ThreadHandle`)."""
    if _interp.worker() is not None:  # everything but its own thread is polled elsewhere
        return bool(g.spdk_thread_get_by_id(thread_id))
    cores = _cores
    return cores is not None and cores.owns_thread(thread_id)


def refuse_iteration(what: str) -> None:
    """Raise :class:`CoreError` if an iteration over every SPDK thread or channel would
    visit a thread another interpreter polls (it would run this interpreter's callback
    there)."""
    cores = _cores
    if _interp.worker() is not None or (cores is not None and len(cores.cores) > 1):
        raise CoreError(
            f"{what} visits every SPDK thread, and other cores' threads are polled by "
            "other interpreters (spdk_io.cores): it is refused while more than one core runs"
        )


# -- the main interpreter's side ---------------------------------------------------------------


class _Core:
    """The main interpreter's view of one extra core."""

    def __init__(
        self, number: int, thread_id: int, link: _interp.Link, fds: tuple[int, int]
    ) -> None:
        self.number = number
        self.thread_id = thread_id
        self.link = link
        self.worker_fds = fds  # the worker's ends: (read, write)
        self.pending: dict[int, tuple[Op[Any], str]] = {}
        self.attached = False  # the worker owns its SPDK thread
        self.ready = False  # ... and serves calls
        self.failure: str | None = None  # why calls fail now
        self.eof_at: float | None = None  # when main saw the worker's pipe close
        # Written by the OS thread hosting the interpreter, read by main's app thread.
        self.ended = threading.Event()
        self.crash: str | None = None  # set before ``ended``
        self.os_thread: threading.Thread | None = None

    def thread_gone(self) -> bool:
        """Whether this core's SPDK thread has been destroyed (by its worker, or by main
        for a worker that never took it)."""
        return not g.spdk_thread_get_by_id(self.thread_id)

    def fail(self, why: str) -> None:
        """Fail every pending call, and every later one, with :class:`CoreError`."""
        if self.failure is None:
            self.failure = why
        pending, self.pending = self.pending, {}
        for op, target in pending.values():
            if not op.done():
                op.set_exception(CoreError(f"{target} on core {self.number}: {why}", self.number))


def _host(core: _Core, code: str) -> None:
    """An extra core's OS thread (main interpreter): create the isolated interpreter,
    run the worker in it until it stops, destroy it."""
    import _interpreters  # only reached where unsupported_reason() found it

    crash: str | None = None
    try:
        iid = _interpreters.create("isolated")
        try:
            err = _interpreters.exec(iid, code)  # 3.13 returns an error snapshot
            if err is not None:
                crash = str(getattr(err, "errdisplay", None) or getattr(err, "formatted", err))
        finally:
            _interpreters.destroy(iid)
    except BaseException as exc:
        crash = crash or f"{type(exc).__name__}: {exc}"
    finally:
        for fd in core.worker_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        core.crash = crash
        core.ended.set()


_BOOTSTRAP = """\
import sys
sys.path.insert(0, {root!r})
from spdk_io import _interp
_interp.worker_main({core}, {cores!r}, {main}, {thread_id}, {read_fd}, {write_fd})
"""


class Cores:
    """The cores of a running :class:`~spdk_io.env.Env`: the main one (the app thread)
    and a worker interpreter per extra core.  Env starts and stops it."""

    def __init__(self, options: EnvOptions, app_thread: SpdkThread) -> None:
        self.cores = tuple(sorted(options.cores))
        self.main_core = options.main_core if options.main_core != -1 else self.cores[0]
        self.owner = threading.get_ident()
        self._app = app_thread
        self._extra: dict[int, _Core] = {}
        # Read from any OS thread (ThreadHandle): replaced whole, never changed in place.
        self._thread_ids: frozenset[int] = frozenset()
        self._poller: Poller | None = None
        self._ids = itertools.count(1).__next__
        self._log_suspended = False

    def __repr__(self) -> str:
        return f"<Cores {list(self.cores)} main={self.main_core}>"

    def owns_thread(self, thread_id: int) -> bool:
        """Whether ``thread_id`` is one of the extra cores' SPDK threads."""
        return thread_id in self._thread_ids

    def start(self) -> None:
        """Start a worker per extra core and wait until each serves calls.  On failure
        the caller stops them (:meth:`stop`)."""
        global _cores
        _cores = self
        if len(self.cores) == 1:
            return
        log.suspend()  # from here on SPDK code runs on other interpreters' OS threads
        self._log_suspended = True
        for n in self.cores:
            if n != self.main_core:
                self._start_core(n)
        self._poller = Poller(self._pump, POLL_US, name="cores")
        deadline = time.monotonic() + START_TIMEOUT
        while not all(c.ready for c in self._extra.values()):
            self._pump()
            for c in self._extra.values():
                if c.failure is not None:
                    raise CoreError(f"core {c.number} did not start: {c.failure}", c.number)
            if time.monotonic() > deadline:
                raise CoreError(f"the cores did not start within {START_TIMEOUT} s")
            self._app.poll()
            time.sleep(0.001)

    def _start_core(self, n: int) -> None:
        """Create core ``n``'s SPDK thread, pipes and OS thread; on failure nothing of
        them is left (the SPDK thread is destroyed, the pipes closed)."""
        fds: list[int] = []
        thread_id = 0
        try:
            to_worker, from_worker = os.pipe(), os.pipe()
            fds = [*to_worker, *from_worker]
            link = _interp.Link(from_worker[0], to_worker[1])
            thread_id = create_for_core(f"core{n}", n)
            core = _Core(n, thread_id, link, (to_worker[0], from_worker[1]))
            code = _BOOTSTRAP.format(
                root=_ROOT,
                core=n,
                cores=self.cores,
                main=self.main_core,
                thread_id=thread_id,
                read_fd=core.worker_fds[0],
                write_fd=core.worker_fds[1],
            )
            core.os_thread = threading.Thread(
                target=_host, args=(core, code), name=f"spdk_io-core{n}", daemon=True
            )
            core.os_thread.start()
        except BaseException:
            if thread_id:
                destroy_unpolled(thread_id)
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
        self._extra[n] = core
        self._thread_ids = self._thread_ids | {thread_id}

    def _pump(self) -> bool:
        """Main's poller: send what is queued, take the replies, notice ended cores."""
        busy = False
        for core in self._extra.values():
            core.link.flush()
            for message in core.link.receive():
                busy = True
                self._on_message(core, message)
            if core.failure is None and core.link.eof and core.eof_at is None:
                core.eof_at = time.monotonic()
            if core.failure is None and (core.ended.is_set() or _past(core.eof_at, 1.0)):
                # (the pipe closes as its interpreter goes: ``ended`` follows shortly)
                core.fail(f"its interpreter ended: {core.crash or 'stopped'}")
        return busy

    def _on_message(self, core: _Core, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind in ("ok", "err"):
            entry = core.pending.pop(message[1], None)
            if entry is not None:
                _interp.deliver(entry[0], core.number, entry[1], (kind, *message[2:]))
        elif kind == "attached":
            core.attached = True
        elif kind == "ready":
            core.ready = True

    def call(self, n: int, target: str, blob: bytes) -> Op[Any]:
        """Send a call to extra core ``n``; the ``Op`` its reply finishes."""
        core = self._extra[n]
        if core.failure is not None:
            raise CoreError(f"core {n} is not running: {core.failure}", n)
        call_id = self._ids()

        def abort() -> None:  # the caller gave up: cancel the remote task
            if core.pending.pop(call_id, None) is not None and core.failure is None:
                core.link.send(("cancel", call_id))

        op: Op[Any] = Op(f"{target} on core {n}", abort)
        core.link.send(("call", call_id, target, blob))  # raises before anything is sent
        core.pending[call_id] = (op, target)  # (replies are read on this thread, later)
        return op

    def stop(self, timeout: float | None = None) -> None:
        """Stop every extra core (each releases what it holds, exits and destroys its SPDK
        thread, and its interpreter is destroyed), polling the app thread meanwhile.

        Whether a core's SPDK thread went is judged by the thread itself.  Raises
        :class:`~spdk_io.errors.SpdkError` naming the cores whose SPDK threads are still
        there (they are leaked, SPDK's log stays with SPDK); an interpreter that does
        not end in ``timeout`` s although its SPDK thread went (a job left a Python
        thread running) is only warned about (``ResourceWarning``) and leaked.
        ``timeout`` defaults to :data:`STOP_TIMEOUT` as it is when called.
        """
        global _cores
        timeout = STOP_TIMEOUT if timeout is None else timeout
        extra = list(self._extra.values())
        stuck: list[int] = []  # interpreters that outlive their SPDK threads
        running = list(extra)  # until confirmed ended
        leaked: list[int] = [c.number for c in extra]  # until confirmed gone
        try:
            for core in extra:
                core.link.send(("stop",))
            deadline = time.monotonic() + timeout
            while not all(c.ended.is_set() for c in extra) and time.monotonic() < deadline:
                self._pump()
                self._app.poll()
                time.sleep(0.0005)
            self._pump()
            running = [c for c in extra if not c.ended.is_set()]
            for core in extra:
                core.fail("the cores stopped")
            if self._poller is not None:
                self._poller.close()
            for core in extra:
                if not core.attached and core.ended.is_set():  # main may: no worker took it
                    destroy_unpolled(core.thread_id)
            leaked = [c.number for c in extra if not c.thread_gone()]
            self._thread_ids = frozenset(c.thread_id for c in extra if c.number in leaked)
            for core in extra:
                if core.ended.is_set():
                    if core.os_thread is not None:
                        core.os_thread.join(1.0)
                    for fd in (core.link.read_fd, core.link.write_fd):
                        with contextlib.suppress(OSError):
                            os.close(fd)
            stuck = [c.number for c in running if c.number not in leaked]
            if leaked:
                raise SpdkError(
                    errno.EBUSY,
                    "stop cores",
                    ", ".join(map(str, leaked)),
                    "did not exit and destroy their SPDK threads (a worker crashed or hangs): "
                    "they are leaked",
                )
        finally:
            if _cores is self and not leaked:  # no SPDK thread is polled elsewhere any more
                _cores = None
            if self._log_suspended and not running:  # (a live interpreter may still log)
                self._log_suspended = False
                log.resume()
        if stuck:  # after the state is settled: a warning turned error changes nothing
            warnings.warn(
                f"the interpreters of cores {stuck} did not end within {timeout} s "
                "although their SPDK threads did (a job left a Python thread running?); "
                "they are leaked",
                ResourceWarning,
                stacklevel=2,
            )


def _past(since: float | None, seconds: float) -> bool:
    return since is not None and time.monotonic() - since > seconds
