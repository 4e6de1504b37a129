"""The exceptions spdk_io raises.

Every failure reported by SPDK becomes an :class:`SpdkError` (or a subclass)
that carries the errno, its symbolic name, the operation that failed, the
object it concerned, and the SPDK thread and task it happened in, so a log line
says what happened without a debugger.  The same facts are exception notes
(PEP 678), one each, so a traceback shows them too.

This module imports nothing of SPDK: the thread and task come from a provider
that :mod:`spdk_io.loop` installs (:func:`set_context_provider`).
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # no runtime import: this module stays importable without SPDK or ctypes
    from spdk_io.nvme.status import NvmeStatus

__all__ = [
    "BdevRemovedError",
    "BlobNotFoundError",
    "CallbackError",
    "Cancelled",
    "CoreError",
    "EnvUnusableError",
    "InvalidStateError",
    "MainInterpreterOnlyError",
    "NvmeError",
    "RpcError",
    "RuntimeStoppedError",
    "SpdkError",
    "SpdkNotFoundError",
    "SpdkVersionError",
    "ThreadExitedError",
    "WrongThreadError",
    "error_context",
    "set_context_provider",
]

#: ``(SPDK thread name, task name)`` where the code runs now, either ``None`` if unknown.
Context = tuple[str | None, str | None]


def _no_context() -> Context:
    return None, None


# Per interpreter (each imports its own spdk_io): spdk_io.loop installs its provider.
_context_provider: Callable[[], Context] = _no_context


def set_context_provider(provider: Callable[[], Context]) -> None:
    """Install what :func:`error_context` asks (:mod:`spdk_io.loop` does, at import)."""
    global _context_provider
    if not callable(provider):
        raise TypeError(f"provider must be callable, not {type(provider).__name__}")
    _context_provider = provider


def error_context() -> Context:
    """The SPDK thread and the running task of the code calling it (``None`` if unknown).

    Never raises: a failing provider gives ``(None, None)``, so an error is never
    hidden by a failure to describe it.
    """
    try:
        return _context_provider()
    except Exception:
        return None, None


class SpdkNotFoundError(ImportError):
    """SPDK (or one of the libraries it needs) is not installed where we looked."""


class SpdkVersionError(SpdkNotFoundError):
    """The installed SPDK is not the release the bindings were generated from.

    Struct layouts and function signatures change between SPDK releases, so the
    generated layer refuses to run against another one instead of corrupting memory.
    """


class SpdkError(OSError):
    """An SPDK call failed.

    ``errno`` is the positive errno value, ``errno_name`` its symbolic name
    (``"ENOMEM"``), ``op`` the operation (``"spdk_bdev_open_ext"``) and ``obj``
    what it was applied to (a bdev name, a thread name, ...), or ``None``.
    ``thread`` and ``task`` name the SPDK thread and the task it happened in
    (``None`` if unknown): those the error is created in, or for a failure that
    a C callback reports (no task runs then), the task that awaits the failed
    operation (:meth:`add_context`).  An error created on one SPDK thread and
    awaited on another keeps its own thread and gets the note ``awaited in task T
    on SPDK thread X``.  An error made while one task runs but failing another
    task's operation (completions run inline, such as aborts when a queue pair
    is freed) names the awaiting task and gets the note ``created in task T``,
    if that task already waits on the operation when it fails.

    ``str()`` reads ``spdk_bdev_read(Malloc0) failed: EIO (Input/output error)
    [thread app_thread, task main]``; the notes (``__notes__``, PEP 678) say
    ``operation: ...``, ``object: ...``, ``SPDK thread: ...`` and ``task: ...``,
    each once however many layers the error passes through.  Every subclass pickles
    and copies (``copy.copy`` gives it its own list of notes).
    """

    thread: str | None = None
    task: str | None = None
    _awaited_elsewhere = False  # noted "awaited in task ... on SPDK thread ..."
    _own_notes = 0  # how many of the first notes are this error's facts

    def __init__(self, err: int, op: str, obj: object = None, detail: str | None = None) -> None:
        err = abs(err)
        self.errno_name = _errno.errorcode.get(err, f"E{err}")
        self.op = op
        self.obj = obj
        what = f"{op}({obj})" if obj is not None else op
        msg = f"{what} failed: {self.errno_name} ({os.strerror(err)})"
        if detail:
            msg += f": {detail}"
        super().__init__(err, msg)
        # OSError keeps strerror for its str(); make str() the full message instead.
        self._message = msg
        self._note(f"operation: {op}")
        if obj is not None:
            self._note(f"object: {obj}")
        self.add_context(*error_context())

    def _note(self, note: str) -> None:
        """Add one of the error's facts as a note, after the facts noted before (so a
        context added later, as the error reaches its task, stays with them)."""
        n = self._own_notes
        notes = getattr(self, "__notes__", None)
        if isinstance(notes, list) and n <= len(notes):
            notes.insert(n, note)
        else:
            self.add_note(note)
        self._own_notes = n + 1

    def add_context(self, thread: str | None = None, task: str | None = None) -> None:
        """Record the SPDK thread and the task of the failure, where not known yet.

        The first value of each wins (the error's origin), so an error that passes
        through several layers keeps its context and gets each note once.  The
        loop calls this when a failed operation is delivered to the task awaiting it.

        A task on another thread than the error's never ran with it: it is not the
        error's task but the note ``awaited in task T on SPDK thread X`` (the first
        such await only; ``str()`` keeps the error's own thread).
        """
        if thread is not None and self.thread is None:
            self.thread = thread
            self._note(f"SPDK thread: {thread}")
        if task is None:
            return
        if thread is not None and thread != self.thread:
            if not self._awaited_elsewhere:
                self._awaited_elsewhere = True
                self._note(f"awaited in task {task} on SPDK thread {thread}")
        elif self.task is None:
            self.task = task
            self._note(f"task: {task}")

    def created_elsewhere(self) -> None:
        """The task recorded at creation only made the error, completing another task's
        operation (the loop tells): it becomes the note ``created in task T``, and the
        task that awaits the operation is recorded when it does."""
        task, self.task = self.task, None
        notes = getattr(self, "__notes__", None)
        if task is None or not isinstance(notes, list):
            return
        for i in range(min(self._own_notes, len(notes))):
            if notes[i] == f"task: {task}":
                notes[i] = f"created in task {task}"
                break

    def __str__(self) -> str:
        context = []
        if self.thread is not None:
            context.append(f"thread {self.thread}")
        if self.task is not None:
            context.append(f"task {self.task}")
        return f"{self._message} [{', '.join(context)}]" if context else self._message

    def __reduce__(self) -> tuple[Any, ...]:
        # OSError's would call cls(errno, message): not these constructors' arguments.
        return _restore, (type(self), self.args, self.__dict__)

    @classmethod
    def check(cls, rc: int, op: str, obj: object = None) -> int:
        """Return ``rc`` if it is not negative, else raise for ``-rc``."""
        if rc < 0:
            raise cls(-rc, op, obj)
        return rc


def _restore(cls: type[SpdkError], args: tuple[Any, ...], state: dict[str, Any]) -> SpdkError:
    """An :class:`SpdkError` (any subclass) from :meth:`SpdkError.__reduce__`, without its
    constructor (pickle, ``copy``); the copy gets its own list of notes."""
    exc = cls.__new__(cls, *args)
    OSError.__init__(exc, *args)  # errno, strerror, args
    exc.__dict__.update(state)
    notes = state.get("__notes__")
    if isinstance(notes, list):
        exc.__notes__ = list(notes)
    return exc


class RpcError(SpdkError):
    """A JSON-RPC method returned an error: ``code`` and ``message`` are SPDK's.

    Many SPDK methods answer with ``-errno`` as the code (``-19`` for a missing
    bdev); then ``errno`` is that value, otherwise it is ``EIO``.
    """

    def __init__(self, method: str, code: int, message: str, data: object = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        self.method = method
        err = -code if 0 < -code < 4096 else _errno.EIO
        super().__init__(err, f"rpc {method}")
        self._message = f"rpc {method} failed: [{code}] {message}"


class BdevRemovedError(SpdkError):
    """The bdev behind a descriptor was removed (hot-remove or delete)."""

    def __init__(self, name: str, op: str = "bdev I/O") -> None:
        super().__init__(_errno.ENODEV, op, name, "bdev was removed")


class BlobNotFoundError(SpdkError, LookupError):
    """No blob with that id in the blobstore (``ENOENT``)."""

    def __init__(self, op: str, blob_id: object) -> None:
        super().__init__(_errno.ENOENT, op, blob_id, "no blob with this id in the blobstore")


class ThreadExitedError(SpdkError):
    """The SPDK thread a message or call was for has exited (or is exiting).

    ``errno`` is ``ESHUTDOWN``; ``obj`` is the thread's name.
    """

    def __init__(self, name: str, op: str = "spdk_thread_send_msg") -> None:
        super().__init__(_errno.ESHUTDOWN, op, name, "the SPDK thread has exited")


class EnvUnusableError(RuntimeError):
    """SPDK cannot be started again in this process; the message says why.

    Raised at once by every later start (``run``, ``Env``, ``App``) after a failure
    that DPDK or SPDK cannot recover from within one process.
    """


class InvalidStateError(RuntimeError):
    """An ``Op``'s result was read before it finished, or it was finished twice."""


class RuntimeStoppedError(RuntimeError):
    """A bridge runtime (:mod:`spdk_io.aio`, :mod:`spdk_io.trio`) was not running: not
    started yet, stopping, or stopped."""


class WrongThreadError(RuntimeError):
    """A thread-bound SPDK object was used from an OS thread that does not own it."""


class CallbackError(RuntimeError):
    """A Python callable called from SPDK (a poller, a message) raised.

    The original exception is the ``__cause__``.
    """


class CoreError(RuntimeError):
    """Work placed on another core (:mod:`spdk_io.cores`) could not run or answer there:
    the core is not running or crashed, or its result or exception could not be pickled.

    ``core`` is the core's number; ``remote_traceback`` the worker's traceback text, if any.
    """

    def __init__(self, message: str, core: int = -1, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.core = core
        self.remote_traceback = remote_traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.core, self.remote_traceback), self.__dict__)


