"""The processes of the blobstore crash test (tests/test_blob_crash.py), and the model of
what a killed writer left durable.

``python -m tests.blob_crash_child work FILE SEED ROUND init|load`` is the writer: it
makes (or loads) a blobstore on an aio bdev over FILE, then works on it for ever, until
the test kills it with SIGKILL.  It prints a journal to stdout, one JSON object a line,
flushed at once (a pipe keeps what was written when the process dies):

* an *intent* (``"e": "i"`` or ``"del"``) is printed BEFORE an operation that may change
  something already durable starts: after a crash either the old or the new value may
  be found;
* a *fact* (``"new"``, ``"sync"``) is printed only AFTER SPDK completed the operation
  that made it durable (creating a blob, a snapshot or a clone; ``spdk_blob_sync_md``;
  closing a blob).  A sync's fact is the blob's whole size and xattrs, and the data of
  every chunk written since it was opened (each of those writes completed before the
  sync started).

:class:`Model` replays a journal into what must hold after any crash: for each blob,
the sizes, xattr values and chunk patterns it may have.  A chunk rewritten after its
fact may hold, block by block, the old or the new pattern; nothing else.

``python -m tests.blob_crash_child verify FILE EXPECT [clean|dirty]`` loads the
blobstore (SPDK replays its recovery), checks the expectations in EXPECT, then fills
every free cluster with a new blob and checks again (a cluster that recovery wrongly
marked free would be overwritten), deletes the filler and unloads (``clean``) or exits
without unloading (``dirty``: the next load recovers a recovered store).  It prints
one JSON line: ``{"problems": [...], ...}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spdk_io.blob import Blob, BlobId, Blobstore

BDEV = "crash0"
BSTYPE = "crashtest"
BLOCK = 4096
CLUSTER = 64 * 1024
CHUNK = 8 * 1024
CHUNKS_PER_CLUSTER = CLUSTER // CHUNK
BLOCKS_PER_CHUNK = CHUNK // BLOCK
STORE_BYTES = 64 * 1024 * 1024
MAX_CLUSTERS = 8  # per blob
LOW_FREE = 160  # below this many free clusters the writer deletes instead of growing
#: SPDK v26.05 loses synced metadata on two paths with no crash at all; a crash while a
#: shrink to 0 clusters is persisted leaves a store that does not load, and one while a
#: clone is snapshotted a store whose load crashes the process (see test_blob_crash.py:
#: test_spdk_*): the writer steers clear of them unless this is set.
SPDK_BUGS = os.environ.get("SPDK_IO_CRASH_SPDK_BUGS") == "1"


# -- data patterns -------------------------------------------------------------------------


def block_of(pid: int, index: int) -> bytes:
    """Block ``index`` of the chunk pattern ``pid``: a header naming both, then filler."""
    head = struct.pack("<QQ", pid, index)
    fill = hashlib.sha256(head).digest()
    return head + (fill * (BLOCK // len(fill)))[: BLOCK - len(head)]


def pattern(pid: int) -> bytes:
    return b"".join(block_of(pid, i) for i in range(BLOCKS_PER_CHUNK))


def describe_block(data: bytes) -> str:
    """What a block that matched no allowed pattern holds (for the failure message)."""
    if not any(data):
        return "zeroes"
    pid, index = struct.unpack_from("<QQ", data)
    if data == block_of(pid, index):
        return f"block {index} of pattern {pid}"
    return f"unknown bytes {data[:16].hex()}..."


# -- the model -----------------------------------------------------------------------------


@dataclass
class Expect:
    """What blob may look like after a crash."""

    sizes: set[int]  # cluster counts
    xattrs: dict[str, set[str | None]]  # name -> values (None: absent)
    chunks: dict[int, set[int]] = field(default_factory=dict)  # chunk -> pattern ids
    maybe_deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "sizes": sorted(self.sizes),
            "xattrs": {
                k: sorted(v, key=lambda s: (s is None, s or "")) for k, v in self.xattrs.items()
            },
            "chunks": {str(k): sorted(v) for k, v in self.chunks.items()},
            "maybe_deleted": self.maybe_deleted,
        }


class Model:
    """A journal replayed (see the module docstring)."""

    def __init__(self) -> None:
        self.blobs: dict[str, Expect] = {}
        self.events = 0
        self.facts = 0

    def apply(self, ev: dict[str, Any]) -> None:
        kind = ev["e"]
        self.events += 1
        if kind in ("ready", "loading"):
            return
        bid: str = ev["b"]
        if kind == "new":
            self.facts += 1
            self.blobs[bid] = Expect({ev["n"]}, {k: {v} for k, v in ev["x"].items()})
            self._chunks(self.blobs[bid], ev["c"])
            return
        blob = self.blobs.get(bid)
        if kind == "sync":
            self.facts += 1
            if blob is None:  # a blob of an earlier round the model lost track of: none
                blob = self.blobs[bid] = Expect(set(), {})
            blob.sizes = {ev["n"]}
            x: dict[str, str] = ev["x"]
            for name in set(blob.xattrs) | set(x):
                blob.xattrs[name] = {x.get(name)}
            self._chunks(blob, ev["c"])
        elif blob is None:
            return  # an intent about a blob with no facts
        elif kind == "del":
            blob.maybe_deleted = True
        elif kind == "i":
            if "n" in ev:
                # A shrink (even one undone by a later grow) may lose the chunks past it.
                blob.sizes.add(ev["n"])
                for past in [c for c in blob.chunks if c >= ev["n"] * CHUNKS_PER_CLUSTER]:
                    del blob.chunks[past]
            elif "x" in ev:
                blob.xattrs.setdefault(ev["x"], {None}).add(ev["v"])
            elif "c" in ev:
                chunk: int = ev["c"]
                if ev["p"] is None:
                    blob.chunks.pop(chunk, None)
                elif chunk in blob.chunks:
                    blob.chunks[chunk].add(ev["p"])
        else:
            raise ValueError(f"unknown journal event {ev!r}")

    @staticmethod
    def _chunks(blob: Expect, chunks: dict[str, int]) -> None:
        for k, pid in chunks.items():
            blob.chunks[int(k)] = {pid}

    def to_json(self) -> dict[str, Any]:
        return {bid: e.to_json() for bid, e in self.blobs.items()}


def parse_journal(text: str) -> list[dict[str, Any]]:
    """The journal's events; a last line cut short by the kill is dropped."""
    events = []
    for line in text.splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict) and "e" in ev:
            events.append(ev)
    return events


