"""NVMe I/O queue pairs: one per SPDK thread, connected by polling, completions polled.

A :class:`Qpair` is allocated in ``async_mode`` and connected by the loop's polling,
never by spinning (the default connect spins, which deadlocks when the target is in
this process).  The loop of its SPDK thread processes its completions every turn
(:meth:`~spdk_io.loop.Loop.add_direct_poll`).  It belongs to the
SPDK thread that made it: use from any other OS thread raises
:class:`~spdk_io.errors.WrongThreadError`.

I/O methods take the :class:`~spdk_io.nvme.namespace.Namespace` and return an
:class:`~spdk_io.loop.Op` to await; all go through the queue pair's one
:class:`~spdk_io.nvme.commands.Commands` tracker.  Every argument is checked before
anything is pinned or submitted (``TypeError``/``ValueError`` naming it): LBAs past the
end, a namespace of another controller, a buffer that is too small, freed or not
dword-aligned, more than 65536 blocks (NLB is 16 bits) or more data than the
controller's largest transfer in one command (nothing is split), a command the
namespace does not support (``SpdkError`` ``ENOTSUP``).  Every buffer is a pinned
:class:`~spdk_io.dma.DmaBuf` until the device completes the command, also when the
awaiting task is cancelled; what SPDK reads by address (scatter-gather lists, DSM
ranges, raw commands) is held by the command's ``Op`` as long.  A command that
completes with an error status raises :class:`~spdk_io.errors.SpdkError` with the
NVMe status.  SPDK's ``-ENOMEM`` (no free request object) is not an error: the command
waits and is submitted as others complete.

The hot path is :meth:`Qpair.slot` (:class:`NvmeSlot`).
"""

from __future__ import annotations

import ctypes
import errno
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io._loader import fast
from spdk_io._validate import integer
from spdk_io.dma import DmaBuf, dmabuf, dmabufs
from spdk_io.errors import SpdkError
from spdk_io.loop import Op, sleep
from spdk_io.nvme.commands import Commands, cdw0, status_error, status_word
from spdk_io.nvme.controller import Controller
from spdk_io.nvme.namespace import Namespace
from spdk_io.resource import Resource
from spdk_io.thread import SpdkThread, current_thread

__all__ = ["MAX_BLOCKS", "MAX_DSM_RANGES", "NvmeSlot", "Qpair", "QpairOptions"]

#: How long a new queue pair may take to connect, in seconds.
CONNECT_TIMEOUT = 10.0

#: The most blocks one command moves (NLB is a 0-based 16-bit field).
MAX_BLOCKS = 65536
#: The most ranges one dataset management command takes.
MAX_DSM_RANGES: int = g.SPDK_NVME_DATASET_MANAGEMENT_MAX_RANGES
_U32_MAX = 2**32 - 1
#: NVMe data buffers are dword aligned (PRPs require it).
_DWORD = 4