class MainInterpreterOnlyError(RuntimeError):
    """Done in a per-core worker interpreter (:mod:`spdk_io.cores`), something only the
    main interpreter may do: create SPDK threads, start or stop SPDK, register anything
    process-wide (NVMe-oF targets, RPC servers and calls, bdev creation)."""


class Cancelled(BaseException):
    """Thrown into a task that was cancelled.

    A ``BaseException`` (like ``asyncio.CancelledError``) so that ``except
    Exception`` does not swallow it.
    """


class NvmeError(SpdkError):
    """An NVMe command completed with an error status.

    ``status`` is the decoded :class:`~spdk_io.nvme.status.NvmeStatus`; ``sct``,
    ``sc``, ``sct_name`` and ``sc_name`` are its fields and names, ``dnr`` whether
    the controller said a retry would fail too.  ``errno`` stands for the status
    (``EINVAL`` for an invalid field, ``ENOSPC`` for capacity exceeded, ``EIO`` by
    default: :func:`~spdk_io.nvme.status.status_errno`).  ``str()`` reads
    ``read(nqn... ns 1) failed: NVMe status Generic / LBA Out of Range (sct 0x0, sc 0x80)``.
    """

    def __init__(self, status: NvmeStatus, op: str, obj: object = None) -> None:
        self.status = status
        self.sct = status.sct
        self.sc = status.sc
        self.sct_name = status.sct_name
        self.sc_name = status.sc_name
        self.dnr = status.dnr
        super().__init__(status.errno, op, obj)
        what = f"{op}({obj})" if obj is not None else op
        self._message = f"{what} failed: NVMe status {status}"
        self._note(f"NVMe status: {status}")
