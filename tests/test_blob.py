"""SPDK's blobstore through spdk_io.blob, against real SPDK: malloc bdevs, and aio bdevs
over a file where persistence across processes matters."""

from __future__ import annotations

import errno
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import spdk_io
from spdk_io import SpdkThread
from spdk_io import bdev_modules as bm
from spdk_io.blob import Blob, BlobId, Blobstore, BlobstoreOptions
from spdk_io.dma import DmaBuf
from spdk_io.errors import BlobNotFoundError, SpdkError, WrongThreadError
from spdk_io.thread import current_thread
from tests.conftest import run_py

Run = Callable[[Awaitable[Any]], Any]
CLUSTER = 64 * 1024
UNIT = 512
BLOCKS = 8192  # 4 MiB malloc bdevs of 512-byte blocks


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def buf_of(data: bytes) -> DmaBuf:
    b = DmaBuf.alloc(len(data))
    b[:] = data
    return b


async def read_bytes(blob: Blob, offset: int, length: int) -> bytes:
    b = DmaBuf.alloc(length)
    try:
        b.fill(0xEE)  # never what a read should return
        await blob.read(b, offset)
        return bytes(b)
    finally:
        b.free()


async def write_bytes(blob: Blob, offset: int, data: bytes) -> None:
    b = buf_of(data)
    try:
        await blob.write(b, offset)
    finally:
        b.free()


@asynccontextmanager
async def malloc_store(
    name: str, blocks: int = BLOCKS, cluster: int = CLUSTER, **opts: Any
) -> AsyncIterator[Blobstore]:
    """A new blobstore on a new malloc bdev; unloaded (if still loaded) and the bdev
    deleted afterwards."""
    await bm.create_malloc(name, blocks, UNIT)
    bs: Blobstore | None = None
    try:
        bs = await Blobstore.init(name, BlobstoreOptions(cluster_size=cluster, **opts))
        yield bs
    finally:
        if bs is not None:
            await bs.unload()
        await bm.delete_malloc(name)


def clean_flag(path: Path) -> int:
    """The ``clean`` field of the super block on a blobstore's backing file (1 after a
    clean unload; SPDK writes 0 while it is loaded)."""
    head = path.read_bytes()[:20]
    assert head[:8] == b"SPDKBLOB", head
    clean: int = struct.unpack_from("<I", head, 16)[0]
    return clean


# --------------------------------------------------------------------------- the store


