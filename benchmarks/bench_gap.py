"""The single-core gap between spdk_io and bare ctypes, side by side in one run (issue #12).

    PYTHONPATH=. python benchmarks/bench_gap.py [--seconds 5] [--rounds 3] [--only SCENARIO]
                                                [--json PATH]

Every measurement is its own process on core 0 (one SPDK env per process), and the
tools of a scenario alternate round by round, so machine noise hits them alike;
medians over the rounds are reported.  The tools:

* ``naive`` / ``naive-prebuilt``: ``benchmarks/naive_loop.py`` (plain ctypes: one
  shared ``CFUNCTYPE`` completion that resubmits; ``--prebuilt`` is its cheapest form);
* ``perf``: ``python -m spdk_io perf``, which streams through
  :class:`spdk_io.bdev.IoStream` and keeps a latency histogram per I/O;
* ``stream``: an :class:`~spdk_io.bdev.IoStream` whose ``on_complete`` does the naive
  loop's bookkeeping (a latency sum and a count), no more (``--child stream``);
* ``ioslot``: one task per queue slot awaiting :class:`~spdk_io.bdev.IoSlot` reads
  (``--child ioslot``), the typed await path, same bookkeeping.

Scenarios and targets (ratios of medians measured in this run):

* ``null_randread_4k_qd128``: IOPS / naive-prebuilt's, >= 0.85;
* ``malloc_randread_4k_qd128``: IOPS / naive's, >= 0.9;
* ``null_randread_4k_qd1``: average latency minus naive's, <= 0.3 us;
* ``malloc_read_128k_qd32``: MiB/s / naive's, >= 0.9.

The ``cpu %`` column is a process's CPU time over its wall time (start-up included): a
polling tool alone on its core is near 100 %; much less means it shared the core and
its numbers are suspect.  Exit status 0 (also when targets are missed), 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(REPO))

from benchmarks import bench_bdev  # noqa: E402
from benchmarks.naive_loop import _offsets  # noqa: E402

MALLOC_MIB = bench_bdev.MALLOC_MIB
NULL_BLOCKS = bench_bdev.NULL_BLOCKS
BLOCK = bench_bdev.BLOCK
CHILD_TOOLS = ("stream", "ioslot")


@dataclass(frozen=True)
class Target:
    """``metric`` of ``tool`` against ``baseline``'s: a ratio (``>=``) or a difference (``<=``)."""

    metric: str  # iops | mib_s | avg_lat_us
    baseline: str
    op: str  # ">=" (ratio) | "<=" (difference)
    value: float


SCENARIOS: dict[str, tuple[bench_bdev.Scenario, Target]] = {
    "null_randread_4k_qd128": (
        bench_bdev.Scenario("null_randread_4k_qd128", "null", "randread", 128, 4096,
                            ("naive", "naive-prebuilt", "perf", "stream", "ioslot")),
        Target("iops", "naive-prebuilt", ">=", 0.85),
    ),
    "malloc_randread_4k_qd128": (
        bench_bdev.Scenario("malloc_randread_4k_qd128", "malloc", "randread", 128, 4096,
                            ("naive", "naive-prebuilt", "perf", "stream", "ioslot")),
        Target("iops", "naive", ">=", 0.9),
    ),
    "null_randread_4k_qd1": (
        bench_bdev.Scenario("null_randread_4k_qd1", "null", "randread", 1, 4096,
                            ("naive", "naive-prebuilt", "perf", "stream", "ioslot")),
        Target("avg_lat_us", "naive", "<=", 0.3),
    ),
    "malloc_read_128k_qd32": (
        bench_bdev.Scenario("malloc_read_128k_qd32", "malloc", "read", 32, 131072,
                            ("naive", "naive-prebuilt", "perf", "stream", "ioslot")),
        Target("mib_s", "naive", ">=", 0.9),
    ),
}  # fmt: skip


# ----------------------------------------------------------------------------- children


