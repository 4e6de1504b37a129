"""spdk_io.stats snapshots against real SPDK, checked against SPDK's own RPC answers
(bdev_get_iostat, bdev_get_histogram, thread_get_stats, thread_get_pollers,
nvmf_get_stats) taken around them."""

from __future__ import annotations

import base64
import ctypes
import errno
import json
import struct
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import spdk_io
from spdk_io import _bridge, rpc, stats
from spdk_io import raw as spdk_raw
from spdk_io.bdev import BdevDesc
from spdk_io.dma import DmaBuf
from spdk_io.stats import IoStat, bucket_bounds
from spdk_io.stats.model import ticks_to_ns
from spdk_io.thread import SpdkThread
from tests.conftest import run_py

Run = Callable[[Awaitable[Any]], Any]
_KINDS = (("read", "read"), ("write", "written"), ("unmap", "unmapped"), ("copy", "copied"))


def as_rpc(io: IoStat, hz: int) -> dict[str, Any]:
    """What SPDK's bdev_get_iostat reports, from our snapshot (latencies back in ns)."""
    out: dict[str, Any] = {}
    for kind, done in _KINDS:
        s = getattr(io, kind)
        out[f"num_{kind}_ops"] = s.ops
        out[f"bytes_{done}"] = s.bytes
        out[f"{kind}_latency_ns"] = s.latency_ns
        out[f"min_{kind}_latency_ns"] = s.min_latency_ns
        out[f"max_{kind}_latency_ns"] = s.max_latency_ns
    out["io_error"] = io.errors
    return out


def rpc_in_ns(raw: dict[str, Any], hz: int) -> dict[str, Any]:
    """SPDK's bdev_get_iostat entry with ticks converted as spdk_io converts them."""
    out: dict[str, Any] = {}
    for kind, done in _KINDS:
        out[f"num_{kind}_ops"] = raw[f"num_{kind}_ops"]
        out[f"bytes_{done}"] = raw[f"bytes_{done}"]
        for pre in ("", "min_", "max_"):
            out[f"{pre}{kind}_latency_ns"] = ticks_to_ns(raw[f"{pre}{kind}_latency_ticks"], hz)
    out["io_error"] = raw.get("io_error", {})
    return out


async def iostat(name: str, per_channel: bool = False) -> dict[str, Any]:
    answer = await rpc.call("bdev_get_iostat", {"names": [name], "per_channel": per_channel})
    assert isinstance(answer, dict)
    return answer


def test_bdev_and_channel_stats_match_bdev_get_iostat(run: Run) -> None:
    async def main() -> None:
        await rpc.call(
            "bdev_malloc_create", {"name": "StatsM0", "num_blocks": 64, "block_size": 512}
        )
        try:
            with BdevDesc.open("StatsM0", write=True) as desc:
                buf = DmaBuf.alloc(512)
                await desc.read_blocks(buf, 0, 1)  # after the examine reads
                (before,) = await stats.bdev_stats("StatsM0")
                for i in range(7):
                    await desc.write_blocks(buf, i, 1)
                for i in range(3):
                    await desc.read_blocks(buf, i, 1)
                await desc.unmap_blocks(0, 8)
                rpc1 = await iostat("StatsM0")
                (after,) = await stats.bdev_stats("StatsM0")
                rpc2 = await iostat("StatsM0")
                chan_rpc = await iostat("StatsM0", per_channel=True)
        finally:
            await rpc.call("bdev_malloc_delete", {"name": "StatsM0"})

        hz = rpc1["tick_rate"]
        assert rpc1["bdevs"] == rpc2["bdevs"]  # nothing moved in between: equality is fair
        assert as_rpc(after.io, hz) == rpc_in_ns(rpc1["bdevs"][0], hz)
        # What the I/O above did, seen as deltas of the snapshots.
        assert after.io.write.ops - before.io.write.ops == 7
        assert after.io.write.bytes - before.io.write.bytes == 7 * 512
        assert after.io.read.ops - before.io.read.ops == 3
        assert after.io.unmap.ops - before.io.unmap.ops == 1
        assert after.io.write.min_latency_ns <= after.io.write.mean_latency_ns
        assert after.io.write.mean_latency_ns <= after.io.write.max_latency_ns
        assert after.io.errors == {}
        # One channel (this thread's), as SPDK's per-channel answer has it.
        (chan,) = after.channels
        (raw_chan,) = chan_rpc["channels"]
        assert chan.thread == spdk_io.current_thread().name
        assert chan.thread_id == raw_chan["thread_id"]
        assert as_rpc(chan.io, hz) == rpc_in_ns(raw_chan, hz)
        assert chan.io.write.ops == 7 and chan.io.read.ops >= 4  # SPDK examined it here too

    run(main())


