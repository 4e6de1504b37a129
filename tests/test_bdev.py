"""Bdev lookup, descriptors and I/O against real SPDK bdevs (malloc, null, aio, error, delay)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import spdk_io
from spdk_io import bdev_modules as bm
from spdk_io.bdev import Bdev, BdevDesc, IoType
from spdk_io.dma import DmaBuf
from spdk_io.errors import BdevRemovedError, Cancelled, SpdkError, WrongThreadError
from tests.conftest import run_py

Run = Callable[[Awaitable[Any]], Any]
BS = 4096


@asynccontextmanager
async def malloc(name: str, blocks: int = 256, block_size: int = BS) -> AsyncIterator[Bdev]:
    bdev = await bm.create_malloc(name, blocks, block_size)
    try:
        yield bdev
    finally:
        await bm.delete_malloc(name)


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def test_lookup_and_properties(run: Run) -> None:
    async def main() -> None:
        async with malloc("Props0", blocks=128, block_size=512) as b:
            assert b.name == "Props0" and b.block_size == 512 and b.num_blocks == 128
            assert b.size == 128 * 512 and b.product_name == "Malloc disk"
            assert b.uuid is not None
            assert b.supports("read") and b.supports("write") and b.supports("unmap")
            assert Bdev.get("Props0") == b
            assert "Props0" in [x.name for x in Bdev.list()]
        with pytest.raises(LookupError):
            Bdev.get("Props0")
        with pytest.raises(LookupError):
            BdevDesc.open("NoSuchBdev")
        with pytest.raises(ValueError):
            Bdev.get("")

    run(main())


def test_write_read_round_trip_in_bytes_and_blocks(run: Run) -> None:
    async def main() -> None:
        async with malloc("Rw0"):
            with BdevDesc.open("Rw0", write=True) as d, DmaBuf.alloc(4 * BS) as w:
                w[:] = pattern(4 * BS, 1)
                await d.write(w, offset=8 * BS)
                with DmaBuf.alloc(4 * BS) as r:
                    await d.read(r, offset=8 * BS)
                    assert bytes(r) == bytes(w)
                    r.fill(0)
                    await d.read_blocks(r, 9, 2)
                    assert r[: 2 * BS] == pattern(4 * BS, 1)[BS : 3 * BS]
                assert d.inflight == 0

    run(main())


def test_vectored_zeroes_unmap_flush_reset(run: Run) -> None:
    async def main() -> None:
        async with malloc("Vec0"):
            with BdevDesc.open("Vec0", write=True) as d:
                parts = [DmaBuf.alloc(BS) for _ in range(3)]
                for i, p in enumerate(parts):
                    p.fill(i + 1)
                await d.writev(parts, offset=0)
                back = [DmaBuf.alloc(BS) for _ in range(3)]
                await d.readv_blocks(back, 0)
                assert [b[0] for b in back] == [1, 2, 3]
                await d.write_zeroes(BS, BS)
                await d.readv_blocks(back, 0)
                assert [b[0] for b in back] == [1, 0, 3]
                await d.unmap_blocks(2, 1)
                await d.flush()
                if d.bdev.supports("reset"):
                    await d.reset()

    run(main())


def test_compare_and_compare_and_write(run: Run) -> None:
    async def main() -> None:
        async with malloc("Cmp0"):
            with BdevDesc.open("Cmp0", write=True) as d:
                a, b = DmaBuf.alloc(BS), DmaBuf.alloc(BS)
                a.fill(0xAA)
                b.fill(0xBB)
                await d.write(a, 0)
                assert await d.compare_blocks(a, 0, 1) is True
                assert await d.compare_blocks(b, 0, 1) is False
                assert await d.compare_and_write_blocks(b, a, 0, 1) is False  # miscompare: no write
                assert await d.compare_and_write_blocks(a, b, 0, 1) is True
                assert await d.compare_blocks(b, 0, 1) is True

    run(main())


def test_bad_input_raises_and_changes_nothing(run: Run) -> None:
    async def main() -> None:
        async with malloc("Bad0", blocks=16):
            buf = DmaBuf.alloc(2 * BS)
            buf.fill(0x5A)
            with BdevDesc.open("Bad0", write=True) as d:
                await d.write(buf, 0)
                with pytest.raises(ValueError, match="past"):
                    d.read_blocks(buf, 15, 2)
                with pytest.raises(ValueError, match="past"):
                    d.write(buf, 16 * BS)
                with pytest.raises(ValueError, match="multiple"):
                    d.write(buf, 0, 100)
                with pytest.raises(ValueError, match="multiple"):
                    d.read(buf, 10)
                with pytest.raises(ValueError, match="too small"):
                    d.read_blocks(buf, 0, 3)
                with pytest.raises(ValueError):
                    d.read_blocks(buf, -1, 1)
                with pytest.raises(ValueError):
                    d.read_blocks(buf, 0, 0)
                with pytest.raises(TypeError):
                    d.write(bytearray(BS), 0)  # type: ignore[arg-type]  # not DMA memory
                freed = DmaBuf.alloc(BS)
                freed.free()
                with pytest.raises(ValueError, match="freed"):
                    d.write(freed, 0)
                assert d.inflight == 0
            with pytest.raises(ValueError, match="closed"):
                d.read(buf, 0)
            with BdevDesc.open("Bad0") as ro:
                with pytest.raises(PermissionError):
                    ro.write(buf, 0)
                with pytest.raises(PermissionError):
                    ro.write_zeroes(0, BS)
                check = DmaBuf.alloc(2 * BS)
                await ro.read(check, 0)
                assert bytes(check) == bytes(buf)  # nothing above changed the data
                errors: list[BaseException] = []

                def elsewhere() -> None:
                    try:
                        ro.read(check, 0)
                    except BaseException as exc:
                        errors.append(exc)

                t = threading.Thread(target=elsewhere)
                t.start()
                t.join()
                assert len(errors) == 1 and isinstance(errors[0], WrongThreadError)

    run(main())


def test_buffer_in_flight_is_pinned_even_if_task_is_cancelled(run: Run) -> None:
    async def main() -> None:
        async with malloc("PinBase"):
            await bm.create_delay("Pin0", "PinBase", avg_read_latency_us=30_000)
            try:
                with BdevDesc.open("Pin0") as d:
                    buf = DmaBuf.alloc(BS)

                    async def reader() -> None:
                        await d.read(buf, 0)

                    task = spdk_io.spawn(reader())
                    await spdk_io.sleep(0.002)
                    assert d.inflight == 1
                    task.cancel()
                    with pytest.raises(Cancelled):
                        await task
                    with pytest.raises(BufferError):
                        buf.free()  # the device still writes into it
                    with pytest.raises(BlockingIOError):
                        d.close()
                    while d.inflight:
                        await spdk_io.sleep(0.005)
                    buf.free()  # the late completion was harmless and released the pin
            finally:
                await bm.delete_delay("Pin0")

    run(main())


def test_error_injection_fails_io(run: Run) -> None:
    async def main() -> None:
        async with malloc("ErrBase"):
            await bm.create_error("ErrBase")
            try:
                with BdevDesc.open("EE_ErrBase", write=True) as d:
                    buf = DmaBuf.alloc(BS)
                    await bm.inject_error("EE_ErrBase", "read", "failure", 1)
                    with pytest.raises(SpdkError) as info:
                        await d.read(buf, 0)
                    assert info.value.errno_name == "EIO" and info.value.obj == "EE_ErrBase"
                    await d.read(buf, 0)  # only one was injected
            finally:
                await bm.delete_error("EE_ErrBase")

    run(main())


def test_hot_remove_closes_descriptor(run: Run) -> None:
    async def main() -> None:
        async with malloc("HrBase"):
            await bm.create_delay("Hr0", "HrBase", avg_read_latency_us=20_000)
            d = BdevDesc.open("Hr0")
            buf = DmaBuf.alloc(BS)
            pending = d.read(buf, 0)
            deleted = spdk_io.spawn(bm.delete_delay("Hr0"))
            with contextlib.suppress(SpdkError):  # in-flight I/O may complete with an error
                await pending
            await deleted
            with pytest.raises(BdevRemovedError):
                d.read(buf, 0)
            assert d.inflight == 0
            d.close()  # already closed by the remove event: harmless
            buf.free()

    run(main())


def test_null_and_aio_bdevs(run: Run, tmp_path: Path) -> None:
    backing = tmp_path / "aio.img"
    backing.write_bytes(bytes(64 * BS))

    async def main() -> None:
        await bm.create_null("Null0", 1024, 512)
        try:
            with BdevDesc.open("Null0", write=True) as d:
                buf = DmaBuf.alloc(BS)
                await d.write(buf, 0)
                await d.read(buf, 0)
        finally:
            await bm.delete_null("Null0")
        await bm.create_aio("Aio0", backing, 4096)
        try:
            with BdevDesc.open("Aio0", write=True) as d:
                w = DmaBuf.alloc(BS)
                w[:] = pattern(BS, 3)
                await d.write(w, 5 * BS)
                r = DmaBuf.alloc(BS)
                await d.read(r, 5 * BS)
                assert bytes(r) == bytes(w)
        finally:
            await bm.delete_aio("Aio0")
        with pytest.raises(FileNotFoundError):
            await bm.create_aio("Aio1", tmp_path / "missing.img")

    run(main())
    assert backing.read_bytes()[5 * BS : 6 * BS] == pattern(BS, 3)


def test_module_helpers_validate(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            await bm.create_malloc("M", 0)
        with pytest.raises(ValueError):
            await bm.create_malloc("M", 8, 1000)
        with pytest.raises(ValueError):
            await bm.create_null("", 8)
        with pytest.raises(ValueError):
            await bm.create_delay("D", "B", avg_read_latency_us=-1)
        with pytest.raises(ValueError):
            await bm.inject_error("E", "sideways")  # type: ignore[arg-type]  # not an io_type

    run(main())


def test_many_concurrent_ios_survive_bdev_io_exhaustion() -> None:
    """A tiny bdev_io pool makes SPDK return -ENOMEM; the I/Os wait and retry."""
    proc = run_py(
        """
        import spdk_io
        from spdk_io import bdev_modules as bm
        from spdk_io.bdev import BdevDesc
        from spdk_io.dma import DmaBuf

        config = {"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_set_options",
             "params": {"bdev_io_pool_size": 32, "bdev_io_cache_size": 4}}]}]}

        async def main() -> int:
            await bm.create_malloc("Nomem0", 512, 4096)
            with BdevDesc.open("Nomem0", write=True) as d:
                bufs = [DmaBuf.alloc(4096) for _ in range(256)]
                for i, b in enumerate(bufs):
                    b.fill(i & 0xFF)
                await spdk_io.gather(*(d.write_blocks(b, i, 1) for i, b in enumerate(bufs)))
                for b in bufs:
                    b.fill(0)
                await spdk_io.gather(*(d.read_blocks(b, i, 1) for i, b in enumerate(bufs)))
                assert all(b[0] == (i & 0xFF) for i, b in enumerate(bufs))
            return 256

        print("completed", spdk_io.run(main(), config=config))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "completed 256" in proc.stdout


