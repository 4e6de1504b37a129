"""The NVMe I/O command set on a Qpair, and its hot path (NvmeSlot), against real targets:
SPDK's nvmf subsystem in this process (configured over RPC, served by the same loop) and
SPDK's own nvmf_tgt in a subprocess.  Every command's data is read back and checked."""

from __future__ import annotations

import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spdk_io
from spdk_io import _generated as g
from spdk_io.dma import DmaBuf
from spdk_io.errors import Cancelled, NvmeError, WrongThreadError
from spdk_io.nvme import Controller, Namespace, Qpair, QpairOptions, TransportId
from spdk_io.nvme.qpair import MAX_DSM_RANGES
from tests.conftest import free_port
from tests.nvmf_rpc import exported_namespace
from tests.spdk_target import NvmfTgt

Run = Callable[[Awaitable[Any]], Any]

BS = 512
BLOCKS = 2048  # 1 MiB namespaces


@dataclass
class Target:
    """A connected controller, its namespace 1 and one queue pair."""

    ctrlr: Controller
    ns: Namespace
    qp: Qpair


@asynccontextmanager
async def exported(
    blocks: int = BLOCKS, delay_us: int = 0, options: QpairOptions | None = None
) -> AsyncIterator[Target]:
    """An exported namespace (``tests.nvmf_rpc``), connected; everything is deleted
    afterwards."""
    async with AsyncExitStack() as stack:
        namespace = exported_namespace(blocks=blocks, block_size=BS, delay_us=delay_us)
        trid = (await stack.enter_async_context(namespace)).trid
        ctrlr = await Controller.connect(trid)
        stack.push_async_callback(ctrlr.detach)
        qp = await ctrlr.alloc_qpair(options)
        stack.push_async_callback(qp.aclose)
        yield Target(ctrlr, ctrlr.namespace(1), qp)


@pytest.fixture(scope="module")
def target(env: Any) -> Iterator[Target]:
    """One exported namespace for the tests that only need some blocks of their own."""
    stack = AsyncExitStack()
    t: Target = env.block_on(stack.enter_async_context(exported()))
    yield t
    env.block_on(stack.aclose())


#: Arguments of the wrong type, typed ``Any`` so that the calls type-check.
WRONG: dict[str, Any] = {
    "ns": "ns",
    "bytes": b"x" * BS,
    "float": 1.0,
    "pair": (0, 1),
    "triple": (0, 1, 2),
    "int": 5,
    "none": None,
}


def pattern(n: int, seed: int) -> bytes:
    """``n`` bytes of a random pattern (no two blocks alike), the same for the same seed."""
    return random.Random(seed).randbytes(n)


def filled(data: bytes) -> DmaBuf:
    buf = DmaBuf.alloc(len(data))
    buf[:] = data
    return buf


# -- every command, with its data read back ---------------------------------------------


def test_write_read_in_blocks_and_bytes(run: Run, target: Target) -> None:
    qp, ns = target.qp, target.ns

    async def main() -> None:
        data = filled(pattern(8 * BS, 1))
        await qp.write_blocks(ns, data, 16, 8)
        back = DmaBuf.alloc(8 * BS)
        await qp.read(ns, back, 16 * BS)  # bytes: all of the buffer by default
        assert bytes(back) == bytes(data)
        await qp.write(ns, filled(pattern(4 * BS, 2)), 20 * BS, 2 * BS)  # a prefix only
        part = DmaBuf.alloc(4 * BS)
        await qp.read_blocks(ns, part, 18, 4)
        assert bytes(part) == bytes(data)[2 * BS : 4 * BS] + pattern(4 * BS, 2)[: 2 * BS]
        await qp.read(ns, part, 17 * BS, BS)  # length shorter than the buffer
        assert bytes(part)[:BS] == bytes(data)[BS : 2 * BS]
        assert qp.inflight == 0 and data.pins == 0 and part.pins == 0

    run(main())


def test_compare_is_true_when_equal_and_false_on_a_miscompare(run: Run, target: Target) -> None:
    qp, ns = target.qp, target.ns

    async def main() -> None:
        data = filled(pattern(4 * BS, 3))
        await qp.write_blocks(ns, data, 40, 4)
        assert await qp.compare_blocks(ns, data, 40, 4) is True
        assert await qp.compare_blocks(ns, data, 40, 2) is True  # a prefix of the buffer
        other = filled(pattern(4 * BS, 3)[:-1] + b"\0")  # the last byte differs
        assert await qp.compare_blocks(ns, other, 40, 4) is False
        assert await qp.compare_blocks(ns, other, 40, 3) is True  # ... not in these blocks
        assert await qp.compare_blocks(ns, data, 41, 1) is False
        assert qp.inflight == 0 and data.pins == 0 and other.pins == 0

    run(main())


