"""Regression tests for issue #7 on the block I/O submit paths (bdev, dma).

Everything SPDK holds (iovec arrays, buffers, io-wait entries) must live until the
I/O completes, however long SPDK keeps it queued; bad arguments must be refused
before anything is pinned or submitted.  Scenarios that used to crash run in a
fresh process (``run_py``) and assert on its exit status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from spdk_io import bdev_modules as bm
from spdk_io.bdev import Bdev, BdevDesc
from spdk_io.dma import DmaBuf
from spdk_io.errors import SpdkError
from tests.conftest import run_py

Run = Callable[[Awaitable[Any]], Any]
BS = 4096

#: Shared by the subprocess scripts: imports and a read-back helper.
PRELUDE = """
import spdk_io
from spdk_io import bdev_modules as bm, rpc
from spdk_io.bdev import BdevDesc
from spdk_io.dma import DmaBuf
from spdk_io.errors import SpdkError

BS = 4096

async def read_back(d, n):
    bufs = [DmaBuf.alloc(BS) for _ in range(n)]
    for i, b in enumerate(bufs):
        await d.read_blocks(b, i, 1)
    return [bytes(b) for b in bufs]
"""


def script(body: str) -> str:
    return PRELUDE + "\n" + body


def check(proc: Any, marker: str) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert marker in proc.stdout, proc.stdout


@asynccontextmanager
async def malloc(name: str, blocks: int = 64) -> AsyncIterator[Bdev]:
    bdev = await bm.create_malloc(name, blocks, BS)
    try:
        yield bdev
    finally:
        await bm.delete_malloc(name)


# ---------------------------------------------------------------------- lifetimes under concurrency


def test_two_concurrent_compare_and_writes_both_succeed_and_write() -> None:
    proc = run_py(
        script(
            """
async def main():
    await bm.create_malloc("Caw2", 8, BS)
    with BdevDesc.open("Caw2", write=True) as d:
        old = [DmaBuf.alloc(BS) for _ in range(2)]
        new = [DmaBuf.alloc(BS) for _ in range(2)]
        for i in range(2):
            old[i].fill(0x10 + i)
            new[i].fill(0xA0 + i)
            await d.write_blocks(old[i], i, 1)
        results = await spdk_io.gather(
            *(d.compare_and_write_blocks(old[i], new[i], i, 1) for i in range(2))
        )
        back = await read_back(d, 2)
    print("results", results)
    assert results == [True, True], results
    assert back == [bytes([0xA0 + i]) * BS for i in range(2)], [b[:4] for b in back]
    print("ok")

spdk_io.run(main())
"""
        )
    )
    check(proc, "ok")


def test_fifty_concurrent_compare_and_writes_neither_crash_nor_lose_writes() -> None:
    proc = run_py(
        script(
            """
N = 50
async def main():
    await bm.create_malloc("Caw50", N, BS)
    with BdevDesc.open("Caw50", write=True) as d:
        old = [DmaBuf.alloc(BS) for _ in range(N)]
        new = [DmaBuf.alloc(BS) for _ in range(N)]
        for i in range(N):
            old[i].fill(i)
            new[i].fill(255 - i)
            await d.write_blocks(old[i], i, 1)
        # even blocks match, odd blocks are given a wrong compare buffer
        for i in range(1, N, 2):
            old[i].fill(200)
        results = await spdk_io.gather(
            *(d.compare_and_write_blocks(old[i], new[i], i, 1) for i in range(N))
        )
        back = await read_back(d, N)
    assert results == [i % 2 == 0 for i in range(N)], results
    want = [bytes([255 - i if i % 2 == 0 else i]) * BS for i in range(N)]
    bad = [i for i in range(N) if back[i] != want[i]]
    assert not bad, bad
    print("ok")

