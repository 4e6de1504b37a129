"""NVMe I/O queue pairs: one per SPDK thread, connected by polling, completions polled.

A :class:`Qpair` is allocated in ``async_mode`` and connected by the loop's polling,
never by spinning (the default connect spins, which deadlocks when the target is in
this process).  A poller (its child) processes its completions.  It belongs to the
SPDK thread that made it: use from any other OS thread raises
:class:`~spdk_io.errors.WrongThreadError`.

I/O methods take the :class:`~spdk_io.nvme.controller.Namespace` and return an
:class:`~spdk_io.loop.Op` to await.  Every buffer is a pinned
:class:`~spdk_io.dma.DmaBuf` until the device completes the command, also when the
awaiting task is cancelled.  A command that completes with an error status raises
:class:`~spdk_io.errors.SpdkError` with the NVMe status.
"""

from __future__ import annotations

import ctypes
import errno
import time
from dataclasses import dataclass
from typing import Any, Self

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io._loader import fast
from spdk_io._validate import integer
from spdk_io.dma import DmaBuf
from spdk_io.errors import SpdkError
from spdk_io.loop import Op, sleep
from spdk_io.nvme.commands import Commands
from spdk_io.nvme.controller import Controller, Namespace
from spdk_io.resource import Resource
from spdk_io.thread import Poller, SpdkThread, current_thread

__all__ = ["Qpair", "QpairOptions"]

#: How long a new queue pair may take to connect, in seconds.
CONNECT_TIMEOUT = 10.0

_VP, _U64, _U32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32
_RW_ARGS = [_VP, _VP, _VP, _U64, _U32, _VP, _VP, _U32]  # ns, qp, buf, lba, n, cb, arg, flags
_cmd_read = fast("spdk_nvme_ns_cmd_read", ctypes.c_int, _RW_ARGS)
_cmd_write = fast("spdk_nvme_ns_cmd_write", ctypes.c_int, _RW_ARGS)
_process = fast("spdk_nvme_qpair_process_completions", ctypes.c_int32, [_VP, _U32])


@dataclass(frozen=True)
class QpairOptions:
    """Queue sizes (``None``: SPDK's default from the controller options)."""

    io_queue_size: int | None = None
    io_queue_requests: int | None = None

    def __post_init__(self) -> None:
        if self.io_queue_size is not None:
            integer(self.io_queue_size, "io_queue_size", 2, 65536)
        if self.io_queue_requests is not None:
            integer(self.io_queue_requests, "io_queue_requests", 1, 2**32 - 1)