def test_write_zeroes_reads_back_zeroes(run: Run, target: Target) -> None:
    qp, ns = target.qp, target.ns

    async def main() -> None:
        data = filled(pattern(8 * BS, 4))
        await qp.write_blocks(ns, data, 60, 8)
        await qp.write_zeroes_blocks(ns, 62, 3)
        back = DmaBuf.alloc(8 * BS)
        await qp.read_blocks(ns, back, 60, 8)
        expect = bytes(data)[: 2 * BS] + bytes(3 * BS) + bytes(data)[5 * BS :]
        assert bytes(back) == expect

    run(main())


def test_deallocate_then_read_what_the_namespace_reports(run: Run, target: Target) -> None:
    qp, ns = target.qp, target.ns

    async def main() -> None:
        data = filled(pattern(16 * BS, 5))
        await qp.write_blocks(ns, data, 80, 16)
        await qp.deallocate(ns, [(82, 2)])
        await qp.deallocate(ns, [(90, 4), (0, 1)])
        back = DmaBuf.alloc(16 * BS)
        await qp.read_blocks(ns, back, 80, 16)
        got = bytes(back)
        for lo, hi in [(0, 2), (4, 10), (14, 16)]:  # blocks (relative) not deallocated
            assert got[lo * BS : hi * BS] == bytes(data)[lo * BS : hi * BS]
        reads = g.spdk_nvme_ns_get_dealloc_logical_block_read_value(ns.handle)
        if reads == g.SPDK_NVME_DEALLOC_READ_00:
            assert got[2 * BS : 4 * BS] == bytes(2 * BS) and got[10 * BS : 14 * BS] == bytes(4 * BS)
        # SPDK's malloc bdev zeroes what it unmaps, whatever the namespace reports (it
        # reports nothing).  SPDK's target deallocates only the first range of a command.
        assert got[2 * BS : 4 * BS] == bytes(2 * BS) and got[10 * BS : 14 * BS] == bytes(4 * BS)
        await qp.deallocate(ns, [(0, 1)] * MAX_DSM_RANGES)  # the most ranges there are
        assert qp.inflight == 0

    run(main())


def test_flush_completes_and_data_stays(run: Run, target: Target) -> None:
    qp, ns = target.qp, target.ns

    async def main() -> None:
        data = filled(pattern(BS, 6))
        await qp.write_blocks(ns, data, 100, 1)
        await qp.flush(ns)
        back = DmaBuf.alloc(BS)
        await qp.read_blocks(ns, back, 100, 1)
        assert bytes(back) == bytes(data)

    run(main())


def test_io_raw_write_read_flush_and_a_failing_status(run: Run, target: Target) -> None:
    qp, ns = target.qp, target.ns

    async def main() -> None:
        data = filled(pattern(2 * BS, 7))
        # Write (0x01): cdw10/11 starting LBA, cdw12 0-based block count.
        assert await qp.io_raw(ns, 0x01, buf=data, cdw10=120, cdw12=1) == 0
        back = DmaBuf.alloc(2 * BS)
        await qp.read_blocks(ns, back, 120, 2)
        assert bytes(back) == bytes(data)
        raw = DmaBuf.alloc(BS)
        await qp.io_raw(ns, 0x02, buf=raw, cdw10=121)  # Read, one block
        assert bytes(raw) == bytes(data)[BS:]
        assert await qp.io_raw(ns, 0x00) == 0  # Flush
        with pytest.raises(NvmeError) as info:
            await qp.io_raw(ns, 0x02, buf=raw, cdw10=ns.num_sectors)
        assert (info.value.sct, info.value.sc) == (0, 0x80)  # LBA Out of Range
        assert qp.inflight == 0 and raw.pins == 0

    run(main())