spdk_io.run(main())
"""
        )
    )
    check(proc, "ok")


def test_concurrent_compares_report_each_result() -> None:
    """64 concurrent compares, alternating matching and non-matching buffers.

    The null bdev does not support COMPARE natively: SPDK emulates it by reading,
    and null reads return zeroes, so a zero buffer matches and anything else
    miscompares.  Malloc is tested the same way against written data.
    """
    proc = run_py(
        script(
            """
N = 64
async def compares(name, d, expect_match):
    bufs = [DmaBuf.alloc(BS) for _ in range(N)]
    for i, b in enumerate(bufs):
        expect_match(b, i, i % 2 == 0)
    results = await spdk_io.gather(*(d.compare_blocks(b, i % 8, 1) for i, b in enumerate(bufs)))
    assert results == [i % 2 == 0 for i in range(N)], (name, results)

async def main():
    await bm.create_null("CmpNull", 8, BS)
    with BdevDesc.open("CmpNull") as d:
        await compares("null", d, lambda b, i, match: b.fill(0 if match else 1 + i))
    await bm.create_malloc("CmpMalloc", 8, BS)
    with BdevDesc.open("CmpMalloc", write=True) as d:
        for k in range(8):
            w = DmaBuf.alloc(BS)
            w.fill(0x40 + k)
            await d.write_blocks(w, k, 1)
        await compares("malloc", d, lambda b, i, match: b.fill(0x40 + i % 8 if match else 0x3F))
    print("ok")