def test_failed_io_is_counted_by_status_as_spdk_counts_it(run: Run) -> None:
    async def main() -> tuple[Any, dict[str, Any]]:
        await rpc.call(
            "bdev_malloc_create", {"name": "StatsE0", "num_blocks": 64, "block_size": 512}
        )
        await rpc.call("bdev_error_create", {"base_name": "StatsE0"})
        try:
            params = {"name": "EE_StatsE0", "io_type": "read", "error_type": "failure", "num": 2}
            await rpc.call("bdev_error_inject_error", params)
            with BdevDesc.open("EE_StatsE0") as desc:
                buf = DmaBuf.alloc(512)
                failed = 0
                for i in range(5):
                    try:
                        await desc.read_blocks(buf, i, 1)
                    except spdk_io.SpdkError:
                        failed += 1
                assert failed == 2
                (got,) = await stats.bdev_stats("EE_StatsE0")
                raw = await iostat("EE_StatsE0")
        finally:
            await rpc.call("bdev_error_delete", {"name": "EE_StatsE0"})
            await rpc.call("bdev_malloc_delete", {"name": "StatsE0"})
        return got, raw

    got, raw = run(main())
    assert got.io.errors == {"failed": 2}
    assert got.io.errors == raw["bdevs"][0]["io_error"]
    assert got.channels and all(c.io.errors == {} for c in got.channels)  # per bdev only


def rpc_histogram(answer: dict[str, Any], hz: int) -> tuple[tuple[int, int, int], ...]:
    """SPDK's bdev_get_histogram answer (base64 of little-endian u64 buckets) as
    ``(lowest_ns, highest_ns, count)`` buckets; its default layout is spdk_io's own."""
    assert answer["granularity"] == 7 and answer["min_range"] == 0
    data = base64.b64decode(answer["histogram"])
    counts = struct.unpack(f"<{len(data) // 8}Q", data)
    out = []
    for i, c in enumerate(counts):
        if c:
            lo, hi = bucket_bounds(i)
            out.append((ticks_to_ns(lo, hz), ticks_to_ns(hi, hz), c))
    return tuple(out)


def test_histogram_matches_bdev_get_histogram_and_brackets_the_max(run: Run) -> None:
    async def main() -> None:
        await rpc.call(
            "bdev_malloc_create", {"name": "StatsH0", "num_blocks": 64, "block_size": 512}
        )
        try:
            assert await stats.bdev_histogram("StatsH0") is None  # not enabled
            with BdevDesc.open("StatsH0", write=True) as desc:
                await stats.enable_histogram("StatsH0")
                buf = DmaBuf.alloc(512)
                for i in range(50):
                    await desc.write_blocks(buf, i % 64, 1)
                (b,) = await stats.bdev_stats("StatsH0")
                raw = await rpc.call("bdev_get_histogram", {"name": "StatsH0"})
                await stats.disable_histogram("StatsH0")
                assert await stats.bdev_histogram("StatsH0") is None
        finally:
            await rpc.call("bdev_malloc_delete", {"name": "StatsH0"})

        h = b.histogram
        assert h is not None
        assert h.count == 50 == b.io.write.ops
        assert h.buckets == rpc_histogram(raw, raw["tsc_rate"])
        p = h.percentiles
        assert p["p50"] <= p["p90"] <= p["p99"] <= p["p99.9"] == h.percentile(100)
        # The slowest write (exact, from the I/O stat) lies in the top bucket.
        lo, hi, _ = h.buckets[-1]
        assert lo <= b.io.write.max_latency_ns <= hi
        assert h.percentile(0) == h.buckets[0][1]
        # Its samples are exactly the writes (enabled on a bdev that had none): SPDK's
        # exact sum of their latencies lies within the buckets, and the estimate near it.
        exact = b.io.write.latency_ns
        assert sum(lo * c for lo, _, c in h.buckets) <= exact
        assert exact <= sum((hi + 1) * c for _, hi, c in h.buckets)  # (+1: ns rounding)
        half_widths = sum((hi + 1 - lo) * c for lo, hi, c in h.buckets) / 2
        assert abs(h.sum_ns - exact) <= half_widths + len(h.buckets)

    run(main())


