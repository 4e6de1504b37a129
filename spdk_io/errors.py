"""The exceptions spdk_io raises.

Every failure reported by SPDK becomes an :class:`SpdkError` (or a subclass)
that carries the errno, its symbolic name, the operation that failed and the
object it concerned, so a log line says what happened without a debugger.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # no runtime import: this module stays importable without SPDK or ctypes
    from spdk_io.nvme.status import NvmeStatus

__all__ = [
    "BdevRemovedError",
    "BlobNotFoundError",
    "CallbackError",
    "Cancelled",
    "EnvUnusableError",
    "InvalidStateError",
    "NvmeError",
    "RpcError",
    "SpdkError",
    "SpdkNotFoundError",
    "SpdkVersionError",
    "ThreadExitedError",
    "WrongThreadError",
]


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
    """

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

    def __str__(self) -> str:
        return self._message

    @classmethod
    def check(cls, rc: int, op: str, obj: object = None) -> int:
        """Return ``rc`` if it is not negative, else raise for ``-rc``."""
        if rc < 0:
            raise cls(-rc, op, obj)
        return rc


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


class WrongThreadError(RuntimeError):
    """A thread-bound SPDK object was used from an OS thread that does not own it."""


class CallbackError(RuntimeError):
    """A Python callable called from SPDK (a poller, a message) raised.

    The original exception is the ``__cause__``.
    """


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