spdk_io.run(main())
"""
        )
    )
    check(proc, "ok")


QOS_BODY = """
N = 64
async def main():
    await bm.create_malloc("Qos0", 2 * N, BS)
    await rpc.call("bdev_set_qos_limit", {"name": "Qos0", "rw_ios_per_sec": 10000})
    with BdevDesc.open("Qos0", write=True) as d:
        halves = [[DmaBuf.alloc(BS) for _ in range(2)] for _ in range(N)]
        for i, (a, b) in enumerate(halves):
            a.fill(i)
            b.fill(255 - i)
        await spdk_io.gather(*(d.writev_blocks(h, 2 * i) for i, h in enumerate(halves)))
        back = [[DmaBuf.alloc(BS) for _ in range(2)] for _ in range(N)]
        await spdk_io.gather(*(d.readv_blocks(h, 2 * i) for i, h in enumerate(back)))
        bad = [i for i, (a, b) in enumerate(back)
               if bytes(a) != bytes([i]) * BS or bytes(b) != bytes([255 - i]) * BS]
        assert not bad, f"{len(bad)} of {N} block pairs wrong: {bad[:10]}"
        # and the same through plain reads, in case readv and writev fail alike
        plain = await read_back(d, 2 * N)
        assert plain == [bytes([i // 2 if i % 2 == 0 else 255 - i // 2]) * BS
                         for i in range(2 * N)]
    print("ok")

spdk_io.run(main())
"""


def test_vectored_io_queued_by_qos_keeps_its_iovecs() -> None:
    """Under a QoS limit SPDK queues the I/O and reads the iovec array much later."""
    check(run_py(script(QOS_BODY)), "ok")


def test_cancelled_vectored_reads_still_land_in_their_buffers() -> None:
    """Cancelling the awaiting tasks does not end the I/O: what SPDK holds must stay alive."""
    proc = run_py(
        script(
            """
import gc
N = 32
async def main():
    await bm.create_malloc("Cancel0", N, BS)
    with BdevDesc.open("Cancel0", write=True) as d:
        for i in range(N):
            w = DmaBuf.alloc(BS)
            w.fill(i + 1)
            await d.write_blocks(w, i, 1)
        await rpc.call("bdev_set_qos_limit", {"name": "Cancel0", "rw_ios_per_sec": 1000})
        back = [DmaBuf.alloc(BS) for _ in range(N)]
        async def read(i, b):
            await d.readv_blocks([b], i)

        tasks = [spdk_io.spawn(read(i, b)) for i, b in enumerate(back)]
        await spdk_io.sleep(0)
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except spdk_io.Cancelled:
                pass
        assert d.inflight > 0  # the tasks are gone, their I/O is not
        gc.collect()
        junk = [bytearray(64) for _ in range(10000)]  # reuse whatever was freed
        while d.inflight:
            await spdk_io.sleep(0.005)
        del junk
        bad = [i for i, b in enumerate(back) if bytes(b) != bytes([i + 1]) * BS]
        assert not bad, bad
    print("ok")

spdk_io.run(main())
"""
        )
    )
    check(proc, "ok")


def test_vectored_and_compare_io_retried_after_enomem_keep_their_iovecs() -> None:
    """A tiny bdev_io pool: I/Os wait in spdk_bdev_queue_io_wait and are resubmitted.

    A QoS limit keeps the resubmitted I/Os queued, so SPDK reads their iovec
    arrays long after the resubmission (the retry callback is gone by then).
    """
    proc = run_py(
        script(
            """
N = 256
config = {"subsystems": [{"subsystem": "bdev", "config": [
    {"method": "bdev_set_options",
     "params": {"bdev_io_pool_size": 32, "bdev_io_cache_size": 4}}]}]}

async def main():
    await bm.create_malloc("Nomem1", N, BS)
    await rpc.call("bdev_set_qos_limit", {"name": "Nomem1", "rw_ios_per_sec": 20000})
    with BdevDesc.open("Nomem1", write=True) as d:
        bufs = [DmaBuf.alloc(BS) for _ in range(N)]
        for i, b in enumerate(bufs):
            b.fill(i & 0xFF)
        await spdk_io.gather(*(d.writev_blocks([b], i) for i, b in enumerate(bufs)))
        assert all(await spdk_io.gather(*(d.compare_blocks(b, i, 1) for i, b in enumerate(bufs))))
        back = [DmaBuf.alloc(BS) for _ in range(N)]
        await spdk_io.gather(*(d.readv_blocks([b], i) for i, b in enumerate(back)))
        bad = [i for i, b in enumerate(back) if bytes(b) != bytes([i & 0xFF]) * BS]
        assert not bad, bad[:10]
        # Compare-and-writes mixed with reads, so their submissions meet -ENOMEM too.  At most
        # 24 of them: SPDK's emulated compare-and-write holds its bdev_io while it waits for
        # two more, so more concurrent ones than the pool (32) deadlock inside SPDK.
        C = 24
        new = [DmaBuf.alloc(BS) for _ in range(C)]
        for i, b in enumerate(new):
            b.fill(~i & 0xFF)
        results = await spdk_io.gather(
            *(d.read_blocks(back[i], i, 1) for i in range(C, N)),
            *(d.compare_and_write_blocks(bufs[i], new[i], i, 1) for i in range(C)),
        )
        assert results[N - C:] == [True] * C, results[N - C:]
        plain = await read_back(d, N)
        bad = [i for i in range(N) if plain[i] != bytes([~i & 0xFF if i < C else i & 0xFF]) * BS]
        assert not bad, bad[:10]
    print("ok")

spdk_io.run(main(), config=config)
"""
        ),
        timeout=50,
    )
    check(proc, "ok")


def test_io_slot_failure_after_a_success_is_an_spdk_error() -> None:
    """The slot's Op is reused: a failed I/O after a finished one must still report EIO."""
    proc = run_py(
        script(
            """
from spdk_io.errors import SpdkError

async def main():
    await bm.create_malloc("SlotErrBase", 16, BS)
    await bm.create_error("SlotErrBase")
    with BdevDesc.open("EE_SlotErrBase") as d, d.slot(DmaBuf.alloc(BS)) as slot:
        await slot.read_blocks(0, 1)
        await bm.inject_error("EE_SlotErrBase", "read", "failure", 1)
        try:
            await slot.read_blocks(1, 1)
        except SpdkError as exc:
            print("failed with", exc.errno_name)
        assert d.inflight == 0
        await slot.read_blocks(2, 1)  # the slot is usable again
    print("ok")

spdk_io.run(main())
"""
        )
    )
    check(proc, "ok")
    assert "failed with EIO" in proc.stdout


# ---------------------------------------------------------------------- arguments checked first


def _refused(exc: type[BaseException], match: str, fn: Callable[[], object]) -> None:
    with pytest.raises(exc, match=match):
        fn()


def test_float_and_bool_offsets_are_refused_before_anything_is_pinned(run: Run) -> None:
    async def main() -> None:
        async with malloc("Typ0", blocks=16):
            buf, other = DmaBuf.alloc(2 * BS), DmaBuf.alloc(2 * BS)
            with BdevDesc.open("Typ0", write=True) as d:
                cases: list[tuple[str, Callable[[], object]]] = [
                    ("offset_blocks", lambda: d.read_blocks(buf, 1.0, 1)),  # type: ignore[arg-type]
                    ("num_blocks", lambda: d.read_blocks(buf, 0, 1.0)),  # type: ignore[arg-type]
                    ("offset_blocks", lambda: d.write_blocks(buf, True, 1)),
                    ("num_blocks", lambda: d.write_blocks(buf, 0, True)),
                    ("offset", lambda: d.read(buf, offset=4096.0)),  # type: ignore[arg-type]
                    ("length", lambda: d.write(buf, 0, length=4096.0)),  # type: ignore[arg-type]
                    ("offset", lambda: d.write(buf, offset=False)),
                    ("offset_blocks", lambda: d.write_zeroes_blocks(0.0, 1)),  # type: ignore[arg-type]
                    ("length", lambda: d.write_zeroes(0, 4096.0)),  # type: ignore[arg-type]
                    ("num_blocks", lambda: d.unmap_blocks(0, 1.0)),  # type: ignore[arg-type]
                    ("offset", lambda: d.unmap(4096.0, 4096)),  # type: ignore[arg-type]
                    ("offset_blocks", lambda: d.flush_blocks(0.0)),  # type: ignore[arg-type]
                    ("num_blocks", lambda: d.flush_blocks(0, True)),
                    ("offset", lambda: d.flush(offset=4096.0)),  # type: ignore[arg-type]
                    ("length", lambda: d.flush(0, 4096.0)),  # type: ignore[arg-type]
                    ("offset_blocks", lambda: d.readv_blocks([buf], 1.0)),  # type: ignore[arg-type]
                    ("offset", lambda: d.writev([buf, other], 4096.0)),  # type: ignore[arg-type]
                    ("bufs", lambda: d.readv_blocks(buf, 0)),  # type: ignore[arg-type]
                    ("bufs", lambda: d.writev_blocks(None, 0)),  # type: ignore[arg-type]
                    ("item of bufs", lambda: d.writev_blocks([buf, b"x"], 0)),  # type: ignore[list-item]
                    ("num_blocks", lambda: d.compare_blocks(buf, 0, 1.0)),  # type: ignore[arg-type]
                    ("offset_blocks", lambda: d.compare_and_write_blocks(buf, other, 0.0, 1)),  # type: ignore[arg-type]
                    ("compare", lambda: d.compare_and_write_blocks(b"x", other, 0, 1)),  # type: ignore[arg-type]
                    ("write", lambda: d.compare_and_write_blocks(buf, bytearray(BS), 0, 1)),  # type: ignore[arg-type]
                ]
                for what, call in cases:
                    with pytest.raises(TypeError, match=what):
                        call()
                    assert buf.pins == 0 and other.pins == 0, what
                    assert d.inflight == 0, what
                with d.slot(other) as slot:
                    _refused(TypeError, "offset_blocks", lambda: slot.read_blocks(1.0, 1))  # type: ignore[arg-type]
                    _refused(TypeError, "offset_blocks", lambda: slot.read_blocks(True, 1))
                    _refused(TypeError, "num_blocks", lambda: slot.write_blocks(0, True))
                    assert d.inflight == 0
                    np = pytest.importorskip("numpy")
                    await slot.write_blocks(np.int64(3), np.uint8(1))  # __index__ ints are fine
                    await d.write_blocks(other, np.int64(5), 1)
            buf.free()  # nothing above left the buffers pinned
            other.free()

    run(main())


def test_open_refuses_non_bool_write_and_non_str_name(run: Run) -> None:
    async def main() -> None:
        async with malloc("Open0", blocks=8) as bdev:
            with pytest.raises(TypeError, match="write"):
                BdevDesc.open("Open0", write="no")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="write"):
                BdevDesc.open("Open0", write=1)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="write"):
                bdev.open(write=None)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="name"):
                BdevDesc.open(b"Open0")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="name"):
                Bdev.get(7)  # type: ignore[arg-type]
            with BdevDesc.open("Open0") as d:
                assert not d.writable

    run(main())