def test_threads_and_pollers_match_thread_get_stats_and_pollers(run: Run) -> None:
    async def main() -> tuple[Any, ...]:
        stats1 = await rpc.call("thread_get_stats")
        pollers1 = await rpc.call("thread_get_pollers")
        threads = await stats.thread_stats()
        stats2 = await rpc.call("thread_get_stats")
        pollers2 = await rpc.call("thread_get_pollers")
        return stats1, threads, stats2, pollers1, pollers2

    stats1, threads, stats2, pollers1, pollers2 = run(main())
    hz = stats1["tick_rate"]
    by_id1 = {t["id"]: t for t in stats1["threads"]}
    by_id2 = {t["id"]: t for t in stats2["threads"]}
    assert {t.id for t in threads} == set(by_id1) == set(by_id2)
    assert spdk_io.current_thread().name in {t.name for t in threads}
    for t in threads:
        r1, r2 = by_id1[t.id], by_id2[t.id]
        assert t.name == r1["name"]
        assert ticks_to_ns(r1["busy"], hz) <= t.busy_ns <= ticks_to_ns(r2["busy"], hz)
        assert ticks_to_ns(r1["idle"], hz) <= t.idle_ns <= ticks_to_ns(r2["idle"], hz)
        assert t.loop  # every SPDK thread here is polled by an spdk_io loop

    def runs(answer: dict[str, Any]) -> dict[tuple[int, str, int], int]:
        return {
            (t["id"], p["name"], p["id"]): p["run_count"]
            for t in answer["threads"]
            for kind in ("active_pollers", "timed_pollers", "paused_pollers")
            for p in t[kind]
        }

    before, after = runs(pollers1), runs(pollers2)
    ours = {(t.id, p.name, p.id): p.run_count for t in threads for p in t.pollers}
    assert ours, "the app thread has pollers (the RPC client's at least)"
    for key, count in ours.items():
        if key in before and key in after:  # pollers that lived through all three reads
            assert before[key] <= count <= after[key]
    assert set(before) & set(after) <= set(ours)


def test_loop_counters_count_turns_tasks_and_the_ready_high_water(run: Run) -> None:
    async def main() -> tuple[Any, Any]:
        first = stats.loop_stats()

        async def hop() -> None:
            await spdk_io.sleep(0)

        await spdk_io.gather(*(hop() for _ in range(20)))
        await spdk_io.sleep(0.01)
        return first, stats.loop_stats()

    first, second = run(main())
    assert second.name == first.name
    assert second.turns > first.turns
    assert second.tasks_run - first.tasks_run >= 40  # 20 tasks, two steps each at least
    assert second.ready_high_water >= 20  # they were all ready at once