# -- the writer ----------------------------------------------------------------------------


def emit(**ev: Any) -> None:
    sys.stdout.write(json.dumps(ev, separators=(",", ":")) + "\n")
    sys.stdout.flush()


@dataclass
class Tracked:
    """The writer's view of one blob."""

    snapshot: bool
    n: int
    x: dict[str, str]
    written: dict[int, int] = field(default_factory=dict)  # chunk -> latest pattern id
    handle: Blob | None = None
    parent: BlobId | None = None
    clones: set[BlobId] = field(default_factory=set)


class Writer:
    def __init__(self, bs: Blobstore, seed: int, round_no: int) -> None:
        self.bs = bs
        self.rng = random.Random(seed)
        self.round = round_no
        self.next_pid = round_no * 10_000_000
        self.blobs: dict[BlobId, Tracked] = {}
        self.foreign: list[BlobId] = []  # blobs of earlier rounds, not looked at yet
        self.made = 0

    def pid(self) -> int:
        self.next_pid += 1
        return self.next_pid

    def writable(self) -> list[BlobId]:
        return [b for b, t in self.blobs.items() if t.handle is not None]

    def closed(self) -> list[BlobId]:
        return [b for b, t in self.blobs.items() if t.handle is None and not t.snapshot]

    def snapshots(self) -> list[BlobId]:
        return [b for b, t in self.blobs.items() if t.snapshot]

    async def run(self) -> None:
        self.foreign = await self.bs.blob_ids()
        ops = [
            (self.create, 6),
            (self.write, 30),
            (self.resize, 6),
            (self.xattr, 8),
            (self.sync, 8),
            (self.snapshot, 3),
            (self.clone, 3),
            (self.close, 4),
            (self.reopen, 3),
            (self.delete, 3),
            (self.adopt, 3),
        ]
        fns = [f for f, _ in ops]
        weights = [w for _, w in ops]
        while True:
            if self.bs.free_clusters < LOW_FREE:
                await self.make_room()
                continue
            await self.rng.choices(fns, weights)[0]()

    async def create(self) -> None:
        thin = self.rng.random() < 0.5
        n = self.rng.randint(0 if thin else 1, MAX_CLUSTERS // 2)
        self.made += 1
        x = {"name": f"r{self.round}b{self.made}", "thin": str(thin)}
        bid = await self.bs.create_blob(n, thin=thin, xattrs=x)
        emit(e="new", b=str(bid), n=n, x=x, c={})
        t = self.blobs[bid] = Tracked(False, n, x)
        t.handle = await self.bs.open_blob(bid)

    async def write(self) -> None:
        from spdk_io.dma import DmaBuf
        from spdk_io.loop import gather

        ids = [b for b in self.writable() if self.blobs[b].n]
        if not ids:
            return await self.create()
        bid = self.rng.choice(ids)
        t = self.blobs[bid]
        assert t.handle is not None
        chunks = sorted(self.rng.sample(range(t.n * CHUNKS_PER_CLUSTER), self.rng.randint(1, 4)))
        pids = [self.pid() for _ in chunks]
        bufs = []
        for chunk, pid in zip(chunks, pids, strict=True):
            emit(e="i", b=str(bid), c=chunk, p=pid)
            buf = DmaBuf.alloc(CHUNK, zero=False)
            buf[:] = pattern(pid)
            bufs.append(buf)
        await gather(*(t.handle.write(b, c * CHUNK) for b, c in zip(bufs, chunks, strict=True)))
        for chunk, pid in zip(chunks, pids, strict=True):
            t.written[chunk] = pid
        for b in bufs:
            b.free()

    async def resize(self) -> None:
        ids = self.writable()
        if not ids:
            return
        bid = self.rng.choice(ids)
        t = self.blobs[bid]
        assert t.handle is not None
        # Persisting a shrink to 0 clusters writes an empty extent page before the new
        # metadata: a crash between leaves a store that does not load (test_spdk_*).
        n = self.rng.randint(0 if SPDK_BUGS else 1, MAX_CLUSTERS)
        for chunk in sorted(c for c in t.written if c >= n * CHUNKS_PER_CLUSTER):
            emit(e="i", b=str(bid), c=chunk, p=None)
            del t.written[chunk]
        emit(e="i", b=str(bid), n=n)
        shrink = n < t.n
        await t.handle.resize(n)
        t.n = n
        if shrink and not SPDK_BUGS:
            # A cluster allocated while a shrink is unsynced rewrites the extent page with
            # the smaller size, and a later grow and sync leave it so (test_spdk_*).
            await t.handle.sync()
            self.synced(bid)

    async def xattr(self) -> None:
        ids = self.writable()
        if not ids:
            return
        bid = self.rng.choice(ids)
        t = self.blobs[bid]
        assert t.handle is not None
        name = self.rng.choice(["name", "k1", "k2", "k3"])
        if name in t.x and self.rng.random() < 0.3:
            emit(e="i", b=str(bid), x=name, v=None)
            await t.handle.remove_xattr(name)
            del t.x[name]
        else:
            value = f"v{self.pid()}" * self.rng.randint(1, 40)
            emit(e="i", b=str(bid), x=name, v=value)
            await t.handle.set_xattr(name, value)
            t.x[name] = value

    def synced(self, bid: BlobId) -> None:
        t = self.blobs[bid]
        emit(e="sync", b=str(bid), n=t.n, x=t.x, c={str(k): v for k, v in t.written.items()})

    async def sync(self) -> None:
        ids = self.writable()
        if not ids:
            return
        bid = self.rng.choice(ids)
        handle = self.blobs[bid].handle
        assert handle is not None
        await handle.sync()
        self.synced(bid)

    async def snapshot(self) -> None:
        ids = self.writable()
        if not SPDK_BUGS:
            # A crash while a clone is snapshotted leaves a half-made snapshot that the
            # next load's recovery deletes, and SPDK crashes doing so (test_spdk_*).
            ids = [b for b in ids if self.blobs[b].parent is None]
        if not ids:
            return
        bid = self.rng.choice(ids)
        t = self.blobs[bid]
        x = {"snapshot-of": str(bid)}
        sid = await self.bs.create_snapshot(bid, xattrs=x)
        # The snapshot holds the blob's data and size now; the blob reads through to it.
        emit(e="new", b=str(sid), n=t.n, x=x, c={str(k): v for k, v in t.written.items()})
        self.blobs[sid] = Tracked(True, t.n, x, dict(t.written), parent=t.parent)
        if t.parent is not None and t.parent in self.blobs:
            self.blobs[t.parent].clones.discard(bid)
            self.blobs[t.parent].clones.add(sid)
        t.parent = sid
        self.blobs[sid].clones.add(bid)

    async def clone(self) -> None:
        ids = self.snapshots()
        if not ids:
            return await self.snapshot()
        sid = self.rng.choice(ids)
        s = self.blobs[sid]
        self.made += 1
        x = {"name": f"r{self.round}c{self.made}"}
        cid = await self.bs.create_clone(sid, xattrs=x)
        emit(e="new", b=str(cid), n=s.n, x=x, c={str(k): v for k, v in s.written.items()})
        c = self.blobs[cid] = Tracked(False, s.n, x, dict(s.written), parent=sid)
        s.clones.add(cid)
        c.handle = await self.bs.open_blob(cid)

    async def close(self) -> None:
        ids = self.writable()
        if not ids:
            return
        bid = self.rng.choice(ids)
        t = self.blobs[bid]
        assert t.handle is not None
        handle, t.handle = t.handle, None
        await handle.aclose()  # closing syncs the metadata
        self.synced(bid)

    async def reopen(self) -> None:
        ids = self.closed()
        if not ids:
            return
        bid = self.rng.choice(ids)
        self.blobs[bid].handle = await self.bs.open_blob(bid)

    def deletable(self) -> list[BlobId]:
        out = []
        for bid, t in self.blobs.items():
            if t.handle is not None:
                continue
            if t.snapshot and len(t.clones) > 1:
                continue
            if t.snapshot and t.clones and not SPDK_BUGS:
                # Deleting a snapshot whose one clone has another size and no extent page
                # of its own leaves the clone unopenable or resized (test_spdk_*).
                (cid,) = t.clones
                clone = self.blobs.get(cid)
                if clone is None or clone.n != t.n:
                    continue
            out.append(bid)
        return out

    async def delete(self) -> None:
        ids = self.deletable()
        if not ids:
            return
        await self.delete_one(self.rng.choice(ids))

    async def delete_one(self, bid: BlobId) -> None:
        t = self.blobs.pop(bid)
        emit(e="del", b=str(bid))
        await self.bs.delete_blob(bid)
        # A deleted snapshot's clone now depends on the snapshot's parent.
        for cid in t.clones:
            if cid in self.blobs:
                self.blobs[cid].parent = t.parent
        if t.parent is not None and t.parent in self.blobs:
            self.blobs[t.parent].clones.discard(bid)
            self.blobs[t.parent].clones.update(t.clones)

    async def adopt(self) -> None:
        """Open a blob of an earlier round (it was recovered): write to it like to ours."""
        if not self.foreign:
            return
        bid = self.foreign.pop(self.rng.randrange(len(self.foreign)))
        handle = await self.bs.open_blob(bid)
        x = {k: v.decode() for k, v in (await handle.xattrs()).items()}
        # Read-only, not "snapshot": a snapshot whose clones are gone is no longer one.
        t = Tracked(handle.read_only, handle.num_clusters, x)
        clones = await self.bs.clones(bid)
        t.clones = set(clones)
        t.parent = await self.bs.get_parent(bid)
        self.blobs[bid] = t
        if t.snapshot:
            await handle.aclose()
        else:
            t.handle = handle

    async def make_room(self) -> None:
        ids = self.deletable()
        if ids:
            return await self.delete_one(self.rng.choice(ids))
        if self.foreign:
            return await self.adopt()
        ids = self.writable()
        if not ids:
            raise RuntimeError(f"no room and nothing to delete: {self.bs.free_clusters} free")
        await self.close()


async def work(path: str, seed: int, round_no: int, how: str) -> None:
    from spdk_io import bdev_modules as bm
    from spdk_io.blob import Blobstore, BlobstoreOptions

    await bm.create_aio(BDEV, path, BLOCK)
    if how == "init":
        bs = await Blobstore.init(BDEV, BlobstoreOptions(cluster_size=CLUSTER, bstype=BSTYPE))
    else:
        emit(e="loading")
        bs = await Blobstore.load(BDEV, BSTYPE)
    emit(e="ready")
    await Writer(bs, seed, round_no).run()


async def idle_after_init(path: str) -> None:
    from spdk_io import bdev_modules as bm
    from spdk_io.blob import Blobstore, BlobstoreOptions
    from spdk_io.loop import sleep

    await bm.create_aio(BDEV, path, BLOCK)
    await Blobstore.init(BDEV, BlobstoreOptions(cluster_size=CLUSTER, bstype=BSTYPE))
    emit(e="ready")
    while True:
        await sleep(1)


# -- the verifier --------------------------------------------------------------------------


async def verify(path: str, expect: dict[str, Any], clean: bool) -> dict[str, Any]:
    from spdk_io import bdev_modules as bm
    from spdk_io.blob import BlobId, Blobstore
    from spdk_io.dma import DmaBuf

    problems: list[str] = []
    await bm.create_aio(BDEV, path, BLOCK)
    bs = await Blobstore.load(BDEV, BSTYPE)
    ids = await bs.blob_ids()
    present = {str(b) for b in ids}
    for bid, e in expect.items():
        if bid not in present and not e["maybe_deleted"]:
            problems.append(f"blob {bid} is gone")
    buf = DmaBuf.alloc(CHUNK)
    checked = 0

    async def check_chunks(blob: Blob, chunks: dict[str, list[int]], when: str) -> None:
        nonlocal checked
        size = blob.size
        for key, pids in chunks.items():
            chunk = int(key)
            if (chunk + 1) * CHUNK > size:
                problems.append(f"{when}: blob {blob.id} chunk {chunk} is past its size {size}")
                continue
            await blob.read(buf, chunk * CHUNK)
            data = buf.tobytes()
            checked += 1
            for i in range(BLOCKS_PER_CHUNK):
                got = data[i * BLOCK : (i + 1) * BLOCK]
                if not any(got == block_of(p, i) for p in pids):
                    problems.append(
                        f"{when}: blob {blob.id} chunk {chunk} block {i}: expected block {i} "
                        f"of pattern {' or '.join(map(str, pids))}, found {describe_block(got)}"
                    )

    for bid_obj in ids:
        bid = str(bid_obj)
        try:
            blob = await bs.open_blob(bid_obj)
        except Exception as exc:  # every listed blob must open
            problems.append(f"blob {bid} is listed but does not open: {exc}")
            continue
        async with blob:
            e = expect.get(bid)
            if e is None or e["maybe_deleted"]:
                await blob.xattrs()
                continue
            if blob.num_clusters not in e["sizes"]:
                problems.append(
                    f"blob {bid}: {blob.num_clusters} clusters, expected one of {e['sizes']}"
                )
            x = {k: v.decode() for k, v in (await blob.xattrs()).items()}
            for name in set(x) | set(e["xattrs"]):
                if x.get(name) not in e["xattrs"].get(name, [None]):
                    problems.append(
                        f"blob {bid}: xattr {name!r} is {x.get(name)!r}, expected one of "
                        f"{e['xattrs'].get(name, [None])}"
                    )
            await check_chunks(blob, e["chunks"], "after load")
    # A cluster recovery wrongly thinks free would be handed out again: take them all,
    # overwrite them, and look at the synced data again.
    free = bs.free_clusters
    filler = None
    if free:
        filler = await bs.create_blob(free)
        async with await bs.open_blob(filler) as f:
            big = DmaBuf.alloc(CLUSTER)
            big.fill(0xE5)
            for i in range(free):
                await f.write(big, i * CLUSTER)
            big.free()
    for bid, e in expect.items():
        if bid in present and not e["maybe_deleted"] and e["chunks"]:
            async with await bs.open_blob(BlobId.parse(bid)) as blob:
                await check_chunks(blob, e["chunks"], "after filling the free clusters")
    if filler is not None:
        await bs.delete_blob(filler)
    result = {
        "problems": problems,
        "blobs": len(ids),
        "chunks_checked": checked,
        "free_clusters": free,
        "total_clusters": bs.total_clusters,
    }
    if clean:
        await bs.unload()
    return result


def main(argv: list[str]) -> None:
    import spdk_io

    mode, path = argv[0], argv[1]
    if mode == "work":
        spdk_io.run(work(path, int(argv[2]), int(argv[3]), argv[4]), mem_size_mb=512)
    elif mode == "idle":
        spdk_io.run(idle_after_init(path), mem_size_mb=512)
    elif mode == "verify":
        with open(argv[2]) as f:
            expect = json.load(f)
        clean = argv[3] == "clean"
        if clean:
            result = spdk_io.run(verify(path, expect, clean), mem_size_mb=512)
            print(json.dumps(result), flush=True)
        else:

            async def then_die() -> None:
                result = await verify(path, expect, clean)
                print(json.dumps(result), flush=True)
                os._exit(0)  # no unload: the store stays dirty

            spdk_io.run(then_die(), mem_size_mb=512)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