# ---------------------------------------------------------------------- clear refusals


def test_flush_on_a_read_only_descriptor_is_a_permission_error(run: Run) -> None:
    """SPDK's spdk_bdev_flush_blocks returns -EBADF on a read-only descriptor."""

    async def main() -> None:
        async with malloc("Flush0", blocks=8):
            with BdevDesc.open("Flush0") as ro:
                calls: list[Callable[[], object]] = [
                    ro.flush,
                    lambda: ro.flush_blocks(0, 1),
                    lambda: ro.flush(0, BS),
                ]
                for call in calls:
                    with pytest.raises(PermissionError, match=r"read-only.*flush"):
                        call()
                assert ro.inflight == 0
            with BdevDesc.open("Flush0", write=True) as rw:
                await rw.flush()
                await rw.flush_blocks(2, 3)
                await rw.flush_blocks(7)
                with pytest.raises(ValueError, match="past the end"):
                    rw.flush_blocks(8)

    run(main())


def test_compare_and_write_beyond_the_acwu_is_refused_clearly(run: Run) -> None:
    async def main() -> None:
        async with malloc("Acwu0", blocks=8) as bdev:
            a, b = DmaBuf.alloc(2 * BS), DmaBuf.alloc(2 * BS)
            with BdevDesc.open("Acwu0", write=True) as d:
                with pytest.raises(ValueError, match="atomic compare-and-write unit"):
                    d.compare_and_write_blocks(a, b, 0, 2)
                assert a.pins == 0 and b.pins == 0 and d.inflight == 0
                assert await d.compare_and_write_blocks(a, b, 0, 1) is True
            assert bdev.acwu == 1  # malloc keeps SPDK's default: the write unit, 1 block

    run(main())


