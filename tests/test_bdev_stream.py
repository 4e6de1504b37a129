"""IoStream: streaming I/O on real SPDK bdevs (malloc, null, error, delay), no task per I/O."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spdk_io
from spdk_io import bdev_modules as bm
from spdk_io.bdev import Bdev, BdevDesc, IoStream, StreamSlot
from spdk_io.dma import DmaBuf
from spdk_io.errors import BdevRemovedError, WrongThreadError
from spdk_io.loop import Op

Run = Callable[[Awaitable[Any]], Any]
BS = 4096


@asynccontextmanager
async def malloc(name: str, blocks: int = 64) -> AsyncIterator[Bdev]:
    bdev = await bm.create_malloc(name, blocks, BS)
    try:
        yield bdev
    finally:
        await bm.delete_malloc(name)


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def never(slot: StreamSlot, ok: bool) -> int | None:
    return None


def test_data_written_through_a_stream_reads_back_and_every_completion_is_reported(
    run: Run,
) -> None:
    """Four slots each write their own pattern to every fourth block, resubmitting from
    on_complete; every block then holds its slot's pattern (read back another way)."""
    slots, blocks = 4, 32

    async def main() -> None:
        async with malloc("St_Rt", blocks):
            with BdevDesc.open("St_Rt", write=True) as d:
                bufs = [DmaBuf.alloc(BS) for _ in range(slots)]
                for i, b in enumerate(bufs):
                    b[:] = pattern(BS, i + 1)
                seen: list[tuple[int, bool]] = []
                next_block = [i for i in range(slots)]

                def on_complete(slot: StreamSlot, ok: bool) -> int | None:
                    seen.append((slot.index, ok))
                    nxt = next_block[slot.index] + slots
                    if nxt >= blocks:
                        return None
                    next_block[slot.index] = nxt
                    return nxt

                with d.stream(bufs, on_complete) as stream:
                    assert [s.index for s in stream.slots] == list(range(slots))
                    for s in stream.slots:
                        s.write_blocks(s.index, 1)
                    assert stream.inflight == slots and d.inflight == slots
                    await stream.wait()
                    assert stream.inflight == 0 and d.inflight == 0
                    assert stream.error is None
                # Each slot completed blocks/slots writes, each reported once, all ok.
                assert len(seen) == blocks
                assert all(ok for _, ok in seen)
                assert sorted(i for i, _ in seen) == sorted(list(range(slots)) * (blocks // slots))
                whole = DmaBuf.alloc(blocks * BS)
                await d.read_blocks(whole, 0, blocks)
                for blk in range(blocks):
                    assert whole[blk * BS : (blk + 1) * BS] == pattern(BS, blk % slots + 1), blk
                for b in [*bufs, whole]:
                    b.free()  # the stream is closed: nothing is pinned any more

    run(main())


def test_reads_through_a_stream_fill_each_slots_buffer(run: Run) -> None:
    async def main() -> None:
        async with malloc("St_Rd", 8):
            with BdevDesc.open("St_Rd", write=True) as d:
                src = DmaBuf.alloc(8 * BS)
                src[:] = pattern(8 * BS, 9)
                await d.write_blocks(src, 0, 8)
                bufs = [DmaBuf.alloc(2 * BS) for _ in range(4)]
                with d.stream(bufs, never) as stream:
                    for s in stream.slots:
                        s.read_blocks(2 * s.index, 2)
                    await stream.wait()
                for i, b in enumerate(bufs):
                    assert bytes(b) == bytes(src[2 * i * BS : 2 * (i + 1) * BS])

    run(main())


def test_a_stream_runs_many_ios_on_a_null_bdev_and_stops_when_told(run: Run) -> None:
    async def main() -> None:
        await bm.create_null("St_Null", 1 << 16, BS)
        try:
            with BdevDesc.open("St_Null") as d:
                bufs = [DmaBuf.alloc(BS) for _ in range(16)]
                counts = [0] * 16
                limit = 500

                def on_complete(slot: StreamSlot, ok: bool) -> int | None:
                    assert ok
                    counts[slot.index] += 1
                    if counts[slot.index] >= limit:
                        return None
                    return (counts[slot.index] * 97 + slot.index) % (1 << 16)

                with d.stream(bufs, on_complete) as stream:
                    for s in stream.slots:
                        s.read_blocks(s.index, 1)
                    await stream.wait()
                assert counts == [limit] * 16
        finally:
            await bm.delete_null("St_Null")

    run(main())


def test_on_complete_may_start_another_kind_of_io_itself(run: Run) -> None:
    """A completion that starts a write on its slot (and returns None) chains it; one that
    also returns an offset fails the stream (two I/Os on one slot cannot be)."""

    async def main() -> None:
        async with malloc("St_Mix", 8):
            with BdevDesc.open("St_Mix", write=True) as d:
                buf = DmaBuf.alloc(BS)
                buf[:] = pattern(BS, 3)
                kinds: list[str] = []

                def on_complete(slot: StreamSlot, ok: bool) -> int | None:
                    kinds.append("done")
                    if len(kinds) == 1:
                        slot.write_blocks(5, 1)  # after the read, write the buffer elsewhere
                    return None

                with d.stream([buf], on_complete) as stream:
                    stream.slots[0].write_blocks(4, 1)
                    await stream.wait()
                assert kinds == ["done", "done"]
                check = DmaBuf.alloc(2 * BS)
                await d.read_blocks(check, 4, 2)
                assert bytes(check) == pattern(BS, 3) * 2

                def both(slot: StreamSlot, ok: bool) -> int | None:
                    slot.read_blocks(0, 1)
                    return 1

                with d.stream([buf], both) as stream:
                    stream.slots[0].read_blocks(0, 1)
                    with pytest.raises(RuntimeError, match="return None"):
                        await stream.wait()
                    assert stream.inflight == 0 and d.inflight == 0

    run(main())


def test_an_exception_in_on_complete_reaches_the_waiter_after_the_io_drained(run: Run) -> None:
    async def main() -> None:
        await bm.create_null("St_Exc", 1 << 10, BS)
        try:
            with BdevDesc.open("St_Exc") as d:
                calls = 0

                def on_complete(slot: StreamSlot, ok: bool) -> int | None:
                    nonlocal calls
                    calls += 1
                    if calls == 10:
                        raise KeyError("boom")
                    return calls % 100

                bufs = [DmaBuf.alloc(BS) for _ in range(4)]
                with d.stream(bufs, on_complete) as stream:
                    for s in stream.slots:
                        s.read_blocks(0, 1)
                    with pytest.raises(KeyError, match="boom"):
                        await stream.wait()
                    assert stream.inflight == 0 and d.inflight == 0
                    assert calls == 10  # not called again once it raised
                    assert isinstance(stream.error, KeyError)
                    with pytest.raises(RuntimeError, match="failed"):
                        stream.slots[0].read_blocks(0, 1)
                    with pytest.raises(KeyError):  # every later wait says so too
                        await stream.wait()
                for b in bufs:
                    b.free()
        finally:
            await bm.delete_null("St_Exc")

    run(main())


@pytest.mark.parametrize(
    ("returned", "exc", "match"),
    [
        (1.0, TypeError, "offset_blocks"),
        (True, TypeError, "offset_blocks"),
        (-1, ValueError, "offset_blocks"),
        (63, ValueError, "past the end"),
        (1 << 70, ValueError, "past the end"),
    ],
)
def test_a_bad_offset_returned_by_on_complete_fails_the_stream(
    run: Run, returned: object, exc: type[Exception], match: str
) -> None:
    async def main() -> None:
        async with malloc("St_BadRet", 64):
            with BdevDesc.open("St_BadRet") as d:

                def on_complete(slot: StreamSlot, ok: bool) -> int | None:
                    return returned  # type: ignore[return-value]  # wrong on purpose

                with d.stream([DmaBuf.alloc(2 * BS)], on_complete) as stream:
                    stream.slots[0].read_blocks(0, 2)
                    with pytest.raises(exc, match=match):
                        await stream.wait()
                    assert stream.inflight == 0 and d.inflight == 0

    run(main())


def test_failed_io_is_reported_as_not_ok(run: Run) -> None:
    async def main() -> None:
        async with malloc("St_ErrBase", 16):
            await bm.create_error("St_ErrBase")
            try:
                with BdevDesc.open("EE_St_ErrBase") as d:
                    await bm.inject_error("EE_St_ErrBase", "read", "failure", 2)
                    oks: list[bool] = []

                    def on_complete(slot: StreamSlot, ok: bool) -> int | None:
                        oks.append(ok)
                        return len(oks) if len(oks) < 5 else None

                    with d.stream([DmaBuf.alloc(BS)], on_complete) as stream:
                        stream.slots[0].read_blocks(0, 1)
                        await stream.wait()
                    assert oks == [False, False, True, True, True]
            finally:
                await bm.delete_error("EE_St_ErrBase")

    run(main())


def test_bad_input_is_rejected_and_nothing_is_submitted(run: Run) -> None:
    async def main() -> None:
        async with malloc("St_Bad", 16):
            with BdevDesc.open("St_Bad") as d:
                small = DmaBuf.alloc(512)
                freed = DmaBuf.alloc(BS)
                freed.free()
                good = DmaBuf.alloc(2 * BS)
                bad_streams: list[tuple[Callable[[], object], type[Exception], str]] = [
                    (lambda: d.stream([], never), ValueError, "at least one"),
                    (lambda: d.stream(good, never), TypeError, "sequence"),  # type: ignore[arg-type]
                    (lambda: d.stream([b"x" * BS], never), TypeError, "DmaBuf"),  # type: ignore[list-item]
                    (lambda: d.stream([good, small], never), ValueError, "too small"),
                    (lambda: d.stream([freed], never), ValueError, "freed"),
                    (lambda: d.stream([good], 42), TypeError, "callable"),  # type: ignore[arg-type]
                ]
                for make, exc, match in bad_streams:
                    with pytest.raises(exc, match=match):
                        make()
                good.free()  # nothing was left pinned by the refused streams
                small.free()
                buf = DmaBuf.alloc(2 * BS)
                with d.stream([buf], never) as stream:
                    slot = stream.slots[0]
                    bad_io: list[tuple[Callable[[], object], type[Exception], str]] = [
                        (lambda: slot.read_blocks(1.0, 1), TypeError, "offset_blocks"),  # type: ignore[arg-type]
                        (lambda: slot.read_blocks(0, True), TypeError, "num_blocks"),
                        (lambda: slot.read_blocks(-1, 1), ValueError, "offset_blocks"),
                        (lambda: slot.read_blocks(0, 0), ValueError, "num_blocks"),
                        (lambda: slot.read_blocks(15, 2), ValueError, "past the end"),
                        (lambda: slot.read_blocks(0, 3), ValueError, "too small"),
                        (lambda: slot.write_blocks(0, 1), PermissionError, "read-only"),
                    ]
                    for call, exc, match in bad_io:
                        with pytest.raises(exc, match=match):
                            call()
                        assert stream.inflight == 0 and d.inflight == 0 and not slot.busy
                    errors: list[BaseException] = []

                    def other_thread() -> None:
                        try:
                            slot.read_blocks(0, 1)
                        except BaseException as exc:
                            errors.append(exc)

                    t = threading.Thread(target=other_thread)
                    t.start()
                    t.join()
                    assert isinstance(errors[0], WrongThreadError)
                    assert stream.inflight == 0
                    slot.read_blocks(0, 1)
                    with pytest.raises(RuntimeError, match="in flight"):
                        slot.read_blocks(1, 1)
                    assert stream.inflight == 1 and d.inflight == 1
                    await stream.wait()
                    with pytest.raises(BufferError):
                        buf.free()  # pinned for the stream's life
                with pytest.raises(RuntimeError, match="closed"):
                    slot.read_blocks(0, 1)
                buf.free()

    run(main())


def test_closing_is_refused_while_io_is_in_flight_and_aclose_stops_and_drains(run: Run) -> None:
    async def main() -> None:
        async with malloc("St_Close", 16):
            with BdevDesc.open("St_Close") as d:
                bufs = [DmaBuf.alloc(BS) for _ in range(4)]
                completions = 0
                first: Op[None] = Op("first completion")

                def forever(slot: StreamSlot, ok: bool) -> int | None:
                    nonlocal completions
                    completions += 1
                    if not first.done():
                        first.set_result(None)
                    return (slot.index + completions) % 16

                stream = d.stream(bufs, forever)
                for s in stream.slots:
                    s.read_blocks(s.index, 1)
                with pytest.raises(BlockingIOError, match="in flight"):
                    stream.close()
                with pytest.raises(BlockingIOError):
                    d.close()  # its child is busy
                assert not stream.closed and not d.closed
                await first
                assert stream.inflight == 4  # it keeps going
                await stream.aclose()
                assert stream.closed and stream.inflight == 0 and d.inflight == 0
                for b in bufs:
                    b.free()

    run(main())


def test_closing_the_descriptor_stops_its_streams(run: Run) -> None:
    async def main() -> None:
        async with malloc("St_DClose", 16):
            d = BdevDesc.open("St_DClose")
            bufs = [DmaBuf.alloc(BS) for _ in range(2)]
            stream = d.stream(bufs, lambda slot, ok: slot.index)
            for s in stream.slots:
                s.read_blocks(s.index, 1)
            await d.aclose()
            assert stream.closed and d.closed
            for b in bufs:
                b.free()

    run(main())


def test_hot_remove_stops_the_stream_with_bdev_removed_error(run: Run) -> None:
    async def main() -> None:
        async with malloc("St_HrBase", 16):
            await bm.create_delay("St_Hr0", "St_HrBase", avg_read_latency_us=2_000)
            d = BdevDesc.open("St_Hr0")
            bufs = [DmaBuf.alloc(BS) for _ in range(2)]
            stream = d.stream(bufs, lambda slot, ok: slot.index)
            for s in stream.slots:
                s.read_blocks(s.index, 1)
            deleted = spdk_io.spawn(bm.delete_delay("St_Hr0"))
            with pytest.raises(BdevRemovedError):
                await stream.wait()
            await deleted
            assert stream.inflight == 0 and d.inflight == 0
            assert d.closed and stream.closed  # the remove closed the descriptor once idle
            for b in bufs:
                b.free()

    run(main())


MODEL_BLOCKS = 32


@st.composite
def submissions(draw: st.DrawFn) -> list[tuple[str, int, int, int]]:
    """(kind, offset_blocks, num_blocks, seed): in range or not."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["read", "write"]))
        off = draw(st.integers(-2, MODEL_BLOCKS + 2))
        num = draw(st.integers(-1, 5))
        out.append((kind, off, num, draw(st.integers(0, 255))))
    return out


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(subs=submissions())
def test_stream_io_matches_a_model(run: Run, subs: list[tuple[str, int, int, int]]) -> None:
    """Submissions in range do what a bytearray model says; out of range ones (a bad
    offset, a length of 0 or past the buffer's 4 blocks or the bdev's end) raise
    ValueError and submit nothing."""

    async def main() -> None:
        async with malloc("St_Model", MODEL_BLOCKS):
            with BdevDesc.open("St_Model", write=True) as d:
                whole = DmaBuf.alloc(MODEL_BLOCKS * BS)
                await d.read_blocks(whole, 0, MODEL_BLOCKS)
                model = bytearray(bytes(whole))
                buf = DmaBuf.alloc(4 * BS)
                with d.stream([buf], never) as stream:
                    slot = stream.slots[0]
                    for kind, off, num, seed in subs:
                        valid = off >= 0 and 1 <= num <= 4 and off + num <= MODEL_BLOCKS
                        if kind == "write":
                            buf[:] = pattern(4 * BS, seed)
                        start = slot.write_blocks if kind == "write" else slot.read_blocks
                        if not valid:
                            with pytest.raises(ValueError):
                                start(off, num)
                            assert stream.inflight == 0 and not slot.busy
                            continue
                        start(off, num)
                        await stream.wait()
                        a, b = off * BS, (off + num) * BS
                        if kind == "write":
                            model[a:b] = pattern(4 * BS, seed)[: num * BS]
                        else:
                            assert buf[: num * BS] == bytes(model[a:b])
                await d.read_blocks(whole, 0, MODEL_BLOCKS)
                assert bytes(whole) == bytes(model)
                buf.free()
                whole.free()

    run(main())


def test_stream_is_a_resource_of_its_descriptor(run: Run) -> None:
    async def main() -> None:
        async with malloc("St_Res", 8):
            with BdevDesc.open("St_Res") as d:
                buf = DmaBuf.alloc(BS)
                stream = d.stream([buf], never)
                assert isinstance(stream, IoStream) and stream.parent is d
                assert "IoStream St_Res 1 slots running" in repr(stream)
                await stream.wait()  # nothing in flight: returns at once
            assert stream.closed  # closed with its descriptor
            buf.free()

    run(main())


def test_a_sequential_scan_sees_each_stripe_once_with_its_offset(run: Run) -> None:
    """The README's scan: each slot walks its own stripes via ``slot.offset_blocks``."""

    async def main() -> None:
        async with malloc("St_Scan", 30):
            with BdevDesc.open("St_Scan", write=True) as d:
                src = DmaBuf.alloc(30 * BS)
                src[:] = pattern(30 * BS, 5)
                await d.write_blocks(src, 0, 30)
                bufs = [DmaBuf.alloc(2 * BS) for _ in range(3)]
                seen: dict[int, bytes] = {}

                def on_complete(slot: StreamSlot, ok: bool) -> int | None:
                    assert ok and slot.num_blocks == 2
                    assert slot.offset_blocks not in seen
                    seen[slot.offset_blocks] = bytes(slot.buf)
                    nxt = slot.offset_blocks + len(bufs) * 2
                    return nxt if nxt + 2 <= d.num_blocks else None

                with d.stream(bufs, on_complete) as stream:
                    for slot in stream.slots:
                        slot.read_blocks(slot.index * 2, 2)
                    await stream.wait()
                assert sorted(seen) == list(range(0, 30, 2))
                for off, data in seen.items():
                    assert data == bytes(src[off * BS : (off + 2) * BS])

    run(main())


@settings(max_examples=40, deadline=None)
@given(samples=st.lists(st.integers(0, 1 << 26), min_size=1, max_size=300))
def test_perfs_fine_latency_table_gives_the_histograms_percentiles(samples: list[int]) -> None:
    """perf's streaming worker counts 2 us..4 ms latencies in 8 ns steps and the maximum
    only outside them: its histogram equals one that recorded every sample, except that
    a percentile clamped by the maximum may be up to 7 ns high (never low)."""
    from spdk_io.perf import _FINE_HI, _FINE_LO, _Stats
    from spdk_io.stats import LatencyHistogram, bucket_index

    stats, exact = _Stats(), LatencyHistogram()
    longest = 0
    for d in samples:  # as perf's on_complete counts them
        if _FINE_LO <= d < _FINE_HI:
            stats.fine[d >> 3] += 1
        else:
            stats.counts[bucket_index(d)] += 1
            longest = max(longest, d)
        exact.record(d)
    stats.total = sum(samples)
    stats.max = max(longest, stats.fine_max())
    assert stats.completed() == len(samples)
    got = stats.histogram()
    assert got.mean == exact.mean
    assert 0 <= got.max - max(samples) <= 7
    for p in (0, 50, 90, 99, 99.9, 100):
        assert 0 <= got.percentile(p) - exact.percentile(p) <= 7, p


def test_stop_refuses_an_error_that_is_not_an_exception_and_changes_nothing(run: Run) -> None:
    async def main() -> None:
        await bm.create_null("St_Stop", 64, BS)
        try:
            with BdevDesc.open("St_Stop") as d:
                bufs = [DmaBuf.alloc(BS)]
                with d.stream(bufs, lambda slot, ok: None) as stream:
                    for bad in ("oops", 5, ValueError):
                        with pytest.raises(TypeError, match="exception instance"):
                            stream.stop(bad)  # type: ignore[arg-type]  # what is tested
                    stream.slots[0].read_blocks(0, 1)  # still live: nothing changed
                    await stream.wait()
                    assert stream.error is None
                    stream.stop(ValueError("told"))
                    with pytest.raises(ValueError, match="told"):
                        await stream.wait()
                bufs[0].free()
        finally:
            await bm.delete_null("St_Stop")

    run(main())


def test_stream_slots_come_only_from_a_stream(run: Run) -> None:
    """A slot's index is its stream's completion argument: one made by hand is refused."""

    async def main() -> None:
        await bm.create_null("St_Own", 64, BS)
        try:
            with BdevDesc.open("St_Own") as d:
                bufs = [DmaBuf.alloc(BS)]
                with d.stream(bufs, lambda slot, ok: None) as stream:
                    with pytest.raises(TypeError, match=r"IoStream\.slots"):
                        StreamSlot(stream, 5, bufs[0])
                    assert len(stream.slots) == 1 and stream.inflight == 0
                bufs[0].free()
        finally:
            await bm.delete_null("St_Own")

    run(main())