_VP, _U64, _U32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32
_RW_ARGS = [_VP, _VP, _VP, _U64, _U32, _VP, _VP, _U32]  # ns, qp, buf, lba, n, cb, arg, flags
_cmd_read = fast("spdk_nvme_ns_cmd_read", ctypes.c_int, _RW_ARGS)
_cmd_write = fast("spdk_nvme_ns_cmd_write", ctypes.c_int, _RW_ARGS)
_cmd_compare = fast("spdk_nvme_ns_cmd_compare", ctypes.c_int, _RW_ARGS)
# Called by the loop every turn with a prebuilt c_void_p and 0: no argtypes, no conversion.
_process = fast("spdk_nvme_qpair_process_completions", ctypes.c_int32)
# NvmeSlot passes only prebuilt ctypes objects and small ints: no argtypes, no conversion.
_read_raw = fast("spdk_nvme_ns_cmd_read", ctypes.c_int)
_write_raw = fast("spdk_nvme_ns_cmd_write", ctypes.c_int)


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
        #: The largest data transfer of one command, in bytes (the controller's).
        self.max_transfer_bytes = ctrlr.max_transfer_bytes
        same = ctrlr.thread is thread
        super().__init__(thread, ctrlr if same else None)
        ctrlr.add_queue(self, self._arg.value or 0)
        # The loop calls process_completions itself every turn: no SPDK poller, no
        # Python trampoline in between.
        self._unpoll = thread.loop.add_direct_poll(_process, (self._arg, 0), self._failed)

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

    def _failed(self, rc: int) -> None:
        """Polling the completions returned ``rc`` < 0: the queue pair failed."""
        if not self.failure:
            self.failure = -rc

    @property
    def inflight(self) -> int:
        """Commands the device holds."""
        return self.commands.inflight

    def _refusal(self) -> BaseException | None:
        if self.commands.inflight:
            return BlockingIOError(f"{self.commands.inflight} NVMe command(s) in flight")
        return None

    def _abandoned(self) -> None:
        self._unpoll()
        self.ctrlr.remove_queue(self)

    def _release(self) -> None:
        self._unpoll()
        g.spdk_nvme_ctrlr_free_io_qpair(self._ptr)
        self._ptr = None
        self.ctrlr.remove_queue(self)

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

    # -- checks --------------------------------------------------------------------------
    # Each returns the checked value(s) in canonical form and raises before any side effect.

    def _namespace(self, ns: object) -> Namespace:
        if not isinstance(ns, Namespace):
            raise TypeError(f"ns must be a Namespace, not {type(ns).__name__}")
        if ns.ctrlr is not self.ctrlr:
            raise ValueError(f"{ns} is a namespace of another controller than {self.ctrlr.name}")
        return ns

    def _range(self, ns: Namespace, lba: object, num: object, data: bool = True) -> tuple[int, int]:
        """``lba``/``num`` as ints naming blocks of ``ns`` one command may cover (``data``:
        it moves them, so the controller's largest transfer applies too)."""
        lba = integer(lba, "lba", 0)
        num = integer(num, "num_blocks", 1, MAX_BLOCKS)
        if lba + num > ns.num_sectors:
            raise ValueError(
                f"blocks {lba}..{lba + num - 1} are past the end of {ns} ({ns.num_sectors} blocks)"
            )
        if data and num * ns.sector_size > self.max_transfer_bytes:
            raise ValueError(
                f"{num} blocks of {ns} are {num * ns.sector_size} bytes, more than one command "
                f"transfers ({self.max_transfer_bytes} bytes, the controller's limit): split it"
            )
        return lba, num

    @staticmethod
    def _dmabuf(buf: object, what: str = "buf") -> DmaBuf:
        buf = dmabuf(buf, what)
        if buf.addr % _DWORD:
            raise ValueError(f"{what} at {buf.addr:#x} is not dword (4-byte) aligned")
        return buf

    def _buffer(self, ns: Namespace, buf: object, num: int, what: str = "buf") -> DmaBuf:
        """``buf`` as a live, aligned DmaBuf holding at least ``num`` blocks of ``ns``."""
        b = self._dmabuf(buf, what)
        if len(b) < num * ns.sector_size:
            raise ValueError(
                f"{what} holds {len(b)} bytes; {num} blocks of {ns} need {num * ns.sector_size}"
            )
        return b

    def _buffers(self, bufs: object) -> tuple[DmaBuf, ...]:
        """The buffers of a vectored command: a non-empty sequence of live, aligned DmaBufs."""
        return tuple(self._dmabuf(b, "every item of bufs") for b in dmabufs(bufs))

    @staticmethod
    def _blocks(ns: Namespace, value: object, what: str, lo: int) -> int:
        """A byte count or offset (``int``, a multiple of the sector size) in blocks."""
        n = integer(value, what, lo)
        if n % ns.sector_size:
            raise ValueError(
                f"{what} {n} must be a multiple of the sector size of {ns} ({ns.sector_size})"
            )
        return n // ns.sector_size

    @staticmethod
    def _supports(ns: Namespace, flag: int, what: str) -> None:
        if not g.spdk_nvme_ns_get_flags(ns.handle) & flag:
            raise SpdkError(errno.ENOTSUP, what, ns, f"the namespace does not support {what}")

    # -- I/O -----------------------------------------------------------------------------

    def _rw(
        self, fn: Any, what: str, ns: object, buf: object, lba: object, num: object, flag: int = 0
    ) -> Op[Any]:
        self._check()
        ns = self._namespace(ns)
        lba, num = self._range(ns, lba, num)
        b = self._buffer(ns, buf, num)
        if flag:
            self._supports(ns, flag, what)
        nsp, qp = ns.handle, self._ptr
        cb = _bridge.nvme_cmd_addr

        def call(key: int) -> int:
            # b.addr is read here, once the buffer is pinned (it cannot be freed now)
            rc: int = fn(nsp, qp, b.addr, lba, num, cb, key, 0)
            return rc

        if fn is _cmd_compare:
            return self.commands.submit(what, call, (b,), _true, ns, failed=_miscompare(what, ns))
        return self.commands.submit(what, call, (b,), obj=ns)

    def read_blocks(self, ns: Namespace, buf: DmaBuf, lba: int, num_blocks: int) -> Op[None]:
        """Read ``num_blocks`` blocks at ``lba`` of ``ns`` into ``buf``."""
        return self._rw(_cmd_read, "read", ns, buf, lba, num_blocks)

    def write_blocks(self, ns: Namespace, buf: DmaBuf, lba: int, num_blocks: int) -> Op[None]:
        """Write ``num_blocks`` blocks from ``buf`` at ``lba`` of ``ns``."""
        return self._rw(_cmd_write, "write", ns, buf, lba, num_blocks)

    def read(
        self, ns: Namespace, buf: DmaBuf, offset: int = 0, length: int | None = None
    ) -> Op[None]:
        """Read ``length`` bytes (default: all of ``buf``) at byte ``offset`` of ``ns``;
        both multiples of the sector size."""
        ns = self._namespace(ns)
        b = self._dmabuf(buf)
        lba = self._blocks(ns, offset, "offset", 0)
        num = self._blocks(ns, len(b) if length is None else length, "length", 1)
        return self.read_blocks(ns, b, lba, num)

    def write(
        self, ns: Namespace, buf: DmaBuf, offset: int = 0, length: int | None = None
    ) -> Op[None]:
        """Write ``length`` bytes (default: all of ``buf``) at byte ``offset`` of ``ns``;
        both multiples of the sector size."""
        ns = self._namespace(ns)
        b = self._dmabuf(buf)
        lba = self._blocks(ns, offset, "offset", 0)
        num = self._blocks(ns, len(b) if length is None else length, "length", 1)
        return self.write_blocks(ns, b, lba, num)

    def _vectored(self, fn: Any, what: str, ns: object, bufs: object, lba: object) -> Op[None]:
        self._check()
        ns = self._namespace(ns)
        items = self._buffers(bufs)
        total = sum(len(b) for b in items)
        if total % ns.sector_size:
            raise ValueError(
                f"the buffers' total length {total} must be a multiple of the sector size "
                f"of {ns} ({ns.sector_size})"
            )
        lba, num = self._range(ns, lba, total // ns.sector_size)
        nsp, qp = ns.handle, self._ptr
        cb, reset, next_sge = (
            _bridge.nvme_cmd_cb,
            _bridge.nvme_reset_sgl_cb,
            _bridge.nvme_next_sge_cb,
        )
        sgl: list[_Sgl] = []  # made once the buffers are pinned; kept by the op (via call)

        def call(key: int) -> int:
            if not sgl:
                sgl.append(_Sgl(items))
            _bridge.sgl_at(key, sgl[0])
            rc: int = fn(nsp, qp, lba, num, cb, key, 0, reset, next_sge)
            return rc

        return self.commands.submit(what, call, items, obj=ns)

    def readv_blocks(self, ns: Namespace, bufs: Sequence[DmaBuf], lba: int) -> Op[None]:
        """Scatter-read into ``bufs`` at ``lba`` (their total length, whole blocks)."""
        return self._vectored(g.spdk_nvme_ns_cmd_readv, "readv", ns, bufs, lba)

    def writev_blocks(self, ns: Namespace, bufs: Sequence[DmaBuf], lba: int) -> Op[None]:
        """Gather-write ``bufs`` at ``lba`` (their total length, whole blocks)."""
        return self._vectored(g.spdk_nvme_ns_cmd_writev, "writev", ns, bufs, lba)

    def readv(self, ns: Namespace, bufs: Sequence[DmaBuf], offset: int = 0) -> Op[None]:
        """Scatter-read into ``bufs`` at byte ``offset`` (a multiple of the sector size)."""
        ns = self._namespace(ns)
        return self.readv_blocks(ns, bufs, self._blocks(ns, offset, "offset", 0))

    def writev(self, ns: Namespace, bufs: Sequence[DmaBuf], offset: int = 0) -> Op[None]:
        """Gather-write ``bufs`` at byte ``offset`` (a multiple of the sector size)."""
        ns = self._namespace(ns)
        return self.writev_blocks(ns, bufs, self._blocks(ns, offset, "offset", 0))

    def write_zeroes_blocks(self, ns: Namespace, lba: int, num_blocks: int) -> Op[None]:
        """Zero ``num_blocks`` blocks at ``lba`` (no data moves: only the 65536-block limit)."""
        self._check()
        ns = self._namespace(ns)
        lba, num = self._range(ns, lba, num_blocks, data=False)
        self._supports(ns, g.SPDK_NVME_NS_WRITE_ZEROES_SUPPORTED, "write_zeroes")
        nsp, qp, cb = ns.handle, self._ptr, _bridge.nvme_cmd_cb

        def call(key: int) -> int:
            return g.spdk_nvme_ns_cmd_write_zeroes(nsp, qp, lba, num, cb, key, 0)

        return self.commands.submit("write_zeroes", call, obj=ns)

    def flush(self, ns: Namespace) -> Op[None]:
        """Commit the namespace's volatile write cache to media (a no-op without one)."""
        self._check()
        ns = self._namespace(ns)
        nsp, qp, cb = ns.handle, self._ptr, _bridge.nvme_cmd_cb

        def call(key: int) -> int:
            return g.spdk_nvme_ns_cmd_flush(nsp, qp, cb, key)

        return self.commands.submit("flush", call, obj=ns)

    def deallocate(self, ns: Namespace, ranges: Sequence[tuple[int, int]]) -> Op[None]:
        """Deallocate (trim) the ``(lba, num_blocks)`` ranges: one dataset management
        command with the deallocate attribute, up to :data:`MAX_DSM_RANGES` ranges of
        up to 2**32 - 1 blocks.  What deallocated blocks read back as is the namespace's
        (``spdk_nvme_ns_get_dealloc_logical_block_read_value``)."""
        self._check()
        ns = self._namespace(ns)
        if isinstance(ranges, tuple) and len(ranges) == 2 and isinstance(ranges[0], int):
            raise TypeError("ranges is a sequence of (lba, num_blocks) pairs: wrap one in a list")
        try:
            items = list(ranges)
        except TypeError:
            raise TypeError(
                f"ranges must be a sequence of (lba, num_blocks), not {type(ranges).__name__}"
            ) from None
        if not 1 <= len(items) <= MAX_DSM_RANGES:
            raise ValueError(f"deallocate takes 1..{MAX_DSM_RANGES} ranges, got {len(items)}")
        array = (g.struct_spdk_nvme_dsm_range * len(items))()
        for i, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) != 2:
                raise TypeError(f"ranges[{i}] must be an (lba, num_blocks) tuple, not {item!r}")
            lba = integer(item[0], f"ranges[{i}] lba", 0)
            num = integer(item[1], f"ranges[{i}] num_blocks", 1, _U32_MAX)
            if lba + num > ns.num_sectors:
                raise ValueError(
                    f"ranges[{i}]: blocks {lba}..{lba + num - 1} are past the end of {ns} "
                    f"({ns.num_sectors} blocks)"
                )
            array[i].starting_lba = lba
            array[i].length = num
        self._supports(ns, g.SPDK_NVME_NS_DEALLOCATE_SUPPORTED, "deallocate")
        nsp, qp, cb, n = ns.handle, self._ptr, _bridge.nvme_cmd_cb, len(items)
        attr = g.SPDK_NVME_DSM_ATTR_DEALLOCATE

        def call(key: int) -> int:
            return g.spdk_nvme_ns_cmd_dataset_management(nsp, qp, attr, array, n, cb, key)

        return self.commands.submit("deallocate", call, obj=ns)

    def compare_blocks(self, ns: Namespace, buf: DmaBuf, lba: int, num_blocks: int) -> Op[bool]:
        """Compare ``buf`` with ``num_blocks`` blocks at ``lba``: True if equal, False on a
        miscompare (status Compare Failure); any other failure raises."""
        flag = g.SPDK_NVME_NS_COMPARE_SUPPORTED
        return self._rw(_cmd_compare, "compare", ns, buf, lba, num_blocks, flag)

    def io_raw(
        self,
        ns: Namespace,
        opcode: int,
        *,
        buf: DmaBuf | None = None,
        cdw10: int = 0,
        cdw11: int = 0,
        cdw12: int = 0,
        cdw13: int = 0,
        cdw14: int = 0,
        cdw15: int = 0,
    ) -> Op[int]:
        """Submit I/O command ``opcode`` on ``ns`` as given (``spdk_nvme_ctrlr_cmd_io_raw``);
        the result is dword 0 of its completion.

        ``buf`` (all of it is the data) is required exactly when the opcode transfers
        data (bits 1:0 of the opcode, as the spec defines them for every opcode) and is
        at most the controller's largest transfer.  Nothing else is checked: the command
        is the caller's.
        """
        self._check()
        ns = self._namespace(ns)
        opc = integer(opcode, "opcode", 0, 0xFF)
        dwords = [integer(v, f"cdw{i}", 0, _U32_MAX) for i, v in
                  enumerate((cdw10, cdw11, cdw12, cdw13, cdw14, cdw15), 10)]  # fmt: skip
        bufs: tuple[DmaBuf, ...] = ()
        if opc & 3:
            if buf is None:
                raise ValueError(f"opcode {opc:#04x} transfers data: it needs a buf")
            b = self._dmabuf(buf)
            if len(b) > self.max_transfer_bytes:
                raise ValueError(
                    f"buf of {len(b)} bytes is more than one command transfers "
                    f"({self.max_transfer_bytes} bytes, the controller's limit)"
                )
            bufs = (b,)
        elif buf is not None:
            raise ValueError(f"opcode {opc:#04x} transfers no data: pass no buf")
        cmd = g.struct_spdk_nvme_cmd()
        cmd.opc = opc
        cmd.nsid = ns.id
        cmd.cdw10, cmd.cdw11, cmd.cdw12, cmd.cdw13, cmd.cdw14, cmd.cdw15 = dwords
        cptr, qp, cb = self.ctrlr.handle, self._ptr, _bridge.nvme_cmd_cb

        def call(key: int) -> int:
            addr, n = (bufs[0].addr, len(bufs[0])) if bufs else (None, 0)
            return g.spdk_nvme_ctrlr_cmd_io_raw(cptr, qp, ctypes.byref(cmd), addr, n, cb, key)

        return self.commands.submit(f"io_raw {opc:#04x}", call, bufs, cdw0, ns)

    # -- the hot path --------------------------------------------------------------------

    def slot(self, ns: Namespace, buf: DmaBuf) -> NvmeSlot:
        """A reusable submission context on ``ns`` over ``buf``: one command at a time,
        every argument prebuilt (see :class:`NvmeSlot`)."""
        return NvmeSlot(self, ns, buf)