async def _measure_in(
    tool: str, desc: Any, bufs: list[Any], seconds: float, workload: str = "randread"
) -> dict[str, Any]:
    """Drive ``desc`` with ``tool`` (stream | ioslot) over ``bufs`` for ``seconds``, with
    the naive loop's bookkeeping (a latency sum and a count); naive_loop's result keys."""
    import spdk_io
    from spdk_io.bdev import BdevDesc, StreamSlot
    from spdk_io.dma import DmaBuf
    from spdk_io.errors import SpdkError

    assert isinstance(desc, BdevDesc)
    write = workload.endswith("write")
    io_size = len(bufs[0])
    blocks = io_size // desc.block_size
    offsets = _offsets(workload, blocks, desc.num_blocks, 1)
    mask = len(offsets) - 1
    now = time.perf_counter_ns
    ios = lat = errors = pos = 0
    stop = False
    t0 = time.perf_counter()
    if tool == "stream":
        starts = [0] * len(bufs)

        def on_complete(slot: StreamSlot, ok: bool) -> int | None:
            nonlocal ios, lat, errors, pos
            t = now()
            i = slot.index
            lat += t - starts[i]
            starts[i] = t
            ios += 1
            if not ok:
                errors += 1
            if stop:
                return None
            j = pos
            pos = j + 1
            return offsets[j & mask]

        with desc.stream(bufs, on_complete) as stream:
            for s in stream.slots:
                starts[s.index] = now()
                (s.write_blocks if write else s.read_blocks)(offsets[pos & mask], blocks)
                pos += 1
            await spdk_io.sleep(seconds)
            stop = True
            elapsed = time.perf_counter() - t0
            counted, summed = ios, lat
            await stream.wait()
    else:

        async def worker(buf: DmaBuf) -> None:
            nonlocal ios, lat, errors, pos
            with desc.slot(buf) as slot:
                submit = slot.write_blocks if write else slot.read_blocks
                while not stop:
                    j = pos
                    pos = j + 1
                    t = now()
                    try:
                        await submit(offsets[j & mask], blocks)
                    except SpdkError:
                        errors += 1
                    lat += now() - t
                    ios += 1

        tasks = [spdk_io.spawn(worker(b)) for b in bufs]
        await spdk_io.sleep(seconds)
        stop = True
        elapsed = time.perf_counter() - t0
        counted, summed = ios, lat
        await spdk_io.gather(*tasks)
    return {
        "seconds": round(elapsed, 3),
        "ios": counted,
        "iops": round(counted / elapsed, 1),
        "mib_s": round(counted * io_size / elapsed / (1 << 20), 2),
        "avg_lat_us": round(summed / counted / 1000, 3) if counted else 0.0,
        "io_errors": errors,
    }