def test_nvmf_stats_match_nvmf_get_stats(run: Run) -> None:
    async def main() -> tuple[Any, list[Any]]:
        ours = await stats.nvmf_stats()
        answers = [await rpc.call("nvmf_get_stats", {"tgt_name": t.name}) for t in ours]
        return ours, answers

    ours, answers = run(main())
    assert ours, "SPDK's nvmf subsystem has its default target"
    fields = (
        "admin_qpairs",
        "io_qpairs",
        "current_admin_qpairs",
        "current_io_qpairs",
        "pending_bdev_io",
        "completed_nvme_io",
    )
    for target, answer in zip(ours, answers, strict=True):
        assert [pg.name for pg in target.poll_groups] == [g["name"] for g in answer["poll_groups"]]
        for pg, raw in zip(target.poll_groups, answer["poll_groups"], strict=True):
            assert {f: getattr(pg, f) for f in fields} == {f: raw[f] for f in fields}


def test_snapshot_exports_as_json(run: Run) -> None:
    async def main() -> Any:
        await rpc.call(
            "bdev_malloc_create", {"name": "StatsJ0", "num_blocks": 64, "block_size": 512}
        )
        try:
            return await stats.snapshot()
        finally:
            await rpc.call("bdev_malloc_delete", {"name": "StatsJ0"})

    snap = run(main())
    data = json.loads(stats.to_json(snap))
    assert data == snap.to_dict()
    assert data["ticks_hz"] > 0
    assert snap.bdev("StatsJ0").name == "StatsJ0"
    assert "StatsJ0" in [b["name"] for b in data["bdevs"]]
    assert [t["id"] for t in data["threads"]] == [t.id for t in snap.threads]
    assert data["loops"] and data["loops"][0]["turns"] > 0
    with pytest.raises(KeyError):
        snap.bdev("NoSuchBdev")