def test_init_properties_and_cluster_accounting(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsProps0", bstype="props") as bs:
            assert bs.cluster_size == CLUSTER and bs.io_unit_size == UNIT
            assert bs.page_size == 4096 and bs.bstype == "props" and bs.bdev == "BsProps0"
            total = bs.total_clusters
            # 64 clusters on the bdev, a few of them for the metadata
            assert 48 <= total < BLOCKS * UNIT // CLUSTER
            assert bs.free_clusters == total
            thick = await bs.create_blob(4)
            assert bs.free_clusters == total - 4
            thin = await bs.create_blob(10, thin=True)
            assert bs.free_clusters == total - 4  # nothing allocated yet
            async with await bs.open_blob(thick) as blob:
                await blob.resize(6)
                assert bs.free_clusters == total - 6
                await blob.resize(1)
                await blob.sync()
                assert bs.free_clusters == total - 1
            async with await bs.open_blob(thin) as blob:
                await write_bytes(blob, 3 * CLUSTER, pattern(UNIT, 1))
                assert blob.allocated_clusters == 1
                assert bs.free_clusters == total - 2
            await bs.delete_blob(thick)
            assert bs.free_clusters == total - 1
            await bs.delete_blob(thin)
            assert bs.free_clusters == total
            assert await bs.blob_ids() == []
            assert not bs.closed and not bs.unloaded
        assert bs.closed and bs.unloaded
        assert "unloaded" in repr(bs)

    run(main())


def test_super_blob_and_reload(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsSuper0") as bs:
            assert await bs.get_super() is None
            a = await bs.create_blob(1)
            b = await bs.create_blob(1)
            await bs.set_super(a)
            assert await bs.get_super() == a
            await bs.set_super(b)
            assert await bs.get_super() == b
            blob = await bs.open_blob(a)
            with pytest.raises(BlockingIOError, match=str(a)):
                await bs.unload(close_blobs=False)  # open blobs are an error: nothing changes
            assert not bs.closed and not blob.closed and await bs.get_super() == b
            await blob.aclose()
            await bs.unload(close_blobs=False)
            assert bs.unloaded
            # The malloc bdev keeps the data: load it again
            async with await Blobstore.load("BsSuper0") as bs2:  # unloaded at the exit
                assert await bs2.get_super() == b
                assert sorted(await bs2.blob_ids()) == sorted([a, b])
                assert bs2.bstype == "" and bs2.cluster_size == CLUSTER
            assert bs2.unloaded

    run(main())


def test_iteration_lists_every_blob_including_snapshots_and_clones(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsIter0") as bs:
            made = [await bs.create_blob(1), await bs.create_blob(2, thin=True)]
            snap = await bs.create_snapshot(made[0])
            clone = await bs.create_clone(snap)
            made += [snap, clone]
            listed = await bs.blob_ids()
            assert len(listed) == len(made) and set(listed) == set(made)
            assert all(isinstance(i, BlobId) for i in listed)
            assert [i async for i in bs.blobs()] == listed
            assert bs.open_blobs() == []  # the walk leaves nothing open
            await bs.delete_blob(made[1])
            assert set(await bs.blob_ids()) == set(made) - {made[1]}

    run(main())


# --------------------------------------------------------------------------- blobs


def test_create_options_xattrs_and_open_close(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsCreate0") as bs:
            bid = await bs.create_blob(3, xattrs={"name": "hello", "raw": b"\x00\x01\xff"})
            blob = await bs.open_blob(bid)
            await blob.set_xattr("empty", b"")  # SPDK refuses empty values only at creation
            assert blob.id == bid and blob in bs.open_blobs()
            assert blob.num_clusters == 3 and blob.size == 3 * CLUSTER
            assert blob.num_io_units == 3 * CLUSTER // UNIT
            assert blob.allocated_clusters == 3 and not blob.thin
            assert not blob.read_only and not blob.snapshot and not blob.clone
            assert blob.parent_snapshot is None
            assert await blob.get_xattr("name") == b"hello"
            assert await blob.get_xattr_str("name") == "hello"
            assert await blob.get_xattr("raw") == b"\x00\x01\xff"
            assert await blob.get_xattr("empty") == b""
            assert sorted(await blob.xattr_names()) == ["empty", "name", "raw"]
            assert await blob.xattrs() == {"name": b"hello", "raw": b"\x00\x01\xff", "empty": b""}
            await blob.aclose()
            assert blob.closed and bs.open_blobs() == []
            await blob.aclose()  # twice is harmless

            thin = await bs.open_blob(await bs.create_blob(5, thin=True))
            assert thin.thin and thin.num_clusters == 5 and thin.allocated_clusters == 0
            await thin.aclose()
            for method in ("default", "none", "unmap", "write_zeroes"):
                b = await bs.create_blob(1, clear_method=method)
                async with await bs.open_blob(b) as blob:
                    await write_bytes(blob, 0, pattern(UNIT, 2))
                    assert await read_bytes(blob, 0, UNIT) == pattern(UNIT, 2)
                    await blob.resize(0)
                    await blob.sync()
                await bs.delete_blob(b)
            with pytest.raises(ValueError, match="clear_method"):
                await bs.create_blob(1, clear_method="shred")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await bs.create_blob(1, thin=1)  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                await bs.create_blob(-1)
            with pytest.raises(TypeError):
                await bs.create_blob(1, xattrs={"k": 5})  # type: ignore[dict-item]
            with pytest.raises(ValueError, match="empty value"):
                await bs.create_blob(1, xattrs={"ok": "v", "e": b""})
            with pytest.raises(ValueError, match="metadata page"):
                await bs.create_blob(1, xattrs={"k": b"x" * 4063})
            with pytest.raises(ValueError, match="empty"):
                await bs.create_blob(1, xattrs={"": b"x"})
            with pytest.raises(ValueError, match="65535"):
                await bs.create_blob(1, xattrs={"k": b"x" * 65536})
            assert len(await bs.blob_ids()) == 2  # none of those made a blob
            big = await bs.create_blob(1, xattrs={"k": b"x" * 4062})  # just fits
            async with await bs.open_blob(big) as blob:
                assert await blob.get_xattr("k") == b"x" * 4062
            await bs.delete_blob(big)
            # the same blob may be opened twice: both handles work
            async with await bs.open_blob(bid) as one, await bs.open_blob(bid) as two:
                assert one.id == two.id == bid
            assert len(await bs.blob_ids()) == 2

    run(main())


def test_io_round_trips_on_a_thick_blob(run: Run) -> None:
    async def main() -> None:
        async with (
            malloc_store("BsIo0") as bs,
            await bs.open_blob(await bs.create_blob(4)) as blob,
        ):
            data = pattern(3 * CLUSTER, 5)
            await write_bytes(blob, CLUSTER // 2, data)  # spans clusters
            assert await read_bytes(blob, CLUSTER // 2, len(data)) == data
            # I/O units
            w = buf_of(pattern(2 * UNIT, 9))
            await blob.write_io_units(w, 3, 2)
            r = DmaBuf.alloc(2 * UNIT)
            await blob.read_io_units(r, 3, 2)
            assert bytes(r) == bytes(w)
            # vectored
            parts = [buf_of(pattern(UNIT, i)) for i in range(3)] + [buf_of(pattern(4096, 3))]
            await blob.writev(parts, 2 * CLUSTER)
            back = [DmaBuf.alloc(len(p)) for p in parts]
            await blob.readv(back, 2 * CLUSTER)
            assert [bytes(b) for b in back] == [bytes(p) for p in parts]
            whole = b"".join(bytes(p) for p in parts)
            assert await read_bytes(blob, 2 * CLUSTER, len(whole)) == whole
            # zeroes and unmap
            await write_bytes(blob, 0, pattern(4 * UNIT, 1))
            await blob.write_zeroes(UNIT, 2 * UNIT)
            got = await read_bytes(blob, 0, 4 * UNIT)
            assert got == pattern(4 * UNIT, 1)[:UNIT] + bytes(2 * UNIT) + got[3 * UNIT :]
            assert got[3 * UNIT :] == pattern(4 * UNIT, 1)[3 * UNIT :]
            await blob.write_zeroes_io_units(0, 1)
            assert await read_bytes(blob, 0, UNIT) == bytes(UNIT)
            await blob.unmap(3 * CLUSTER, CLUSTER)
            await blob.unmap_io_units(0, 1)
            assert blob.allocated_clusters == 4  # a thick blob keeps its clusters
            assert await read_bytes(blob, CLUSTER // 2, CLUSTER) == data[:CLUSTER]
            # the last I/O unit is writable, and the whole blob readable at once
            await write_bytes(blob, blob.size - UNIT, pattern(UNIT, 77))
            assert (await read_bytes(blob, 0, blob.size))[-UNIT:] == pattern(UNIT, 77)
            assert blob.inflight == 0

    run(main())


def test_thin_blob_reads_zeroes_and_allocates_on_write(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsThin0") as bs:
            # dirty the device first, so zeroes read from a thin blob are not just luck
            async with await bs.open_blob(await bs.create_blob(bs.total_clusters)) as full:
                await write_bytes(full, 0, b"\xab" * full.size)
            await bs.delete_blob(full.id)
            free = bs.free_clusters
            async with await bs.open_blob(await bs.create_blob(8, thin=True)) as blob:
                assert blob.allocated_clusters == 0
                assert await read_bytes(blob, 0, blob.size) == bytes(blob.size)
                await write_bytes(blob, 3 * CLUSTER + UNIT, pattern(UNIT, 3))
                assert blob.allocated_clusters == 1 and bs.free_clusters == free - 1
                # the rest of the new cluster reads as zeroes
                got = await read_bytes(blob, 3 * CLUSTER, CLUSTER)
                assert got == bytes(UNIT) + pattern(UNIT, 3) + bytes(CLUSTER - 2 * UNIT)
                await blob.writev([buf_of(pattern(UNIT, 4)), buf_of(pattern(UNIT, 5))], 6 * CLUSTER)
                assert blob.allocated_clusters == 2 and bs.free_clusters == free - 2
                back = [DmaBuf.alloc(UNIT), DmaBuf.alloc(UNIT)]
                await blob.readv(back, 6 * CLUSTER)
                assert [bytes(b) for b in back] == [pattern(UNIT, 4), pattern(UNIT, 5)]
                await blob.write_zeroes(7 * CLUSTER, UNIT)
                assert await read_bytes(blob, 7 * CLUSTER, UNIT) == bytes(UNIT)
                # unmapping a whole cluster of a thin blob frees it
                await blob.unmap(3 * CLUSTER, CLUSTER)
                assert await read_bytes(blob, 3 * CLUSTER, CLUSTER) == bytes(CLUSTER)
                assert blob.allocated_clusters == 2 and bs.free_clusters == free - 2
                assert blob.num_clusters == 8 and blob.thin

    run(main())


def test_resize_grow_shrink_and_sync_persist(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsResize0") as bs:
            bid = await bs.create_blob(1)
            async with await bs.open_blob(bid) as blob:
                await blob.resize(4)
                assert blob.num_clusters == 4 and blob.size == 4 * CLUSTER
                await write_bytes(blob, 4 * CLUSTER - UNIT, pattern(UNIT, 6))
                await blob.sync()
                await blob.resize(2)
                assert blob.num_clusters == 2
                with pytest.raises(ValueError, match="past the end"):
                    blob.read(DmaBuf.alloc(UNIT), 3 * CLUSTER)
                await write_bytes(blob, 2 * CLUSTER - UNIT, pattern(UNIT, 7))
                await blob.resize(3)
                assert blob.num_clusters == 3
                await blob.sync()
            async with await bs.open_blob(bid) as blob:
                assert blob.num_clusters == 3 and blob.allocated_clusters == 3
                assert await read_bytes(blob, 2 * CLUSTER - UNIT, UNIT) == pattern(UNIT, 7)
                with pytest.raises(ValueError):
                    await blob.resize(-1)
                with pytest.raises(SpdkError):
                    await blob.resize(10_000)  # more clusters than the store has
                assert blob.num_clusters == 3  # the failed resize changed nothing
                await blob.resize(0)
                assert blob.size == 0
            async with await bs.open_blob(bid) as blob:
                assert blob.num_clusters == 0  # persisted by close

    run(main())


def test_xattrs_set_get_remove_and_read_only(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsXattr0") as bs:
            bid = await bs.create_blob(1)
            async with await bs.open_blob(bid) as blob:
                await blob.set_xattr("a", "text ✓")
                await blob.set_xattr("b", b"\x00\x00")
                await blob.set_xattr("big", b"x" * 3000)
                assert await blob.get_xattr_str("a") == "text ✓"
                assert await blob.get_xattr("b") == b"\x00\x00"
                await blob.set_xattr("a", "replaced")
                assert await blob.get_xattr("a") == b"replaced"
                await blob.remove_xattr("b")
                assert sorted(await blob.xattr_names()) == ["a", "big"]
                with pytest.raises(KeyError):
                    await blob.get_xattr("b")
                with pytest.raises(KeyError):
                    await blob.remove_xattr("b")
                await blob.sync()
            async with await bs.open_blob(bid) as blob:
                assert await blob.xattrs() == {"a": b"replaced", "big": b"x" * 3000}
                await write_bytes(blob, 0, pattern(UNIT, 8))
                await blob.set_read_only()  # synced: in force at once
                assert blob.read_only
                with pytest.raises(PermissionError):
                    blob.write(buf_of(bytes(UNIT)), 0)
                with pytest.raises(PermissionError):
                    blob.write_zeroes(0, UNIT)
                with pytest.raises(PermissionError):
                    blob.unmap(0, UNIT)
                with pytest.raises(PermissionError):
                    blob.writev([buf_of(bytes(UNIT))], 0)
                assert await read_bytes(blob, 0, UNIT) == pattern(UNIT, 8)
                assert blob.inflight == 0
            async with await bs.open_blob(bid) as blob:
                assert blob.read_only  # persisted
                with pytest.raises(PermissionError):
                    blob.write(buf_of(bytes(UNIT)), 0)

    run(main())


# --------------------------------------------------------------------------- snapshots


def test_snapshot_is_frozen_while_the_clones_diverge(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsSnap0") as bs:
            p1 = pattern(2 * CLUSTER, 1)
            bid = await bs.create_blob(2, xattrs={"who": "origin"})
            async with await bs.open_blob(bid) as blob:
                await write_bytes(blob, 0, p1)
                free = bs.free_clusters
                snap = await bs.create_snapshot(bid, xattrs={"snap": b"1"})
                assert bs.free_clusters == free  # the clusters moved to the snapshot
                assert blob.clone and blob.thin and not blob.snapshot
                assert blob.parent_snapshot == snap and blob.allocated_clusters == 0
                await write_bytes(blob, 0, pattern(UNIT, 2))
                assert blob.allocated_clusters == 1
                clone = await bs.create_clone(snap, xattrs={"who": "clone"})
                async with await bs.open_blob(snap) as s, await bs.open_blob(clone) as c:
                    assert s.snapshot and s.read_only and not s.clone
                    assert s.parent_snapshot is None
                    assert await s.get_xattr("snap") == b"1"
                    assert c.clone and c.thin and c.parent_snapshot == snap
                    assert await c.get_xattr_str("who") == "clone"
                    await write_bytes(c, CLUSTER, pattern(UNIT, 3))
                    # the snapshot still holds what the blob held when it was taken
                    assert await read_bytes(s, 0, 2 * CLUSTER) == p1
                    want = pattern(UNIT, 2) + p1[UNIT:]
                    assert await read_bytes(blob, 0, 2 * CLUSTER) == want
                    want = p1[:CLUSTER] + pattern(UNIT, 3) + p1[CLUSTER + UNIT :]
                    assert await read_bytes(c, 0, 2 * CLUSTER) == want
                    with pytest.raises(PermissionError):
                        s.write(buf_of(bytes(UNIT)), 0)
                    with pytest.raises(PermissionError):
                        await s.set_xattr("k", "v")
                    assert await read_bytes(s, 0, UNIT) == p1[:UNIT]
                assert sorted(await bs.clones(snap)) == sorted([bid, clone])
                assert await bs.clones(bid) == [] and await bs.clones(clone) == []
                assert await bs.get_parent(clone) == snap and await bs.get_parent(bid) == snap
                assert await bs.get_parent(snap) is None

    run(main())


def test_inflate_and_decouple_parent(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsInflate0") as bs:
            bid = await bs.create_blob(3)
            async with await bs.open_blob(bid) as blob:
                await write_bytes(blob, 0, pattern(3 * CLUSTER, 1))
                s1 = await bs.create_snapshot(bid)
                await write_bytes(blob, CLUSTER, pattern(UNIT, 2))
                s2 = await bs.create_snapshot(bid)  # a clone of s1, holding one cluster
                await write_bytes(blob, 2 * CLUSTER, pattern(UNIT, 3))
                want = await read_bytes(blob, 0, 3 * CLUSTER)
                assert await bs.get_parent(bid) == s2 and await bs.get_parent(s2) == s1
                assert blob.allocated_clusters == 1

                await bs.decouple_parent(bid)  # copies s2's cluster in; parent is now s1
                assert await bs.get_parent(bid) == s1 and blob.parent_snapshot == s1
                assert blob.thin and blob.clone and blob.allocated_clusters == 2
                assert await bs.clones(s2) == []
                assert sorted(await bs.clones(s1)) == sorted([s2, bid])
                assert await read_bytes(blob, 0, 3 * CLUSTER) == want

                await bs.inflate(bid)  # independent: every cluster its own
                assert await bs.get_parent(bid) is None and blob.parent_snapshot is None
                assert not blob.thin and not blob.clone
                assert blob.allocated_clusters == blob.num_clusters == 3
                assert await bs.clones(s1) == [s2]
                assert await read_bytes(blob, 0, 3 * CLUSTER) == want
            # the snapshots can go now; the blob keeps its data
            await bs.delete_blob(s2)
            await bs.delete_blob(s1)
            assert await bs.blob_ids() == [bid]
            async with await bs.open_blob(bid) as blob:
                assert await read_bytes(blob, 0, 3 * CLUSTER) == want

    run(main())


def test_deleting_a_snapshot_with_one_clone_reparents_and_two_is_refused(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsDelSnap0") as bs:
            bid = await bs.create_blob(2)
            async with await bs.open_blob(bid) as blob:
                await write_bytes(blob, 0, pattern(2 * CLUSTER, 4))
            snap = await bs.create_snapshot(bid)
            clone = await bs.create_clone(snap)
            before = sorted(await bs.blob_ids())
            with pytest.raises(SpdkError) as info:
                await bs.delete_blob(snap)
            assert info.value.errno == errno.EBUSY and "2 clones" in str(info.value)
            assert sorted(await bs.blob_ids()) == before  # nothing deleted
            assert sorted(await bs.clones(snap)) == sorted([bid, clone])

            await bs.delete_blob(clone)
            await bs.delete_blob(snap)  # one clone: SPDK folds the snapshot into it
            assert await bs.blob_ids() == [bid]
            assert await bs.get_parent(bid) is None
            async with await bs.open_blob(bid) as blob:
                assert not blob.clone
                assert await read_bytes(blob, 0, 2 * CLUSTER) == pattern(2 * CLUSTER, 4)

    run(main())


# --------------------------------------------------------------------------- bad input


def test_bad_io_arguments_raise_and_the_blob_stays_usable(run: Run) -> None:
    async def main() -> None:
        async with (
            malloc_store("BsBadIo0") as bs,
            await bs.open_blob(await bs.create_blob(2)) as blob,
        ):
            data = pattern(2 * UNIT, 1)
            buf = buf_of(data)
            await blob.write(buf, 0)
            end = blob.size
            freed = DmaBuf.alloc(UNIT)
            freed.free()
            cases: list[tuple[type[BaseException], str, Callable[[], object]]] = [
                (ValueError, "past the end", lambda: blob.read(buf, end - UNIT)),
                (ValueError, "past the end", lambda: blob.write(buf, end)),
                (ValueError, "past the end", lambda: blob.write(buf, 2**70)),
                (ValueError, "past the end", lambda: blob.read_io_units(buf, end // UNIT, 1)),
                (ValueError, "past the end", lambda: blob.writev([buf], end - UNIT)),
                (ValueError, "past the end", lambda: blob.write_zeroes(end, UNIT)),
                (ValueError, "past the end", lambda: blob.unmap(0, end + UNIT)),
                (ValueError, "multiple", lambda: blob.read(buf, 100)),
                (ValueError, "multiple", lambda: blob.write(buf, 0, 100)),
                (ValueError, "multiple", lambda: blob.write_zeroes(0, 100)),
                (ValueError, "multiple", lambda: blob.unmap(UNIT + 1, UNIT)),
                (ValueError, "multiple", lambda: blob.readv([DmaBuf.alloc(100)], 0)),
                (ValueError, "too small", lambda: blob.read_io_units(buf, 0, 3)),
                (ValueError, "too small", lambda: blob.read(buf, 0, 4 * UNIT)),
                (ValueError, ">= 0", lambda: blob.read(buf, -UNIT)),
                (ValueError, ">= 1", lambda: blob.read_io_units(buf, 0, 0)),
                (TypeError, "offset", lambda: blob.read(buf, 1.5)),  # type: ignore[arg-type]
                (TypeError, "offset", lambda: blob.write(buf, "0")),  # type: ignore[arg-type]
                (TypeError, "offset", lambda: blob.write_zeroes(True, UNIT)),
                (TypeError, "offset", lambda: blob.read_io_units(buf, None, 1)),  # type: ignore[arg-type]
                (TypeError, "length", lambda: blob.unmap_io_units(0, 1.0)),  # type: ignore[arg-type]
                (TypeError, "DmaBuf", lambda: blob.write(bytearray(UNIT), 0)),  # type: ignore[arg-type]
                (ValueError, "freed", lambda: blob.write(freed, 0)),
                (ValueError, "freed", lambda: blob.readv([buf, freed], 0)),
                (TypeError, "sequence", lambda: blob.writev(buf, 0)),  # type: ignore[arg-type]
                (ValueError, "at least one", lambda: blob.writev([], 0)),
            ]
            for exc, match, fn in cases:
                with pytest.raises(exc, match=match):
                    fn()
                assert blob.inflight == 0
                assert await read_bytes(blob, 0, 2 * UNIT) == data  # still works
            await write_bytes(blob, end - UNIT, pattern(UNIT, 2))  # so does a write

    run(main())


def test_bad_metadata_operations_raise_and_the_store_stays_usable(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsBadMd0") as bs:
            bid = await bs.create_blob(1)
            await bs.set_super(bid)
            blob = await bs.open_blob(bid)
            with pytest.raises(SpdkError) as info:
                await bs.delete_blob(bid)
            assert info.value.errno == errno.EBUSY and "open" in str(info.value)
            assert await bs.blob_ids() == [bid] and not blob.closed
            await write_bytes(blob, 0, pattern(UNIT, 1))

            unknown = BlobId(0x1_0000_0099)
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: bs.open_blob(unknown),
                lambda: bs.delete_blob(unknown),
                lambda: bs.set_super(unknown),
                lambda: bs.clones(unknown),
                lambda: bs.create_snapshot(unknown),
                lambda: bs.create_clone(unknown),
                lambda: bs.inflate(unknown),
                lambda: bs.decouple_parent(unknown),
            ]
            for call in calls:
                with pytest.raises(BlobNotFoundError) as nf:
                    await call()
                assert nf.value.errno == errno.ENOENT and nf.value.obj == unknown
                assert isinstance(nf.value, LookupError) and str(unknown) in str(nf.value)
                assert await bs.get_super() == bid and await bs.blob_ids() == [bid]
            assert await bs.get_parent(unknown) is None
            assert bs.open_blobs() == [blob]

            # refused by SPDK: too large, a clone of a blob that is not a snapshot, a
            # decouple without a parent; nothing is made or changed
            free = bs.free_clusters
            refused: list[tuple[int, Callable[[], Awaitable[object]]]] = [
                (errno.ENOSPC, lambda: bs.create_blob(bs.total_clusters + 1)),
                (errno.EINVAL, lambda: bs.create_clone(bid)),
                (errno.EINVAL, lambda: bs.decouple_parent(bid)),
            ]
            for err, call in refused:
                with pytest.raises(SpdkError) as info:
                    await call()
                assert info.value.errno == err, info.value
                assert await bs.blob_ids() == [bid] and bs.free_clusters == free

            raw: Any = int(bid)  # an int where a BlobId belongs
            int_calls: list[Callable[[], Awaitable[object]]] = [
                lambda: bs.open_blob(raw),
                lambda: bs.delete_blob(raw),
                lambda: bs.set_super(raw),
                lambda: bs.clones(raw),
                lambda: bs.get_parent(raw),
                lambda: bs.create_snapshot(raw),
                lambda: bs.create_clone(raw),
                lambda: bs.inflate(raw),
                lambda: bs.decouple_parent(raw),
            ]
            for call in int_calls:
                with pytest.raises(TypeError, match="must be a BlobId, not int"):
                    await call()
            assert await bs.blob_ids() == [bid] and bs.open_blobs() == [blob]

            # xattrs: too long, too large for a page, bad names; nothing changes
            await blob.set_xattr("keep", "v")
            bad: list[tuple[type[BaseException], str, Callable[[], Awaitable[None]]]] = [
                (ValueError, "65535", lambda: blob.set_xattr("k", b"x" * 65536)),
                (ValueError, "metadata page", lambda: blob.set_xattr("k", b"x" * 4063)),
                (ValueError, "metadata page", lambda: blob.set_xattr("k" * 100, b"x" * 4000)),
                (ValueError, "empty", lambda: blob.set_xattr("", "v")),
                (ValueError, "NUL", lambda: blob.set_xattr("a\0b", "v")),
                (TypeError, "str", lambda: blob.set_xattr(b"k", "v")),  # type: ignore[arg-type]
                (TypeError, "bytes or str", lambda: blob.set_xattr("k", 5)),  # type: ignore[arg-type]
                (ValueError, "empty", lambda: blob.remove_xattr("")),
            ]
            for exc, match, call_ in bad:
                with pytest.raises(exc, match=match):
                    await call_()
                assert await blob.xattrs() == {"keep": b"v"}
            await blob.set_xattr("k", b"x" * 4062)  # the largest that fits
            await blob.sync()
            await blob.aclose()

            # use after close
            after_close: list[Callable[[], object]] = [
                lambda: blob.read(buf_of(bytes(UNIT)), 0),
                lambda: blob.write(buf_of(bytes(UNIT)), 0),
                lambda: blob.writev([buf_of(bytes(UNIT))], 0),
                lambda: blob.unmap(0, UNIT),
                lambda: blob.num_clusters,
                lambda: blob.size,
                lambda: blob.read_only,
                lambda: blob.parent_snapshot,
            ]
            for fn in after_close:
                with pytest.raises(ValueError, match="closed"):
                    fn()
            after_close_md: list[Callable[[], Awaitable[object]]] = [
                lambda: blob.resize(2),
                lambda: blob.sync(),
                lambda: blob.set_read_only(),
                lambda: blob.set_xattr("k", "v"),
                lambda: blob.get_xattr("k"),
                lambda: blob.remove_xattr("k"),
                lambda: blob.xattr_names(),
                lambda: blob.xattrs(),
            ]
            for call in after_close_md:
                with pytest.raises(ValueError, match="closed"):
                    await call()
            await bs.delete_blob(bid)  # closed: now it may go
            assert await bs.blob_ids() == []

            # use after unload
            left_open = await bs.open_blob(await bs.create_blob(1))
            await bs.unload()
            assert left_open.closed  # the unload closed it
            with pytest.raises(ValueError, match="closed"):
                left_open.read(buf_of(bytes(UNIT)), 0)
            after_unload: list[Callable[[], Awaitable[object]]] = [
                lambda: bs.create_blob(1),
                lambda: bs.open_blob(left_open.id),
                lambda: bs.delete_blob(left_open.id),
                lambda: bs.blob_ids(),
                lambda: bs.get_super(),
                lambda: bs.set_super(left_open.id),
                lambda: bs.create_snapshot(left_open.id),
                lambda: bs.clones(left_open.id),
                lambda: bs.get_parent(left_open.id),
                lambda: bs.inflate(left_open.id),
            ]
            for call in after_unload:
                with pytest.raises(SpdkError) as gone:
                    await call()
                assert gone.value.errno == errno.ENODEV, gone.value
            for prop in ("total_clusters", "free_clusters"):
                with pytest.raises(SpdkError) as gone:
                    getattr(bs, prop)
                assert gone.value.errno == errno.ENODEV
            with pytest.raises(SpdkError):
                bs.channel()
            await bs.unload()  # again: harmless

    run(main())


def test_load_and_init_refusals(run: Run) -> None:
    async def main() -> None:
        await bm.create_malloc("BsLoad0", BLOCKS, UNIT)
        try:
            with pytest.raises(SpdkError) as info:
                await Blobstore.load("BsLoad0")  # all zeroes: no blobstore
            assert info.value.errno == errno.EILSEQ and "no blobstore" in str(info.value)
            bs = await Blobstore.init("BsLoad0", BlobstoreOptions(CLUSTER, bstype="typeA"))
            await bs.create_blob(1)
            await bs.unload()
            with pytest.raises(SpdkError) as info:
                await Blobstore.load("BsLoad0", "typeB")
            assert info.value.errno == errno.ENXIO and "another type" in str(info.value)
            for bstype in ("typeA", ""):
                bs = await Blobstore.load("BsLoad0", bstype)
                assert bs.bstype == "typeA" and len(await bs.blob_ids()) == 1
                # a second blobstore on the same bdev would overwrite the first's metadata
                seconds: list[Callable[[], Awaitable[Blobstore]]] = [
                    lambda: Blobstore.load("BsLoad0"),
                    lambda: Blobstore.init("BsLoad0", BlobstoreOptions(CLUSTER)),
                ]
                for second in seconds:
                    with pytest.raises(SpdkError) as info:
                        await second()
                    assert info.value.errno == errno.EBUSY and "loaded" in str(info.value)
                assert len(await bs.blob_ids()) == 1
                await bs.unload()
            with pytest.raises(ValueError):
                await Blobstore.load("BsLoad0", "x" * 16)
        finally:
            await bm.delete_malloc("BsLoad0")

        await bm.create_malloc("BsSmall0", 64, UNIT)  # 32 KiB: less than one cluster
        try:
            with pytest.raises(SpdkError) as info:
                await Blobstore.init("BsSmall0", BlobstoreOptions(cluster_size=CLUSTER))
            assert info.value.op == "spdk_bs_init" and info.value.obj == "BsSmall0"
            assert info.value.errno == errno.ENOSPC and "too small" in str(info.value)
            # 8 clusters of 4 KiB, but by default 8 metadata pages and the masks besides
            with pytest.raises(SpdkError) as info:
                await Blobstore.init("BsSmall0", BlobstoreOptions(cluster_size=4096))
            assert info.value.errno == errno.ENOMEM and "too small" in str(info.value)
            # the failures left the bdev free: with fewer metadata pages it fits
            opts = BlobstoreOptions(cluster_size=4096, num_md_pages=2)
            bs = await Blobstore.init("BsSmall0", opts)
            assert bs.total_clusters == 2
            await bs.unload()
        finally:
            await bm.delete_malloc("BsSmall0")

        with pytest.raises(LookupError, match="NoSuchBdev"):
            await Blobstore.load("NoSuchBdev")
        with pytest.raises(LookupError):
            await Blobstore.init("NoSuchBdev")
        with pytest.raises(TypeError):
            await Blobstore.init("x", {"cluster_size": CLUSTER})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="multiple of 4096"):
            BlobstoreOptions(cluster_size=1000 * 64)
        with pytest.raises(ValueError):
            BlobstoreOptions(bstype="sixteen-bytes-xx")
        with pytest.raises(ValueError):
            BlobstoreOptions(clear_method="shred")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            BlobstoreOptions(num_md_pages=0)

    run(main())


def test_close_refuses_while_io_or_metadata_operations_are_in_flight(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsBusy0") as bs:
            bid = await bs.create_blob(1)
            blob = await bs.open_blob(bid)
            other = await bs.open_blob(await bs.create_blob(1))
            assert bs.open_blobs() == [blob, other]  # oldest first
            pending = blob.write(buf_of(pattern(UNIT, 1)), 0)
            assert blob.inflight == 1
            with pytest.raises(BlockingIOError, match="in flight"):
                blob.close()
            with pytest.raises(BlockingIOError, match="in flight"):
                bs.close()
            assert not blob.closed and not other.closed and not bs.closed  # nothing closed
            await pending
            task = spdk_io.spawn(bs.create_blob(1))
            await spdk_io.sleep(0)
            with pytest.raises(BlockingIOError, match="metadata operations"):
                bs.close()
            made = await task
            assert not bs.closed and set(await bs.blob_ids()) == {bid, other.id, made}
            opening = spdk_io.spawn(bs.open_blob(made))
            await spdk_io.sleep(0)
            with pytest.raises(BlockingIOError, match="metadata operations"):
                bs.close()  # an open in flight: SPDK would unload under it
            late = await opening
            assert not late.closed and bs.open_blobs() == [blob, other, late]
            # the unload waits for I/O in flight, then closes the blobs
            pending = blob.write(buf_of(pattern(UNIT, 2)), UNIT)
            opening = spdk_io.spawn(bs.open_blob(made))
            await spdk_io.sleep(0)
            await bs.unload()  # waits for the write and the open, then closes every blob
            opened = await opening
            assert pending.done() and blob.closed and other.closed and late.closed
            assert opened.closed and bs.open_blobs() == []
            async with (
                await Blobstore.load("BsBusy0") as again,
                await again.open_blob(bid) as b,
            ):
                assert await read_bytes(b, 0, 2 * UNIT) == pattern(UNIT, 1) + pattern(UNIT, 2)

    run(main())


# --------------------------------------------------------------------------- threads


def test_io_and_forwarded_metadata_from_a_spawned_thread(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsThr0") as bs:
            app = current_thread()
            bid = await bs.create_blob(2)
            mine = await bs.open_blob(bid)  # opened on the app (metadata) thread
            await write_bytes(mine, CLUSTER, pattern(UNIT, 9))

            async def worker() -> dict[str, Any]:
                me = current_thread()
                assert me is not app and bs.thread is app
                # I/O on a blob the app thread opened, through this thread's channel
                await write_bytes(mine, 0, pattern(2 * UNIT, 1))
                seen = await read_bytes(mine, CLUSTER, UNIT)
                ch = bs.channel()
                assert ch.thread is me
                assert mine.num_clusters == 2 and not mine.read_only  # fields: any thread
                with pytest.raises(WrongThreadError):
                    _ = mine.parent_snapshot  # the metadata thread's; here: get_parent
                assert await bs.get_parent(bid) is None

                async def where() -> str:
                    return current_thread().name

                assert await bs.on_md(where) == app.name  # forwarded, like the methods
                # metadata operations, forwarded to the app thread
                new = await bs.create_blob(1, thin=True, xattrs={"by": "worker"})
                async with await bs.open_blob(new) as blob:
                    await blob.resize(3)
                    await blob.set_xattr("k", b"v")
                    await write_bytes(blob, 2 * CLUSTER, pattern(UNIT, 2))
                    back = await read_bytes(blob, 2 * CLUSTER, UNIT)
                    await blob.sync()
                    names = sorted(await blob.xattr_names())
                snap = await bs.create_snapshot(new)
                await bs.set_super(new)
                return {
                    "new": new,
                    "snap": snap,
                    "channel": ch,
                    "seen": seen,
                    "back": back,
                    "names": names,
                    "ids": await bs.blob_ids(),
                    "parent": await bs.get_parent(new),
                    "clones": await bs.clones(snap),
                }

            async def app_io() -> None:  # the app thread keeps doing I/O meanwhile
                for i in range(20):
                    await write_bytes(mine, CLUSTER + UNIT, pattern(UNIT, i))
                    await spdk_io.sleep(0)

            handle = SpdkThread.spawn(worker, name="blobworker")

            async def joined() -> dict[str, Any]:
                return await handle

            got, _ = await spdk_io.gather(joined(), app_io())
            assert got["seen"] == pattern(UNIT, 9) and got["back"] == pattern(UNIT, 2)
            assert got["names"] == ["by", "k"]
            assert set(got["ids"]) == {bid, got["new"], got["snap"]}
            assert got["parent"] == got["snap"] and got["clones"] == [got["new"]]
            assert await bs.get_super() == got["new"]
            # the worker's channel was released when the worker exited
            ch = got["channel"]
            assert ch.closed and ch.ptr is None
            assert await read_bytes(mine, 0, 2 * UNIT) == pattern(2 * UNIT, 1)
            assert await read_bytes(mine, CLUSTER + UNIT, UNIT) == pattern(UNIT, 19)
            async with await bs.open_blob(got["new"]) as blob:
                assert blob.num_clusters == 3 and await blob.get_xattr("by") == b"worker"
                assert await read_bytes(blob, 2 * CLUSTER, UNIT) == pattern(UNIT, 2)
            await spdk_io.wait_for(bs.unload(), 10)  # no channel left behind: it completes
            assert bs.unloaded and mine.closed
        # the unload released the bdev: a new blobstore can be made on it at once
        await bm.create_malloc("BsThr1", BLOCKS, UNIT)
        try:
            again = await Blobstore.init("BsThr1", BlobstoreOptions(CLUSTER))
            await again.unload()
        finally:
            await bm.delete_malloc("BsThr1")

    run(main())


def test_unload_forwarded_from_a_spawned_thread_that_has_a_channel(run: Run) -> None:
    async def main() -> None:
        async with malloc_store("BsThr2") as bs:
            bid = await bs.create_blob(1)
            blob = await bs.open_blob(bid)

            async def worker() -> list[object]:
                await write_bytes(blob, 0, pattern(UNIT, 4))  # this thread now has a channel
                ch = bs.channel()
                await bs.unload()  # forwarded to the app thread; waits for the whole unload
                out: list[object] = [bs.unloaded, blob.closed, ch.closed]
                try:
                    await bs.open_blob(bid)
                except SpdkError as exc:
                    out.append(exc.errno_name)
                try:
                    blob.read(DmaBuf.alloc(UNIT), 0)
                except ValueError as exc:
                    out.append(str(exc))
                return out

            got = await SpdkThread.spawn(worker, name="unloader")
            assert got[:4] == [True, True, True, "ENODEV"] and "closed blob" in str(got[4])
            again = await Blobstore.load("BsThr2")  # the unload was clean and complete
            async with await again.open_blob(bid) as b:
                assert await read_bytes(b, 0, UNIT) == pattern(UNIT, 4)
            await again.unload()

    run(main())


# --------------------------------------------------------------------------- persistence

#: A child process that loads the blobstore on an aio bdev over ``sys.argv[1]`` and
#: prints, as JSON, everything about every blob: sizes, flags, relations, xattrs, bytes.
DESCRIBE = """
import json, sys
import spdk_io
from spdk_io import bdev_modules as bm
from spdk_io.blob import Blobstore
from spdk_io.dma import DmaBuf

async def main() -> dict:
    await bm.create_aio("Persist1", sys.argv[1], 512)
    bs = await Blobstore.load("Persist1", "persist")
    out = {"super": str(await bs.get_super()), "free": bs.free_clusters,
           "total": bs.total_clusters, "blobs": {}}
    for bid in await bs.blob_ids():
        async with await bs.open_blob(bid) as blob:
            buf = DmaBuf.alloc(blob.size)
            await blob.read(buf, 0)
            out["blobs"][str(bid)] = {
                "clusters": blob.num_clusters, "allocated": blob.allocated_clusters,
                "thin": blob.thin, "read_only": blob.read_only,
                "snapshot": blob.snapshot, "clone": blob.clone,
                "parent": str(await bs.get_parent(bid)),
                "clones": sorted(map(str, await bs.clones(bid))),
                "xattrs": {k: v.hex() for k, v in (await blob.xattrs()).items()},
                "data": bytes(buf).hex(),
            }
    await bs.unload()
    await bm.delete_aio("Persist1")
    return out

print("JSON", json.dumps(spdk_io.run(main(), mem_size_mb=512)))
"""


def describe(path: Path) -> dict[str, Any]:
    """What a new process finds in the blobstore on ``path`` (see DESCRIBE)."""
    proc = run_py(args=["-c", DESCRIBE, str(path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("JSON "))
    result: dict[str, Any] = json.loads(line[5:])
    return result


def blank_image(path: Path, size: int = BLOCKS * UNIT) -> Path:
    with path.open("wb") as f:
        f.truncate(size)
    return path


def test_everything_persists_into_a_new_process(run: Run, tmp_path: Path) -> None:
    path = blank_image(tmp_path / "persist.img")
    p = pattern(3 * CLUSTER, 11)

    async def main() -> dict[str, Any]:
        await bm.create_aio("Persist0", path, UNIT)
        try:
            bs = await Blobstore.init("Persist0", BlobstoreOptions(CLUSTER, bstype="persist"))
            assert clean_flag(path) == 0  # loaded: not clean
            a = await bs.create_blob(3, xattrs={"name": "a", "raw": b"\x00\xff"})
            async with await bs.open_blob(a) as blob:
                await write_bytes(blob, 0, p)
            snap = await bs.create_snapshot(a, xattrs={"snap": "yes"})
            async with await bs.open_blob(a) as blob:
                await write_bytes(blob, CLUSTER + UNIT, pattern(UNIT, 12))
                await blob.set_xattr("later", "set after the snapshot")
            clone = await bs.create_clone(snap, xattrs={"c": b"1"})
            async with await bs.open_blob(clone) as blob:
                await write_bytes(blob, 2 * CLUSTER, pattern(2 * UNIT, 13))
            thin = await bs.create_blob(4, thin=True)
            blob = await bs.open_blob(thin)
            await write_bytes(blob, 3 * CLUSTER, pattern(UNIT, 14))
            await blob.resize(5)
            await blob.set_xattr("t", b"\x01" * 1000)
            await blob.set_read_only()
            await blob.sync()  # left open: the unload closes it
            await bs.set_super(a)
            total = bs.total_clusters
            await bs.unload()
        finally:
            await bm.delete_aio("Persist0")
        thin_data = bytearray(5 * CLUSTER)
        thin_data[3 * CLUSTER : 3 * CLUSTER + UNIT] = pattern(UNIT, 14)
        a_data = bytearray(p)
        a_data[CLUSTER + UNIT : CLUSTER + 2 * UNIT] = pattern(UNIT, 12)
        clone_data = bytearray(p)
        clone_data[2 * CLUSTER : 2 * CLUSTER + 2 * UNIT] = pattern(2 * UNIT, 13)

        def entry(
            clusters: int, allocated: int, data: bytes | bytearray, **kw: Any
        ) -> dict[str, Any]:
            e = {
                "clusters": clusters,
                "allocated": allocated,
                "thin": True,
                "read_only": False,
                "snapshot": False,
                "clone": False,
                "parent": "None",
                "clones": [],
                "xattrs": {},
                "data": bytes(data).hex(),
            }
            e.update(kw)
            return e

        return {
            "super": str(a),
            "total": total,
            "free": total - 6,  # 3 in the snapshot, one each in a, the clone, the thin blob
            "blobs": {
                str(a): entry(
                    3,
                    1,
                    a_data,
                    clone=True,
                    parent=str(snap),
                    xattrs={
                        "name": b"a".hex(),
                        "raw": "00ff",
                        "later": b"set after the snapshot".hex(),
                    },
                ),
                str(snap): entry(
                    3,
                    3,
                    p,
                    thin=False,
                    read_only=True,
                    snapshot=True,
                    clones=sorted([str(a), str(clone)]),
                    xattrs={"snap": b"yes".hex()},
                ),
                str(clone): entry(
                    3, 1, clone_data, clone=True, parent=str(snap), xattrs={"c": "31"}
                ),
                str(thin): entry(5, 1, thin_data, read_only=True, xattrs={"t": "01" * 1000}),
            },
        }

    expected = run(main())
    assert clean_flag(path) == 1  # unloaded cleanly
    got = describe(path)
    for bid, want in expected["blobs"].items():
        have = got["blobs"].get(bid)
        assert have is not None, f"blob {bid} is missing: {sorted(got['blobs'])}"
        assert have.pop("data") == want.pop("data"), f"blob {bid}'s bytes differ"
        assert have == want, bid
    assert sorted(got["blobs"]) == sorted(expected["blobs"])
    assert (got["super"], got["total"], got["free"]) == (
        expected["super"],
        expected["total"],
        expected["free"],
    )
    assert clean_flag(path) == 1  # the reader unloaded cleanly too


def test_a_blobstore_left_loaded_is_unloaded_cleanly_at_teardown(tmp_path: Path) -> None:
    path = blank_image(tmp_path / "teardown.img")
    proc = run_py(
        args=[
            "-c",
            """
import sys
import spdk_io
from spdk_io import bdev_modules as bm
from spdk_io.blob import Blobstore, BlobstoreOptions
from spdk_io.dma import DmaBuf

async def main() -> None:
    await bm.create_aio("Left0", sys.argv[1], 512)
    bs = await Blobstore.init("Left0", BlobstoreOptions(65536, bstype="persist"))
    bid = await bs.create_blob(2, thin=True, xattrs={"at": "creation"})
    blob = await bs.open_blob(bid)
    buf = DmaBuf.alloc(4096)
    buf.fill(0x5A)
    await blob.write(buf, 65536)
    await blob.resize(3)               # neither synced nor closed:
    await blob.set_xattr("at", "end")  # the teardown's close and unload persist them
    late = DmaBuf.alloc(4096)
    late.fill(0xA5)
    blob.write(late, 2 * 65536)        # nor awaited: the teardown waits for it
    await bs.set_super(bid)
    print("left loaded", bid, flush=True)

spdk_io.run(main(), mem_size_mb=512)
print("clean teardown", flush=True)
""",
            str(path),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "left loaded 0x" in proc.stdout and "clean teardown" in proc.stdout
    assert clean_flag(path) == 1
    got = describe(path)
    bid = got["super"]
    assert list(got["blobs"]) == [bid]
    blob = got["blobs"][bid]
    assert blob["clusters"] == 3 and blob["allocated"] == 2 and blob["thin"]
    assert blob["xattrs"] == {"at": b"end".hex()}
    data = bytes.fromhex(blob["data"])
    want = bytes(CLUSTER) + b"\x5a" * 4096 + bytes(CLUSTER - 4096)
    assert data == want + b"\xa5" * 4096 + bytes(CLUSTER - 4096)


# --------------------------------------------------------------------------- hot-remove


def test_removing_the_bdev_unloads_the_store_and_keeps_what_was_written(
    run: Run, tmp_path: Path
) -> None:
    """Deleting the bdev under a loaded blobstore unloads the store (closing and syncing its
    open blob) rather than hanging the removal; the data and metadata survive on the file."""
    path = tmp_path / "removed.img"
    path.write_bytes(bytes(BLOCKS * UNIT))

    async def main() -> None:
        await bm.create_aio("Removed0", path, UNIT)
        bs = await Blobstore.init("Removed0", BlobstoreOptions(cluster_size=CLUSTER))
        blob = await bs.open_blob(await bs.create_blob(2))
        await write_bytes(blob, CLUSTER, pattern(UNIT, 21))
        await blob.set_xattr("unsynced", "until close")  # the unload's close syncs it
        await spdk_io.wait_for(bm.delete_aio("Removed0"), 10)
        assert bs.unloaded and blob.closed
        with pytest.raises(ValueError, match="closed blob"):
            blob.read(DmaBuf.alloc(UNIT), 0)
        assert clean_flag(path) == 1
        await bm.create_aio("Removed0", path, UNIT)
        try:
            again = await Blobstore.load("Removed0")
            async with again, await again.open_blob(blob.id) as b:
                assert await b.get_xattr_str("unsynced") == "until close"
                assert await read_bytes(b, CLUSTER, UNIT) == pattern(UNIT, 21)
        finally:
            await bm.delete_aio("Removed0")

    run(main())


# --------------------------------------------------------------------------- SPDK 26.05 bugs


def test_operations_spdk_would_crash_or_corrupt_on_are_refused(run: Run) -> None:
    """Two SPDK 26.05 bugs found by the model test, refused with ENOTSUP before SPDK is
    called: decoupling a clone larger than its parent (SPDK reads the parent's cluster map
    past its end; SIGSEGV for a parent of 0 clusters), and deleting a snapshot whose one
    clone has another size and no clusters of its own (SPDK copies the snapshot's extent
    page into it whole)."""

    async def main() -> None:
        async with malloc_store("BsBugs0") as bs:
            empty = await bs.create_blob(0)
            empty_snap = await bs.create_snapshot(empty)
            async with await bs.open_blob(empty) as blob:
                await blob.resize(2)
                await write_bytes(blob, CLUSTER, pattern(UNIT, 31))
            with pytest.raises(SpdkError, match="inflate it instead") as info:
                await bs.decouple_parent(empty)
            assert info.value.errno == errno.ENOTSUP
            assert await bs.get_parent(empty) == empty_snap  # nothing changed
            await bs.inflate(empty)  # the way out
            assert await bs.get_parent(empty) is None

            a = await bs.create_blob(2)
            async with await bs.open_blob(a) as blob:
                await write_bytes(blob, 0, pattern(UNIT, 32))
            snap = await bs.create_snapshot(a)
            async with await bs.open_blob(a) as blob:
                await blob.resize(3)  # the clone: another size, no clusters of its own
                assert blob.allocated_clusters == 0
            with pytest.raises(SpdkError, match="inflate or decouple the clone") as info:
                await bs.delete_blob(snap)
            assert info.value.errno == errno.ENOTSUP
            assert snap in await bs.blob_ids() and await bs.get_parent(a) == snap
            async with await bs.open_blob(a) as blob:
                assert blob.num_clusters == 3
                assert await read_bytes(blob, 0, UNIT) == pattern(UNIT, 32)
            await bs.inflate(a)
            await bs.delete_blob(snap)  # now it has nothing to corrupt
            async with await bs.open_blob(a) as blob:
                assert blob.num_clusters == 3
                assert await read_bytes(blob, 0, UNIT) == pattern(UNIT, 32)

    run(main())


def test_closing_waits_for_the_blobs_metadata_operations_and_cancelling_frees_nothing_early(
    run: Run,
) -> None:
    """A blob is not closed under its own resize (SPDK would free it under the operation),
    and a snapshot whose awaiting task is cancelled still gets its xattrs: what SPDK reads
    lives until SPDK completes, whatever happens to the task."""

    async def main() -> None:
        async with malloc_store("BsInflight0") as bs:
            bid = await bs.create_blob(2)
            blob = await bs.open_blob(bid)
            resize = spdk_io.spawn(blob.resize(4))
            await spdk_io.sleep(0)  # the resize is in SPDK now
            with pytest.raises(BlockingIOError, match="metadata operations in flight"):
                blob.close()
            await blob.aclose()  # waits for it
            await resize
            async with await bs.open_blob(bid) as again:
                assert again.num_clusters == 4

            snap = spdk_io.spawn(bs.create_snapshot(bid, xattrs={"who": "cancelled"}))
            await spdk_io.sleep(0)
            snap.cancel()
            with pytest.raises(spdk_io.Cancelled):
                await snap
            for _ in range(1000):  # SPDK finishes the snapshot by itself
                if not bs.md_inflight:
                    break
                await spdk_io.sleep(0.001)
            assert not bs.md_inflight
            (snap_id,) = [i for i in await bs.blob_ids() if i != bid]
            async with await bs.open_blob(snap_id) as s:
                assert s.snapshot and await s.get_xattr_str("who") == "cancelled"

    run(main())