@pytest.mark.parametrize(
    "sizes",
    [(4 * BS,), (BS, 3 * BS), (100, 412, 1536, 1000, 24), tuple([BS] * 40)],
    ids=["one", "two", "odd sizes", "forty"],
)
def test_vectored_io_gathers_and_scatters(run: Run, target: Target, sizes: tuple[int, ...]) -> None:
    qp, ns = target.qp, target.ns
    total = sum(sizes)

    async def main() -> None:
        data = pattern(total, len(sizes))
        bufs, at = [], 0
        for n in sizes:
            bufs.append(filled(data[at : at + n]))
            at += n
        await qp.writev_blocks(ns, bufs, 200)
        back = DmaBuf.alloc(total)
        await qp.read_blocks(ns, back, 200, total // BS)
        assert bytes(back) == data
        outs = [DmaBuf.alloc(n) for n in reversed(sizes)]  # another split of the same bytes
        await qp.readv(ns, outs, 200 * BS)
        assert b"".join(bytes(b) for b in outs) == data
        await qp.writev(ns, [filled(bytes(BS))], 200 * BS)  # bytes offset; one buffer
        await qp.readv_blocks(ns, outs, 200)
        assert b"".join(bytes(b) for b in outs) == bytes(BS) + data[BS:]
        assert qp.inflight == 0 and all(b.pins == 0 for b in [*bufs, *outs])

    run(main())


# -- a model of the namespace ------------------------------------------------------------

MODEL_LBA = 1024  # the model owns blocks 1024..1024+MODEL_BLOCKS-1 of the shared target
MODEL_BLOCKS = 64


@st.composite
def operations(draw: st.DrawFn) -> list[tuple[str, int, list[int], int]]:
    """(kind, lba, buffer sizes, seed): writes, zeroes and deallocations over one area."""
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["write", "writev", "zeroes", "deallocate", "bytes"]))
        num = draw(st.integers(1, 16))
        lba = draw(st.integers(0, MODEL_BLOCKS - num))
        cuts = sorted(draw(st.sets(st.integers(1, num * BS - 1), max_size=4)))
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, num * BS], strict=True)]
        ops.append((kind, lba, sizes, draw(st.integers(0, 255))))
    return ops


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations())
def test_namespace_matches_a_model(run: Run, target: Target, ops: list[Any]) -> None:
    qp, ns = target.qp, target.ns

    async def main() -> None:
        whole = DmaBuf.alloc(MODEL_BLOCKS * BS)
        await qp.read_blocks(ns, whole, MODEL_LBA, MODEL_BLOCKS)
        model = bytearray(bytes(whole))
        for kind, lba, sizes, seed in ops:
            n = sum(sizes)
            at = lba * BS
            data = pattern(n, seed)
            if kind == "write":
                await qp.write_blocks(ns, filled(data), MODEL_LBA + lba, n // BS)
            elif kind == "bytes":
                await qp.write(ns, filled(data + b"x" * BS), (MODEL_LBA + lba) * BS, n)
            elif kind == "writev":
                bufs, pos = [], 0
                for size in sizes:
                    bufs.append(filled(data[pos : pos + size]))
                    pos += size
                await qp.writev_blocks(ns, bufs, MODEL_LBA + lba)
            else:
                data = bytes(n)
                if kind == "zeroes":
                    await qp.write_zeroes_blocks(ns, MODEL_LBA + lba, n // BS)
                else:  # the malloc bdev reads deallocated blocks as zeroes
                    await qp.deallocate(ns, [(MODEL_LBA + lba, n // BS)])
            model[at : at + n] = data
            # Read a random-sized window back through readv, split like the write was.
            outs = [DmaBuf.alloc(size) for size in sizes]
            await qp.readv_blocks(ns, outs, MODEL_LBA + lba)
            assert b"".join(bytes(b) for b in outs) == bytes(model[at : at + n])
        await qp.read_blocks(ns, whole, MODEL_LBA, MODEL_BLOCKS)
        assert bytes(whole) == bytes(model)
        assert qp.inflight == 0

    run(main())


# -- bad input: a clear exception, and nothing pinned or submitted -----------------------


def test_bad_input_is_refused_before_anything_happens(run: Run, target: Target) -> None:
    qp, ns = target.qp, target.ns

    async def main() -> None:
        buf = DmaBuf.alloc(8 * BS)
        max_blocks = qp.max_transfer_bytes // BS
        big = DmaBuf.alloc(qp.max_transfer_bytes + BS)
        freed = DmaBuf.alloc(BS)
        freed.free()
        odd = buf.slice(1, 4 * BS)  # not dword aligned
        end = ns.num_sectors
        wrong = {**WRONG, "buf": buf}
        cases: list[tuple[Callable[[], object], type[BaseException], str]] = [
            (lambda: qp.read_blocks(wrong["ns"], buf, 0, 1), TypeError, "Namespace"),
            (lambda: qp.read_blocks(ns, wrong["bytes"], 0, 1), TypeError, "DmaBuf"),
            (lambda: qp.read_blocks(ns, buf, end - 1, 2), ValueError, "past the end"),
            (lambda: qp.write_blocks(ns, buf, end, 1), ValueError, "past the end"),
            (lambda: qp.read_blocks(ns, buf, -1, 1), ValueError, "lba"),
            (lambda: qp.read_blocks(ns, buf, 0, 0), ValueError, "num_blocks"),
            (lambda: qp.read_blocks(ns, buf, 0, 9), ValueError, "holds"),
            (lambda: qp.read_blocks(ns, buf, wrong["float"], 1), TypeError, "lba"),
            (lambda: qp.read_blocks(ns, buf, True, 1), TypeError, "lba"),
            (lambda: qp.read_blocks(ns, buf, 0, 65537), ValueError, "num_blocks"),
            (lambda: qp.read_blocks(ns, big, 0, max_blocks + 1), ValueError, "transfers"),
            (lambda: qp.read_blocks(ns, freed, 0, 1), ValueError, "freed"),
            (lambda: qp.read_blocks(ns, odd, 0, 1), ValueError, "aligned"),
            (lambda: qp.read(ns, buf, 100), ValueError, "sector size"),
            (lambda: qp.read(ns, buf, 0, 700), ValueError, "sector size"),
            (lambda: qp.write(ns, buf, 0, 0), ValueError, "length"),
            (lambda: qp.readv_blocks(ns, [], 0), ValueError, "at least one"),
            (lambda: qp.readv_blocks(ns, wrong["buf"], 0), TypeError, "sequence"),
            (lambda: qp.readv_blocks(ns, [buf, wrong["ns"]], 0), TypeError, "DmaBuf"),
            (lambda: qp.writev_blocks(ns, [buf, freed], 0), ValueError, "freed"),
            (lambda: qp.writev_blocks(ns, [buf.slice(0, 100)], 0), ValueError, "multiple"),
            (lambda: qp.writev_blocks(ns, [buf], end - 7), ValueError, "past the end"),
            (lambda: qp.writev(ns, [buf], 3), ValueError, "sector size"),
            (lambda: qp.write_zeroes_blocks(ns, 0, 65537), ValueError, "num_blocks"),
            (lambda: qp.write_zeroes_blocks(ns, end - 1, 2), ValueError, "past the end"),
            (lambda: qp.compare_blocks(ns, buf, 0, 9), ValueError, "holds"),
            (lambda: qp.compare_blocks(ns, buf, end, 1), ValueError, "past the end"),
            (lambda: qp.deallocate(ns, []), ValueError, "ranges"),
            (lambda: qp.deallocate(ns, [(0, 1)] * (MAX_DSM_RANGES + 1)), ValueError, "ranges"),
            (lambda: qp.deallocate(ns, wrong["pair"]), TypeError, "pairs"),
            (lambda: qp.deallocate(ns, [wrong["triple"]]), TypeError, r"ranges\[0\]"),
            (lambda: qp.deallocate(ns, [(end, 1)]), ValueError, "past the end"),
            (lambda: qp.deallocate(ns, [(0, 0)]), ValueError, "num_blocks"),
            (lambda: qp.deallocate(ns, wrong["int"]), TypeError, "ranges"),
            (lambda: qp.io_raw(ns, 0x100), ValueError, "opcode"),
            (lambda: qp.io_raw(ns, 0x02), ValueError, "needs a buf"),
            (lambda: qp.io_raw(ns, 0x00, buf=buf), ValueError, "no data"),
            (lambda: qp.io_raw(ns, 0x02, buf=big), ValueError, "transfers"),
            (lambda: qp.io_raw(ns, 0x00, cdw10=2**32), ValueError, "cdw10"),
            (lambda: qp.io_raw(ns, 0x00, cdw15=-1), ValueError, "cdw15"),
            (lambda: qp.flush(wrong["none"]), TypeError, "Namespace"),
            (lambda: qp.slot(ns, DmaBuf.alloc(100)), ValueError, "holds"),
        ]
        for call, exc, words in cases:
            with pytest.raises(exc, match=words):
                call()
            assert qp.inflight == 0 and buf.pins == 0 and big.pins == 0, words
        # Nothing above reached the device: the blocks still hold what was there.
        await qp.read_blocks(ns, buf, 0, 8)

    run(main())


def test_a_namespace_of_another_controller_is_refused(run: Run) -> None:
    async def main() -> None:
        async with exported() as one, exported() as two:
            buf = DmaBuf.alloc(BS)
            for call in (
                lambda: one.qp.read_blocks(two.ns, buf, 0, 1),
                lambda: one.qp.flush(two.ns),
                lambda: one.qp.slot(two.ns, buf),
            ):
                with pytest.raises(ValueError, match="another controller"):
                    call()
            assert one.qp.inflight == 0 and buf.pins == 0

    run(main())


def test_io_from_another_os_thread_is_refused(run: Run, target: Target) -> None:
    qp, ns = target.qp, target.ns

    async def main() -> None:
        buf = DmaBuf.alloc(BS)
        with qp.slot(ns, buf) as slot:
            errors: list[BaseException] = []

            def elsewhere() -> None:
                for call in (
                    lambda: qp.read_blocks(ns, buf, 0, 1),
                    lambda: qp.flush(ns),
                    lambda: slot.read_blocks(0, 1),
                    lambda: qp.slot(ns, buf),
                ):
                    try:
                        call()
                    except BaseException as exc:
                        errors.append(exc)

            t = threading.Thread(target=elsewhere)
            t.start()
            t.join()
            assert [type(e) for e in errors] == [WrongThreadError] * 4
            assert qp.inflight == 0
            await slot.read_blocks(0, 1)  # still usable here

    run(main())


# -- the hot path ------------------------------------------------------------------------


def test_slot_reads_and_writes_and_checks_its_input(run: Run, target: Target) -> None:
    qp, ns = target.qp, target.ns

    async def main() -> None:
        buf = filled(pattern(4 * BS, 8))
        with qp.slot(ns, buf) as slot:
            assert slot.max_blocks == 4
            await slot.write_blocks(300, 4)
            buf[:] = bytes(4 * BS)
            await slot.read_blocks(300, 2)
            assert bytes(buf)[: 2 * BS] == pattern(4 * BS, 8)[: 2 * BS]
            back = DmaBuf.alloc(4 * BS)
            await qp.read_blocks(ns, back, 300, 4)
            assert bytes(back) == pattern(4 * BS, 8)
            with pytest.raises(BufferError):
                buf.free()  # pinned for the slot's life
            op = slot.read_blocks(300, 1)
            assert qp.inflight == 1  # the slot's command counts for the queue pair
            with pytest.raises(RuntimeError, match="busy"):
                slot.read_blocks(301, 1)
            with pytest.raises(BlockingIOError):
                qp.close()  # the slot's command is in flight
            await op
            assert qp.inflight == 0
            bad: list[tuple[Callable[[], object], type[BaseException], str]] = [
                (lambda: slot.read_blocks(ns.num_sectors - 1, 2), ValueError, "past the end"),
                (lambda: slot.read_blocks(0, 5), ValueError, "holds"),
                (lambda: slot.read_blocks(0, 0), ValueError, "num_blocks"),
                (lambda: slot.read_blocks(-1, 1), ValueError, "lba"),
                (lambda: slot.read_blocks(WRONG["float"], 1), TypeError, "lba"),
                (lambda: slot.write_blocks(0, True), TypeError, "num_blocks"),
            ]
            for call, exc, words in bad:
                with pytest.raises(exc, match=words):
                    call()
                assert qp.inflight == 0
            await slot.read_blocks(ns.num_sectors - 4, 4)  # the last blocks are fine
        with pytest.raises(RuntimeError, match="closed"):
            slot.read_blocks(0, 1)
        assert buf.pins == 0
        buf.free()  # released by closing the slot

    run(main())


def test_slot_keeps_its_buffer_when_the_awaiting_task_is_cancelled(run: Run) -> None:
    async def main() -> None:
        async with exported(delay_us=50_000) as t:
            buf = DmaBuf.alloc(BS)
            slot = t.qp.slot(t.ns, buf)

            async def reader() -> None:
                await slot.read_blocks(0, 1)

            task = spdk_io.spawn(reader())
            await spdk_io.sleep(0.005)
            assert t.qp.inflight == 1
            task.cancel()
            with pytest.raises(Cancelled):
                await task
            assert t.qp.inflight == 1  # the device still holds the command
            with pytest.raises(BlockingIOError):
                slot.close()
            with pytest.raises(RuntimeError, match="busy"):
                slot.read_blocks(0, 1)
            await slot.aclose()  # waits for the command to complete
            assert t.qp.inflight == 0 and buf.pins == 0
            buf.free()

    run(main())


def test_commands_keep_buffers_pinned_when_the_awaiting_task_is_cancelled(run: Run) -> None:
    async def main() -> None:
        async with exported(delay_us=50_000) as t:
            bufs = [DmaBuf.alloc(BS), DmaBuf.alloc(BS)]

            async def reader() -> None:
                await t.qp.readv_blocks(t.ns, bufs, 0)

            task = spdk_io.spawn(reader())
            await spdk_io.sleep(0.005)
            task.cancel()
            with pytest.raises(Cancelled):
                await task
            with pytest.raises(BufferError):
                bufs[1].free()  # the device still writes into it
            await t.qp.aclose()  # waits for the command
            assert all(b.pins == 0 for b in bufs)

    run(main())


# -- out of request objects: queued, none lost --------------------------------------------


def test_more_commands_than_requests_all_complete(run: Run) -> None:
    async def main() -> None:
        async with exported(options=QpairOptions(io_queue_requests=4)) as t:
            qp, ns = t.qp, t.ns
            writes = []
            for i in range(48):
                writes.append(qp.write_blocks(ns, filled(pattern(BS, i)), i, 1))
            slot_bufs = [filled(pattern(BS, 100 + i)) for i in range(16)]
            slots = [qp.slot(ns, b) for b in slot_bufs]
            writes += [s.write_blocks(100 + i, 1) for i, s in enumerate(slots)]
            writes.append(qp.writev_blocks(ns, [filled(pattern(BS, 200))], 200))
            assert qp.inflight == 65
            await spdk_io.gather(*writes)
            assert qp.inflight == 0
            reads = [DmaBuf.alloc(BS) for _ in range(48)]
            await spdk_io.gather(
                *[qp.read_blocks(ns, b, i, 1) for i, b in enumerate(reads)],
                *[s.read_blocks(100 + i, 1) for i, s in enumerate(slots)],
            )
            assert [bytes(b) for b in reads] == [pattern(BS, i) for i in range(48)]
            assert [bytes(b) for b in slot_bufs] == [pattern(BS, 100 + i) for i in range(16)]
            assert await qp.compare_blocks(ns, filled(pattern(BS, 200)), 200, 1)
            for s in slots:
                s.close()

    run(main())


# -- SPDK's own nvmf_tgt ------------------------------------------------------------------


@pytest.fixture(scope="module")
def spdk_tgt() -> Iterator[TransportId]:
    with NvmfTgt(core_mask="0x2", mem_mb=512) as tgt:
        yield tgt.export("nqn.2016-06.io.spdk:iotgt", free_port(), size_mb=4, block_size=BS)


def test_every_command_against_spdk_nvmf_tgt(run: Run, spdk_tgt: TransportId) -> None:
    async def main() -> None:
        async with await Controller.connect(spdk_tgt) as ctrlr:
            ns = ctrlr.namespace(1)
            async with AsyncExitStack() as stack:
                qp = await ctrlr.alloc_qpair()
                stack.push_async_callback(qp.aclose)
                data = filled(pattern(8 * BS, 9))
                await qp.write_blocks(ns, data, 8, 8)
                assert await qp.compare_blocks(ns, data, 8, 8)
                data[0] ^= 0xFF
                assert not await qp.compare_blocks(ns, data, 8, 8)
                await qp.write_zeroes_blocks(ns, 9, 2)
                await qp.deallocate(ns, [(12, 2)])
                await qp.flush(ns)
                bufs = [DmaBuf.alloc(n) for n in (BS, 100, 924, 2 * BS, 3 * BS)]
                await qp.readv_blocks(ns, bufs, 8)
                got = b"".join(bytes(b) for b in bufs)
                want = pattern(8 * BS, 9)
                assert got[:BS] == want[:BS] and got[BS : 3 * BS] == bytes(2 * BS)
                assert got[3 * BS : 4 * BS] == want[3 * BS : 4 * BS]
                assert got[4 * BS : 6 * BS] == bytes(2 * BS)  # malloc: deallocated reads zeroes
                assert got[6 * BS :] == want[6 * BS :]
                with qp.slot(ns, filled(want)) as slot:
                    await slot.write_blocks(100, 8)
                    await qp.read_blocks(ns, data, 100, 8)
                    assert bytes(data) == want
                    raw = DmaBuf.alloc(BS)
                    await qp.io_raw(ns, 0x02, buf=raw, cdw10=107)
                    assert bytes(raw) == want[7 * BS :]

    run(main())
