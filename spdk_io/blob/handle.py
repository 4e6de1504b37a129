"""An open blob (:class:`Blob`) and a thread's channel to a blobstore (:class:`Channel`).

A :class:`Blob` belongs to its blobstore's metadata thread: it is closed there, and
its metadata methods (resize, sync, xattrs) run there, forwarded from other threads.
Its I/O runs on the calling thread, through that thread's :class:`Channel`.

Guarantees:

* Offsets and lengths are in bytes, multiples of the blobstore's I/O unit (the
  ``*_io_units`` forms take I/O units).  Every argument is checked, and the range is
  checked against the blob's size now, before a buffer is pinned or SPDK is called.
* A write to a read-only blob (a snapshot, or after :meth:`Blob.set_read_only`) raises
  ``PermissionError`` and submits nothing.
* Buffers stay pinned until SPDK completes the I/O, even if the awaiting task is
  cancelled; the blob cannot close while any thread has I/O in flight on it.
* A blob is never closed under another thread's I/O: a thread other than the metadata
  thread checks "open" and counts its I/O under the blob's gate, which ``close()`` holds.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io._loader import fast
from spdk_io._validate import integer
from spdk_io.blob.ids import BlobId
from spdk_io.blob.options import MAX_DESC_SIZE, XATTR_HEADER, xattr_name, xattr_value
from spdk_io.dma import DmaBuf, dmabuf, dmabufs, iovecs, pin_all
from spdk_io.errors import SpdkError
from spdk_io.loop import Op, sleep, spawn
from spdk_io.resource import ACLOSE_POLL, Resource
from spdk_io.thread import SpdkThread

if TYPE_CHECKING:
    from spdk_io.blob.store import Blobstore

__all__ = ["Blob", "Channel"]

T = TypeVar("T")
_log = logging.getLogger("spdk_io")
_VP, _U64 = ctypes.c_void_p, ctypes.c_uint64
_RW = [_VP, _VP, _VP, _U64, _U64, _VP, _VP]  # blob, channel, payload, offset, length, cb, arg
_io_read = fast("spdk_blob_io_read", None, _RW)
_io_write = fast("spdk_blob_io_write", None, _RW)
_num_io_units = fast("spdk_blob_get_num_io_units", _U64, [_VP])
_is_read_only = fast("spdk_blob_is_read_only", ctypes.c_bool, [_VP])


class Channel(Resource):
    """One SPDK thread's I/O channel to a blobstore (``spdk_bs_alloc_io_channel``),
    owned by that thread: released when it exits, or when the blobstore unloads."""

    def __init__(
        self, bs: Any, thread: SpdkThread, bdev: str, on_close: Callable[[Channel], None]
    ) -> None:
        ptr = g.spdk_bs_alloc_io_channel(bs)
        if not ptr:
            raise SpdkError(errno.ENOMEM, "spdk_bs_alloc_io_channel", bdev)
        self.ptr: Any = ptr
        self.arg = ctypes.c_void_p(ctypes.cast(ptr, ctypes.c_void_p).value)
        self.thread = thread
        self.bdev = bdev
        #: I/Os (and copy operations) in flight on this channel; only its thread writes it.
        self.inflight = 0
        self._on_close = on_close
        super().__init__(thread)

    def __repr__(self) -> str:
        return f"<blobstore channel {self.bdev} on {self.thread.name}>"

    def _refusal(self) -> BaseException | None:
        if self.inflight:
            return BlockingIOError(f"{self!r}: {self.inflight} I/O still in flight")
        return None

    def _release(self) -> None:
        g.spdk_bs_free_io_channel(self.ptr)
        self.ptr = None
        self._on_close(self)

    def _abandoned(self) -> None:
        self.ptr = None  # SPDK freed it with its thread
        self._on_close(self)

    def release_soon(self) -> None:
        """Close now, or once the I/O in flight is done (a message from the unloading
        blobstore; never raises into the message loop)."""
        if self.inflight:
            spawn(self.aclose(), f"release {self!r}")
        else:
            self.close()


class Blob(Resource):
    """An open blob (see the module docstring).  Get one from
    ``await bs.open_blob(blob_id)``; close it with ``async with`` or ``await aclose()``
    (closing syncs the metadata).  After closing, I/O, properties and metadata methods
    raise ``ValueError`` (``aclose`` returns at once)."""

    def __init__(self, store: Blobstore, addr: int, blob_id: BlobId) -> None:
        self.store = store
        self.id = blob_id
        # struct spdk_blob *: None from close() on (SPDK frees it when the close completes)
        self._ptr: Any = ctypes.cast(addr, ctypes.POINTER(g.struct_spdk_blob))
        self._arg = ctypes.c_void_p(addr)
        self._md = store.thread
        self.io_unit_size = store.io_unit_size
        self.cluster_size = store.cluster_size
        # I/Os in flight, by channel: each thread writes only its own channel's entry, and
        # threads other than the metadata thread do so under the gate (see the docstring).
        self._inflight: dict[Channel, int] = {}
        #: Held by ``close()`` (and the store's), and by other threads' I/O checks.
        self.gate = threading.RLock()
        # This blob's metadata operations (resize, sync) SPDK has not completed: close
        # waits for them (SPDK would free the blob under them).  Pruned as added.
        self._md_ops: list[Op[Any]] = []
        self._closed_op: Op[None] | None = None  # finished when SPDK has closed the blob
        super().__init__(store.thread, parent=store)

    def __repr__(self) -> str:
        return f"<Blob {self.id}{' closed' if self.closed else ''}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """I/Os submitted on this blob, on every thread, and not yet completed."""
        return sum(self._inflight.values())

    def track_md(self, op: Op[Any]) -> None:
        """Count ``op``, a metadata operation on this blob, until SPDK completes it."""
        self._md_ops = [o for o in self._md_ops if not o.done()]
        self._md_ops.append(op)

    def _refusal(self) -> BaseException | None:
        n = self.inflight
        if n:
            return BlockingIOError(f"blob {self.id}: {n} I/O still in flight")
        m = sum(1 for o in self._md_ops if not o.done())
        if m:
            return BlockingIOError(f"blob {self.id}: {m} metadata operations in flight")
        return None

    def close(self) -> None:
        """Start closing (SPDK syncs the metadata, then frees the handle).  On the
        metadata thread only; ``BlockingIOError`` while I/O or a metadata operation on
        it is in flight."""
        with self.gate:
            super().close()

    def _release(self) -> None:
        ptr, self._ptr = self._ptr, None
        store, bid = self.store, self.id
        op: Op[None] = Op(f"spdk_blob_close({bid})")
        self._closed_op = op

        def done(op: Op[None], status: int) -> None:
            if status == -errno.ENOMEM:  # out of metadata requests (many closes at once)
                spawn(retry(), f"close blob {bid} again")
                return
            store.blob_closed()
            if status:
                _log.warning(
                    "closing blob %s failed: %d (its metadata may not be synced)", bid, status
                )
                op.set_exception(SpdkError(status, "spdk_blob_close", bid))
            else:
                op.set_result(None)

        async def retry() -> None:
            await sleep(ACLOSE_POLL)
            g.spdk_blob_close(ptr, _bridge.blob_op_cb, _bridge.once(done, op))

        store.blob_closing()
        g.spdk_blob_close(ptr, _bridge.blob_op_cb, _bridge.once(done, op))

    async def aclose(self) -> None:
        """Close once the I/O in flight is done, and wait until SPDK has closed it
        (from any thread)."""

        if self.closed and (self._closed_op is None or self._closed_op.done()):
            return

        async def here() -> None:
            while not self.closed:
                if self._refusal() is None:
                    try:
                        self.close()
                        break
                    except BlockingIOError:  # another thread's I/O began meanwhile
                        pass
                await sleep(ACLOSE_POLL)
            if self._closed_op is not None:
                await self._closed_op

        await self.store.on_md(here)

    # -- the handle, from any thread ------------------------------------------------------

    def _enter(self, ch: Channel, what: str, write: bool, offset: int, length: int) -> None:
        """Check that I/O ``what`` of ``length`` units at ``offset`` may start, and count it
        on ``ch``.  Off the metadata thread this runs under the gate (``close()`` holds it)."""
        if self.closed:
            raise ValueError(f"{what} on closed blob {self.id}")
        arg = self._arg
        end = _num_io_units(arg)
        if offset + length > end:
            raise ValueError(
                f"blob {self.id}: {what} of I/O units {offset}..{offset + length} is past "
                f"the end ({end} I/O units of {self.io_unit_size} bytes)"
            )
        if write and _is_read_only(arg):
            raise PermissionError(f"blob {self.id} is read-only (a snapshot, or set so): no {what}")
        ch.inflight += 1
        counts = self._inflight
        counts[ch] = counts.get(ch, 0) + 1

    def _start(self, what: str, write: bool, offset: int, length: int) -> Channel:
        if self.closed:  # before the channel: none is made for a closed blob, and a blob
            # closed by its store's unload says so (rather than "the blobstore is unloaded")
            raise ValueError(f"{what} on closed blob {self.id}")
        ch = self.store.channel()
        if ch.thread is self._md:
            self._enter(ch, what, write, offset, length)
        else:
            with self.gate:
                self._enter(ch, what, write, offset, length)
        return ch

    def _read_field(self, fn: Callable[[Any], T]) -> T:
        """``fn(blob pointer)`` while the blob is open (under the gate off the md thread)."""
        if threading.get_ident() == self._md.owner:
            if self.closed:
                raise ValueError(f"blob {self.id} is closed")
            return fn(self._ptr)
        with self.gate:
            if self.closed:
                raise ValueError(f"blob {self.id} is closed")
            return fn(self._ptr)

    # -- properties ----------------------------------------------------------------------

    @property
    def num_clusters(self) -> int:
        return int(self._read_field(g.spdk_blob_get_num_clusters))

    @property
    def num_io_units(self) -> int:
        return int(self._read_field(g.spdk_blob_get_num_io_units))

    @property
    def size(self) -> int:
        """The blob's size in bytes."""
        return self.num_io_units * self.io_unit_size

    @property
    def allocated_clusters(self) -> int:
        """Clusters actually allocated (fewer than :attr:`num_clusters` if thin)."""
        return int(self._read_field(g.spdk_blob_get_num_allocated_clusters))

    @property
    def thin(self) -> bool:
        return bool(self._read_field(g.spdk_blob_is_thin_provisioned))

    @property
    def read_only(self) -> bool:
        return bool(self._read_field(g.spdk_blob_is_read_only))

    @property
    def snapshot(self) -> bool:
        return bool(self._read_field(g.spdk_blob_is_snapshot))

    @property
    def clone(self) -> bool:
        return bool(self._read_field(g.spdk_blob_is_clone))

    @property
    def parent_snapshot(self) -> BlobId | None:
        """The snapshot this blob is a clone of, or ``None``.  On the metadata thread
        (elsewhere: ``await bs.get_parent(blob.id)``)."""
        if self.closed:
            raise ValueError(f"blob {self.id} is closed")
        return self.store.parent_of(self.id)

    # -- I/O -------------------------------------------------------------------------------

    def _units(self, value: object, what: str, lo: int) -> int:
        unit = self.io_unit_size
        if type(value) is int and value >= lo and not value % unit:
            return value // unit  # the common case; anything else gets the full checks
        n = integer(value, what, lo=lo)
        if n % unit:
            raise ValueError(
                f"blob {self.id}: {what} {n} must be a multiple of the I/O unit ({unit} bytes)"
            )
        return n // unit

    def _rw(
        self, what: str, fn: Any, write: bool, buf: object, offset: int, length: int
    ) -> Op[None]:
        b = dmabuf(buf)
        return self._submit_rw(what, fn, write, b, len(b), offset, length)

    def _submit_rw(
        self, what: str, fn: Any, write: bool, b: DmaBuf, size: int, offset: int, length: int
    ) -> Op[None]:
        """Submit I/O on ``b``, a DmaBuf :func:`dmabuf` has checked, of ``size`` bytes."""
        need = length * self.io_unit_size
        if size < need:
            raise ValueError(f"blob {self.id}: buf of {size} bytes is too small for {need} bytes")
        b.pin()  # before the I/O is counted: a buffer freed meanwhile fails here
        try:
            ch = self._start(what, write, offset, length)
        except BaseException:
            b.unpin()
            raise
        op: Op[None] = Op(what)
        op.keep = (ch, (b,))
        fn(
            self._arg,
            ch.arg,
            b.addr,
            offset,
            length,
            _bridge.ctx_status_addr,
            _bridge.once(self._done, op),
        )
        return op

    def _done(self, op: Op[None], status: int) -> None:
        """SPDK completed an I/O: uncount it, unpin its buffers, settle it."""
        held: Any = op.keep  # (channel, buffers, what SPDK reads)
        ch: Channel = held[0]
        bufs: Sequence[DmaBuf] = held[1]
        ch.inflight -= 1
        self._inflight[ch] -= 1
        for b in bufs:
            b.unpin()
        if status:
            op.set_exception(self._io_error(op.what, status))
        else:
            op.set_result(None)

    def _io_error(self, what: str, status: int) -> BaseException:
        if status == -errno.EPERM:
            return PermissionError(f"blob {self.id} is read-only: no {what}")
        if status == -errno.EINVAL:
            return ValueError(f"blob {self.id}: {what} is past the end (it was resized?)")
        if status == -errno.ENOMEM:
            return SpdkError(
                status,
                f"blob {what}",
                self.id,
                "more I/O in flight on this thread's channel than the blobstore's "
                "max_channel_ops (BlobstoreOptions): await some first",
            )
        return SpdkError(status, f"blob {what}", self.id)

    def read_io_units(self, buf: DmaBuf, offset: int, length: int) -> Op[None]:
        """Read ``length`` I/O units at unit ``offset`` into ``buf``."""
        off = integer(offset, "offset", lo=0)
        n = integer(length, "length", lo=1)
        return self._rw("read", _io_read, False, buf, off, n)

    def write_io_units(self, buf: DmaBuf, offset: int, length: int) -> Op[None]:
        """Write ``length`` I/O units from ``buf`` at unit ``offset``."""
        off = integer(offset, "offset", lo=0)
        n = integer(length, "length", lo=1)
        return self._rw("write", _io_write, True, buf, off, n)

    def read(self, buf: DmaBuf, offset: int = 0, length: int | None = None) -> Op[None]:
        """Read ``length`` bytes (default: all of ``buf``) at byte ``offset``."""
        b = dmabuf(buf)
        size = len(b)
        n = self._units(size if length is None else length, "length", 1)
        off = self._units(offset, "offset", 0)
        return self._submit_rw("read", _io_read, False, b, size, off, n)

    def write(self, buf: DmaBuf, offset: int = 0, length: int | None = None) -> Op[None]:
        """Write ``length`` bytes (default: all of ``buf``) at byte ``offset``."""
        b = dmabuf(buf)
        size = len(b)
        n = self._units(size if length is None else length, "length", 1)
        off = self._units(offset, "offset", 0)
        return self._submit_rw("write", _io_write, True, b, size, off, n)

    def _vectored(self, what: str, fn: Any, write: bool, bufs: object, off: int) -> Op[None]:
        """A vectored I/O at unit ``off`` (checked) over ``bufs``."""
        items = dmabufs(bufs)
        total = sum(len(b) for b in items)
        n = self._units(total, "the buffers' total length", 1)
        iov = iovecs(items)
        pinned = pin_all(items)
        try:
            ch = self._start(what, write, off, n)
        except BaseException:
            for b in pinned:
                b.unpin()
            raise
        op: Op[None] = Op(what)
        op.keep = (ch, pinned, iov)
        fn(
            self._ptr,
            ch.ptr,
            iov,
            len(items),
            off,
            n,
            _bridge.blob_op_cb,
            _bridge.once(self._done, op),
        )
        return op

    def readv(self, bufs: Sequence[DmaBuf], offset: int = 0) -> Op[None]:
        """Scatter-read into ``bufs`` (their total length, whole I/O units) at ``offset``."""
        off = self._units(offset, "offset", 0)
        return self._vectored("readv", g.spdk_blob_io_readv, False, bufs, off)

    def writev(self, bufs: Sequence[DmaBuf], offset: int = 0) -> Op[None]:
        """Gather-write ``bufs`` (their total length, whole I/O units) at ``offset``."""
        off = self._units(offset, "offset", 0)
        return self._vectored("writev", g.spdk_blob_io_writev, True, bufs, off)

    def readv_io_units(self, bufs: Sequence[DmaBuf], offset: int) -> Op[None]:
        """Scatter-read into ``bufs`` at I/O unit ``offset``."""
        off = integer(offset, "offset", lo=0)
        return self._vectored("readv", g.spdk_blob_io_readv, False, bufs, off)

    def writev_io_units(self, bufs: Sequence[DmaBuf], offset: int) -> Op[None]:
        """Gather-write ``bufs`` at I/O unit ``offset``."""
        off = integer(offset, "offset", lo=0)
        return self._vectored("writev", g.spdk_blob_io_writev, True, bufs, off)

    def _no_data(self, what: str, fn: Any, offset: int, length: int) -> Op[None]:
        ch = self._start(what, True, offset, length)
        op: Op[None] = Op(what)
        op.keep = (ch, ())
        fn(self._ptr, ch.ptr, offset, length, _bridge.blob_op_cb, _bridge.once(self._done, op))
        return op

    def write_zeroes(self, offset: int, length: int) -> Op[None]:
        """Zero ``length`` bytes at ``offset``."""
        off, n = self._units(offset, "offset", 0), self._units(length, "length", 1)
        return self._no_data("write_zeroes", g.spdk_blob_io_write_zeroes, off, n)

    def unmap(self, offset: int, length: int) -> Op[None]:
        """Unmap ``length`` bytes at ``offset`` (they may then read as zeroes or as before;
        whole unmapped clusters of a thin blob are freed)."""
        off, n = self._units(offset, "offset", 0), self._units(length, "length", 1)
        return self._no_data("unmap", g.spdk_blob_io_unmap, off, n)

    def write_zeroes_io_units(self, offset: int, length: int) -> Op[None]:
        off, n = integer(offset, "offset", lo=0), integer(length, "length", lo=1)
        return self._no_data("write_zeroes", g.spdk_blob_io_write_zeroes, off, n)

    def unmap_io_units(self, offset: int, length: int) -> Op[None]:
        off, n = integer(offset, "offset", lo=0), integer(length, "length", lo=1)
        return self._no_data("unmap", g.spdk_blob_io_unmap, off, n)

    # -- metadata (on the metadata thread) ------------------------------------------------

    def _live(self, what: str) -> Any:
        if self.closed or self._ptr is None:
            raise ValueError(f"{what} on closed blob {self.id}")
        return self._ptr

    async def _md_status(self, what: str, start: Callable[[Any, int], None]) -> None:
        """On the metadata thread: ``start(blob, key)`` and await its status completion."""

        async def here() -> None:
            ptr = self._live(what)
            await self.store.md_op(what, self.id, lambda key: start(ptr, key), also=self.track_md)

        await self.store.on_md(here)

    async def resize(self, num_clusters: int) -> None:
        """Resize to ``num_clusters`` clusters (allocated now unless the blob is thin).
        Growing is persisted by :meth:`sync` or close; shrinking frees the clusters past
        the end and is synced at once: SPDK 26.05 loses a synced size if a thin cluster
        is allocated while a shrink is unsynced (its extent page is rewritten short)."""
        n = integer(num_clusters, "num_clusters", lo=0, hi=2**64 - 1)

        async def here() -> None:
            ptr = self._live("spdk_blob_resize")
            shrink = n < g.spdk_blob_get_num_clusters(ptr)
            synced: list[Op[None]] = []

            def sync_now() -> None:
                # In the resize's completion, so a cancelled caller leaves no unsynced shrink.
                if shrink:
                    op, key = _bridge.status_op("spdk_blob_sync_md", self.id)
                    self.store.track(op)
                    self.track_md(op)
                    g.spdk_blob_sync_md(ptr, _bridge.blob_op_cb, key)
                    synced.append(op)

            await self.store.md_op(
                "spdk_blob_resize",
                self.id,
                lambda key: g.spdk_blob_resize(ptr, n, _bridge.blob_op_cb, key),
                after=sync_now,
                also=self.track_md,
            )
            for op in synced:
                await op

        await self.store.on_md(here)

    async def sync(self) -> None:
        """Persist the metadata (size, xattrs, read-only) now.  Data written before is
        on the device once its write completed; this makes the metadata durable too."""
        await self._md_status(
            "spdk_blob_sync_md", lambda ptr, key: g.spdk_blob_sync_md(ptr, _bridge.blob_op_cb, key)
        )

    async def set_read_only(self) -> None:
        """Make the blob read-only for good, and sync its metadata: SPDK refuses writes
        from the moment that sync completes (and after every load)."""

        async def here() -> None:
            rc = g.spdk_blob_set_read_only(self._live("spdk_blob_set_read_only"))
            if rc:
                raise SpdkError(rc, "spdk_blob_set_read_only", self.id)

        await self.store.on_md(here)
        await self.sync()

    async def set_xattr(self, name: str, value: bytes | str) -> None:
        """Set the xattr ``name`` (a ``str`` value is stored UTF-8); persisted by
        :meth:`sync` or close.  ``ValueError`` if the name is empty or the value longer
        than 65,535 bytes or than a metadata page holds; nothing changes then."""
        key_b, data = xattr_name(name), xattr_value(value)

        async def here() -> None:
            rc = g.spdk_blob_set_xattr(self._live("spdk_blob_set_xattr"), key_b, data, len(data))
            if rc == -errno.ENOMEM:
                raise ValueError(
                    f"blob {self.id}: xattr {name!r} of {len(data)} bytes does not fit in one "
                    f"metadata page ({MAX_DESC_SIZE - XATTR_HEADER} bytes for its name and value)"
                )
            if rc == -errno.EPERM:
                raise PermissionError(f"blob {self.id} has read-only metadata (a snapshot)")
            if rc:
                raise SpdkError(rc, "spdk_blob_set_xattr", self.id)

        await self.store.on_md(here)

    async def remove_xattr(self, name: str) -> None:
        """Remove the xattr ``name``; ``KeyError`` if there is none."""
        key_b = xattr_name(name)

        async def here() -> None:
            rc = g.spdk_blob_remove_xattr(self._live("spdk_blob_remove_xattr"), key_b)
            if rc == -errno.ENOENT:
                raise KeyError(name)
            if rc == -errno.EPERM:
                raise PermissionError(f"blob {self.id} has read-only metadata (a snapshot)")
            if rc:
                raise SpdkError(rc, "spdk_blob_remove_xattr", self.id)

        await self.store.on_md(here)

    def _get_here(self, key_b: bytes) -> bytes | None:
        value = ctypes.c_void_p()
        length = ctypes.c_size_t()
        rc = g.spdk_blob_get_xattr_value(
            self._live("spdk_blob_get_xattr_value"),
            key_b,
            ctypes.byref(value),
            ctypes.byref(length),
        )
        if rc:
            return None
        return ctypes.string_at(value.value or 0, length.value) if length.value else b""

    async def get_xattr(self, name: str) -> bytes:
        """The value of the xattr ``name``; ``KeyError`` if there is none."""
        key_b = xattr_name(name)

        async def here() -> bytes:
            value = self._get_here(key_b)
            if value is None:
                raise KeyError(name)
            return value

        return await self.store.on_md(here)

    async def get_xattr_str(self, name: str) -> str:
        """The value of the xattr ``name`` as UTF-8 text."""
        return (await self.get_xattr(name)).decode()

    async def xattr_names(self) -> list[str]:
        """The names of the blob's xattrs (SPDK's internal ones are not listed)."""

        async def here() -> list[str]:
            return self._names_here()

        return await self.store.on_md(here)

    def _names_here(self) -> list[str]:
        names = ctypes.POINTER(g.struct_spdk_xattr_names)()
        rc = g.spdk_blob_get_xattr_names(
            self._live("spdk_blob_get_xattr_names"), ctypes.byref(names)
        )
        if rc:
            raise SpdkError(rc, "spdk_blob_get_xattr_names", self.id)
        try:
            count = g.spdk_xattr_names_get_count(names)
            return [
                (g.spdk_xattr_names_get_name(names, i) or b"").decode(errors="surrogateescape")
                for i in range(count)
            ]
        finally:
            g.spdk_xattr_names_free(names)

    async def xattrs(self) -> dict[str, bytes]:
        """Every xattr, name to value."""

        async def here() -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for name in self._names_here():
                value = self._get_here(name.encode(errors="surrogateescape"))
                if value is not None:
                    out[name] = value
            return out

        return await self.store.on_md(here)
