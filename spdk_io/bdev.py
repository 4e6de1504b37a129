"""Block devices: look them up, open them, and do I/O on them.

* :class:`Bdev` is a snapshot of a registered bdev's properties, looked up by
  name.  It holds no pointer, so it can never dangle.
* :class:`BdevDesc` is an open descriptor with its I/O channel, bound to the
  SPDK thread that opened it.  Its I/O methods return awaitables.  Every
  argument is checked before anything reaches SPDK: a bad range, length or
  buffer raises ``ValueError``, a closed or read-only descriptor raises, use
  from another OS thread raises :class:`~spdk_io.errors.WrongThreadError`.
* Everything handed to SPDK lives until the device completes the I/O, even if
  the awaiting task is cancelled or SPDK queues the I/O for a long time (QoS,
  LBA-range locks, an ``-ENOMEM`` wait): buffers are pinned, and the ``iovec``
  arrays and io-wait entries SPDK reads by address are held by the I/O's
  :class:`~spdk_io.loop.Op` (``Op.keep``) until its completion.
* Offsets and lengths must be ``int`` (``float`` and ``bool`` are refused with a
  ``TypeError`` naming the argument); nothing is pinned or submitted before
  every argument has been checked.
* When SPDK is out of ``bdev_io`` objects (``-ENOMEM``) the I/O is queued with
  ``spdk_bdev_queue_io_wait`` and retried, not failed.
* Hot-remove: the descriptor stops taking new I/O (:class:`BdevRemovedError`),
  lets in-flight I/O finish, then closes itself on its thread.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import logging
import threading
import time
import uuid as _uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io._loader import fast
from spdk_io._validate import flag, integer, text
from spdk_io.dma import DmaBuf, dmabuf, dmabufs, iovecs, pin_all
from spdk_io.errors import BdevRemovedError, SpdkError
from spdk_io.loop import Op, callback_failed, sleep
from spdk_io.resource import ACLOSE_POLL, Resource
from spdk_io.thread import current_thread

__all__ = [
    "Bdev",
    "BdevDesc",
    "IoChannel",
    "IoSlot",
    "IoStream",
    "IoType",
    "IoTypeName",
    "OnComplete",
    "StreamSlot",
]

_log = logging.getLogger("spdk_io")

#: Settles an I/O that could not be (re)submitted: the I/O is no longer in flight.
Failure = Callable[[BaseException], None]


#: The name of an I/O type, as ``Bdev.io_types`` and ``Bdev.supports`` spell it.
IoTypeName = Literal[
    "read",
    "write",
    "unmap",
    "flush",
    "reset",
    "write_zeroes",
    "compare",
    "compare_and_write",
    "abort",
    "copy",
]


class IoType(enum.IntEnum):
    """The I/O types a bdev may support (``enum spdk_bdev_io_type``)."""

    READ = g.SPDK_BDEV_IO_TYPE_READ
    WRITE = g.SPDK_BDEV_IO_TYPE_WRITE
    UNMAP = g.SPDK_BDEV_IO_TYPE_UNMAP
    FLUSH = g.SPDK_BDEV_IO_TYPE_FLUSH
    RESET = g.SPDK_BDEV_IO_TYPE_RESET
    WRITE_ZEROES = g.SPDK_BDEV_IO_TYPE_WRITE_ZEROES
    COMPARE = g.SPDK_BDEV_IO_TYPE_COMPARE
    COMPARE_AND_WRITE = g.SPDK_BDEV_IO_TYPE_COMPARE_AND_WRITE
    ABORT = g.SPDK_BDEV_IO_TYPE_ABORT
    COPY = g.SPDK_BDEV_IO_TYPE_COPY

    @property
    def label(self) -> IoTypeName:
        """The lower-case name (``"write_zeroes"``)."""
        return cast(IoTypeName, self.name.lower())


_IO_TYPE_NAMES: frozenset[str] = frozenset(get_args(IoTypeName))


@dataclass(frozen=True)
class Bdev:
    """What a registered bdev looked like when it was looked up.

    ``acwu`` is the atomic compare-and-write unit in blocks
    (``spdk_bdev_get_acwu``): the most blocks one compare-and-write may cover.
    """

    name: str
    product_name: str
    block_size: int
    num_blocks: int
    uuid: _uuid.UUID | None
    write_unit_size: int
    required_alignment: int
    md_size: int
    md_interleaved: bool
    optimal_io_boundary: int
    acwu: int
    io_types: frozenset[IoTypeName]

    @property
    def size(self) -> int:
        """Capacity in bytes."""
        return self.block_size * self.num_blocks

    def supports(self, io_type: IoTypeName | IoType) -> bool:
        """Whether the bdev supports ``io_type`` (``"unmap"``, ``IoType.COMPARE``, ...).

        A name that is no I/O type is a ``ValueError``, not a silent False.
        """
        if isinstance(io_type, IoType):
            return io_type.label in self.io_types
        if io_type not in _IO_TYPE_NAMES:
            raise ValueError(
                f"unknown I/O type {io_type!r}; one of {', '.join(sorted(_IO_TYPE_NAMES))}"
            )
        return io_type in self.io_types

    @classmethod
    def _from_ptr(cls, ptr: Any) -> Bdev:
        raw_uuid = g.spdk_bdev_get_uuid(ptr)
        uid = (
            _uuid.UUID(bytes=bytes(ctypes.string_at(ctypes.addressof(raw_uuid.contents), 16)))
            if raw_uuid
            else None
        )
        return cls(
            name=(g.spdk_bdev_get_name(ptr) or b"").decode(),
            product_name=(g.spdk_bdev_get_product_name(ptr) or b"").decode(),
            block_size=g.spdk_bdev_get_block_size(ptr),
            num_blocks=g.spdk_bdev_get_num_blocks(ptr),
            uuid=uid if uid and uid.int else None,
            write_unit_size=g.spdk_bdev_get_write_unit_size(ptr),
            required_alignment=g.spdk_bdev_get_buf_align(ptr),
            md_size=g.spdk_bdev_get_md_size(ptr),
            md_interleaved=bool(g.spdk_bdev_is_md_interleaved(ptr)),
            optimal_io_boundary=g.spdk_bdev_get_optimal_io_boundary(ptr),
            acwu=g.spdk_bdev_get_acwu(ptr),
            io_types=frozenset(
                t.label for t in IoType if g.spdk_bdev_io_type_supported(ptr, t.value)
            ),
        )

    @classmethod
    def get(cls, name: str) -> Bdev:
        """Look a bdev up by name (or alias); ``LookupError`` if there is none."""
        current_thread()  # bdev lists are read on SPDK threads only
        ptr = g.spdk_bdev_get_by_name(text(name, "name").encode())
        if not ptr:
            raise LookupError(f"no bdev named {name!r}")
        return cls._from_ptr(ptr)

    @classmethod
    def list(cls) -> list[Bdev]:
        """Every registered bdev."""
        current_thread()
        out = []
        ptr = g.spdk_bdev_first()
        while ptr:
            out.append(cls._from_ptr(ptr))
            ptr = g.spdk_bdev_next(ptr)
        return out

    def open(self, write: bool = False) -> BdevDesc:
        """Open this bdev (see :meth:`BdevDesc.open`)."""
        return BdevDesc.open(self.name, write=write)


# ------------------------------------------------------------------------------ fast calls
# The hot submission functions, bound once with the GIL held (PyDLL) and no argtypes:
# every argument is prebuilt or a small int, so ctypes converts nothing per call.


_VP, _U64 = ctypes.c_void_p, ctypes.c_uint64
_RW_ARGS = [_VP, _VP, _VP, _U64, _U64, _VP, _VP]  # desc, ch, buf, offset, num, cb, cb_arg
_read_blocks = fast("spdk_bdev_read_blocks", ctypes.c_int, _RW_ARGS)
_write_blocks = fast("spdk_bdev_write_blocks", ctypes.c_int, _RW_ARGS)
# IoSlot passes only prebuilt ctypes objects: no argtypes, no conversion at all.
_read_blocks_raw = fast("spdk_bdev_read_blocks", ctypes.c_int)
_write_blocks_raw = fast("spdk_bdev_write_blocks", ctypes.c_int)
_nvme_status = fast("spdk_bdev_io_get_nvme_status", None)


class IoChannel(Resource):
    """A bdev I/O channel on one SPDK thread (``spdk_bdev_get_io_channel``): a child of
    its descriptor, put back before the descriptor closes."""

    def __init__(self, desc: BdevDesc) -> None:
        self.thread = desc.thread
        self._ptr: Any = g.spdk_bdev_get_io_channel(desc._ptr)
        if not self._ptr:
            raise SpdkError(errno.ENOMEM, "spdk_bdev_get_io_channel", desc.name)
        self.arg = ctypes.c_void_p(ctypes.cast(self._ptr, ctypes.c_void_p).value)
        super().__init__(desc.thread, parent=desc)

    def _release(self) -> None:
        g.spdk_put_io_channel(self._ptr)
        self._ptr = None


#: Seconds a closing descriptor lets in-flight I/O finish by itself before resetting the bdev.
CLOSE_GRACE = 1.0


class BdevDesc(Resource):
    """An open bdev descriptor with its I/O channel, bound to the opening SPDK thread.

    Use as a context manager.  Closing is refused while I/O is in flight
    (``BlockingIOError``); ``await desc.aclose()`` waits for it, and resets the bdev if a
    device holds it past :data:`CLOSE_GRACE`.  Offsets and lengths are in bytes in
    :meth:`read`/:meth:`write` and friends, in blocks in the ``*_blocks`` variants.
    """

    def __init__(self, name: str, write: bool) -> None:
        self.thread = current_thread()
        self.name = name
        self.writable = write
        self._removed = False
        self._inflight = 0
        self._streams: list[IoStream] = []  # open streams, told when the bdev goes away
        self._event_key = _bridge.persistent(self._on_event)
        desc = ctypes.POINTER(g.struct_spdk_bdev_desc)()
        rc = g.spdk_bdev_open_ext(
            name.encode(), write, _bridge.bdev_event_cb, self._event_key, ctypes.byref(desc)
        )
        if rc != 0:
            _bridge.forget(self._event_key)
            if rc == -errno.ENODEV:
                raise LookupError(f"no bdev named {name!r}")
            raise SpdkError(-rc, "spdk_bdev_open_ext", name)
        self._ptr = desc
        self.bdev = Bdev._from_ptr(g.spdk_bdev_desc_get_bdev(desc))
        self._bdev_ptr = g.spdk_bdev_desc_get_bdev(desc)
        self.block_size = self.bdev.block_size
        self.num_blocks = self.bdev.num_blocks
        super().__init__(self.thread)
        try:
            self._channel = IoChannel(self)
        except BaseException:
            self.close()
            raise
        self._desc_arg = ctypes.c_void_p(ctypes.cast(desc, ctypes.c_void_p).value)
        self._ch_arg = self._channel.arg

    @classmethod
    def open(cls, name: str, write: bool = False) -> BdevDesc:
        """Open the bdev ``name`` on the current SPDK thread, read-only unless ``write``.

        ``write`` must be a ``bool``; ``name`` a non-empty ``str``.
        """
        return cls(text(name, "name"), flag(write, "write"))

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("removed" if self._removed else "open")
        return f"<BdevDesc {self.name} {'rw' if self.writable else 'ro'} {state}>"

    @property
    def inflight(self) -> int:
        """I/Os submitted and not yet completed by the device."""
        return self._inflight

    # -- lifecycle -----------------------------------------------------------------------

    def _refusal(self) -> BaseException | None:
        if self._inflight:
            return BlockingIOError(
                f"{self.name}: {self._inflight} I/O still in flight; await them first"
            )
        return None

    def _release(self) -> None:
        g.spdk_bdev_close(self._ptr)
        _bridge.forget(self._event_key)

    def _abandoned(self) -> None:
        _bridge.forget(self._event_key)

    async def aclose(self) -> None:
        """Close once the I/O in flight has completed.

        I/O a device still holds after :data:`CLOSE_GRACE` (an error bdev injecting
        ``pending`` holds it forever) is aborted with a bdev reset first.
        """
        for stream in list(self._streams):
            stream.stop()  # a stream resubmitting forever would never let us close
        deadline = time.monotonic() + CLOSE_GRACE
        while self._inflight and time.monotonic() < deadline:
            await sleep(ACLOSE_POLL)
        if self._inflight and not self.closed:  # a removed bdev waits for this close too
            try:
                self._submit_reset("teardown reset")
            except SpdkError as exc:  # the caller's time bound still holds
                _log.warning("%s: reset of I/O left in flight failed: %s", self.name, exc)
        await super().aclose()

    def _on_event(self, event_type: int) -> None:
        if event_type == g.SPDK_BDEV_EVENT_REMOVE:
            self._removed = True
            for stream in list(self._streams):
                stream.stop(BdevRemovedError(self.name))
            if not self._inflight and not self.closed:
                self.close()
        elif event_type == g.SPDK_BDEV_EVENT_RESIZE and not self.closed:
            self.num_blocks = g.spdk_bdev_get_num_blocks(self._bdev_ptr)
            for stream in self._streams:
                stream.resized()

    # -- checks --------------------------------------------------------------------------
    # Each returns the checked value(s) in canonical form and raises before any side effect.

    def _check(self, write: bool, what: str = "I/O", removed_ok: bool = False) -> None:
        """The descriptor may take ``what`` now, on this OS thread."""
        self.thread.check_owner()
        if self._removed and not removed_ok:
            raise BdevRemovedError(self.name)
        if self.closed:
            raise ValueError(f"I/O on closed descriptor of {self.name}")
        if write and not self.writable:
            raise PermissionError(
                f"{self.name} was opened read-only: {what} needs a descriptor opened "
                "with write=True"
            )

    def _bytes_to_blocks(self, value: object, what: str, lo: int) -> int:
        """A byte count or offset (``int``, a block multiple, ``>= lo``) in blocks."""
        n = integer(value, what, lo=lo)
        bs = self.block_size
        if n % bs:
            raise ValueError(f"{self.name}: {what} {n} must be a multiple of the block size {bs}")
        return n // bs

    def _range(self, offset_blocks: object, num_blocks: object) -> tuple[int, int]:
        """``offset_blocks``/``num_blocks`` as ints naming a non-empty range on the bdev."""
        off = integer(offset_blocks, "offset_blocks", lo=0)
        num = integer(num_blocks, "num_blocks", lo=1)
        if off + num > self.num_blocks:
            raise ValueError(
                f"{self.name}: blocks {off}..{off + num} are past the end "
                f"({self.num_blocks} blocks)"
            )
        return off, num

    def _buffer(self, buf: object, num_blocks: int, what: str = "buf") -> DmaBuf:
        """``buf`` as a live DmaBuf holding at least ``num_blocks`` blocks."""
        b = dmabuf(buf, what)
        need = num_blocks * self.block_size
        if len(b) < need:
            raise ValueError(f"{self.name}: {what} of {len(b)} bytes is too small for {need} bytes")
        return b

    def _buffers(self, bufs: object) -> tuple[DmaBuf, ...]:
        """The buffers of a vectored I/O: a non-empty sequence of live DmaBufs."""
        return dmabufs(bufs)

    @staticmethod
    def _iov(buf: DmaBuf, nbytes: int) -> ctypes.Array[g.struct_iovec]:
        """A one-entry ``struct iovec`` array for the first ``nbytes`` of ``buf``."""
        iov = (g.struct_iovec * 1)()
        iov[0].iov_base = buf.addr
        iov[0].iov_len = nbytes
        return iov

    # -- submission ----------------------------------------------------------------------

    def _submit(
        self,
        what: str,
        call: Callable[[int], int],
        bufs: Sequence[DmaBuf],
        complete: Callable[[Op[Any], bool, Any], None] | None = None,
    ) -> Op[Any]:
        """Start an I/O: pin its buffers, register its completion, call SPDK.

        ``call(key)`` submits with ``key`` as ``cb_arg`` and returns SPDK's rc;
        ``complete(op, success, bdev_io)`` turns the completion into a result.
        ``op.keep`` holds ``(bufs, call)`` until the I/O completes, however long SPDK
        queues it: the buffers stay pinned, and ``call`` keeps alive what it captured
        that SPDK reads by address (the iovec arrays).
        """
        op: Op[Any] = Op(what)
        pinned = pin_all(bufs)
        op.keep = (pinned, call)
        key = _bridge.once(complete or self._complete, op)
        rc: int | None = None
        try:
            rc = call(key)
        finally:
            if rc != 0 and rc != -errno.ENOMEM:  # SPDK took nothing: release it all at once
                _bridge.forget(key)
                op.keep = None
                for b in pinned:
                    b.unpin()
        if rc != 0 and rc != -errno.ENOMEM:
            raise SpdkError(-rc, what, self.name)
        self._inflight += 1
        if rc:  # out of bdev_io: wait for one, then submit again

            def fail(exc: BaseException) -> None:
                _bridge.forget(key)
                self._finish(op, exc)

            self._wait_for_io(call, key, fail)
        return op

    def _wait_for_io(self, call: Callable[[int], int], key: int, fail: Failure) -> None:
        """Retry ``call(key)`` when a ``bdev_io`` is free again (``spdk_bdev_queue_io_wait``).

        ``fail(exc)`` settles the I/O if the retry cannot be submitted (it is no longer
        in flight then).  The wait entry SPDK links into its queue is referenced by the
        retry callback's registration until SPDK has unlinked it and called back.
        """
        entry = g.struct_spdk_bdev_io_wait_entry()
        entry.bdev = self._bdev_ptr

        holder = [entry]  # SPDK links the struct into a list: keep it alive until it calls back

        def retry() -> None:
            holder.clear()  # SPDK unlinked the entry before calling back
            try:
                rc = call(key)
            except BaseException as exc:
                fail(exc)
                return
            if rc == -errno.ENOMEM:
                self._wait_for_io(call, key, fail)
            elif rc != 0:
                fail(SpdkError(-rc, "spdk_bdev_queue_io_wait retry", self.name))

        entry.cb_fn = _bridge.io_wait_cb
        entry.cb_arg = _bridge.once(retry)
        rc = g.spdk_bdev_queue_io_wait(self._bdev_ptr, self._channel._ptr, ctypes.byref(entry))
        if rc != 0:
            _bridge.forget(entry.cb_arg)
            fail(SpdkError(-rc, "spdk_bdev_queue_io_wait", self.name))

    def _complete(self, op: Op[Any], success: bool, bdev_io: Any) -> None:
        self._finish(op, None if success else SpdkError(errno.EIO, op.what, self.name))

    def _finish(self, op: Op[Any], exc: BaseException | None, value: object = None) -> None:
        """SPDK is done with ``op``'s I/O: unpin its buffers, then settle the op
        (which drops everything else it kept)."""
        self._inflight -= 1
        held = cast("tuple[list[DmaBuf], object] | None", op.keep)  # None: an IoSlot's op
        if held is not None:
            for b in held[0]:
                b.unpin()
        if exc is None:
            op.set_result(value)
        else:
            op.set_exception(exc)
        if self._removed and not self._inflight and not self.closed:
            self.close()

    # -- I/O -----------------------------------------------------------------------------

    def read_blocks(self, buf: DmaBuf, offset_blocks: int, num_blocks: int) -> Op[None]:
        """Read ``num_blocks`` blocks at ``offset_blocks`` into ``buf``."""
        return self._rw("read", _read_blocks, buf, offset_blocks, num_blocks, False)

    def write_blocks(self, buf: DmaBuf, offset_blocks: int, num_blocks: int) -> Op[None]:
        """Write ``num_blocks`` blocks from ``buf`` at ``offset_blocks``."""
        return self._rw("write", _write_blocks, buf, offset_blocks, num_blocks, True)

    def _rw(
        self,
        what: str,
        fn: Any,
        buf: object,
        offset_blocks: object,
        num_blocks: object,
        write: bool,
    ) -> Op[None]:
        self._check(write, what)
        off, num = self._range(offset_blocks, num_blocks)
        b = self._buffer(buf, num)
        d, c, cb = self._desc_arg, self._ch_arg, _bridge.bdev_io_addr

        def submit(key: int) -> int:
            # b.addr is read here, once the buffer is pinned (it cannot be freed now)
            return fn(d, c, b.addr, off, num, cb, key)  # type: ignore[no-any-return]

        return self._submit(what, submit, (b,))

    def read(self, buf: DmaBuf, offset: int = 0, length: int | None = None) -> Op[None]:
        """Read ``length`` bytes (default: all of ``buf``) at byte ``offset``."""
        b = dmabuf(buf)
        ob = self._bytes_to_blocks(offset, "offset", 0)
        nb = self._bytes_to_blocks(len(b) if length is None else length, "length", 1)
        return self.read_blocks(b, ob, nb)

    def write(self, buf: DmaBuf, offset: int = 0, length: int | None = None) -> Op[None]:
        """Write ``length`` bytes (default: all of ``buf``) at byte ``offset``."""
        b = dmabuf(buf)
        ob = self._bytes_to_blocks(offset, "offset", 0)
        nb = self._bytes_to_blocks(len(b) if length is None else length, "length", 1)
        return self.write_blocks(b, ob, nb)

    def _vectored(
        self, what: str, fn: Any, bufs: object, offset_blocks: object, write: bool
    ) -> Op[None]:
        self._check(write, what)
        items = self._buffers(bufs)
        total = sum(len(b) for b in items)
        if total % self.block_size:
            raise ValueError(
                f"{self.name}: the buffers' total length {total} must be a multiple of the "
                f"block size {self.block_size}"
            )
        off, num = self._range(offset_blocks, total // self.block_size)
        iov = iovecs(items)
        d, c = self._ptr, self._channel._ptr

        def submit(key: int) -> int:
            return fn(d, c, iov, len(items), off, num, _bridge.bdev_io_cb, key)  # type: ignore[no-any-return]

        return self._submit(what, submit, items)

    def readv_blocks(self, bufs: Sequence[DmaBuf], offset_blocks: int) -> Op[None]:
        """Scatter-read into ``bufs`` (their total length, a whole number of blocks)."""
        return self._vectored("readv", g.spdk_bdev_readv_blocks, bufs, offset_blocks, False)

    def writev_blocks(self, bufs: Sequence[DmaBuf], offset_blocks: int) -> Op[None]:
        """Gather-write ``bufs`` (their total length, a whole number of blocks)."""
        return self._vectored("writev", g.spdk_bdev_writev_blocks, bufs, offset_blocks, True)

    def readv(self, bufs: Sequence[DmaBuf], offset: int = 0) -> Op[None]:
        """Scatter-read into ``bufs`` at byte ``offset``."""
        return self.readv_blocks(bufs, self._bytes_to_blocks(offset, "offset", 0))

    def writev(self, bufs: Sequence[DmaBuf], offset: int = 0) -> Op[None]:
        """Gather-write ``bufs`` at byte ``offset``."""
        return self.writev_blocks(bufs, self._bytes_to_blocks(offset, "offset", 0))

    def _no_data(
        self, what: IoTypeName, fn: Any, offset_blocks: object, num_blocks: object
    ) -> Op[None]:
        # SPDK refuses write_zeroes, unmap and flush on a read-only descriptor (-EBADF).
        self._check(True, what)
        off, num = self._range(offset_blocks, num_blocks)
        if not self.bdev.supports(what):
            raise SpdkError(
                errno.ENOTSUP,
                what,
                self.name,
                f"{self.bdev.product_name} does not support {what}",
            )
        d, c = self._ptr, self._channel._ptr

        def submit(key: int) -> int:
            return fn(d, c, off, num, _bridge.bdev_io_cb, key)  # type: ignore[no-any-return]

        return self._submit(what, submit, ())

    def write_zeroes_blocks(self, offset_blocks: int, num_blocks: int) -> Op[None]:
        """Zero ``num_blocks`` blocks at ``offset_blocks`` (needs a writable descriptor)."""
        return self._no_data(
            "write_zeroes", g.spdk_bdev_write_zeroes_blocks, offset_blocks, num_blocks
        )

    def unmap_blocks(self, offset_blocks: int, num_blocks: int) -> Op[None]:
        """Unmap (trim) blocks (needs a writable descriptor)."""
        return self._no_data("unmap", g.spdk_bdev_unmap_blocks, offset_blocks, num_blocks)

    def flush_blocks(self, offset_blocks: int = 0, num_blocks: int | None = None) -> Op[None]:
        """Flush blocks (default: from ``offset_blocks`` to the end).

        Needs a writable descriptor: SPDK refuses a flush on a read-only one
        (``spdk_bdev_flush_blocks`` returns ``-EBADF``), so this raises
        ``PermissionError`` before submitting, like write, unmap and reset.
        """
        self._check(True, "flush")
        off = integer(offset_blocks, "offset_blocks", lo=0)
        if num_blocks is None:
            if off >= self.num_blocks:
                raise ValueError(
                    f"{self.name}: offset_blocks {off} is past the end ({self.num_blocks} blocks)"
                )
            num_blocks = self.num_blocks - off
        return self._no_data("flush", g.spdk_bdev_flush_blocks, off, num_blocks)

    def write_zeroes(self, offset: int, length: int) -> Op[None]:
        """Zero ``length`` bytes at byte ``offset``."""
        self._check(True, "write_zeroes")
        return self.write_zeroes_blocks(
            self._bytes_to_blocks(offset, "offset", 0), self._bytes_to_blocks(length, "length", 1)
        )

    def unmap(self, offset: int, length: int) -> Op[None]:
        """Unmap ``length`` bytes at byte ``offset``."""
        self._check(True, "unmap")
        return self.unmap_blocks(
            self._bytes_to_blocks(offset, "offset", 0), self._bytes_to_blocks(length, "length", 1)
        )

    def flush(self, offset: int = 0, length: int | None = None) -> Op[None]:
        """Flush ``length`` bytes (default: to the end) at byte ``offset`` (as flush_blocks)."""
        self._check(True, "flush")
        ob = self._bytes_to_blocks(offset, "offset", 0)
        nb = None if length is None else self._bytes_to_blocks(length, "length", 1)
        return self.flush_blocks(ob, nb)

    def compare_blocks(self, buf: DmaBuf, offset_blocks: int, num_blocks: int) -> Op[bool]:
        """Compare ``buf`` with the blocks on the device: True if equal, False on a miscompare.

        Bdevs without a native compare (null, for one) get SPDK's emulation: a
        read, then ``memcmp`` (a null bdev reads zeroes).
        """
        self._check(False, "compare")
        off, num = self._range(offset_blocks, num_blocks)
        b = self._buffer(buf, num)
        iov = self._iov(b, num * self.block_size)
        d, c = self._ptr, self._channel._ptr

        def submit(key: int) -> int:
            return g.spdk_bdev_comparev_blocks(d, c, iov, 1, off, num, _bridge.bdev_io_cb, key)

        return self._submit("compare", submit, (b,), self._complete_compare)

    def compare_and_write_blocks(
        self, compare: DmaBuf, write: DmaBuf, offset_blocks: int, num_blocks: int
    ) -> Op[bool]:
        """Atomically write ``write`` if the blocks equal ``compare``: False on a miscompare.

        ``num_blocks`` may not exceed the bdev's atomic compare-and-write unit
        (:attr:`Bdev.acwu`, 1 block for most bdevs): ``ValueError`` if it does.
        Where SPDK emulates compare-and-write (malloc, null, ...), each one holds
        three ``bdev_io`` at once: keep concurrent ones well below a third of the
        ``bdev_io`` pool (``bdev_set_options``), or SPDK itself deadlocks.
        """
        self._check(True, "compare_and_write")
        off, num = self._range(offset_blocks, num_blocks)
        cbuf = self._buffer(compare, num, "compare")
        wbuf = self._buffer(write, num, "write")
        acwu = self.bdev.acwu
        if num > acwu:
            raise ValueError(
                f"{self.name}: a compare-and-write covers at most {acwu} block(s) (the bdev's "
                f"atomic compare-and-write unit, spdk_bdev_get_acwu), got num_blocks={num}"
            )
        n = num * self.block_size
        ciov, wiov = self._iov(cbuf, n), self._iov(wbuf, n)
        d, c = self._ptr, self._channel._ptr

        def submit(key: int) -> int:
            return g.spdk_bdev_comparev_and_writev_blocks(
                d, c, ciov, 1, wiov, 1, off, num, _bridge.bdev_io_cb, key
            )

        return self._submit("compare_and_write", submit, (cbuf, wbuf), self._complete_compare)

    def _complete_compare(self, op: Op[Any], success: bool, bdev_io: Any) -> None:
        if success:
            self._finish(op, None, True)
            return
        cdw0, sct, sc = ctypes.c_uint32(), ctypes.c_int(), ctypes.c_int()
        _nvme_status(bdev_io, ctypes.byref(cdw0), ctypes.byref(sct), ctypes.byref(sc))
        if sct.value == g.SPDK_NVME_SCT_MEDIA_ERROR and sc.value == g.SPDK_NVME_SC_COMPARE_FAILURE:
            self._finish(op, None, False)
        else:
            self._finish(
                op,
                SpdkError(errno.EIO, op.what, self.name, f"NVMe status {sct.value}/{sc.value:#x}"),
            )

    def slot(self, buf: DmaBuf) -> IoSlot:
        """A reusable submission context over ``buf`` for the hot path (see :class:`IoSlot`)."""
        return IoSlot(self, buf)

    def stream(self, bufs: Sequence[DmaBuf], on_complete: OnComplete) -> IoStream:
        """A streaming I/O context over ``bufs``, one slot each (see :class:`IoStream`)."""
        return IoStream(self, bufs, on_complete)

    def reset(self) -> Op[None]:
        """Reset the bdev (``spdk_bdev_reset``); in-flight I/O may fail.

        SPDK would take a reset on a read-only descriptor; spdk_io asks for a
        writable one (``PermissionError``), since a reset fails other users' I/O.
        A removed bdev still takes it: it aborts I/O a device holds, which the
        removal (and the descriptor's close) waits for.
        """
        self._check(True, "reset", removed_ok=True)
        if not self.bdev.supports("reset"):
            raise SpdkError(errno.ENOTSUP, "reset", self.name)
        return self._submit_reset("reset")

    def _submit_reset(self, what: str) -> Op[None]:
        d, c = self._ptr, self._channel._ptr

        def submit(key: int) -> int:
            return g.spdk_bdev_reset(d, c, _bridge.bdev_io_cb, key)

        return self._submit(what, submit, ())


_get_ident = threading.get_ident
_bdev_io_thunk = _bridge.bdev_io_thunk
_free_bdev_io = _bridge.free_bdev_io


class IoSlot(Resource):
    """One outstanding I/O at a time, with every argument prebuilt: the hot path.

    A slot pins its buffer for its whole life, registers one persistent
    completion, and reuses one :class:`Op` and its ctypes arguments, so a
    read or write costs one C call and allocates nothing but the await.  The
    checks of :class:`BdevDesc` still apply (offsets and lengths must be
    ``int``).  Use one slot per concurrently outstanding I/O (a perf tool's
    queue depth); close it (or leave the ``with`` block) to release the buffer.  A
    slot is a child of its descriptor: closing the descriptor closes its slots.
    For throughput without a task per I/O, see :class:`IoStream`.
    """

    def __init__(self, desc: BdevDesc, buf: DmaBuf) -> None:
        desc._check(False)
        desc._buffer(buf, 1)
        buf.pin()
        self.desc = desc
        self.buf = buf
        self._capacity_blocks = len(buf) // desc.block_size
        self._op: Op[None] = Op("slot I/O")
        self._op.set_result(None)  # idle: finished; rearmed by each submission
        self._off = ctypes.c_uint64()
        self._num = ctypes.c_uint64()
        self._key = _bridge.persistent(self._complete, self._op)  # errors reach the awaiter
        #: Every argument of spdk_bdev_{read,write}_blocks, prebuilt (_off, _num set in place).
        self._args = (
            desc._desc_arg,
            desc._ch_arg,
            ctypes.c_void_p(buf.addr),
            self._off,
            self._num,
            _bdev_io_thunk,
            ctypes.c_void_p(self._key),
        )
        self._ident = desc.thread.owner  # the OS thread that may submit
        #: Open and idle: the one state the fast path tests (False while the I/O is in
        #: flight and once closed; the slow path then says which).
        self._ready = True
        super().__init__(desc.thread, parent=desc)

    def _refusal(self) -> BaseException | None:
        if not self._op.done():
            return BlockingIOError("the slot's I/O is still in flight")
        return None

    def _release(self) -> None:
        """Release the buffer (closing is refused while the slot's I/O is in flight)."""
        self._ready = False
        _bridge.forget(self._key)
        self.buf.unpin()

    def _abandoned(self) -> None:
        self._ready = False
        _bridge.forget(self._key)
        if self._op.done():  # an I/O SPDK never completed may still reach the buffer
            self.buf.unpin()

    def read_blocks(self, offset_blocks: int, num_blocks: int) -> Op[None]:
        """Read into the slot's buffer; await the result."""
        desc = self.desc
        if (  # every check, in one expression; anything unusual takes the slow path
            self._ready
            and type(offset_blocks) is int  # bool, float, numpy ints: the slow path decides
            and type(num_blocks) is int
            and 0 < num_blocks <= self._capacity_blocks
            and 0 <= offset_blocks <= desc.num_blocks - num_blocks
            and not desc._removed  # (a closed descriptor closed its slots first)
            and _get_ident() == self._ident
        ):
            self._off.value = offset_blocks
            self._num.value = num_blocks
            if not _read_blocks_raw(*self._args):
                self._ready = False
                op = self._op
                op.rearm()
                desc._inflight += 1
                return op
        return self._submit(_read_blocks_raw, offset_blocks, num_blocks, False)

    def write_blocks(self, offset_blocks: int, num_blocks: int) -> Op[None]:
        """Write from the slot's buffer; await the result."""
        desc = self.desc
        if (  # read_blocks' checks, and a writable descriptor
            self._ready
            and type(offset_blocks) is int
            and type(num_blocks) is int
            and 0 < num_blocks <= self._capacity_blocks
            and 0 <= offset_blocks <= desc.num_blocks - num_blocks
            and desc.writable
            and not desc._removed
            and _get_ident() == self._ident
        ):
            self._off.value = offset_blocks
            self._num.value = num_blocks
            if not _write_blocks_raw(*self._args):
                self._ready = False
                op = self._op
                op.rearm()
                desc._inflight += 1
                return op
        return self._submit(_write_blocks_raw, offset_blocks, num_blocks, True)

    def _submit(self, fn: Any, offset_blocks: object, num_blocks: object, write: bool) -> Op[None]:
        """The slow path: every check with its own exception, then submit (or wait for a
        ``bdev_io`` on ``-ENOMEM``)."""
        offset_blocks, num_blocks = self._slow_check(offset_blocks, num_blocks, write)
        op = self._op
        desc = self.desc
        self._off.value = offset_blocks
        self._num.value = num_blocks
        rc = fn(*self._args)
        if rc and rc != -errno.ENOMEM:
            raise SpdkError(-rc, "write" if write else "read", desc.name)
        self._ready = False
        op.rearm()
        desc._inflight += 1
        if rc:  # out of bdev_io: wait for one, then submit the same prebuilt arguments again
            args = self._args
            desc._wait_for_io(lambda _key: fn(*args), self._key, self._wait_failed)
        return op

    def _wait_failed(self, exc: BaseException) -> None:
        self._ready = not self.closed
        self.desc._finish(self._op, exc)

    def _slow_check(
        self, offset_blocks: object, num_blocks: object, write: bool
    ) -> tuple[int, int]:
        """Raise the exception that explains why an I/O cannot be submitted, or return
        the arguments as plain ints if they are acceptable after all (``numpy.int64``)."""
        if self.closed:
            raise RuntimeError("slot is closed")
        if not self._op.done():
            raise RuntimeError("slot is busy: await its I/O first")
        desc = self.desc
        desc._check(write, "write" if write else "read")
        off, num = desc._range(offset_blocks, num_blocks)
        desc._buffer(self.buf, num)
        return off, num

    def _complete(self, op: Op[None], success: bool, bdev_io: Any) -> None:
        desc = self.desc
        self._ready = not self.closed  # (closed: abandoned with its thread, I/O pending)
        if success and not desc._removed:
            desc._inflight -= 1
            op.set_result(None)
        else:
            desc._finish(op, None if success else SpdkError(errno.EIO, "slot I/O", desc.name))


# ------------------------------------------------------------------------------ streaming

#: A stream's completion callback: ``on_complete(slot, ok)`` returns the next
#: ``offset_blocks`` for the slot (the same kind and length of I/O again), or ``None``.
OnComplete = Callable[["StreamSlot", bool], "int | None"]


#: Only IoStream makes StreamSlots: a slot's index is what SPDK hands its completion.
_SLOT_KEY = object()


class StreamSlot:
    """One slot of an :class:`IoStream`: a pinned buffer and at most one I/O in flight.

    ``read_blocks``/``write_blocks`` start an I/O with every check of
    :class:`BdevDesc` (nothing is submitted if one fails); the stream's
    ``on_complete`` resubmits by returning the next offset.  ``index`` is the slot's
    position in ``stream.slots``; ``busy`` whether its I/O is in flight.
    """

    __slots__ = (
        "_args",
        "_fn",
        "_limit",
        "_num",
        "_off",
        "buf",
        "busy",
        "desc",
        "index",
        "stream",
    )

    def __init__(self, stream: IoStream, index: int, buf: DmaBuf, *, _key: object = None) -> None:
        if _key is not _SLOT_KEY:  # its index is the C callback's argument: the stream's
            raise TypeError("StreamSlots come from IoStream.slots (desc.stream(...))")
        self.stream = stream
        self.desc = stream.desc
        self.index = index
        self.buf = buf
        self.busy = False
        self._fn: Any = _read_blocks_raw
        self._off = ctypes.c_uint64()
        self._num = ctypes.c_uint64(1)
        self._limit = -1  # the highest offset the current kind and length may go to
        #: Every argument of spdk_bdev_{read,write}_blocks, prebuilt (_off and _num are
        #: set in place): the stream's completion, with the slot's index as cb_arg.
        self._args = (
            self.desc._desc_arg,
            self.desc._ch_arg,
            ctypes.c_void_p(buf.addr),
            self._off,
            self._num,
            stream._thunk,
            ctypes.c_void_p(index),
        )

    def __repr__(self) -> str:
        return f"<StreamSlot {self.index} of {self.desc.name} {'busy' if self.busy else 'idle'}>"

    @property
    def offset_blocks(self) -> int:
        """Where the slot's latest I/O went (in flight, or just completed)."""
        return self._off.value

    @property
    def num_blocks(self) -> int:
        """How many blocks the slot's latest I/O covers."""
        return self._num.value

    def read_blocks(self, offset_blocks: int, num_blocks: int) -> None:
        """Start reading ``num_blocks`` blocks at ``offset_blocks`` into the slot's buffer."""
        self._start(_read_blocks_raw, offset_blocks, num_blocks, False)

    def write_blocks(self, offset_blocks: int, num_blocks: int) -> None:
        """Start writing ``num_blocks`` blocks from the slot's buffer at ``offset_blocks``."""
        self._start(_write_blocks_raw, offset_blocks, num_blocks, True)

    def _start(self, fn: Any, offset_blocks: object, num_blocks: object, write: bool) -> None:
        stream = self.stream
        stream._check_open()
        if self.busy:
            raise RuntimeError(f"{self!r}: its I/O is still in flight")
        desc = self.desc
        desc._check(write, "write" if write else "read")
        off, num = desc._range(offset_blocks, num_blocks)
        desc._buffer(self.buf, num)
        self._fn = fn
        self._num.value = num
        self._limit = desc.num_blocks - num
        self._submit(off)

    def _submit(self, off: int) -> None:
        """Call SPDK with the prebuilt arguments at ``off`` (checked); the I/O is in flight
        on return (queued for a ``bdev_io`` on ``-ENOMEM``), or it raised ``SpdkError``."""
        self._off.value = off
        rc = self._fn(*self._args)
        if rc and rc != -errno.ENOMEM:
            raise SpdkError(
                -rc, "write" if self._fn is _write_blocks_raw else "read", self.desc.name
            )
        self.busy = True
        self.stream._inflight += 1
        self.desc._inflight += 1
        if rc:  # out of bdev_io: SPDK calls back when one is free
            fn, args = self._fn, self._args
            self.desc._wait_for_io(lambda _key: fn(*args), 0, self._failed)

    def _failed(self, exc: BaseException) -> None:
        """The I/O could not be resubmitted after an ``-ENOMEM`` wait: it ends, failed."""
        self.busy = False
        self._fail_with(exc)

    def _fail_with(self, exc: BaseException) -> None:
        """Count the slot's finished I/O out and stop the stream with ``exc``."""
        stream = self.stream
        stream.stop(exc)  # first, so that an idle stream's waiter sees the error
        self._count_out()
        stream._fail(exc)

    def _count_out(self) -> None:
        """One I/O of this slot is over (the slot may carry a new one already)."""
        stream = self.stream
        stream._inflight -= 1
        desc = self.desc
        desc._inflight -= 1
        if not stream._inflight and stream._waiters:
            stream._idle()
        if desc._removed and not desc._inflight and not desc.closed:
            desc.close()

    def _resubmit_slow(self, nxt: object) -> None:
        """``on_complete`` returned ``nxt``, which the fast path did not submit: submit it
        with every check (or fail the stream), then count the finished I/O out."""
        if self.busy:
            self._fail_with(
                RuntimeError(
                    f"{self!r}: on_complete started an I/O on the slot and returned {nxt!r}: "
                    "return None when it submits itself"
                )
            )
            return
        if not self.stream._live:  # on_complete stopped the stream: nothing new
            self._count_out()
            return
        try:
            self._start(self._fn, nxt, self._num.value, self._fn is _write_blocks_raw)
        except BaseException as exc:
            self._fail_with(exc)
            return
        self._count_out()  # the new I/O is counted in already


class IoStream(Resource):
    """Throughput I/O without a task or an ``Op`` per I/O: N slots, one callback.

    Each slot (:class:`StreamSlot`, in :attr:`slots`) owns one pinned buffer and
    carries at most one I/O.  Start I/O with ``slot.read_blocks(off, n)`` /
    ``slot.write_blocks(off, n)`` (checked like :class:`BdevDesc`'s; a bad argument
    raises and submits nothing).  When an I/O completes, SPDK's completion calls
    ``on_complete(slot, ok)`` directly, on the descriptor's thread; it returns the
    next ``offset_blocks`` to resubmit the same kind and length of I/O on that slot
    at once (no task switch), or ``None`` to leave the slot idle (it may also start
    another I/O on the slot itself and return ``None``).  An offset it returns that
    is not an in-range ``int`` fails the stream like an exception.

    ``await stream.wait()`` returns once no I/O of the stream is in flight, or raises
    the first exception ``on_complete`` raised, once the I/O in flight has drained:
    after an exception (or :meth:`stop`, or a hot-remove) ``on_complete`` is not
    called again and the stream takes no new I/O.  ``close()`` is refused
    (``BlockingIOError``) while I/O is in flight; ``aclose()`` stops the stream and
    waits.  Completions arrive one by one from SPDK's C loop: there is no batch to
    hand over without compiled code, so the callback is the unit of work.
    """

    def __init__(self, desc: BdevDesc, bufs: Sequence[DmaBuf], on_complete: OnComplete) -> None:
        desc._check(False, "stream")
        items = dmabufs(bufs)
        if not callable(on_complete):
            raise TypeError(f"on_complete must be callable, not {type(on_complete).__name__}")
        for i, b in enumerate(items):
            desc._buffer(b, 1, f"bufs[{i}]")
        self.desc = desc
        self._on_complete = on_complete
        self._inflight = 0
        self._live = True  # False once stopped: on_complete is not called again
        self._error: BaseException | None = None
        self._waiters: list[Op[None]] = []  # wait()'s Ops, finished when no I/O is in flight
        self._thunk = _bridge.bdev_io_callback(self._on_io)  # alive as long as the stream
        pinned = pin_all(items)
        try:
            #: The slots, one per buffer, in the order of ``bufs``.
            self.slots: tuple[StreamSlot, ...] = tuple(
                StreamSlot(self, i, b, _key=_SLOT_KEY) for i, b in enumerate(items)
            )
        except BaseException:
            for b in pinned:
                b.unpin()
            raise
        super().__init__(desc.thread, parent=desc)
        desc._streams.append(self)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self._live else "stopped")
        return f"<IoStream {self.desc.name} {len(self.slots)} slots {state}>"

    @property
    def inflight(self) -> int:
        """The stream's I/Os submitted and not yet completed."""
        return self._inflight

    @property
    def error(self) -> BaseException | None:
        """The exception that stopped the stream (``on_complete``'s, a hot-remove), if any."""
        return self._error

    def wait(self) -> Op[None]:
        """An awaitable that finishes once no I/O of the stream is in flight, or fails
        with the stream's error (see the class docstring) once its I/O has drained."""
        self.desc.thread.check_owner()
        waiters = self._waiters

        def gave_up() -> None:  # the awaiting task was cancelled: forget its Op
            if op in waiters:
                waiters.remove(op)

        op: Op[None] = Op("IoStream.wait", gave_up)
        waiters.append(op)
        if not self._inflight:
            self._idle()
        return op

    def stop(self, error: BaseException | None = None) -> None:
        """Stop: ``on_complete`` is not called again and no new I/O is taken; the I/O in
        flight drains.  ``error`` (if given, and the first) is what ``wait()`` raises.
        Called on the descriptor's thread; a bad ``error`` raises ``TypeError`` and
        changes nothing."""
        if error is not None and not isinstance(error, BaseException):
            raise TypeError(
                f"error must be an exception instance or None, not {type(error).__name__}"
            )
        self.desc.thread.check_owner()
        self._live = False
        if error is not None and self._error is None:
            self._error = error

    def resized(self) -> None:
        """The bdev's size changed: resubmissions are checked against the new size."""
        for s in self.slots:
            s._limit = self.desc.num_blocks - s._num.value

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._error is not None:
            raise RuntimeError(f"{self!r} failed: {self._error!r}") from self._error
        if not self._live:
            raise RuntimeError(f"{self!r} is stopped")

    def _fail(self, exc: BaseException) -> None:
        """``on_complete`` (or a resubmission) raised ``exc``: stop, and tell the waiter
        once the I/O has drained.  A Ctrl-C or exit goes to the loop at once too."""
        self.stop(exc)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            callback_failed(exc, "IoStream on_complete")  # stops the loop now
        if not self._inflight:
            self._idle()

    def _idle(self) -> None:
        """No I/O in flight: finish the waiter, with the error if there is one."""
        waiters, self._waiters = self._waiters, []
        for op in waiters:
            if op.done():
                continue
            if self._error is None:
                op.set_result(None)
            else:
                callback_failed(self._error, "IoStream on_complete", op)

    def _refusal(self) -> BaseException | None:
        if self._inflight:
            return BlockingIOError(
                f"{self!r}: {self._inflight} I/O still in flight; await stream.wait() "
                "or stream.aclose()"
            )
        return None

    async def aclose(self) -> None:
        """Stop the stream, wait for its I/O in flight, close it."""
        self.stop()
        await super().aclose()

    def _on_io(self, bdev_io: Any, success: bool, index: int | None) -> None:
        """The completion of a slot's I/O (``cb_arg`` = the slot's index): report it to
        ``on_complete``, resubmit what it returns, free the ``bdev_io``.

        The hot path, called by C directly (see :func:`spdk_io._bridge.bdev_io_callback`):
        only the checks a resubmission needs (the OS thread is the owner's: SPDK completes
        on the channel's thread; the kind and length were checked when the slot's I/O
        was started, and ``_limit`` is the last offset they allow)."""
        try:
            slot = self.slots[index or 0]
            slot.busy = False
            if self._live:
                try:
                    nxt = self._on_complete(slot, success)
                except BaseException as exc:
                    slot._fail_with(exc)
                    return
                if nxt is not None:
                    if (
                        type(nxt) is int
                        and 0 <= nxt <= slot._limit
                        and not slot.busy  # on_complete did not start another I/O itself
                        and self._live  # nor stop the stream
                    ):
                        slot._off.value = nxt  # slot._submit, inlined: still counted in flight
                        if not slot._fn(*slot._args):
                            slot.busy = True
                            return
                    slot._resubmit_slow(nxt)
                    return
            slot._count_out()
        except BaseException as exc:  # a bug here: nothing may unwind into C
            callback_failed(exc, "IoStream completion")
        finally:
            _free_bdev_io(bdev_io)

    def _release(self) -> None:
        self._live = False
        for s in self.slots:
            s.buf.unpin()
        if self in self.desc._streams:
            self.desc._streams.remove(self)

    def _abandoned(self) -> None:
        self._live = False
        if any(s.busy for s in self.slots):  # SPDK may still call back, however unlikely
            _bridge.retain(self._thunk)
        for s in self.slots:
            if not s.busy:  # an I/O SPDK never completed may still reach the buffer
                s.buf.unpin()
        if self in self.desc._streams:
            self.desc._streams.remove(self)
