"""Crash consistency of the blobstore: a writer killed with SIGKILL at a random moment
loses nothing it had made durable, and the store always loads.

A child process (tests/blob_crash_child.py) works on a blobstore on an aio bdev over a
file in tmp_path: it creates blobs (thin and thick), writes chunks of deterministic
patterns, resizes, sets and removes xattrs, takes snapshots and clones, syncs, closes,
reopens and deletes, journaling each intent before and each durable fact after (see
that module).  The test kills it after a random delay (seeded), sometimes reloads the
recovered store in a second writer (killed too, sometimes while its load is still
recovering), and finally loads the store in a fresh process that checks every fact:
each synced blob exists with a size and xattrs it may have, and every synced chunk
holds, block by block, a pattern it may hold.  Then it fills every free cluster and
checks the chunks again, so a cluster recovery wrongly freed would show.

The aio bdev writes the file with O_DIRECT where it can; what reached the kernel
survives the process's SIGKILL (as after a real process crash, not a power loss).

``SPDK_IO_CRASH_RUNS`` sets how many kill runs (default 6), ``SPDK_IO_CRASH_SEED``
their base seed.  A failing run keeps its journals, the child's stderr and the store
image in its tmp_path (``--basetemp`` keeps them).

The test found five SPDK v26.05 bugs.  spdk_io closes three: it syncs a blob before
snapshotting it (SPDK dereferenced NULL snapshotting a blob shrunk since its last sync),
syncs a shrink at once (a thin write during an unsynced shrink lost the synced size),
and refuses deleting a snapshot whose one clone has another size and no cluster of its
own (SPDK broke the clone).  Two are crash-consistency bugs in SPDK's persist and
recovery that spdk_io cannot close: a crash while a shrink to 0 clusters is persisted
leaves a store that does not load, and a crash while a clone is snapshotted leaves one
whose load crashes SPDK.  Their reproducers (test_spdk_*, expected to fail until SPDK is
fixed) need a kill in a narrow window and run only with ``SPDK_IO_CRASH_REPRO=1``; the
writer steers clear of their triggers unless ``SPDK_IO_CRASH_SPDK_BUGS=1``.
"""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.blob_crash_child import STORE_BYTES, Model, parse_journal
from tests.conftest import ROOT, _child_env, run_py, wait_ready

RUNS = int(os.environ.get("SPDK_IO_CRASH_RUNS", "6"))
BASE_SEED = int(os.environ.get("SPDK_IO_CRASH_SEED", "20261126"))
#: How long a child may take to come up (SPDK, the aio bdev, init or load).
START_LIMIT = 30.0


@dataclass
class Killed:
    """One writer process, killed."""

    journal: str
    stderr: str
    delay: float  # seconds from the mark to the kill
    mark: str  # "ready" or "loading"
    events: int


def _spawn(args: list[str], err: Path) -> subprocess.Popen[str]:
    with err.open("w") as err_file:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.blob_crash_child", *args],
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
            cwd=ROOT,
            env=_child_env(),
        )


def kill_after(args: list[str], err: Path, mark: str, delay: float) -> Killed:
    """Start a child, wait for its journal line ``mark``, SIGKILL it ``delay`` s later."""
    proc = _spawn(args, err)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if f'"e":"{mark}"' in line:
                seen.set()
        seen.set()  # EOF: the child died

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not seen.wait(START_LIMIT):
        proc.kill()
    time.sleep(delay)
    alive = proc.poll() is None
    proc.kill()
    proc.wait()
    reader.join(10)
    journal = "".join(lines)
    stderr = err.read_text(errors="replace")
    if not alive:
        pytest.fail(
            f"the child {args} exited (rc {proc.returncode}) before it was killed\n"
            f"journal tail:\n{journal[-2000:]}\nstderr:\n{stderr[-4000:]}"
        )
    if f'"e":"{mark}"' not in journal:
        pytest.fail(f"the child {args} never printed {mark!r}\nstderr:\n{stderr[-4000:]}")
    return Killed(journal, stderr, delay, mark, len(parse_journal(journal)))


