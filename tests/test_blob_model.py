"""A model of the blobstore: random sequences of operations checked against plain Python.

Each example makes a fresh malloc bdev and a blobstore on it, then drives the
blobstore and a model (per blob: size in clusters, the clusters it has allocated and
their bytes, xattrs, thin / read-only flags, parent snapshot) through random creates,
resizes, writes, reads, xattr sets and removes, snapshots, clones, inflates,
decouples, deletes, syncs, opens and closes, and unload-then-reload.  They must
always agree: blob ids, sizes, flags, relations, allocated clusters, xattrs, bytes.
Blobs stay open across steps at random (metadata operations then go through the
open handle) or are opened for one operation.

A blob reads each cluster from itself if it has it allocated, else from its parent
snapshot (zeroes past the parent's end), else zeroes: the model computes content so,
as SPDK does.  What that means, checked here: snapshot, clone, inflate, decouple and
the delete of a snapshot with one clone keep a blob's content; a thin blob grown
again reads its snapshot's data in the new clusters, not zeroes; and after a
decouple or a snapshot's delete, clusters past the removed parent's end (zeroes
before) read the grandparent's data.

Every misuse (I/O past the end or unaligned, a write or metadata change on a
snapshot, a clone of a writable blob, a snapshot of a snapshot, decoupling a blob
with no parent, deleting an open blob or a snapshot with several clones, opening a
deleted blob, an empty or oversized initial xattr) must raise the predicted
exception and change nothing.

Two SPDK 26.05 bugs, which spdk_io refuses to walk into (``ENOTSUP``):
* ``spdk_bs_blob_decouple_parent`` of a blob larger than its parent reads the
  parent's cluster map past its end (``bs_cluster_needs_allocation``); a parent of
  0 clusters has none: SIGSEGV.
* ``spdk_bs_delete_blob`` of a snapshot (with allocated clusters) whose one clone
  is of another size and has no clusters of its own copies the snapshot's extent
  page whole into the clone (``delete_snapshot_update_extent_pages``): the clone
  takes the snapshot's size, or fails to open (``EINVAL``) for good.

Why the model may say "zeroes" for every cluster newly allocated (a thick create or
grow, the rest of a thin cluster on its first write, an inflated empty cluster):
SPDK does not zero a cluster when it allocates it, but the malloc bdev starts zeroed
(``spdk_zmalloc``), and every cluster a blob frees is cleared with the blob's clear
method (``bs_batch_clear_dev``: the default is unmap, which malloc implements as a
zero fill).  The blobs here use the default clear method, so a free cluster always
reads zeroes.  (With ``clear_method="none"`` the model would have to treat such
bytes as unknown.)

Budget: ``SPDK_IO_MODEL_EXAMPLES`` (default 25) examples of up to
``SPDK_IO_MODEL_STEPS`` (default 30) steps.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, Verbosity, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from spdk_io import bdev_modules as bm
from spdk_io.blob import Blob, BlobId, Blobstore, BlobstoreOptions
from spdk_io.dma import DmaBuf
from spdk_io.errors import BlobNotFoundError, SpdkError

T = TypeVar("T")

EXAMPLES = int(os.environ.get("SPDK_IO_MODEL_EXAMPLES", "25"))
STEPS = int(os.environ.get("SPDK_IO_MODEL_STEPS", "30"))
VERBOSE = bool(os.environ.get("SPDK_IO_MODEL_VERBOSE"))

CLUSTER = 16 * 1024
BLOCK = 512
BDEV_BLOCKS = 4 * 1024 * 1024 // BLOCK  # 4 MiB: about 190 data clusters
MAX_CLUSTERS = 6  # per blob
MAX_BLOBS = 8
XATTR_NAMES = ["a", "b", "name", "long_name"]
_names = itertools.count()

xattr_values = st.binary(max_size=12)
xattr_dicts = st.dictionaries(
    st.sampled_from(XATTR_NAMES), st.binary(min_size=1, max_size=12), max_size=2
)


@dataclass
class MBlob:
    """One blob as the model sees it."""

    clusters: int
    own: bytearray  # what its own allocated clusters hold (the rest is unused)
    xattrs: dict[str, bytes]
    thin: bool
    read_only: bool = False
    parent: BlobId | None = None
    alloc: set[int] = field(default_factory=set)  # its own allocated clusters
    #: SPDK keeps a "snapshot entry" for a blob once it has had a clone, until the
    #: blob is deleted or the store reloaded (``spdk_blob_is_snapshot`` reports it).
    entry: bool = False


def _outcome(expected: type[BaseException] | None, err: int | None = None) -> str:
    """The event name of a rule's expected outcome."""
    rule_name = sys._getframe(1).f_code.co_name
    name = "ok" if expected is None else expected.__name__
    if err is not None:
        name += f"({errno.errorcode[err]})"
    event(f"{rule_name}: {name}")
    return name