def child(
    tool: str, qd: int, io_size: int, workload: str, seconds: float, bdev: str
) -> dict[str, Any]:
    """Run ``tool`` (stream | ioslot) in this process: its numbers, naive_loop's keys."""
    import spdk_io
    from spdk_io import bdev_modules as bm
    from spdk_io.bdev import BdevDesc
    from spdk_io.dma import DmaBuf

    async def main() -> dict[str, Any]:
        name = f"Gap_{bdev}"
        if bdev == "null":
            await bm.create_null(name, NULL_BLOCKS, BLOCK)
        else:
            await bm.create_malloc(name, MALLOC_MIB * (1 << 20) // BLOCK, BLOCK)
        try:
            bufs = [DmaBuf.alloc(io_size, 4096) for _ in range(qd)]
            try:
                with BdevDesc.open(name, write=workload.endswith("write")) as desc:
                    return await _measure_in(tool, desc, bufs, seconds, workload)
            finally:
                for b in bufs:
                    b.free()
        finally:
            await (bm.delete_null(name) if bdev == "null" else bm.delete_malloc(name))

    result: dict[str, Any] = spdk_io.run(
        main(), name=f"bench_gap_{tool}", mem_size_mb=bench_bdev.MEM_MB, core_mask="0x1"
    )
    return result


# ----------------------------------------------------------------------------- profile


#: Completion callbacks SPDK may still call (a drain that timed out): never freed.
_KEEP: list[Any] = []


def ctypes_variant(
    batched: bool, thread: int | None, desc: Any, bufs: list[Any], offsets: list[int],
    seconds: float,
) -> float:  # fmt: skip
    """Plain ctypes (naive_loop's prebuilt PyDLL calls), no bookkeeping: resubmitting in
    the completion (``batched=False``) or recording the slot in the completion and
    resubmitting the recorded slots in a tight loop after each poll (``batched``: the
    only batching Python can do, SPDK calls completions one by one).  CPU ns per I/O."""
    import ctypes

    from benchmarks import naive_loop as nl

    vp, u64 = ctypes.c_void_p, ctypes.c_uint64
    d = vp(ctypes.cast(desc._ptr, ctypes.c_void_p).value)
    c = vp(ctypes.cast(desc._channel._ptr, ctypes.c_void_p).value)
    n = u64(1)
    buf_args = [vp(b.addr) for b in bufs]
    off_args = [u64() for _ in bufs]
    slot_args = [vp(k) for k in range(len(bufs))]
    mask = len(offsets) - 1
    fn, free, poll = nl._read_blocks_pb, nl._free_io_pb, nl._thread_poll_pb
    poll_args = (vp(thread), ctypes.c_uint32(0), u64(0))
    pos = ios = inflight = 0
    stop = False
    done: list[int] = []
    record = done.append

    def submit(slot: int) -> int:
        nonlocal pos
        i = pos
        pos = i + 1
        off = off_args[slot]
        off.value = offsets[i & mask]
        rc: int = fn(d, c, buf_args[slot], off, n, cb, slot_args[slot])
        return rc

    def direct(bdev_io: int | None, success: bool, arg: int | None) -> None:
        nonlocal ios, inflight
        free(bdev_io)
        ios += 1
        if stop or submit(arg or 0):
            inflight -= 1

    def recorded(bdev_io: int | None, success: bool, arg: int | None) -> None:
        free(bdev_io)
        record(arg or 0)

    cb = nl.COMPLETION_CB(recorded if batched else direct)
    c0 = time.thread_time()
    for slot in range(len(bufs)):
        if not submit(slot):
            inflight += 1
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(64):
            poll(*poll_args)
            if done:
                k = len(done)
                ios += k
                inflight -= k
                for slot in done:
                    if not submit(slot):
                        inflight += 1
                done.clear()
    stop = True
    cpu = time.thread_time() - c0
    counted = ios
    drain = time.perf_counter() + 10
    while time.perf_counter() < drain and inflight > len(done):
        poll(*poll_args)  # (batched: completions are only recorded now)
    if inflight > len(done):  # SPDK still holds I/Os whose completion is ``cb``: keep it
        _KEEP.append(cb)
        raise RuntimeError(f"{inflight - len(done)} I/Os did not complete in 10 s")
    return round(cpu * 1e9 / counted, 1)


def profile(seconds: float, rounds: int, qd: int) -> dict[str, list[float]]:
    """Nanoseconds of CPU per I/O (null bdev, 4 KiB randread) of each layer, in ONE
    process and SPDK env, rounds interleaved: the naive loop (both variants), the stream
    with an ``on_complete`` that only returns the next offset (``stream-bare``), with the
    naive loop's bookkeeping (``stream``), perf's streaming worker with its histogram
    (``perf``), the IoSlot await path (``ioslot``), and plain ctypes resubmitting in the
    completion or in a batch after each poll (:func:`ctypes_variant`).  CPU time (this
    thread's), not wall time: a run that shares its core is slowed, not skewed."""
    import ctypes

    import spdk_io
    from benchmarks import naive_loop
    from spdk_io import bdev_modules as bm
    from spdk_io import perf as perf_mod
    from spdk_io.bdev import BdevDesc, StreamSlot
    from spdk_io.dma import DmaBuf

    out: dict[str, list[float]] = {}

    async def bare(desc: BdevDesc, bufs: list[DmaBuf], offsets: list[int]) -> int:
        n = 0
        stop = False
        mask = len(offsets) - 1

        def on_complete(slot: StreamSlot, ok: bool) -> int | None:
            nonlocal n
            n += 1
            return None if stop else offsets[n & mask]

        with desc.stream(bufs, on_complete) as stream:
            for s in stream.slots:
                s.read_blocks(offsets[s.index], 1)
            await spdk_io.sleep(seconds)
            stop = True
            await stream.wait()
        return n

    async def with_perf(desc: BdevDesc, bufs: list[DmaBuf]) -> int:
        cfg = perf_mod.PerfConfig(queue_depth=len(bufs), seconds=seconds, bdev="null")
        stats, _ = await perf_mod._stream(cfg, desc, bufs, 1, False)  # perf's own worker
        return stats.ios

    mem = bench_bdev.MEM_MB
    with spdk_io.Env(name="bench_gap_profile", mem_size_mb=mem, core_mask="0x1") as env:
        env.block_on(bm.create_null("Gap_Prof", NULL_BLOCKS, BLOCK))
        assert env.thread is not None
        thread = ctypes.cast(env.thread.ptr, ctypes.c_void_p).value
        desc = BdevDesc.open("Gap_Prof")
        bufs = [DmaBuf.alloc(BLOCK, 4096) for _ in range(qd)]
        offsets = _offsets("randread", 1, desc.num_blocks, 1)
        child_like = {"stream", "ioslot"}
        try:
            for _ in range(rounds):
                for name in ("naive-prebuilt", "naive", "stream-bare", "stream", "perf", "ioslot"):
                    c0 = time.thread_time()
                    if name.startswith("naive"):
                        r = naive_loop._measure(
                            thread, desc, bufs, 1, offsets, False, name == "naive-prebuilt", seconds
                        )
                        ios = int(r["ios"])
                    elif name == "stream-bare":
                        ios = env.block_on(bare(desc, bufs, offsets))
                    elif name == "perf":
                        ios = env.block_on(with_perf(desc, bufs))
                    else:
                        assert name in child_like
                        ios = int(env.block_on(_measure_in(name, desc, bufs, seconds))["ios"])
                    cpu = time.thread_time() - c0
                    out.setdefault(name, []).append(round(cpu * 1e9 / ios, 1))
                for batched in (False, True):
                    ns = ctypes_variant(batched, thread, desc, bufs, offsets, seconds)
                    out.setdefault("ctypes-batched" if batched else "ctypes-direct", []).append(ns)
        finally:
            desc.close()
            for b in bufs:
                b.free()
            env.block_on(bm.delete_null("Gap_Prof"))
    return out


# ----------------------------------------------------------------------------- the parent


def command(tool: str, sc: bench_bdev.Scenario, seconds: int) -> list[str]:
    """The command line of one measurement (``perf`` is bench_bdev's ``ours``)."""
    if tool in CHILD_TOOLS:
        return [
            sys.executable, str(Path(__file__).resolve()), "--child", tool,
            "-q", str(sc.queue_depth), "-o", str(sc.io_size), "-w", sc.workload,
            "-t", str(seconds), "--bdev", sc.bdev,
        ]  # fmt: skip
    return bench_bdev.command("ours" if tool == "perf" else tool, sc, seconds, "", Path())


def run_one(tool: str, sc: bench_bdev.Scenario, seconds: int) -> dict[str, Any]:
    """One measurement in its own process: its metrics and ``cpu_pct``, or ``{"error"}``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        out = subprocess.run(
            command(tool, sc, seconds), capture_output=True, text=True,
            timeout=seconds + 60, env=env, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {seconds + 60} s"}
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    tail = (out.stderr.strip().splitlines() or ["(no stderr)"])[-1]
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {tail}"}
    try:
        res = bench_bdev.last_json(out.stdout)
    except ValueError as exc:
        return {"error": f"{exc}; stderr: {tail}"}
    keys = ("iops", "mib_s", "avg_lat_us", "io_errors")
    return {**{k: res[k] for k in keys if k in res}, "cpu_pct": round(100 * cpu / wall, 1)}


def compare(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every non-baseline tool of every scenario against the scenario's target."""
    rows = []
    for name, tools in results.items():
        target = SCENARIOS[name][1]
        base = tools.get(target.baseline, {}).get(target.metric)
        for tool, r in tools.items():
            if tool in ("naive", "naive-prebuilt"):
                continue
            v = r.get(target.metric)
            value: float | None = None
            if isinstance(v, int | float) and isinstance(base, int | float):
                if target.op == ">=":
                    value = round(v / base, 3) if base else None
                else:
                    value = round(v - base, 3)
            met = None
            if value is not None:
                met = value >= target.value if target.op == ">=" else value <= target.value
            what = "/" if target.op == ">=" else "-"
            rows.append({
                "scenario": name, "tool": tool,
                "metric": f"{target.metric} {what} {target.baseline}",
                "value": value, "target": f"{target.op} {target.value}", "met": met,
            })  # fmt: skip
    return rows


def _fmt(v: Any, digits: int) -> str:
    return "-" if not isinstance(v, int | float) else f"{v:,.{digits}f}"


def print_table(results: dict[str, dict[str, dict[str, Any]]], rows: list[dict[str, Any]]) -> None:
    print(f"{'scenario':<26} {'tool':<15} {'IOPS':>11} {'MiB/s':>9} {'avg us':>9} "
          f"{'errors':>6} {'cpu %':>6} runs")  # fmt: skip
    for sc, tools in results.items():
        for tool, r in tools.items():
            if "error" in r:
                print(f"{sc:<26} {tool:<15} ERROR: {r['error']}")
                continue
            print(
                f"{sc:<26} {tool:<15} {_fmt(r.get('iops'), 0):>11} {_fmt(r.get('mib_s'), 1):>9} "
                f"{_fmt(r.get('avg_lat_us'), 2):>9} {_fmt(r.get('io_errors'), 0):>6} "
                f"{_fmt(r.get('cpu_pct'), 0):>6} {r.get('runs', '-')}"
            )
    print()
    print(f"{'scenario':<26} {'tool':<8} {'metric':<30} {'value':>8}  {'target':<8} met")
    for row in rows:
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        value = "-" if row["value"] is None else f"{row['value']:.3f}"
        print(f"{row['scenario']:<26} {row['tool']:<8} {row['metric']:<30} {value:>8}  "
              f"{row['target']:<8} {met}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=int, default=5, help="run time of each measurement")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    p.add_argument("--only", action="append", choices=sorted(SCENARIOS), metavar="SCENARIO",
                   help=f"only this scenario (repeatable): {', '.join(SCENARIOS)}")  # fmt: skip
    p.add_argument("--tools", default=None, help="comma-separated subset of the tools")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    p.add_argument(
        "--profile",
        action="store_true",
        help="print CPU ns per I/O of each layer, all in one process (see profile())",
    )
    p.add_argument("--qd", type=int, default=128, help="queue depth of --profile")
    # A measurement run in this process (what the parent starts for stream and ioslot).
    p.add_argument("--child", choices=CHILD_TOOLS, help=argparse.SUPPRESS)
    p.add_argument("-q", type=int, default=128, help=argparse.SUPPRESS)
    p.add_argument("-o", type=int, default=4096, help=argparse.SUPPRESS)
    p.add_argument("-w", default="randread", help=argparse.SUPPRESS)
    p.add_argument("-t", type=float, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--bdev", default="null", choices=("null", "malloc"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.q, a.o, a.w, a.t, a.bdev)))
        return 0
    if a.seconds < 1 or a.rounds < 1:
        p.error("--seconds and --rounds must be >= 1")
    if a.profile:
        layers = profile(a.seconds, a.rounds, a.qd)
        base = statistics.median(layers["naive-prebuilt"])
        print(f"CPU ns per I/O, null 4 KiB randread QD{a.qd}, median of {a.rounds} rounds:")
        for name, values in layers.items():
            med = statistics.median(values)
            print(f"  {name:<15} {med:8.0f} ns  ({med - base:+6.0f} vs naive-prebuilt; "
                  f"naive-prebuilt/this {base / med:.3f})  {values}")  # fmt: skip
        if a.json:
            Path(a.json).write_text(json.dumps(layers, indent=1))
        return 0
    names = a.only or list(SCENARIOS)
    only_tools = set(a.tools.split(",")) if a.tools else None
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name in names:
        sc = SCENARIOS[name][0]
        tools = [t for t in sc.tools if only_tools is None or t in only_tools]
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
        for i in range(a.rounds):
            for tool in tools:  # alternate, so noise hits every tool alike
                print(f"[{name} {i + 1}/{a.rounds}] {tool} ...", file=sys.stderr, flush=True)
                runs[tool].append(run_one(tool, sc, a.seconds))
        results[name] = {t: bench_bdev.median_of(runs[t]) for t in tools}
    rows = compare(results)
    load = os.getloadavg()
    print(f"{a.seconds} s per measurement, median of {a.rounds} interleaved rounds, core 0; "
          f"load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")  # fmt: skip
    print_table(results, rows)
    summary = {
        "seconds": a.seconds,
        "rounds": a.rounds,
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "results": results,
        "targets": rows,
    }
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
