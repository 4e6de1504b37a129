"""A blobstore on a bdev: load or make one, create, open, delete, snapshot and clone blobs.

:class:`Blobstore` lives on its *metadata thread*, the SPDK thread that loaded or made
it; SPDK requires every metadata operation to run there.  Each ``async`` method may be
awaited from any spdk_io thread: off the metadata thread it is forwarded there
(:meth:`Blobstore.on_md`) and its result or exception comes back.

Blob I/O goes through a channel per SPDK thread (:meth:`Blobstore.channel`), made on
a thread's first I/O and released when that thread exits or the blobstore unloads.

Unloading (``await bs.unload()``, ``aclose()``, or the metadata thread's release at
Env stop) closes the open blobs (each syncs its metadata), releases the channels, then
unloads; SPDK writes a clean super block, so the next load needs no recovery.  SPDK
completes the unload once every thread's channel is released: another thread releases
its own when its loop runs the blobstore's message (or when it exits), so an unload
waits for threads that are blocked.  Removing the bdev under a blobstore unloads it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, Self, TypeVar

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io._validate import flag, integer
from spdk_io.bdev import Bdev
from spdk_io.blob.handle import Blob, Channel
from spdk_io.blob.ids import BlobId, blob_id
from spdk_io.blob.options import (
    BLOB_CLEAR,
    BlobClearMethod,
    BlobstoreOptions,
    xattr_items,
)
from spdk_io.completion import Ending
from spdk_io.errors import BlobNotFoundError, SpdkError
from spdk_io.loop import Op, spawn
from spdk_io.resource import Resource
from spdk_io.thread import SpdkThread, current_thread

__all__ = ["Blobstore"]

T = TypeVar("T")
_log = logging.getLogger("spdk_io")
#: The most clones a snapshot's listing asks SPDK for at first (it says if more are needed).
_CLONES_GUESS = 16
_BLOB_P = ctypes.POINTER(g.struct_spdk_blob)
# The bdevs this interpreter has a blobstore loaded on (or loading, or unloading): SPDK's
# bs_dev takes no claim, so this is what refuses a second blobstore on the same bdev.
_in_use: set[str] = set()
_in_use_lock = threading.Lock()
#: The type of ``spdk_blob_xattr_opts.get_value`` (an unnamed function pointer type).
_XATTR_GET_VALUE: Any = dict(g.struct_spdk_blob_xattr_opts._fields_)["get_value"]  # type: ignore[arg-type]  # its _fields_ are all pairs


class Blobstore(Resource):
    """A blobstore loaded on a bdev (see the module docstring).

    Make one with ``await Blobstore.init(bdev)`` or ``await Blobstore.load(bdev)``.
    Every method refuses with :class:`~spdk_io.errors.SpdkError` (``ENODEV``) once it
    is unloaded.
    """

    def __init__(self, addr: int, bdev: str, thread: SpdkThread, event_key: int) -> None:
        ptr = ctypes.cast(addr, ctypes.POINTER(g.struct_spdk_blob_store))
        self._ptr: Any = ptr  # struct spdk_blob_store *; None once unload has started
        self.bdev = bdev
        #: The metadata thread: metadata operations run here.
        self.thread = thread
        self._event_key = event_key  # the bdev event registration; forgotten once unloaded
        self.cluster_size: int = g.spdk_bs_get_cluster_size(ptr)
        self.io_unit_size: int = g.spdk_bs_get_io_unit_size(ptr)
        self.page_size: int = g.spdk_bs_get_page_size(ptr)
        self.bstype = bytes(g.spdk_bs_get_bstype(ptr).bstype).rstrip(b"\0").decode(errors="replace")
        # SPDK thread -> its channel.  Written by each thread for its own
        # entry and by unload; the lock makes each read-modify-write whole.
        self._channels: dict[SpdkThread, Channel] = {}
        self._channels_lock = threading.Lock()
        self._closing = 0  # blob closes started and not yet completed
        self._after_closes: list[Callable[[], None]] = []  # run when _closing reaches 0
        # Metadata operations started here: one is in flight until SPDK completes its Op
        # (whatever happens to the awaiting task); unload waits for them.  Pruned as added.
        self._md_ops: list[Op[Any]] = []
        # Finished once SPDK has unloaded the blobstore and released the bdev.
        self._ending = Ending(f"unload blobstore on {bdev}")
        super().__init__(thread)

    # -- making and loading --------------------------------------------------------------

    @classmethod
    async def init(cls, bdev: str | Bdev, options: BlobstoreOptions | None = None) -> Blobstore:
        """Make a new, empty blobstore on ``bdev`` (a name or a :class:`Bdev`); what the
        bdev held is lost.  ``SpdkError`` if the bdev is too small for the layout."""
        options = options if options is not None else BlobstoreOptions()
        if not isinstance(options, BlobstoreOptions):
            raise TypeError(f"options must be BlobstoreOptions, not {type(options).__name__}")
        return await cls._open(bdev, options.to_c(), g.spdk_bs_init, "spdk_bs_init")

    @classmethod
    async def load(cls, bdev: str | Bdev, bstype: str = "") -> Blobstore:
        """Load the blobstore on ``bdev``, replaying SPDK's recovery if it was not
        unloaded cleanly.  A non-empty ``bstype`` must match the stored tag.

        ``SpdkError`` (``EILSEQ``) if the bdev holds no blobstore or its recovery found
        invalid metadata, (``ENXIO``) if it holds one of another type.
        """
        opts = BlobstoreOptions(bstype=bstype).to_c()  # SPDK's defaults; the layout is read
        return await cls._open(bdev, opts, g.spdk_bs_load, "spdk_bs_load")

    @classmethod
    async def _open(cls, bdev: str | Bdev, opts: Any, start: Any, what: str) -> Blobstore:
        name = bdev.name if isinstance(bdev, Bdev) else bdev
        if not isinstance(name, str) or not name:
            raise TypeError(f"bdev must be a bdev name or a Bdev, not {bdev!r}")
        thread = current_thread()
        with _in_use_lock:
            if name in _in_use:
                detail = "a blobstore is loaded on this bdev: unload it first"
                raise SpdkError(errno.EBUSY, what, name, detail)
            _in_use.add(name)
        made: list[Blobstore] = []  # the blobstore, once loaded: a hot-remove unloads it
        event_key = _bridge.persistent(lambda event: _on_bdev_event(name, event, made))
        dev = ctypes.POINTER(g.struct_spdk_bs_dev)()
        rc = g.spdk_bdev_create_bs_dev_ext(
            name.encode(), _bridge.bdev_event_cb, event_key, ctypes.byref(dev)
        )
        if rc:
            _release_bdev(name)
            _bridge.forget(event_key)
            if rc == -errno.ENODEV:
                raise LookupError(f"no bdev named {name!r}")
            raise SpdkError(-rc, "spdk_bdev_create_bs_dev_ext", name)
        op: Op[Blobstore] = Op(f"{what}({name})")
        op.keep = opts

        # The blobstore is wrapped in the callback, so it is owned (and unloaded at the
        # thread's release) even if the awaiting task is cancelled.
        def done(op: Op[Blobstore], status: int, ptr: Any) -> None:
            if status:
                _release_bdev(name)
                _bridge.forget(event_key)  # SPDK destroys the bs_dev itself on failure
                op.set_exception(SpdkError(status, what, name, _load_detail(-abs(status))))
            else:
                made.append(cls(ptr, name, thread, event_key))
                op.set_result(made[0])

        key = _bridge.once(done, op)
        start(dev, ctypes.byref(opts), _bridge.bs_handle_cb, key)
        return await op

    def __repr__(self) -> str:
        return f"<Blobstore on {self.bdev}{' unloaded' if self.closed else ''}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unload()

    # -- the metadata thread -------------------------------------------------------------

    def live(self, what: str) -> Any:
        """The ``struct spdk_blob_store *``; ``SpdkError`` (``ENODEV``) once unloading."""
        if self.closed or self._ptr is None:
            raise SpdkError(errno.ENODEV, what, self.bdev, "the blobstore is unloaded")
        return self._ptr

    async def on_md(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """``await fn()`` on the metadata thread: here if this is it, else forwarded."""
        if current_thread() is self.thread:
            return await fn()
        return await self.thread.handle().call(fn)

    async def md_op(
        self,
        what: str,
        obj: object,
        start: Callable[[int], None],
        after: Callable[[], None] | None = None,
        keep: object = None,
        also: Callable[[Op[Any]], object] | None = None,
    ) -> Any:
        """On the metadata thread: start one SPDK metadata operation, ``start(key)``,
        and await its completion: a status, or an id (with ``blob_id_cb``) and a status.

        ``after()`` runs in the completion; ``keep`` (what SPDK reads by address) lives
        until then, whatever happens to the awaiting task.  The operation counts as in
        flight (:meth:`track`, and ``also(op)``) until SPDK completes it: unload waits.
        ``ENOENT`` for a blob id becomes :class:`~spdk_io.errors.BlobNotFoundError`,
        ``EPERM`` ``PermissionError``."""
        self.thread.check_owner()
        op, key = _bridge.status_op(what, obj, after)
        op.keep = keep
        try:
            start(key)
        except BaseException:
            _bridge.forget(key)  # SPDK took nothing: nothing will call back
            if after is not None:
                after()
            raise
        self.track(op)
        if also is not None:
            also(op)
        try:
            return await op
        except SpdkError as exc:
            if exc.errno == errno.ENOENT and isinstance(obj, BlobId):
                raise BlobNotFoundError(what, obj) from None
            if exc.errno == errno.EPERM:
                raise PermissionError(f"{what}({obj}): the blob is read-only") from None
            raise

    def track(self, op: Op[T]) -> Op[T]:
        """Count ``op``, a metadata operation SPDK has started, as in flight until it
        completes: unload waits for it.  Returns ``op``."""
        self._md_ops = [o for o in self._md_ops if not o.done()]
        self._md_ops.append(op)
        return op

    @property
    def md_inflight(self) -> int:
        """Metadata operations SPDK has not completed yet."""
        return sum(1 for o in self._md_ops if not o.done())

    # -- properties ----------------------------------------------------------------------

    @property
    def total_clusters(self) -> int:
        """Clusters for data (the metadata's are not counted)."""
        return int(g.spdk_bs_total_data_cluster_count(self.live("total_clusters")))

    @property
    def free_clusters(self) -> int:
        return int(g.spdk_bs_free_cluster_count(self.live("free_clusters")))

    @property
    def unloaded(self) -> bool:
        """Whether SPDK has unloaded the blobstore (some time after ``close()``)."""
        return self._ending.done()

    # -- channels ------------------------------------------------------------------------

    def channel(self) -> Channel:
        """The current SPDK thread's channel to this blobstore, made on first use."""
        thread = current_thread()
        ch = self._channels.get(thread)
        if ch is not None:
            return ch
        with self._channels_lock:  # unload takes the pointer under it: none is made after
            ch = Channel(
                self.live("spdk_bs_alloc_io_channel"), thread, self.bdev, self._channel_closed
            )
            self._channels[thread] = ch
        return ch

    def _channel_closed(self, ch: Channel) -> None:
        with self._channels_lock:
            if self._channels.get(ch.thread) is ch:
                del self._channels[ch.thread]

    def _release_channels(self) -> None:
        """Release every thread's channel: this thread's now (or once its copy operations
        end), the others' by a message (a thread that exited has released its own)."""
        with self._channels_lock:
            channels = list(self._channels.values())
        for ch in channels:
            if ch.thread is self.thread:
                ch.release_soon()
            else:
                # A thread that is exiting closes its resources itself.
                with contextlib.suppress(SpdkError):
                    ch.thread.handle().send(ch.release_soon)

    # -- blobs ---------------------------------------------------------------------------

    async def create_blob(
        self,
        num_clusters: int = 0,
        *,
        thin: bool = False,
        xattrs: Mapping[str, bytes | str] | None = None,
        clear_method: BlobClearMethod = "default",
    ) -> BlobId:
        """Create a blob of ``num_clusters`` clusters (allocated now unless ``thin``),
        with initial ``xattrs``; return its id."""
        n = integer(num_clusters, "num_clusters", lo=0, hi=2**64 - 1)
        flag(thin, "thin")
        items = xattr_items(xattrs)
        if clear_method not in BLOB_CLEAR:
            raise ValueError(f"clear_method must be one of {', '.join(BLOB_CLEAR)}")

        async def here() -> BlobId:
            opts = g.struct_spdk_blob_opts()
            g.spdk_blob_opts_init(ctypes.byref(opts), ctypes.sizeof(opts))
            opts.num_clusters = n
            opts.thin_provision = thin
            opts.clear_method = BLOB_CLEAR[clear_method]
            source = _XattrSource(items)
            opts.xattrs = source.opts
            ptr = self.live("spdk_bs_create_blob_ext")
            raw = await self.md_op(
                "spdk_bs_create_blob_ext",
                self.bdev,
                lambda key: g.spdk_bs_create_blob_ext(
                    ptr, ctypes.byref(opts), _bridge.blob_id_cb, key
                ),
                after=source.release,
                keep=(source, opts),
            )
            return BlobId(raw)

        return await self.on_md(here)

    async def open_blob(self, blob: BlobId) -> Blob:
        """Open the blob ``blob``; close the :class:`Blob` (``async with``) when done.
        :class:`~spdk_io.errors.BlobNotFoundError` if there is none."""
        bid = blob_id(blob)

        async def here() -> Blob:
            ptr = self.live("spdk_bs_open_blob")
            op: Op[Blob] = Op(f"spdk_bs_open_blob({bid})")

            # Wrapped in the callback: an open blob always has its Blob (closed at unload).
            def done(op: Op[Blob], status: int, handle: Any) -> None:
                if status == -errno.ENOENT:
                    op.set_exception(BlobNotFoundError("spdk_bs_open_blob", bid))
                elif status:
                    op.set_exception(SpdkError(status, "spdk_bs_open_blob", bid))
                else:
                    op.set_result(Blob(self, handle, bid))

            key = _bridge.once(done, op)
            g.spdk_bs_open_blob(ptr, int(bid), _bridge.blob_handle_cb, key)
            return await self.track(op)

        return await self.on_md(here)

    def open_blobs(self) -> list[Blob]:
        """The :class:`Blob` handles open now, oldest first."""
        return [c for c in self._children if isinstance(c, Blob)]

    async def delete_blob(self, blob: BlobId) -> None:
        """Delete the blob ``blob`` and free its clusters.

        Refused (``SpdkError`` ``EBUSY``, nothing deleted) while it is open, or if it is
        a snapshot with more than one clone.
        """
        bid = blob_id(blob)

        async def here() -> None:
            self.live("spdk_bs_delete_blob")
            open_ids = [b for b in self.open_blobs() if b.id == bid]
            if open_ids:
                raise SpdkError(errno.EBUSY, "delete blob", bid, "it is open: close it first")
            clones = self._clones_of(bid)
            if len(clones) > 1:
                raise SpdkError(
                    errno.EBUSY,
                    "delete blob",
                    bid,
                    f"it is a snapshot with {len(clones)} clones "
                    f"({', '.join(map(str, clones))}); delete or inflate them first",
                )
            if clones:  # a snapshot with one clone: SPDK hands its clusters to the clone
                size, allocated = await self._sizes(bid, "delete blob")
                clone_size, clone_allocated = await self._sizes(clones[0], "delete blob")
                if allocated and not clone_allocated and clone_size != size:
                    raise SpdkError(
                        errno.ENOTSUP,
                        "delete blob",
                        bid,
                        f"SPDK 26.05 corrupts the one clone {clones[0]} (of {clone_size} "
                        f"clusters, none its own) when its snapshot of {size} clusters is "
                        "deleted: inflate or decouple the clone first",
                    )
            ptr = self.live("spdk_bs_delete_blob")  # after the awaits: not unloading now
            await self.md_op(
                "spdk_bs_delete_blob",
                bid,
                lambda key: g.spdk_bs_delete_blob(ptr, int(bid), _bridge.blob_op_cb, key),
            )

        await self.on_md(here)

    async def blob_ids(self) -> list[BlobId]:
        """Every blob's id (snapshots and clones too), in SPDK's order."""

        async def here() -> list[BlobId]:
            ptr = self.live("spdk_bs_iter_first")
            op: Op[list[BlobId]] = Op(f"iterate blobs on {self.bdev}")
            found: list[BlobId] = []

            # The whole walk runs in callbacks: SPDK opens each blob, and iter_next closes
            # it; nothing is left open whatever happens to the awaiting task.
            def step(op: Op[list[BlobId]], status: int, handle: Any) -> None:
                if status == -errno.ENOENT or (status == 0 and not handle):
                    op.set_result(found)
                elif status:
                    op.set_exception(SpdkError(status, "spdk_bs_iter_next", self.bdev))
                else:
                    handle = ctypes.cast(handle, _BLOB_P)
                    found.append(BlobId(g.spdk_blob_get_id(handle)))
                    g.spdk_bs_iter_next(ptr, handle, _bridge.blob_handle_cb, _bridge.once(step, op))

            g.spdk_bs_iter_first(ptr, _bridge.blob_handle_cb, _bridge.once(step, op))
            return await self.track(op)

        return await self.on_md(here)

    async def blobs(self) -> AsyncIterator[BlobId]:
        """``async for blob_id in bs.blobs()``: every blob's id (see :meth:`blob_ids`)."""
        for bid in await self.blob_ids():
            yield bid

    # -- the super blob ------------------------------------------------------------------

    async def get_super(self) -> BlobId | None:
        """The super blob's id (an application's root), or ``None`` if none is set."""

        async def here() -> BlobId | None:
            ptr = self.live("spdk_bs_get_super")
            try:
                raw = await self.md_op(
                    "spdk_bs_get_super",
                    self.bdev,
                    lambda key: g.spdk_bs_get_super(ptr, _bridge.blob_id_cb, key),
                )
            except SpdkError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise
            return BlobId(raw)

        return await self.on_md(here)

    async def set_super(self, blob: BlobId) -> None:
        """Make ``blob`` the super blob (persisted at once)."""
        bid = blob_id(blob)

        async def here() -> None:
            await self._sizes(bid, "spdk_bs_set_super")
            ptr = self.live("spdk_bs_set_super")
            await self.md_op(
                "spdk_bs_set_super",
                bid,
                lambda key: g.spdk_bs_set_super(ptr, int(bid), _bridge.bs_op_cb, key),
            )

        await self.on_md(here)

    # -- snapshots and clones ------------------------------------------------------------

    async def create_snapshot(
        self, blob: BlobId, *, xattrs: Mapping[str, bytes | str] | None = None
    ) -> BlobId:
        """Snapshot ``blob``: a new read-only blob holding its clusters now; ``blob``
        becomes a thin clone of it.  Returns the snapshot's id."""
        what = "spdk_bs_create_snapshot"
        return await self._derive(blob, xattrs, g.spdk_bs_create_snapshot, what, sync_first=True)

    async def create_clone(
        self, snapshot: BlobId, *, xattrs: Mapping[str, bytes | str] | None = None
    ) -> BlobId:
        """A new writable, thin blob over the read-only ``snapshot``; returns its id."""
        return await self._derive(snapshot, xattrs, g.spdk_bs_create_clone, "spdk_bs_create_clone")

    async def _derive(
        self,
        blob: BlobId,
        xattrs: Mapping[str, bytes | str] | None,
        start: Any,
        what: str,
        sync_first: bool = False,
    ) -> BlobId:
        bid = blob_id(blob)
        items = xattr_items(xattrs)

        async def here() -> BlobId:
            if sync_first:
                # SPDK (v26.05) crashes snapshotting an open blob that shrank since its
                # last sync: bs_snapshot_swap_cluster_maps swaps the cluster and extent
                # page arrays but not their sizes, which only a sync trims to the blob's
                # size.  The snapshot syncs the blob anyway; syncing first changes nothing.
                for b in self.open_blobs():
                    if b.id == bid and not b.closed:
                        await b.sync()
                        break
            ptr = self.live(what)
            source = _XattrSource(items)  # SPDK reads it until the operation completes
            raw = await self.md_op(
                what,
                bid,
                lambda key: start(
                    ptr, int(bid), ctypes.byref(source.opts), _bridge.blob_id_cb, key
                ),
                after=source.release,
                keep=source,
            )
            return BlobId(raw)

        return await self.on_md(here)

    async def inflate(self, blob: BlobId) -> None:
        """Allocate every cluster of ``blob`` and copy its parents' data in: it no longer
        depends on any snapshot (nor is thin)."""
        await self._copy_op(blob, g.spdk_bs_inflate_blob, "spdk_bs_inflate_blob")

    async def decouple_parent(self, blob: BlobId) -> None:
        """Copy in the clusters ``blob`` reads from its parent snapshot, making it depend
        on the parent's parent instead (it stays thin).  ``SpdkError`` (``EINVAL``) if it
        has no parent; (``ENOTSUP``) if it is larger than its parent, which SPDK 26.05
        reads past the end of (a crash): inflate it instead."""
        bid = blob_id(blob)

        async def check() -> None:
            parent = self.parent_of(bid)
            if parent is None:
                return  # SPDK refuses it (EINVAL)
            size, _ = await self._sizes(bid, "spdk_bs_blob_decouple_parent")
            parent_size, _ = await self._sizes(parent, "spdk_bs_blob_decouple_parent")
            if size > parent_size:
                raise SpdkError(
                    errno.ENOTSUP,
                    "spdk_bs_blob_decouple_parent",
                    bid,
                    f"SPDK 26.05 reads past the end of the parent {parent} ({parent_size} "
                    f"clusters) decoupling a blob of {size}: inflate it instead",
                )

        what = "spdk_bs_blob_decouple_parent"
        await self._copy_op(bid, g.spdk_bs_blob_decouple_parent, what, check)

    async def _copy_op(
        self,
        blob: BlobId,
        start: Any,
        what: str,
        check: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """Inflate or decouple: ``await check()`` first, then the copy, in one call on
        the metadata thread."""
        bid = blob_id(blob)

        async def here() -> None:
            if check is not None:
                await check()
            ptr = self.live(what)
            ch = self.channel()
            ch.inflight += 1  # the copy does I/O on this channel, until SPDK completes it

            def after() -> None:
                ch.inflight -= 1

            await self.md_op(
                what,
                bid,
                lambda key: start(ptr, ch.ptr, int(bid), _bridge.blob_op_cb, key),
                after=after,
            )

        await self.on_md(here)

    async def clones(self, snapshot: BlobId) -> list[BlobId]:
        """The clones of ``snapshot`` (empty for a blob that is not a snapshot)."""
        bid = blob_id(snapshot)

        async def here() -> list[BlobId]:
            await self._sizes(bid, "spdk_blob_get_clones")
            return self._clones_of(bid)

        return await self.on_md(here)

    async def get_parent(self, blob: BlobId) -> BlobId | None:
        """The snapshot ``blob`` is a clone of, or ``None``."""
        bid = blob_id(blob)

        async def here() -> BlobId | None:
            return self.parent_of(bid)

        return await self.on_md(here)

    def parent_of(self, bid: BlobId) -> BlobId | None:
        """:meth:`get_parent`, on the metadata thread."""
        self.thread.check_owner()
        ptr = self.live("spdk_blob_get_parent_snapshot")
        raw = g.spdk_blob_get_parent_snapshot(ptr, int(bid))
        none = (g.SPDK_BLOBID_INVALID, g.SPDK_BLOBID_EXTERNAL_SNAPSHOT)
        return None if raw in none else BlobId(raw)

    def _clones_of(self, bid: BlobId) -> list[BlobId]:
        ptr = self.live("spdk_blob_get_clones")
        size = _CLONES_GUESS
        while True:
            ids = (g.spdk_blob_id * size)()
            count = ctypes.c_size_t(size)
            rc = g.spdk_blob_get_clones(ptr, int(bid), ids, ctypes.byref(count))
            if rc == -errno.ENOMEM and count.value > size:
                size = count.value
                continue
            if rc:
                raise SpdkError(rc, "spdk_blob_get_clones", bid)
            return [BlobId(ids[i]) for i in range(count.value)]

    async def _sizes(self, bid: BlobId, what: str) -> tuple[int, int]:
        """``(num_clusters, allocated_clusters)`` of the blob ``bid``;
        :class:`~spdk_io.errors.BlobNotFoundError` if there is none.  (Opening it is
        SPDK's only test: a blob not open already is opened and closed, in callbacks, so
        nothing stays open whatever happens to the awaiting task.)"""
        for b in self.open_blobs():
            if b.id == bid:
                return b.num_clusters, b.allocated_clusters
        ptr = self.live(what)
        op: Op[tuple[int, int]] = Op(f"{what}({bid})")
        sizes: list[int] = []

        def closed(_op: object, status: int) -> None:
            op.set_result((sizes[0], sizes[1]))

        def opened(op: Op[tuple[int, int]], status: int, handle: Any) -> None:
            if status == -errno.ENOENT:
                op.set_exception(BlobNotFoundError(what, bid))
            elif status:
                op.set_exception(SpdkError(status, what, bid))
            else:
                handle = ctypes.cast(handle, _BLOB_P)
                sizes.append(g.spdk_blob_get_num_clusters(handle))
                sizes.append(g.spdk_blob_get_num_allocated_clusters(handle))
                g.spdk_blob_close(handle, _bridge.blob_op_cb, _bridge.once(closed, op))

        g.spdk_bs_open_blob(ptr, int(bid), _bridge.blob_handle_cb, _bridge.once(opened, op))
        return await self.track(op)

    # -- unload --------------------------------------------------------------------------

    def blob_closing(self) -> None:
        """A blob of this store started closing (:class:`Blob` calls it)."""
        self._closing += 1

    def blob_closed(self) -> None:
        """A blob close completed: once none is left, run what waited for that."""
        self._closing -= 1
        if not self._closing:
            waiting, self._after_closes = self._after_closes, []
            for fn in waiting:
                fn()

    def close(self) -> None:
        """Start unloading: close the open blobs (under their gates, so no thread starts
        I/O on one meanwhile), then release the channels and unload once the closes
        complete.  Refuses, closing nothing, while
        any blob has I/O in flight or a metadata operation runs (``BlockingIOError``)."""
        if self.closed:
            return
        self.thread.check_owner()
        blobs = self.open_blobs()
        with contextlib.ExitStack() as gates:  # no thread starts blob I/O meanwhile
            for blob in blobs:
                gates.enter_context(blob.gate)
            err = self._blocker()
            if err is not None:
                raise err
            for blob in reversed(blobs):
                blob.close()
            super().close()

    def _refusal(self) -> BaseException | None:
        n = self.md_inflight
        if n:
            return BlockingIOError(f"blobstore on {self.bdev}: {n} metadata operations in flight")
        return None

    def _release(self) -> None:
        """After the open blobs have started closing: release the channels, then unload
        once every close has completed (SPDK refuses to unload with blobs open)."""
        with self._channels_lock:
            ptr, self._ptr = self._ptr, None
        self._release_channels()
        ending, name, event_key = self._ending, self.bdev, self._event_key

        def unloaded(_op: object, status: int) -> None:
            _release_bdev(name)
            _bridge.forget(event_key)
            ending.finish(SpdkError(status, "spdk_bs_unload", name) if status else None)

        def unload() -> None:
            g.spdk_bs_unload(ptr, _bridge.bs_op_cb, _bridge.once(unloaded))

        if self._closing:
            self._after_closes.append(unload)
        else:
            unload()

    def _abandoned(self) -> None:
        _bridge.forget(self._event_key)
        _release_bdev(self.bdev)

    async def aclose(self) -> None:
        """Unload (from any thread): close the open blobs once their I/O is done, then
        unload and wait until SPDK has finished (see :meth:`unload`)."""
        if self.closed and self._ending.done():
            return
        await self.on_md(self._unload_here)

    async def _unload_here(self) -> None:
        for blob in self.open_blobs():
            await blob.aclose()
        await super().aclose()
        await self._ending.wait()

    async def unload(self, *, close_blobs: bool = True) -> None:
        """Close the open blobs (each syncs its metadata), release the channels, and
        unload cleanly.  With ``close_blobs=False`` open blobs are an error instead:
        ``BlockingIOError`` naming their ids, and nothing changes."""
        if not close_blobs:
            open_ids = sorted({b.id for b in self.open_blobs()})
            if open_ids:
                raise BlockingIOError(
                    f"blobstore on {self.bdev} has open blobs: {', '.join(map(str, open_ids))}"
                )
        await self.aclose()


def _release_bdev(name: str) -> None:
    with _in_use_lock:
        _in_use.discard(name)


def _on_bdev_event(name: str, event: int, made: list[Blobstore]) -> None:
    """The bdev under a blobstore is going away: unload (SPDK removes the bdev once the
    blobstore has let go of it; open blobs are closed, their metadata synced, first)."""
    if event == g.SPDK_BDEV_EVENT_REMOVE and made and not made[0].closed:
        _log.warning("bdev %s under a blobstore is being removed: unloading the blobstore", name)
        spawn(made[0].aclose(), f"unload blobstore on removed bdev {name}")


def _load_detail(rc: int) -> str | None:
    return {
        -errno.EILSEQ: "the bdev holds no blobstore (bad super block), or its metadata "
        "failed the checks of recovery after an unclean shutdown",
        -errno.ENXIO: "the blobstore on the bdev is of another type (bstype)",
        -errno.ENOSPC: "the bdev is too small for this blobstore layout",
        -errno.ENOMEM: "the bdev is too small for the metadata pages of this layout "
        "(num_md_pages, by default one per cluster), or out of memory",
        -errno.EINVAL: "invalid blobstore options for this bdev (see SPDK's log)",
    }.get(rc)


class _XattrSource:
    """The initial xattrs of a new blob, snapshot or clone, as SPDK reads them: a
    ``struct spdk_blob_xattr_opts`` whose ``get_value`` callback serves the values.

    SPDK may ask for values at any point until the operation completes (snapshots and
    clones read them after an asynchronous open), so the operation's ``Op`` keeps it
    (``md_op(keep=...)``) and its completion calls :meth:`release`.
    """

    def __init__(self, items: dict[bytes, bytes]) -> None:
        self._names = (ctypes.c_char_p * max(len(items), 1))(*items)
        self._values = {k: ctypes.create_string_buffer(v, len(v)) for k, v in items.items()}
        self._key = _bridge.persistent(self._value)
        self.opts = g.struct_spdk_blob_xattr_opts()
        self.opts.count = len(items)
        self.opts.names = ctypes.cast(self._names, ctypes.POINTER(ctypes.c_char_p))
        self.opts.ctx = self._key
        self.opts.get_value = ctypes.cast(_bridge.xattr_value_thunk, _XATTR_GET_VALUE)

    def _value(self, name: bytes) -> tuple[int, int]:
        buf = self._values.get(name)
        if buf is None:
            return 0, 0
        return ctypes.addressof(buf), len(buf)

    def release(self) -> None:
        """The operation completed: SPDK asks for no more values."""
        _bridge.forget(self._key)