class BlobModel(RuleBasedStateMachine):
    env: Any = None  # the session's Env, set by the test

    def __init__(self) -> None:
        super().__init__()
        self.bs: Blobstore | None = None
        self.bdev = ""
        self.model: dict[BlobId, MBlob] = {}
        self.open: dict[BlobId, Blob] = {}
        self.deleted: list[BlobId] = []
        self.buf: DmaBuf | None = None
        self.unit = BLOCK

    # -- plumbing --------------------------------------------------------------------

    def run(self, aw: Awaitable[T]) -> T:
        result: T = self.env.block_on(aw)
        return result

    @property
    def store(self) -> Blobstore:
        assert self.bs is not None
        return self.bs

    def expect(
        self,
        expected: type[BaseException],
        coro: Coroutine[Any, Any, Any],
        err: int | None = None,
        *,
        blob: BlobId | None = None,
    ) -> None:
        """``coro`` must raise ``expected`` (with errno ``err``), and change nothing: the
        model stays as it is, and ``blob`` must still agree with it in every respect (the
        invariant checks the ids and relations of all)."""
        try:
            self.run(coro)
        except expected as exc:
            # a read-only refusal may be a PermissionError without an errno
            if err is not None and not (err == errno.EPERM and isinstance(exc, PermissionError)):
                assert getattr(exc, "errno", None) == err, f"expected errno {err}, got {exc!r}"
        else:
            raise AssertionError(f"expected {expected.__name__}, nothing was raised")
        if blob is not None and blob in self.model:
            self.check_blob(blob)

    def content(self, bid: BlobId) -> bytearray:
        """What reading the whole blob returns: each cluster from the blob if it has it
        allocated, else from its parent snapshot (zeroes past the parent's end), else
        zeroes (SPDK's back device: ``blob_bs_dev`` over the parent, or the zeroes device)."""
        m = self.model[bid]
        out = bytearray(m.clusters * CLUSTER)
        parent = self.content(m.parent) if m.parent is not None else bytearray()
        for c in range(m.clusters):
            cl = slice(c * CLUSTER, (c + 1) * CLUSTER)
            if c in m.alloc:
                out[cl] = m.own[cl]
            elif c * CLUSTER < len(parent):
                out[cl] = parent[cl]
        return out

    def take(self, bid: BlobId, clusters: set[int], source: bytearray) -> None:
        """Blob ``bid`` allocates ``clusters`` (not allocated yet), filled from ``source``."""
        m = self.model[bid]
        for c in clusters - m.alloc:
            cl = slice(c * CLUSTER, (c + 1) * CLUSTER)
            m.own[cl] = source[cl]
        m.alloc |= clusters

    async def with_blob(self, bid: BlobId, fn: Callable[[Blob], Awaitable[T]]) -> T:
        """``fn(blob)`` on the open handle, or on one opened (and closed) for it."""
        blob = self.open.get(bid)
        if blob is not None:
            return await fn(blob)
        blob = await self.store.open_blob(bid)
        try:
            return await fn(blob)
        finally:
            await blob.aclose()

    def forget_deleted(self, bid: BlobId) -> None:
        """SPDK reuses the id (metadata page) of a deleted blob."""
        if bid in self.deleted:
            self.deleted.remove(bid)

    def kept(self, bid: BlobId, before: bytearray, upto: int, what: str) -> None:
        """Removing a blob's parent (decouple, delete of the snapshot) keeps its content,
        except (SPDK's semantics, noted) past the removed parent's end (``upto``
        clusters): those clusters read zeroes before and the grandparent's data after."""
        after = self.content(bid)
        assert after[: upto * CLUSTER] == before[: upto * CLUSTER]
        if after != before:
            event(f"{what}: the grandparent's data shows past the removed parent's end")

    def clones_of(self, bid: BlobId) -> set[BlobId]:
        return {k for k, m in self.model.items() if m.parent == bid}

    def pick(self, data: st.DataObject, among: list[BlobId] | None = None) -> BlobId:
        ids = sorted(self.model) if among is None else among
        return ids[data.draw(st.integers(0, len(ids) - 1))]

    def prefer(self, data: st.DataObject, good: Callable[[MBlob], bool]) -> BlobId:
        """A blob, mostly (3 times in 4) one for which ``good`` holds, if there is one."""
        ok = sorted(k for k, m in self.model.items() if good(m))
        if ok and (len(ok) == len(self.model) or data.draw(st.integers(0, 3))):
            return self.pick(data, ok)
        return self.pick(data, sorted(set(self.model) - set(ok)))

    def writable(self) -> list[BlobId]:
        return sorted(k for k, m in self.model.items() if not m.read_only and m.clusters)

    def snapshots(self) -> list[BlobId]:
        return sorted(k for k, m in self.model.items() if m.read_only)

    def span(self, data: st.DataObject, bid: BlobId) -> tuple[int, int]:
        """An I/O-unit-aligned (offset, length) in bytes inside the blob."""
        units = self.model[bid].clusters * CLUSTER // self.unit
        off = data.draw(st.integers(0, units - 1))
        n = data.draw(st.integers(1, min(units - off, 2 * CLUSTER // self.unit)))
        return off * self.unit, n * self.unit

    # -- lifecycle -------------------------------------------------------------------

    @initialize()
    def make_store(self) -> None:
        self.bdev = f"BlobModel{os.getpid()}_{next(_names)}"

        async def go() -> Blobstore:
            await bm.create_malloc(self.bdev, BDEV_BLOCKS, BLOCK)
            return await Blobstore.init(self.bdev, BlobstoreOptions(cluster_size=CLUSTER))

        self.bs = self.run(go())
        self.unit = self.store.io_unit_size
        self.buf = DmaBuf.alloc(MAX_CLUSTERS * CLUSTER)

    def teardown(self) -> None:
        async def go() -> None:
            try:
                if self.bs is not None:
                    await self.bs.unload()
            finally:
                self.open.clear()
                if self.bdev:
                    await bm.delete_malloc(self.bdev)

        try:
            self.run(go())
        finally:
            if self.buf is not None:
                self.buf.free()

    # -- blobs -----------------------------------------------------------------------

    @precondition(lambda self: len(self.model) < MAX_BLOBS)
    @rule(
        clusters=st.integers(0, MAX_CLUSTERS),
        thin=st.booleans(),
        xattrs=xattr_dicts,
        keep_open=st.booleans(),
    )
    def create(self, clusters: int, thin: bool, xattrs: dict[str, bytes], keep_open: bool) -> None:
        _outcome(None)
        bid = self.run(self.store.create_blob(clusters, thin=thin, xattrs=xattrs))
        assert bid not in self.model
        self.forget_deleted(bid)
        self.model[bid] = MBlob(
            clusters,
            bytearray(clusters * CLUSTER),
            dict(xattrs),
            thin,
            alloc=set() if thin else set(range(clusters)),
        )
        if keep_open:
            self.open[bid] = self.run(self.store.open_blob(bid))
        self.check_blob(bid)

    @precondition(lambda self: len(self.open) < len(self.model))
    @rule(data=st.data())
    def open_blob(self, data: st.DataObject) -> None:
        bid = self.pick(data, sorted(set(self.model) - set(self.open)))
        _outcome(None)
        self.open[bid] = self.run(self.store.open_blob(bid))
        self.check_blob(bid)

    @precondition(lambda self: self.open)
    @rule(data=st.data())
    def close_blob(self, data: st.DataObject) -> None:
        bid = self.pick(data, sorted(self.open))
        _outcome(None)
        self.run(self.open.pop(bid).aclose())

    @precondition(lambda self: self.deleted)
    @rule(data=st.data())
    def open_deleted(self, data: st.DataObject) -> None:
        bid = self.pick(data, self.deleted)
        _outcome(BlobNotFoundError)
        self.expect(BlobNotFoundError, self.store.open_blob(bid))

    @precondition(lambda self: self.model)
    @rule(data=st.data(), clusters=st.integers(0, MAX_CLUSTERS))
    def resize(self, data: st.DataObject, clusters: int) -> None:
        bid = self.prefer(data, lambda m: not m.read_only)
        m = self.model[bid]
        if m.read_only:
            _outcome(OSError, errno.EPERM)
            self.expect(
                OSError, self.with_blob(bid, lambda b: b.resize(clusters)), errno.EPERM, blob=bid
            )
            return
        _outcome(None)
        self.run(self.with_blob(bid, lambda b: b.resize(clusters)))
        # A thin blob grown again reads its new clusters from its parent snapshot (if
        # any): a clone shrunk and grown shows the snapshot's data there, not zeroes.
        if clusters < m.clusters:
            del m.own[clusters * CLUSTER :]
            m.alloc = {c for c in m.alloc if c < clusters}
        else:
            m.own += bytes((clusters - m.clusters) * CLUSTER)
            if not m.thin:  # new clusters: free ones, which read zeroes (module docstring)
                m.alloc |= set(range(m.clusters, clusters))
        m.clusters = clusters
        self.check_blob(bid)

    @precondition(lambda self: self.writable())
    @rule(data=st.data(), seed=st.integers(0, 2**32))
    def write(self, data: st.DataObject, seed: int) -> None:
        bid = self.pick(data, self.writable())
        off, n = self.span(data, bid)
        payload = random.Random(seed).randbytes(n)
        buf = self.buf
        assert buf is not None
        buf[0:n] = payload

        async def go(blob: Blob) -> None:
            await blob.write(buf, off, n)

        _outcome(None)
        self.run(self.with_blob(bid, go))
        # a thin blob's first write to a cluster copies in what it read before (its
        # parent's data, or zeroes), then writes
        self.take(bid, set(range(off // CLUSTER, (off + n - 1) // CLUSTER + 1)), self.content(bid))
        self.model[bid].own[off : off + n] = payload
        self.check_blob(bid, content=False)

    @precondition(lambda self: any(m.clusters for m in self.model.values()))
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        bid = self.pick(data, sorted(k for k, m in self.model.items() if m.clusters))
        off, n = self.span(data, bid)
        buf = self.buf
        assert buf is not None
        buf.fill(0xA5)
        _outcome(None)

        async def go(blob: Blob) -> None:
            await blob.read(buf, off, n)

        self.run(self.with_blob(bid, go))
        assert buf[0:n] == bytes(self.content(bid)[off : off + n])

    # -- misuse ----------------------------------------------------------------------

    @precondition(lambda self: self.model)
    @rule(data=st.data(), how=st.sampled_from(["past_end", "offset", "length"]))
    def bad_io(self, data: st.DataObject, how: str) -> None:
        bid = self.pick(data)
        m = self.model[bid]
        size = m.clusters * CLUSTER
        buf = self.buf
        assert buf is not None
        write = data.draw(st.booleans())
        if how == "past_end":
            off, n = size - self.unit * data.draw(st.integers(0, 1)), 2 * self.unit
            if off < 0:
                off = 0
        elif how == "offset":
            off, n = data.draw(st.integers(1, self.unit - 1)), self.unit
        else:
            off, n = 0, data.draw(st.integers(1, self.unit - 1))

        async def go(blob: Blob) -> None:
            await (blob.write if write else blob.read)(buf, off, n)

        # checked in this order: alignment, range, then (for a write) read-only
        _outcome(ValueError)
        self.expect(ValueError, self.with_blob(bid, go), blob=bid)

    @precondition(lambda self: any(m.clusters for m in self.model.values() if m.read_only))
    @rule(data=st.data())
    def write_snapshot(self, data: st.DataObject) -> None:
        bid = self.pick(data, [k for k in self.snapshots() if self.model[k].clusters])
        off, n = self.span(data, bid)
        buf = self.buf
        assert buf is not None

        async def go(blob: Blob) -> None:
            await blob.write(buf, off, n)

        _outcome(PermissionError)
        self.expect(PermissionError, self.with_blob(bid, go), blob=bid)

    @precondition(lambda self: self.model)
    @rule(
        data=st.data(),
        what=st.sampled_from(["create", "snapshot", "clone"]),
        value=st.sampled_from([b"", b"x" * 4063]),
    )
    def bad_initial_xattr(self, data: st.DataObject, what: str, value: bytes) -> None:
        # An empty value, or one past a metadata page (4072 bytes of descriptors, less
        # a 9-byte header and the name): refused before SPDK is called (SPDK would fail
        # the creation, and crashes on a clone's).
        xattrs = {"a": value}
        bid = self.pick(data)
        if what == "create":
            coro = self.store.create_blob(1, xattrs=xattrs)
        elif what == "snapshot":
            coro = self.store.create_snapshot(bid, xattrs=xattrs)
        else:
            coro = self.store.create_clone(bid, xattrs=xattrs)
        _outcome(ValueError)
        self.expect(ValueError, coro, blob=bid)

    # -- xattrs ----------------------------------------------------------------------

    @precondition(lambda self: self.model)
    @rule(data=st.data(), name=st.sampled_from(XATTR_NAMES), value=xattr_values)
    def set_xattr(self, data: st.DataObject, name: str, value: bytes) -> None:
        bid = self.prefer(data, lambda m: not m.read_only)
        m = self.model[bid]
        if m.read_only:
            _outcome(PermissionError)
            self.expect(
                PermissionError, self.with_blob(bid, lambda b: b.set_xattr(name, value)), blob=bid
            )
            return
        _outcome(None)
        self.run(self.with_blob(bid, lambda b: b.set_xattr(name, value)))
        m.xattrs[name] = value
        self.check_blob(bid, content=False)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), name=st.sampled_from(XATTR_NAMES))
    def remove_xattr(self, data: st.DataObject, name: str) -> None:
        bid = self.prefer(data, lambda m: not m.read_only)
        m = self.model[bid]
        if m.read_only:
            _outcome(PermissionError)
            self.expect(
                PermissionError, self.with_blob(bid, lambda b: b.remove_xattr(name)), blob=bid
            )
            return
        if name not in m.xattrs:
            _outcome(KeyError)
            self.expect(KeyError, self.with_blob(bid, lambda b: b.remove_xattr(name)), blob=bid)
            return
        _outcome(None)
        self.run(self.with_blob(bid, lambda b: b.remove_xattr(name)))
        del m.xattrs[name]
        self.check_blob(bid, content=False)

    # -- snapshots and clones --------------------------------------------------------

    @precondition(lambda self: self.model and len(self.model) < MAX_BLOBS)
    @rule(data=st.data(), xattrs=xattr_dicts)
    def snapshot(self, data: st.DataObject, xattrs: dict[str, bytes]) -> None:
        bid = self.prefer(data, lambda m: not m.read_only)
        m = self.model[bid]
        if m.read_only:
            _outcome(SpdkError, errno.EINVAL)
            self.expect(
                SpdkError, self.store.create_snapshot(bid, xattrs=xattrs), errno.EINVAL, blob=bid
            )
            return
        _outcome(None)
        sid = self.run(self.store.create_snapshot(bid, xattrs=xattrs))
        assert sid not in self.model
        self.forget_deleted(sid)
        self.model[sid] = MBlob(
            m.clusters,
            bytearray(m.own),
            dict(xattrs),
            thin=m.thin,  # SPDK copies the flags (newblob->invalid_flags = origblob's)
            read_only=True,
            parent=m.parent,
            alloc=m.alloc,
            entry=True,
        )
        m.alloc, m.parent, m.thin = set(), sid, True
        self.check_blob(sid)
        self.check_blob(bid, content=False)

    @precondition(lambda self: self.snapshots() and len(self.model) < MAX_BLOBS)
    @rule(data=st.data(), xattrs=xattr_dicts)
    def clone(self, data: st.DataObject, xattrs: dict[str, bytes]) -> None:
        sid = self.prefer(data, lambda m: m.read_only)
        s = self.model[sid]
        if not s.read_only:
            _outcome(SpdkError, errno.EINVAL)
            self.expect(
                SpdkError, self.store.create_clone(sid, xattrs=xattrs), errno.EINVAL, blob=sid
            )
            return
        _outcome(None)
        cid = self.run(self.store.create_clone(sid, xattrs=xattrs))
        assert cid not in self.model
        self.forget_deleted(cid)
        self.model[cid] = MBlob(
            s.clusters, bytearray(s.clusters * CLUSTER), dict(xattrs), thin=True, parent=sid
        )
        s.entry = True
        self.check_blob(cid)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def inflate(self, data: st.DataObject) -> None:
        bid = self.pick(data)
        m = self.model[bid]
        _outcome(None)
        self.run(self.store.inflate(bid))
        if m.thin:
            self.take(bid, set(range(m.clusters)), self.content(bid))
            m.thin = False
            m.parent = None
        self.check_blob(bid)

    @precondition(lambda self: any(m.parent is not None for m in self.model.values()))
    @rule(data=st.data())
    def decouple(self, data: st.DataObject) -> None:
        bid = self.prefer(data, lambda m: m.parent is not None)
        m = self.model[bid]
        if m.parent is None:
            _outcome(SpdkError, errno.EINVAL)
            self.expect(SpdkError, self.store.decouple_parent(bid), errno.EINVAL, blob=bid)
            return
        p = self.model[m.parent]
        if m.clusters > p.clusters:
            # SPDK bug: bs_cluster_needs_allocation() reads the parent's cluster map
            # past its end (a parent of 0 clusters: a NULL map, SIGSEGV); spdk_io refuses.
            _outcome(SpdkError, errno.ENOTSUP)
            self.expect(SpdkError, self.store.decouple_parent(bid), errno.ENOTSUP, blob=bid)
            return
        _outcome(None)
        self.run(self.store.decouple_parent(bid))
        before = self.content(bid)
        self.take(bid, {c for c in p.alloc if c < m.clusters}, before)
        m.parent = p.parent
        if m.parent is not None:
            self.model[m.parent].entry = True
        self.kept(bid, before, p.clusters, "decouple")
        self.check_blob(bid)

    # -- delete ----------------------------------------------------------------------

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        bid = self.pick(data)
        m = self.model[bid]
        clones = self.clones_of(bid)
        if bid in self.open or len(clones) > 1:
            _outcome(SpdkError, errno.EBUSY)
            self.expect(SpdkError, self.store.delete_blob(bid), errno.EBUSY, blob=bid)
            return
        if clones and m.alloc:
            c = self.model[min(clones)]
            if c.clusters != m.clusters and not c.alloc:
                # SPDK bug (delete_snapshot_update_extent_pages): the snapshot's extent
                # page is copied whole into a clone of another size that has none of
                # its own.  The clone then takes the snapshot's size (shrinks or grows
                # back), or, if that lists clusters past its end that are freed with
                # the snapshot, fails to open with EINVAL, for good.
                # spdk_io refuses it.
                _outcome(SpdkError, errno.ENOTSUP)
                self.expect(SpdkError, self.store.delete_blob(bid), errno.ENOTSUP, blob=bid)
                return
        _outcome(None)
        before = {cid: self.content(cid) for cid in clones}
        self.run(self.store.delete_blob(bid))
        del self.model[bid]
        self.deleted.append(bid)
        for cid in clones:
            c = self.model[cid]
            self.take(cid, {i for i in m.alloc if i < c.clusters}, m.own)
            c.parent = m.parent
            if m.parent is not None:
                self.model[m.parent].entry = True
            self.kept(cid, before[cid], m.clusters, "delete of its snapshot")
            self.check_blob(cid)

    # -- persistence -----------------------------------------------------------------

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def sync(self, data: st.DataObject) -> None:
        bid = self.pick(data)
        _outcome(None)
        self.run(self.with_blob(bid, lambda b: b.sync()))

    @precondition(lambda self: self.model)
    @rule()
    def reload(self) -> None:
        _outcome(None)
        self.open.clear()  # unload closes them
        bs, self.bs = self.bs, None
        assert bs is not None

        async def go() -> Blobstore:
            await bs.unload()
            return await Blobstore.load(self.bdev)

        self.bs = self.run(go())
        for k, m in self.model.items():
            m.entry = bool(self.clones_of(k))
        self.check_every_blob()

    @precondition(lambda self: self.model)
    @rule()
    def check_all(self) -> None:
        _outcome(None)
        self.check_every_blob()

    def check_every_blob(self) -> None:
        for bid in sorted(self.model):
            self.check_blob(bid)

    # -- checks ----------------------------------------------------------------------

    def check_blob(self, bid: BlobId, *, content: bool = True) -> None:
        m = self.model[bid]
        buf = self.buf
        assert buf is not None

        async def go(blob: Blob) -> None:
            got = (
                blob.num_clusters,
                blob.size,
                blob.thin,
                blob.read_only,
                blob.clone,
                blob.snapshot,
                blob.parent_snapshot,
                blob.allocated_clusters,
            )
            want = (
                m.clusters,
                m.clusters * CLUSTER,
                m.thin,
                m.read_only,
                m.parent is not None,
                m.entry,
                m.parent,
                len(m.alloc),
            )
            fields = "(clusters, size, thin, ro, clone, snapshot, parent, allocated)"
            assert got == want, f"blob {bid}: {fields} {got} != model {want}"
            assert await blob.xattrs() == m.xattrs
            if content and m.clusters:
                size = m.clusters * CLUSTER
                buf.fill(0xA5)
                await blob.read(buf, 0, size)
                want_b = bytes(self.content(bid))
                got_b = buf[0:size]
                if got_b != want_b:
                    first = next(i for i in range(size) if got_b[i] != want_b[i])
                    raise AssertionError(
                        f"blob {bid}: content differs from byte {first} "
                        f"(cluster {first // CLUSTER}): {got_b[first : first + 8].hex()} != "
                        f"model {want_b[first : first + 8].hex()}"
                    )

        self.run(self.with_blob(bid, go))

    @invariant()
    def store_agrees(self) -> None:
        if self.bs is None:
            return

        async def go() -> None:
            ids = await self.store.blob_ids()
            assert len(ids) == len(set(ids))
            assert set(ids) == set(self.model)
            for bid, m in self.model.items():
                assert await self.store.get_parent(bid) == m.parent, bid
                assert set(await self.store.clones(bid)) == self.clones_of(bid), bid
            assert {b.id for b in self.store.open_blobs()} == set(self.open)

        self.run(go())


def test_blobstore_against_a_model(env: Any) -> None:
    BlobModel.env = env
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        BlobModel,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            verbosity=Verbosity.debug if VERBOSE else Verbosity.normal,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