def test_descriptor_left_open_is_closed_at_teardown() -> None:
    proc = run_py(
        """
        import spdk_io
        from spdk_io import bdev_modules as bm
        from spdk_io.bdev import BdevDesc
        from spdk_io.dma import DmaBuf

        async def main() -> None:
            await bm.create_malloc("Leak0", 64, 4096)
            d = BdevDesc.open("Leak0", write=True)   # never closed by the user
            buf = DmaBuf.alloc(4096)
            d.write(buf, 0)                           # nor awaited

        spdk_io.run(main())
        print("clean teardown")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "clean teardown" in proc.stdout


def test_io_slot_reuses_one_op_and_checks_like_the_descriptor(run: Run) -> None:
    async def main() -> None:
        async with malloc("Slot0", blocks=64):
            with BdevDesc.open("Slot0", write=True) as d:
                buf = DmaBuf.alloc(2 * BS)
                with d.slot(buf) as slot:
                    for i in range(8):
                        buf.fill(i)
                        await slot.write_blocks(i * 2, 2)
                    for i in range(8):
                        await slot.read_blocks(i * 2, 1)
                        assert buf[0] == i and buf[BS - 1] == i
                    with pytest.raises(BufferError):
                        buf.free()  # pinned for the slot's life
                    op = slot.read_blocks(0, 1)
                    with pytest.raises(RuntimeError, match="busy"):
                        slot.read_blocks(1, 1)
                    await op
                    with pytest.raises(ValueError, match="past"):
                        slot.read_blocks(63, 2)
                    with pytest.raises(ValueError, match="too small"):
                        slot.read_blocks(0, 3)
                    with pytest.raises(ValueError):
                        slot.read_blocks(-1, 1)
                    errors: list[BaseException] = []
                    t = threading.Thread(
                        target=lambda: _catch(errors, lambda: slot.read_blocks(0, 1))
                    )
                    t.start()
                    t.join()
                    assert isinstance(errors[0], WrongThreadError)
                with pytest.raises(RuntimeError, match="closed"):
                    slot.read_blocks(0, 1)
                buf.free()  # released by closing the slot
            with BdevDesc.open("Slot0") as ro, ro.slot(DmaBuf.alloc(BS)) as rslot:
                with pytest.raises(PermissionError):
                    rslot.write_blocks(0, 1)
                await rslot.read_blocks(0, 1)

    run(main())


def _catch(errors: list[BaseException], fn: Callable[[], object]) -> None:
    try:
        fn()
    except BaseException as exc:
        errors.append(exc)


def test_supports_takes_io_type_names_and_enum_and_refuses_unknown_names(run: Run) -> None:
    async def main() -> None:
        await bm.create_malloc("Kinds0", 64, 4096)
        try:
            b = Bdev.get("Kinds0")
            assert b.supports("write_zeroes") and b.supports(IoType.WRITE_ZEROES)
            assert IoType.COMPARE_AND_WRITE.label == "compare_and_write"
            assert b.io_types <= {t.label for t in IoType}
            with pytest.raises(ValueError, match="unknown I/O type 'wrte'"):
                b.supports("wrte")  # type: ignore[arg-type]  # a typo must not read as False
        finally:
            await bm.delete_malloc("Kinds0")

    run(main())