def verify(path: Path, model: Model, tmp: Path, clean: bool, context: str) -> dict[str, Any]:
    """Load the store in a fresh process and check ``model``'s expectations."""
    expect = tmp / "expect.json"
    expect.write_text(json.dumps(model.to_json()))
    how = "clean" if clean else "dirty"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.blob_crash_child", "verify", str(path), str(expect), how],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=_child_env(),
        check=False,
    )
    result: dict[str, Any] | None = None
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
    if proc.returncode != 0 or result is None:
        pytest.fail(
            f"{context}: loading the crashed store failed (rc {proc.returncode})\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    if result["problems"]:
        pytest.fail(
            f"{context}: {len(result['problems'])} problems after recovery:\n"
            + "\n".join(result["problems"][:40])
        )
    return result


def new_store(tmp: Path) -> Path:
    path = tmp / "store.img"
    with path.open("wb") as f:
        f.truncate(STORE_BYTES)
    return path


def crash_run(tmp: Path, seed: int) -> str:
    """One run: one to three killed writers (each loading the last one's store), the
    store checked between them (sometimes) and after the last."""
    rng = random.Random(seed)
    path = new_store(tmp)
    model = Model()
    rounds = rng.choice([1, 1, 2, 2, 3])
    log: list[str] = []
    context = f"crash run seed {seed}"
    for r in range(rounds):
        if r and rng.random() < 0.3:
            mark, delay = "loading", rng.uniform(0.0, 0.08)  # kill the load's recovery
        elif rng.random() < 0.25:
            mark, delay = "ready", rng.uniform(0.0, 0.15)
        else:
            mark, delay = "ready", rng.uniform(0.15, 2.0)
        how = "load" if r else "init"
        args = ["work", str(path), str(seed * 10 + r), str(r + 1), how]
        k = kill_after(args, tmp / f"stderr{r}.txt", mark, delay)
        (tmp / f"journal{r}.txt").write_text(k.journal)  # kept for a failure's analysis
        for ev in parse_journal(k.journal):
            model.apply(ev)
        log.append(f"round {r + 1}: killed {delay:.3f} s after {mark!r}, {k.events} events")
        context = f"crash run seed {seed} ({'; '.join(log)})"
        if r + 1 < rounds and rng.random() < 0.5:
            clean = rng.random() < 0.5
            verify(path, model, tmp, clean=clean, context=context + ", between")
            log.append(f"checked, {'unloaded' if clean else 'left dirty'}")
    result = verify(path, model, tmp, clean=True, context=context)
    return f"{context}: {model.facts} facts, {result['chunks_checked']} chunks checked"


@pytest.mark.parametrize("run", range(RUNS))
def test_crash_recovery(tmp_path: Path, run: int) -> None:
    print(crash_run(tmp_path, BASE_SEED + run))


def test_killed_right_after_init(tmp_path: Path) -> None:
    """A store killed as soon as ``init`` returned loads, empty."""
    path = new_store(tmp_path)
    k = kill_after(["idle", str(path)], tmp_path / "stderr.txt", "ready", 0.0)
    assert k.events == 1
    result = verify(path, Model(), tmp_path, clean=True, context="killed after init")
    assert result["blobs"] == 0
    assert result["free_clusters"] == result["total_clusters"]


def test_snapshot_after_unsynced_shrink() -> None:
    """Found by the crash test: SPDK v26.05 dereferenced NULL snapshotting an open blob
    that shrank since its last sync (bs_snapshot_swap_cluster_maps swaps the cluster and
    extent page arrays but not their sizes).  Blobstore.create_snapshot syncs first."""
    proc = run_py(
        """
        import spdk_io
        from spdk_io import bdev_modules as bm
        from spdk_io.blob import Blobstore, BlobstoreOptions

        async def main():
            await bm.create_malloc("M0", 8192, 512)
            bs = await Blobstore.init("M0", BlobstoreOptions(cluster_size=64 * 1024))
            bid = await bs.create_blob(3)
            blob = await bs.open_blob(bid)
            await blob.resize(0)  # (spdk_io syncs a shrink now; the snapshot syncs too)
            snap = await bs.create_snapshot(bid)
            await blob.resize(2)  # the blob's arrays must be sound after the swap
            await blob.sync()
            print("sizes", blob.num_clusters, (await bs.open_blob(snap)).num_clusters)
            await bs.unload()

        spdk_io.run(main(), mem_size_mb=512)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sizes 2 0" in proc.stdout


# Found by the crash test, and not crash bugs at all: SPDK v26.05 loses synced metadata
# on two paths, with a clean unload.  spdk_io closes both (below).
_PRELUDE = """
    import spdk_io
    from spdk_io import bdev_modules as bm
    from spdk_io.blob import Blobstore, BlobstoreOptions
    from spdk_io.dma import DmaBuf

    CL = 64 * 1024
"""


def test_a_shrink_is_synced_at_once() -> None:
    """Found by the crash test, and not a crash bug: SPDK v26.05 loses a synced size when a
    thin cluster is allocated while a shrink is unsynced (blob_write_extent_page writes
    the extent page from the in-memory size; a later grow and sync see no change and
    leave it short: a blob synced at 4 clusters reloads with 2).  Blob.resize syncs a
    shrink at once, so the window is closed: this sequence keeps its size."""
    proc = run_py(
        _PRELUDE
        + """
    async def main():
        await bm.create_malloc("M0", 8192, 512)
        bs = await Blobstore.init("M0", BlobstoreOptions(cluster_size=CL))
        bid = await bs.create_blob(4, thin=True)
        blob = await bs.open_blob(bid)
        buf = DmaBuf.alloc(4096)
        buf.fill(1)
        await blob.write(buf, 0)  # allocates cluster 0 and the extent page
        await blob.resize(2)  # synced by spdk_io
        await blob.write(buf, CL)  # allocates cluster 1: the extent page is rewritten
        await blob.resize(4)
        await blob.sync()
        print("synced", blob.num_clusters)
        await bs.unload()
        bs = await Blobstore.load("M0")
        async with await bs.open_blob(bid) as b:
            print("reloaded", b.num_clusters)
        await bs.unload()

    spdk_io.run(main(), mem_size_mb=512)
    """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "synced 4" in proc.stdout
    assert "reloaded 4" in proc.stdout, proc.stdout


def test_deleting_a_snapshot_of_a_smaller_clone_is_refused() -> None:
    """Found by the crash test (and the model test): deleting a snapshot of 2 clusters
    whose one clone was resized to 1 (and has no cluster of its own) makes SPDK v26.05
    give the clone the snapshot's extent page, 2 entries: the clone no longer opens
    (EINVAL), before or after a reload.  spdk_io refuses that delete (ENOTSUP); the clone
    stays sound, and inflating it first makes the delete safe."""
    proc = run_py(
        _PRELUDE
        + """
    async def main():
        await bm.create_malloc("M0", 8192, 512)
        bs = await Blobstore.init("M0", BlobstoreOptions(cluster_size=CL))
        bid = await bs.create_blob(2)
        snap = await bs.create_snapshot(bid)  # bid: a thin clone, no cluster of its own
        blob = await bs.open_blob(bid)
        await blob.resize(1)
        await blob.aclose()
        try:
            await bs.delete_blob(snap)
        except OSError as exc:
            print("refused", exc.errno)
        await bs.inflate(bid)
        await bs.delete_blob(snap)
        async with await bs.open_blob(bid) as c:
            print("after delete", c.num_clusters)
        await bs.unload()
        bs = await Blobstore.load("M0")
        async with await bs.open_blob(bid) as c:
            print("reloaded", c.num_clusters)
        await bs.unload()

    spdk_io.run(main(), mem_size_mb=512)
    """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"refused {errno.ENOTSUP}" in proc.stdout
    assert "after delete 1" in proc.stdout
    assert "reloaded 1" in proc.stdout, proc.stdout


_SHRINK_LOOP = """
    import sys
    import spdk_io
    from spdk_io import bdev_modules as bm
    from spdk_io.blob import Blobstore, BlobstoreOptions

    async def main():
        await bm.create_aio("A0", sys.argv[1], 4096)
        bs = await Blobstore.init("A0", BlobstoreOptions(cluster_size=64 * 1024))
        blob = await bs.open_blob(await bs.create_blob(8))
        print("READY", flush=True)
        while True:
            await blob.resize(0)
            await blob.sync()
            await blob.resize(8)
            await blob.sync()

    spdk_io.run(main(), mem_size_mb=512)
"""


#: The two reproducers below kill a loop until a kill lands in SPDK's window (about one
#: kill in six, one in ten): seconds each, so they run only when asked for.
_REPRO = pytest.mark.skipif(
    os.environ.get("SPDK_IO_CRASH_REPRO") != "1",
    reason="a probabilistic SPDK bug reproducer: SPDK_IO_CRASH_REPRO=1 runs it",
)


def _kill_loop(tmp: Path, code: str, seed: int, check: Any, kills: int) -> None:
    """``kills`` times: start ``code`` on a fresh store file, kill it at a random moment
    after it printed READY, and ``check(i, path, delay)`` the store."""
    rng = random.Random(seed)
    path = tmp / "loop.img"
    for i in range(kills):
        with path.open("wb") as f:
            f.truncate(16 * 1024 * 1024)
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=_child_env(),
        )
        wait_ready(proc)
        delay = rng.uniform(0.05, 0.5)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        check(i, path, delay)


@_REPRO
@pytest.mark.xfail(
    reason="SPDK v26.05 bug, outside spdk_io: persisting a shrink writes the extent pages "
    "past the new size (empty) before the new metadata; after a crash between, the old "
    "metadata points at an empty extent page and recovery fails the whole load (EILSEQ)",
    strict=False,  # a kill hits the window about one time in six: 20 kills nearly always do
)
def test_spdk_crash_while_shrinking_to_zero(tmp_path: Path, run: Any) -> None:
    """A blob resized to 0 clusters and back, synced each time, killed at random moments:
    every load after a kill must succeed."""
    from spdk_io import bdev_modules as bm
    from spdk_io.blob import Blobstore

    async def load(name: str, path: Path) -> int:
        await bm.create_aio(name, path, 4096)
        try:
            bs = await Blobstore.load(name)
            n = len(await bs.blob_ids())
            await bs.unload()
            return n
        finally:
            await bm.delete_aio(name)

    def check(i: int, path: Path, delay: float) -> None:
        try:
            blobs = run(load(f"shrink{i}", path))
        except Exception as exc:
            pytest.fail(f"kill {i + 1}, {delay:.3f} s into the loop: the load failed: {exc}")
        assert blobs == 1

    _kill_loop(tmp_path, _SHRINK_LOOP, BASE_SEED, check, 20)


_SNAPSHOT_CLONE_LOOP = """
    import sys
    import spdk_io
    from spdk_io import bdev_modules as bm
    from spdk_io.blob import Blobstore, BlobstoreOptions

    async def main():
        await bm.create_aio("A0", sys.argv[1], 4096)
        bs = await Blobstore.init("A0", BlobstoreOptions(cluster_size=64 * 1024))
        bid = await bs.create_blob(2)
        prev = await bs.create_snapshot(bid)  # bid is a clone now
        print("READY", flush=True)
        while True:
            snap = await bs.create_snapshot(bid)  # a snapshot of a clone
            await bs.delete_blob(prev)  # its one clone is snap: the chain stays short
            prev = snap

    spdk_io.run(main(), mem_size_mb=512)
"""
_LOAD = """
    import sys
    import spdk_io
    from spdk_io import bdev_modules as bm
    from spdk_io.blob import Blobstore

    async def main():
        await bm.create_aio("A0", sys.argv[1], 4096)
        bs = await Blobstore.load("A0")
        print("loaded", len(await bs.blob_ids()))
        await bs.unload()

    spdk_io.run(main(), mem_size_mb=512)
"""


@_REPRO
@pytest.mark.xfail(
    reason="SPDK v26.05 bug, outside spdk_io: a crash while a clone is snapshotted leaves "
    "a snapshot marked in progress (SNAPTMP) whose parent's clone list lacks it; the next "
    "load's recovery deletes it and bs_blob_list_remove dereferences NULL (SIGSEGV)",
    strict=False,  # a kill hits the window about one time in ten: 25 kills usually do
)
def test_spdk_crash_while_snapshotting_a_clone(tmp_path: Path) -> None:
    """A clone snapshotted again and again (the older snapshot deleted), killed at random
    moments: every load after a kill must succeed (in a fresh process: it may crash)."""

    def check(i: int, path: Path, delay: float) -> None:
        proc = run_py(args=["-c", textwrap.dedent(_LOAD), str(path)])
        if proc.returncode != 0:
            pytest.fail(
                f"kill {i + 1}, {delay:.3f} s into the loop: the load failed "
                f"(rc {proc.returncode})\n{proc.stderr[-2000:]}"
            )

    _kill_loop(tmp_path, _SNAPSHOT_CLONE_LOOP, BASE_SEED + 1, check, 25)