def _true(cpl: int) -> bool:
    return True


def _miscompare(what: str, ns: Namespace) -> Any:
    """The ``failed`` decoder of a compare: a Compare Failure is ``False``."""

    def failed(cpl: int) -> bool:
        word = status_word(cpl)
        sc, sct = (word >> 1) & 0xFF, (word >> 9) & 0x7
        if sct == g.SPDK_NVME_SCT_MEDIA_ERROR and sc == g.SPDK_NVME_SC_COMPARE_FAILURE:
            return False
        raise status_error(word, what, ns)

    return failed


class _Sgl:
    """A vectored command's scatter-gather list, walked by SPDK's SGL callbacks
    (:func:`spdk_io._bridge.sgl_at`).  Made once its buffers are pinned."""

    __slots__ = ("__weakref__", "_at", "_i", "_off", "_sizes")

    def __init__(self, bufs: Sequence[DmaBuf]) -> None:
        self._at = [b.addr for b in bufs]
        self._sizes = [len(b) for b in bufs]  # each < 2**32: a command moves less
        self._i = 0
        self._off = 0

    def reset(self, offset: int) -> None:
        """The next element starts ``offset`` bytes into the list."""
        i, sizes = 0, self._sizes
        while i < len(sizes) - 1 and offset >= sizes[i]:
            offset -= sizes[i]
            i += 1
        self._i, self._off = i, offset

    def next(self) -> tuple[int, int]:
        """The current element (address, length), then advance."""
        i, off = self._i, self._off
        self._i, self._off = i + 1, 0
        return self._at[i] + off, self._sizes[i] - off