def test_bad_input_is_refused_and_changes_nothing(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(LookupError, match="NoSuchBdev"):
            await stats.bdev_stats("NoSuchBdev")
        with pytest.raises(LookupError):
            await stats.enable_histogram("NoSuchBdev")
        with pytest.raises(TypeError):
            await stats.bdev_histogram(3)  # type: ignore[arg-type]  # the point of the test
        with pytest.raises(ValueError):
            await stats.bdev_stats("")

    run(main())
    with pytest.raises(TypeError, match="snapshot"):
        stats.to_json(object())


def test_a_spawned_thread_is_visited_on_its_own_os_thread(run: Run) -> None:
    async def main() -> Any:
        ready = threading.Event()
        stop = threading.Event()

        async def worker() -> None:
            ready.set()
            while not stop.is_set():
                await spdk_io.sleep(0.01)

        handle = SpdkThread.spawn(worker, name="stats-worker")
        try:
            while not ready.is_set():
                await spdk_io.sleep(0.001)
            snap = await stats.snapshot(nvmf=False)
        finally:
            stop.set()
            await handle
        return snap

    snap = run(main())
    (worker,) = [t for t in snap.threads if t.name == "stats-worker"]
    assert worker.loop == "stats-worker"  # read by its own loop's OS thread
    (loop,) = [lo for lo in snap.loops if lo.name == "stats-worker"]
    assert loop.turns > 0 and loop.tasks_run > 0
    assert any(p.kind == "timed" for p in worker.pollers)  # its sleep's timer
    assert len(snap.loops) >= 2  # the app thread's loop too: one entry per loop


def test_a_histogram_with_spdk_rpc_chosen_granularity_reads_back(run: Run) -> None:
    """Enabled by SPDK's RPC with granularity 5: read with the bdev's own parameters."""

    async def main() -> tuple[Any, Any, Any]:
        params = {"name": "StatsG0", "num_blocks": 64, "block_size": 512}
        await rpc.call("bdev_malloc_create", params)
        try:
            with BdevDesc.open("StatsG0", write=True) as desc:
                enable = {"name": "StatsG0", "enable": True, "granularity": 5}
                await rpc.call("bdev_enable_histogram", enable)
                buf = DmaBuf.alloc(512)
                for i in range(30):
                    await desc.write_blocks(buf, i, 1)
                (b,) = await stats.bdev_stats("StatsG0", channels=False)
                raw = await rpc.call("bdev_get_histogram", {"name": "StatsG0"})
        finally:
            await rpc.call("bdev_malloc_delete", {"name": "StatsG0"})
        return b, raw, b.histogram

    b, raw, h = run(main())
    assert raw["granularity"] == 5
    data = base64.b64decode(raw["histogram"])
    counts = [c for c in struct.unpack(f"<{len(data) // 8}Q", data) if c]
    assert h is not None and [c for _, _, c in h.buckets] == counts
    assert h.count == 30 == b.io.write.ops
    lo, hi, _ = h.buckets[-1]
    assert lo <= b.io.write.max_latency_ns <= hi  # the bounds follow granularity 5
    assert all(a[1] <= b2[0] for a, b2 in zip(h.buckets, h.buckets[1:], strict=False))


def test_off_an_spdk_thread_the_bdev_calls_raise_and_the_process_lives() -> None:
    """From a plain OS thread (here under asyncio) SPDK would abort the process."""
    done = run_py(
        """
        import asyncio, threading
        import spdk_io
        from spdk_io import rpc, stats

        CALLS = {
            "enable_histogram": lambda: stats.enable_histogram("OffM0"),
            "disable_histogram": lambda: stats.disable_histogram("OffM0"),
            "bdev_histogram": lambda: stats.bdev_histogram("OffM0"),
            "bdev_stats": lambda: stats.bdev_stats("OffM0"),
            "all bdev_stats": lambda: stats.bdev_stats(),
        }

        def off_thread(results: list[str]) -> None:
            for what, call in CALLS.items():
                try:
                    asyncio.run(call())
                    results.append(f"{what}: no error")
                except RuntimeError as exc:
                    results.append(f"{what}: RuntimeError: {exc}")

        async def main() -> list[str]:
            params = {"name": "OffM0", "num_blocks": 64, "block_size": 512}
            await rpc.call("bdev_malloc_create", params)
            results: list[str] = []
            t = threading.Thread(target=off_thread, args=(results,))
            t.start()
            while t.is_alive():
                await spdk_io.sleep(0.001)
            await stats.enable_histogram("OffM0")  # SPDK is fine on its own thread
            return results

        for line in spdk_io.run(main()):
            print(line)
        print("alive")
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1] == "alive", done.stdout
    assert len(lines) == 6, done.stdout
    for line in lines[:-1]:
        assert "RuntimeError: this OS thread polls no SPDK thread" in line, line


def test_a_bdev_deleted_between_listing_and_reading_leaves_no_bridge_entry(run: Run) -> None:
    """A worker thread holds a channel of the first bdev and does not poll, so the
    snapshot waits there; meanwhile the second bdev, already listed, is deleted."""

    async def main() -> tuple[int, int, tuple[str, ...]]:
        for name in ("StatsRaceA", "StatsRaceB"):  # B after A in SPDK's list
            await rpc.call(
                "bdev_malloc_create", {"name": name, "num_blocks": 64, "block_size": 512}
            )
        ready, go = threading.Event(), threading.Event()

        async def worker() -> None:
            with BdevDesc.open("StatsRaceA") as desc:
                await desc.read_blocks(DmaBuf.alloc(512), 0, 1)  # a channel of A here
                ready.set()
                go.wait(30)  # not polling: SPDK's visits of A's channels wait here

        before = _bridge.pending()
        handle = SpdkThread.spawn(worker, name="stats-race")
        try:
            while not ready.is_set():
                await spdk_io.sleep(0.001)
            reading = spdk_io.spawn(stats.bdev_stats())
            await spdk_io.sleep(0)  # it lists the bdevs, then waits for A's channels
            await rpc.call("bdev_malloc_delete", {"name": "StatsRaceB"})
        finally:
            go.set()
            await handle
        got = await reading
        await rpc.call("bdev_malloc_delete", {"name": "StatsRaceA"})
        return before, _bridge.pending(), tuple(b.name for b in got)

    before, after, names = run(main())
    assert "StatsRaceA" in names and "StatsRaceB" not in names
    assert after == before


def test_what_a_channel_visit_raises_past_the_iteration_reaches_its_loop() -> None:
    """Not only ``-EIO``: the BaseException itself stops the visited thread's loop."""
    done = run_py(
        """
        import spdk_io
        from spdk_io import _bridge, raw, rpc
        from spdk_io.bdev import BdevDesc
        from spdk_io.dma import DmaBuf

        class Boom(BaseException):
            pass

        def visit(channel: int) -> None:
            raise Boom("raised in a channel visit")

        async def main() -> None:
            params = {"name": "VisitM0", "num_blocks": 64, "block_size": 512}
            await rpc.call("bdev_malloc_create", params)
            with BdevDesc.open("VisitM0") as desc:
                await desc.read_blocks(DmaBuf.alloc(512), 0, 1)  # a channel here
                bdev = raw.spdk_bdev_get_by_name(b"VisitM0")
                try:
                    await _bridge.iterate(
                        "a test iteration",
                        visit,
                        lambda key: raw.spdk_bdev_for_each_channel(
                            bdev, _bridge.each_channel_cb, key, _bridge.each_channel_done_cb
                        ),
                    )
                except spdk_io.SpdkError as exc:
                    print("iteration ended:", exc.errno, flush=True)
                for _ in range(100):
                    await spdk_io.sleep(0.001)
            print("main returned", flush=True)

        try:
            spdk_io.run(main())
        except BaseException as exc:
            print("run raised:", type(exc).__name__, exc)
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "iteration ended: 5" in done.stdout, done.stdout  # EIO
    assert "run raised: CallbackError" in done.stdout, done.stdout
    assert "raised in a channel visit" in done.stdout, done.stdout
    assert "main returned" not in done.stdout, done.stdout


def test_under_spdk_io_app_the_loop_counts_its_turns() -> None:
    """App drives the loop from an SPDK poller: every drive is a turn."""
    done = run_py(
        """
        import spdk_io
        from spdk_io import stats

        async def main() -> tuple[int, int, int]:
            first = stats.loop_stats()
            for _ in range(20):
                await spdk_io.sleep(0.001)
            second = stats.loop_stats()
            snap = await stats.snapshot(nvmf=False)
            (loop,) = [lo for lo in snap.loops if lo.name == second.name]
            return first.turns, second.turns, loop.turns

        first, second, snapped = spdk_io.App(name="stats_app").run(main())
        print("turns", first, second, snapped)
        """
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("turns ")]
    first, second, snapped = map(int, line.split()[1:])
    assert second - first >= 20  # one turn at least per sleep
    assert snapped >= second


def test_a_histogram_spdk_fails_to_read_counts_as_none(run: Run) -> None:
    """SPDK marks a histogram enabled before its channels have one.  Enabled with a range
    no channel can allocate (min == max), it stays "enabled" with none until the enabling
    thread takes the failure: here the app thread, held while a worker reads."""

    async def main() -> tuple[dict[str, Any], list[int]]:
        await rpc.call(
            "bdev_malloc_create", {"name": "StatsF0", "num_blocks": 64, "block_size": 512}
        )
        ready, go, done = threading.Event(), threading.Event(), threading.Event()
        got: dict[str, Any] = {}

        async def worker() -> None:
            try:
                with BdevDesc.open("StatsF0") as desc:
                    await desc.read_blocks(DmaBuf.alloc(512), 0, 1)  # the only channel
                    got["thread"] = spdk_io.current_thread().id
                    ready.set()
                    while not go.is_set():
                        await spdk_io.sleep(0.001)
                    try:  # behind the enabling's visit here, which failed to allocate
                        await stats.bdev_histogram("StatsF0")
                    except spdk_io.SpdkError as exc:
                        got["histogram"] = exc
                    got["stats"] = await stats.bdev_stats("StatsF0")
            except BaseException as exc:
                got["stats"] = exc
            finally:
                done.set()

        handle = SpdkThread.spawn(worker, name="stats-efault")
        try:
            while not ready.is_set():
                await spdk_io.sleep(0.001)
            # The app thread must hold none of its channels (SPDK would visit it here).
            while [c["thread_id"] for c in (await iostat("StatsF0", True))["channels"]] != [
                got["thread"]
            ]:
                await spdk_io.sleep(0.001)
            hz = spdk_raw.spdk_get_ticks_hz()
            nsec = 1000
            while (nsec * hz // 10**9).bit_count() == 1:  # a range of one bucket row
                nsec += 1
            opts = spdk_raw.struct_spdk_bdev_enable_histogram_opts()
            spdk_raw.spdk_bdev_enable_histogram_opts_init(ctypes.byref(opts), ctypes.sizeof(opts))
            opts.min_nsec = opts.max_nsec = nsec
            statuses: list[int] = []
            cb = spdk_raw.spdk_bdev_histogram_status_cb(lambda ctx, status: statuses.append(status))
            bdev = spdk_raw.spdk_bdev_get_by_name(b"StatsF0")
            spdk_raw.spdk_bdev_histogram_enable_ext(bdev, cb, None, True, ctypes.byref(opts))
            go.set()
            assert done.wait(30)  # not polling: SPDK's answer to the enabling waits
            while not statuses:
                await spdk_io.sleep(0.001)
        finally:
            go.set()
            await handle
            await rpc.call("bdev_malloc_delete", {"name": "StatsF0"})
        return got, statuses

    got, statuses = run(main())
    assert statuses == [-errno.ENOMEM]  # no channel could allocate it
    assert isinstance(got["histogram"], spdk_io.SpdkError)
    assert got["histogram"].errno == errno.EFAULT  # SPDK's answer meanwhile
    (b,) = got["stats"]
    assert b.name == "StatsF0" and b.histogram is None and b.io.read.ops >= 1


def test_two_threads_of_one_name_are_distinct_series(run: Run) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from spdk_io.stats.prometheus import SnapshotCollector

    async def main() -> Any:
        ready = [threading.Event(), threading.Event()]
        stop = threading.Event()

        async def worker(i: int) -> None:
            with BdevDesc.open("StatsTwin0") as desc:
                await desc.read_blocks(DmaBuf.alloc(512), 0, 1)  # a channel each
                ready[i].set()
                while not stop.is_set():
                    await spdk_io.sleep(0.005)

        await rpc.call(
            "bdev_malloc_create", {"name": "StatsTwin0", "num_blocks": 64, "block_size": 512}
        )
        handles = [SpdkThread.spawn(lambda i=i: worker(i), name="twin") for i in range(2)]
        try:
            while not all(r.is_set() for r in ready):
                await spdk_io.sleep(0.001)
            snap = await stats.snapshot(nvmf=False)
        finally:
            stop.set()
            for h in handles:
                await h
            await rpc.call("bdev_malloc_delete", {"name": "StatsTwin0"})
        return snap

    snap = run(main())
    twins = [t for t in snap.threads if t.name == "twin"]
    assert len(twins) == 2 and twins[0].id != twins[1].id
    assert len({t.loop_id for t in twins}) == 2
    assert len([lo for lo in snap.loops if lo.name == "twin"]) == 2
    collector = SnapshotCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    collector.update(snap)
    seen: list[tuple[str, tuple[tuple[str, str], ...]]] = [
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    ]
    assert len(seen) == len(set(seen)), "a series appears twice"

    def series(name: str, **labels: str) -> set[tuple[tuple[str, str], ...]]:
        return {k for n, k in seen if n == name and set(labels.items()) <= set(k)}

    assert len(series("spdk_thread_busy_seconds_total", thread="twin")) == 2
    assert len(series("spdk_io_loop_turns_total", loop="twin")) == 2
    reads = series("spdk_bdev_channel_ops_total", bdev="StatsTwin0", thread="twin", op="read")
    assert len(reads) == 2
    ids = {str(t.id) for t in twins}
    assert {dict(k)["thread_id"] for k in reads} == ids