# ---------------------------------------------------------------------- bdev module helpers


def test_inject_corrupt_data_corrupts_reads_and_writes(run: Run) -> None:
    async def main() -> None:
        async with malloc("CorBase", blocks=8):
            err = await bm.create_error("CorBase")
            try:
                with BdevDesc.open(err.name, write=True) as d:
                    data = bytes(range(256)) * (BS // 256)
                    w, r = DmaBuf.alloc(BS), DmaBuf.alloc(BS)
                    w[:] = data
                    await d.write_blocks(w, 0, 1)
                    await bm.inject_error(
                        err.name, "read", "corrupt_data", 1, corrupt_offset=10, corrupt_value=0xFF
                    )
                    await d.read_blocks(r, 0, 1)
                    want = bytearray(data)
                    want[10] ^= 0xFF
                    assert bytes(r) == bytes(want)  # exactly one byte flipped
                    await d.read_blocks(r, 0, 1)
                    assert bytes(r) == data  # only one read was corrupted
                    await bm.inject_error(
                        err.name, "write", "corrupt_data", 1, corrupt_offset=BS - 1, corrupt_value=1
                    )
                    await d.write_blocks(w, 1, 1)
                    await d.read_blocks(r, 1, 1)
                    want = bytearray(data)
                    want[BS - 1] ^= 1
                    assert bytes(r) == bytes(want)  # stored corrupted ...
                    assert bytes(w) == bytes(want)  # ... by corrupting the caller's buffer (SPDK)
            finally:
                await bm.delete_error(err.name)

    run(main())


def test_inject_nvme_failure_fails_with_that_status(run: Run) -> None:
    async def main() -> None:
        async with malloc("NvmeBase", blocks=8):
            err = await bm.create_error("NvmeBase")
            try:
                with BdevDesc.open(err.name) as d:
                    await bm.inject_error(
                        err.name, "read", "nvme_failure", 1, nvme_sct=0, nvme_sc=6
                    )
                    with pytest.raises(SpdkError, match="EIO"):
                        await d.read(DmaBuf.alloc(BS), 0)
                    await d.read(DmaBuf.alloc(BS), 0)
            finally:
                await bm.delete_error(err.name)

    run(main())


def test_module_helpers_refuse_bad_types_and_combinations(run: Run) -> None:
    async def main() -> None:
        refused: list[tuple[type[Exception], str, Awaitable[Any]]] = [
            (TypeError, "num_blocks", bm.create_malloc("M", 8.0)),  # type: ignore[arg-type]
            (TypeError, "num_blocks", bm.create_malloc("M", True)),
            (TypeError, "block_size", bm.create_malloc("M", 8, 4096.0)),  # type: ignore[arg-type]
            (TypeError, "block_size", bm.create_null("N", 8, True)),
            (TypeError, "name", bm.create_null(5, 8)),  # type: ignore[arg-type]
            (TypeError, "block_size", bm.create_aio("A", "/dev/null", 512.0)),  # type: ignore[arg-type]
            (TypeError, "filename", bm.create_aio("A", 3)),  # type: ignore[arg-type]
            (TypeError, "avg_read_latency", bm.create_delay("D", "B", avg_read_latency_us=1.5)),  # type: ignore[arg-type]
            (TypeError, "base_bdev", bm.create_error(None)),  # type: ignore[arg-type]
            (TypeError, "num", bm.inject_error("E", "read", "failure", 1.0)),  # type: ignore[arg-type]
            (TypeError, "io_type", bm.inject_error("E", 1)),  # type: ignore[arg-type]
            (ValueError, "io_type", bm.inject_error("E", "sideways")),  # type: ignore[arg-type]
            (ValueError, "error_type", bm.inject_error("E", "read", "oops")),  # type: ignore[arg-type]
            (ValueError, "corrupt_value", bm.inject_error("E", "read", "corrupt_data")),
            (
                ValueError,
                "corrupt_value",
                bm.inject_error("E", "read", "corrupt_data", corrupt_value=0),
            ),
            (
                ValueError,
                "corrupt_value",
                bm.inject_error("E", "read", "corrupt_data", corrupt_value=256),
            ),
            (
                TypeError,
                "corrupt_offset",
                bm.inject_error("E", "read", "corrupt_data", corrupt_offset=1.0, corrupt_value=1),  # type: ignore[arg-type]
            ),
            (ValueError, "corrupt", bm.inject_error("E", "read", "failure", corrupt_value=1)),
            (ValueError, "nvme_sct", bm.inject_error("E", "read", "nvme_failure")),
            (
                ValueError,
                "both 0",
                bm.inject_error("E", "read", "nvme_failure", nvme_sct=0, nvme_sc=0),
            ),
            (ValueError, "nvme", bm.inject_error("E", "read", "failure", nvme_sc=2)),
        ]
        for exc, match, aw in refused:
            with pytest.raises(exc, match=match):
                await aw
        with pytest.raises(LookupError):
            Bdev.get("M")  # nothing was created by a refused call

    run(main())