_get_ident = threading.get_ident
_u16_at = ctypes.c_uint16.from_address
_STATUS = 14  # offset of the status word in struct spdk_nvme_cpl
_ENOMEM = -errno.ENOMEM


class NvmeSlot(Resource):
    """One outstanding read or write at a time on one namespace, every argument
    prebuilt: the hot path.

    A slot pins its buffer for its whole life, registers one persistent completion,
    and reuses one :class:`~spdk_io.loop.Op` and its ctypes arguments, so a command
    costs one C call and allocates nothing but the await.  The checks of
    :class:`Qpair` still apply (``int`` arguments, the range, the buffer's size, the
    owner's OS thread: :class:`~spdk_io.errors.WrongThreadError`).  Its commands count
    in the queue pair's :attr:`Qpair.inflight` and wait like others when SPDK is out of
    request objects.  A cancelled awaiter leaves the command to finish: the slot is
    busy (and cannot close) until it does.  A slot is a child of its queue pair.
    """

    def __init__(self, qpair: Qpair, ns: Namespace, buf: DmaBuf) -> None:
        qpair._check()
        ns = qpair._namespace(ns)
        qpair._range(ns, 0, 1)
        qpair._buffer(ns, buf, 1)
        buf.pin()
        self.qpair = qpair
        self.ns = ns
        self.buf = buf
        self._commands = qpair.commands
        #: The most blocks one command of this slot moves.
        self.max_blocks = min(
            len(buf) // ns.sector_size, qpair.max_transfer_bytes // ns.sector_size, MAX_BLOCKS
        )
        self._end = ns.num_sectors
        self._op: Op[None] = Op("slot I/O")
        self._op.set_result(None)  # idle: finished; rearmed by each submission
        #: Submitted and not completed: the fast path's test (the op's state is the truth).
        self._busy = False
        self._lba = ctypes.c_uint64()
        self._num = ctypes.c_uint32()
        self._key = _bridge.persistent(self._complete, self._op)  # errors reach the awaiter
        self._args = (
            ctypes.c_void_p(ctypes.cast(ns.handle, ctypes.c_void_p).value),
            qpair._arg,
            ctypes.c_void_p(buf.addr),
            self._lba,
            self._num,
            _bridge.nvme_cmd_thunk,
            ctypes.c_void_p(self._key),
            0,  # io_flags
        )
        self._ident = qpair.thread.owner  # the OS thread that may submit
        super().__init__(qpair.thread, parent=qpair)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("idle" if self._op.done() else "busy")
        return f"<NvmeSlot {self.ns} {len(self.buf)} bytes {state}>"

    def _refusal(self) -> BaseException | None:
        if not self._op.done():
            return BlockingIOError("the slot's NVMe command is still in flight")
        return None

    def _release(self) -> None:
        """Release the buffer (closing is refused while the slot's command is in flight)."""
        _bridge.forget(self._key)
        self.buf.unpin()

    def _abandoned(self) -> None:
        _bridge.forget(self._key)
        if self._op.done():  # a command SPDK never completed may still reach the buffer
            self.buf.unpin()

    # read_blocks and write_blocks are one body twice: a shared helper would cost a frame.

    def read_blocks(self, lba: int, num_blocks: int) -> Op[None]:
        """Read ``num_blocks`` blocks at ``lba`` into the slot's buffer; await the result."""
        op = self._op
        if (
            type(lba) is not int  # bool, float, numpy ints: the slow path decides
            or type(num_blocks) is not int
            or self._busy  # (op.done() decides, in the slow path)
            or self.closed
            or not 0 < num_blocks <= self.max_blocks
            or lba < 0
            or lba + num_blocks > self._end
            or self.qpair.failure
            or _get_ident() != self._ident
        ):
            lba, num_blocks = self._slow_check(lba, num_blocks)
        self._lba.value = lba
        self._num.value = num_blocks
        op.rearm()
        op.what = "read"
        self._busy = True
        commands = self._commands
        commands.inflight += 1  # before the call: a completion may not count below zero
        rc = _read_raw(*self._args)
        if rc:
            commands.inflight -= 1
            self._refused(_read_raw, rc)
        return op

    def write_blocks(self, lba: int, num_blocks: int) -> Op[None]:
        """Write ``num_blocks`` blocks at ``lba`` from the slot's buffer; await the result."""
        op = self._op
        if (
            type(lba) is not int
            or type(num_blocks) is not int
            or self._busy  # (op.done() decides, in the slow path)
            or self.closed
            or not 0 < num_blocks <= self.max_blocks
            or lba < 0
            or lba + num_blocks > self._end
            or self.qpair.failure
            or _get_ident() != self._ident
        ):
            lba, num_blocks = self._slow_check(lba, num_blocks)
        self._lba.value = lba
        self._num.value = num_blocks
        op.rearm()
        op.what = "write"
        self._busy = True
        commands = self._commands
        commands.inflight += 1
        rc = _write_raw(*self._args)
        if rc:
            commands.inflight -= 1
            self._refused(_write_raw, rc)
        return op

    def _refused(self, fn: Any, rc: int) -> None:
        """SPDK did not take the command: wait for a request object, or raise (idle again)."""
        op = self._op
        if rc == _ENOMEM:
            args = self._args
            self._commands.submit_held(lambda _key: fn(*args), self._key, op)
            return
        self._busy = False
        op.set_result(None)
        raise SpdkError(-rc, op.what, self.ns)

    def _slow_check(self, lba: object, num_blocks: object) -> tuple[int, int]:
        """Raise the exception that explains why a command cannot be submitted, or return
        the arguments as plain ints if they are acceptable after all (``numpy.int64``)."""
        self.qpair.thread.check_owner()
        if self.closed:
            raise RuntimeError("slot is closed")
        if not self._op.done():
            raise RuntimeError("slot is busy: await its command first")
        qp, ns = self.qpair, self.ns
        qp._check()
        lba, num = qp._range(ns, lba, num_blocks)
        qp._buffer(ns, self.buf, num)
        return lba, num

    def _complete(self, op: Op[None], cpl: int) -> None:
        self._busy = False
        commands = self._commands
        commands.inflight -= 1
        if commands.queued:
            commands.resubmit()
        word = _u16_at(cpl + _STATUS).value
        if word & 0xFFFE:
            op.set_exception(status_error(word, op.what, self.ns))
        else:
            op.set_result(None)