class Qpair(Resource):
    """An I/O queue pair of a :class:`Controller` on the current SPDK thread.

    Made by ``await ctrlr.alloc_qpair()``.  ``inflight`` counts commands the device
    holds; closing is refused (``BlockingIOError``) while any is in flight and
    ``aclose()`` waits for them.  Once the queue pair fails (the target went away),
    in-flight commands fail and new ones raise.
    """

    def __init__(self, ctrlr: Controller, ptr: Any, thread: SpdkThread) -> None:
        self.ctrlr = ctrlr
        self.thread = thread
        self._ptr: Any = ptr
        self._arg = ctypes.c_void_p(ctypes.cast(ptr, ctypes.c_void_p).value)
        #: The commands the device holds (submitted, not completed).
        self.commands = Commands(ctrlr.name)
        #: Set when polling reports the queue pair failed (its errno); cleared only when
        #: a controller reset reconnected it (:meth:`reconnected`).
        self.failure: int = 0
        same = ctrlr.thread is thread
        super().__init__(thread, ctrlr if same else None)
        if not same:
            ctrlr.adopt_foreign(id(self), True)
        ctrlr.add_queue(self, self._arg.value or 0)
        self._poller = Poller(self._poll, 0, "nvme_qpair", parent=self)

    @classmethod
    async def connect(cls, ctrlr: Controller, options: QpairOptions | None = None) -> Self:
        """Allocate a queue pair in async mode and wait, polling, until it is connected."""
        if options is None:
            options = QpairOptions()
        elif not isinstance(options, QpairOptions):
            raise TypeError(f"options must be QpairOptions, not {type(options).__name__}")
        thread = current_thread()
        cptr = ctrlr.handle
        opts = g.struct_spdk_nvme_io_qpair_opts()
        g.spdk_nvme_ctrlr_get_default_io_qpair_opts(cptr, ctypes.byref(opts), ctypes.sizeof(opts))
        if options.io_queue_size is not None:
            opts.io_queue_size = options.io_queue_size
        if options.io_queue_requests is not None:
            opts.io_queue_requests = options.io_queue_requests
        opts.async_mode = True
        ptr = g.spdk_nvme_ctrlr_alloc_io_qpair(cptr, ctypes.byref(opts), ctypes.sizeof(opts))
        if not ptr:
            raise SpdkError(errno.ENOMEM, "spdk_nvme_ctrlr_alloc_io_qpair", ctrlr.name)
        qp = cls(ctrlr, ptr, thread)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        try:
            while not g.spdk_nvme_qpair_is_connected(ptr):
                if qp.failure:
                    raise SpdkError(qp.failure, "connect I/O qpair", ctrlr.name)
                if time.monotonic() > deadline:
                    raise SpdkError(errno.ETIMEDOUT, "connect I/O qpair", ctrlr.name)
                await sleep(0)
        except BaseException:
            qp.close()
            raise
        return qp

    def __repr__(self) -> str:
        return f"<Qpair {self.ctrlr.name} {'closed' if self.closed else 'open'}>"

    @property
    def handle(self) -> Any:
        """The ``struct spdk_nvme_qpair *`` (for :mod:`spdk_io.raw`)."""
        self._check()
        return self._ptr

    # -- lifecycle -----------------------------------------------------------------------

    def _poll(self) -> bool:
        rc: int = _process(self._arg, 0)
        if rc < 0 and not self.failure:
            self.failure = -rc
        return rc > 0

    @property
    def inflight(self) -> int:
        """Commands the device holds."""
        return self.commands.inflight

    def _refusal(self) -> BaseException | None:
        if self.commands.inflight:
            return BlockingIOError(f"{self.commands.inflight} NVMe command(s) in flight")
        return None

    def _release(self) -> None:
        g.spdk_nvme_ctrlr_free_io_qpair(self._ptr)
        self._ptr = None
        self.ctrlr.remove_queue(self)
        if self.ctrlr.thread is not self.thread:
            self.ctrlr.adopt_foreign(id(self), False)

    def reconnected(self) -> None:
        """The controller's reset reconnected this queue pair: it works again (called by
        :meth:`Controller.reset`)."""
        self.failure = 0

    def _check(self) -> None:
        self.thread.check_owner()
        if self.closed:
            raise RuntimeError(f"qpair of {self.ctrlr.name} is closed")
        self.ctrlr.check_open()
        if self.failure:
            raise SpdkError(self.failure, "NVMe I/O", self.ctrlr.name, "the queue pair failed")

    # -- I/O -----------------------------------------------------------------------------

    def _range(self, ns: Namespace, lba: object, num: object) -> tuple[int, int]:
        if not isinstance(ns, Namespace) or ns.ctrlr is not self.ctrlr:
            raise TypeError(f"ns must be a Namespace of {self.ctrlr.name}")
        lba = integer(lba, "lba", 0)
        num = integer(num, "num_blocks", 1, 65536)
        if lba + num > ns.num_sectors:
            raise ValueError(
                f"blocks {lba}..{lba + num - 1} are past the end of {ns} ({ns.num_sectors} blocks)"
            )
        return lba, num

    def _buffer(self, ns: Namespace, buf: object, num: int) -> DmaBuf:
        if not isinstance(buf, DmaBuf):
            raise TypeError(f"buf must be a DmaBuf, not {type(buf).__name__}")
        if len(buf) < num * ns.sector_size:
            raise ValueError(
                f"buf holds {len(buf)} bytes; {num} blocks of {ns} need {num * ns.sector_size}"
            )
        return buf

    def _rw(self, fn: Any, what: str, ns: Namespace, buf: DmaBuf, lba: int, num: int) -> Op[None]:
        self._check()
        lba, num = self._range(ns, lba, num)
        buf = self._buffer(ns, buf, num)
        nsp, qp, addr = ns.handle, self._ptr, buf.addr
        return self.commands.submit(
            what,
            lambda key: fn(nsp, qp, addr, lba, num, _bridge.nvme_cmd_thunk, key, 0),
            (buf,),
            obj=ns,
        )

    def read_blocks(self, ns: Namespace, buf: DmaBuf, lba: int, num_blocks: int) -> Op[None]:
        """Read ``num_blocks`` blocks at ``lba`` of ``ns`` into ``buf``."""
        return self._rw(_cmd_read, "read", ns, buf, lba, num_blocks)

    def write_blocks(self, ns: Namespace, buf: DmaBuf, lba: int, num_blocks: int) -> Op[None]:
        """Write ``num_blocks`` blocks from ``buf`` at ``lba`` of ``ns``."""
        return self._rw(_cmd_write, "write", ns, buf, lba, num_blocks)
