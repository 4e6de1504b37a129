"""The asyncio bridge (spdk_io.aio), each figure next to its baseline in the same run.

    PYTHONPATH=. python benchmarks/bench_bridge.py [--seconds S] [--repeat N] [--qd N] [--json]

One process, one :class:`spdk_io.aio.Runtime` (SPDK's loop on its own OS thread,
1024 MiB without hugepages unless the machine has free ones), a 128 MiB malloc bdev:

1. round trip: ``await rt.run(noop)`` against ``await loop.run_in_executor(None, noop)``
   (asyncio's default thread pool), sequential calls; us per call and the ratio;
2. 4 KiB random reads at queue depth ``--qd``:

   * ``native``: ``qd`` spdk_io tasks on SPDK's loop, each reading through its own
     :class:`~spdk_io.bdev.IoSlot` (the way ``python -m spdk_io perf`` drives a bdev),
     started by one ``rt.run`` so the bridge is not in the path;
   * ``bridge-1``: ``qd`` asyncio tasks, each ``await rt.run(read_one, ...)`` in a loop
     (one I/O per call);
   * ``bridge-N``: one asyncio task, each ``await rt.run(read_batch, ...)`` submitting
     ``qd`` reads and awaiting them all (``qd`` I/Os per call);

   IOPS, and each bridge figure over ``native``.

With ``--repeat N`` the measurements alternate N times and medians are reported
(the machine is noisy).  SPDK's loop polls one core without pause while I/O is in
flight and shares the GIL with asyncio's thread: the bridge's figures include
that contention, which is the point.  Exit status 0, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import spdk_io
from spdk_io._runtime import IDLE_PAUSE
from spdk_io.aio import Runtime
from spdk_io.bdev import BdevDesc, IoSlot
from spdk_io.dma import DmaBuf

BLOCK = 4096
MALLOC_MIB = 128
MEM_MB = 1024
BDEV = "Malloc0"
CONFIG = {
    "subsystems": [
        {
            "subsystem": "bdev",
            "config": [
                {
                    "method": "bdev_malloc_create",
                    "params": {
                        "name": BDEV,
                        "num_blocks": MALLOC_MIB * (1 << 20) // BLOCK,
                        "block_size": BLOCK,
                    },
                }
            ],
        }
    ]
}


class Reader:
    """SPDK's side of the I/O benchmarks: a descriptor and one slot per queue slot.

    Opened, used and closed on SPDK's app thread only (through ``rt.run``)."""

    def __init__(self, qd: int) -> None:
        self.desc = BdevDesc.open(BDEV)
        self.blocks = self.desc.num_blocks
        self.slots = [IoSlot(self.desc, DmaBuf.alloc(BLOCK)) for _ in range(qd)]

    def close(self) -> None:
        for slot in self.slots:
            buf = slot.buf
            slot.close()
            buf.close()
        self.desc.close()

    async def read_one(self, i: int, lba: int) -> None:
        await self.slots[i].read_blocks(lba, 1)

    async def read_batch(self, lbas: list[int]) -> None:
        ops = [slot.read_blocks(lba, 1) for slot, lba in zip(self.slots, lbas, strict=False)]
        for op in ops:
            await op

    async def native(self, seconds: float) -> tuple[int, float]:
        """I/Os done by ``qd`` tasks on this loop in ``seconds``, and the time taken."""
        done = [0]
        stop = [False]
        blocks = self.blocks

        async def worker(slot: IoSlot) -> None:
            rand = random.randrange
            n = 0
            while not stop[0]:
                await slot.read_blocks(rand(blocks), 1)
                n += 1
            done[0] += n

        t0 = time.perf_counter()
        tasks = [spdk_io.spawn(worker(s)) for s in self.slots]
        await spdk_io.sleep(seconds)
        stop[0] = True
        await spdk_io.gather(*tasks)
        return done[0], time.perf_counter() - t0


async def noop() -> None:
    """The spdk_io coroutine of the round trip: does nothing."""


def noop_sync() -> None:
    """The thread pool's job of the round trip: does nothing."""


async def per_call_us(call: Callable[[], Awaitable[Any]], seconds: float) -> float:
    """Microseconds per sequential ``await call()``, over about ``seconds``."""
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(100):
            await call()
        n += 100
        now = time.perf_counter()
        if now >= deadline:
            return (now - t0) / n * 1e6


async def bridge_one(rt: Runtime, reader: Reader, qd: int, seconds: float) -> float:
    """IOPS of ``qd`` asyncio tasks, each one I/O per ``rt.run``."""
    blocks = reader.blocks
    counts = [0] * qd
    deadline = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        rand = random.randrange
        run = rt.run
        read = reader.read_one
        n = 0
        while time.perf_counter() < deadline:
            await run(read, i, rand(blocks))
            n += 1
        counts[i] = n

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for i in range(qd):
            group.create_task(caller(i))
    return sum(counts) / (time.perf_counter() - t0)


async def bridge_batch(rt: Runtime, reader: Reader, qd: int, seconds: float) -> float:
    """IOPS of one asyncio task, ``qd`` I/Os per ``rt.run``."""
    blocks = reader.blocks
    rand = random.randrange
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        await rt.run(reader.read_batch, [rand(blocks) for _ in range(qd)])
        n += qd
    return n / (time.perf_counter() - t0)


async def measure(
    seconds: float, repeat: int, qd: int, idle_pause: float | None
) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {
        k: [] for k in ("rt_run_us", "executor_us", "native", "bridge-1", "bridge-N")
    }
    loop = asyncio.get_running_loop()
    pause = IDLE_PAUSE if idle_pause is None else idle_pause
    async with Runtime(mem_size_mb=MEM_MB, config=CONFIG, idle_pause=pause) as rt:
        reader: Reader = await rt.run(_open, qd)
        try:
            for i in range(repeat):  # alternate, so noise hits every figure alike
                print(f"[{i + 1}/{repeat}] ...", file=sys.stderr, flush=True)
                runs["rt_run_us"].append(await per_call_us(lambda: rt.run(noop), seconds))
                runs["executor_us"].append(
                    await per_call_us(lambda: loop.run_in_executor(None, noop_sync), seconds)
                )
                done, took = await rt.run(reader.native, seconds)
                runs["native"].append(done / took)
                runs["bridge-1"].append(await bridge_one(rt, reader, qd, seconds))
                runs["bridge-N"].append(await bridge_batch(rt, reader, qd, seconds))
        finally:
            await rt.run(_close, reader)
    return runs


async def _open(qd: int) -> Reader:
    return Reader(qd)


async def _close(reader: Reader) -> None:
    reader.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="time of each measurement (s)")
    p.add_argument("--repeat", type=int, default=3, help="alternating runs; medians reported")
    p.add_argument("--qd", type=int, default=32, help="I/Os in flight (tasks, or per call)")
    p.add_argument(
        "--idle-pause",
        type=float,
        default=None,
        help="Runtime(idle_pause=...) in seconds (0 spins; default: the runtime's)",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.repeat < 1 or not 1 <= args.qd <= 1024:
        p.error("--seconds must be > 0, --repeat >= 1, --qd in 1..1024")
    if args.idle_pause is not None and not 0 <= args.idle_pause <= 0.001:
        p.error("--idle-pause must be within 0..0.001 s")
    runs = asyncio.run(measure(args.seconds, args.repeat, args.qd, args.idle_pause))
    med = {k: round(statistics.median(v), 3) for k, v in runs.items()}
    ratios = {
        "rt_run / run_in_executor (time per round trip)": med["rt_run_us"] / med["executor_us"],
        "bridge-1 / native (IOPS)": med["bridge-1"] / med["native"],
        "bridge-N / native (IOPS)": med["bridge-N"] / med["native"],
    }
    load = os.getloadavg()
    summary = {
        "seconds": args.seconds,
        "repeat": args.repeat,
        "qd": args.qd,
        "idle_pause": args.idle_pause if args.idle_pause is not None else IDLE_PAUSE,
        "python": sys.version.split()[0],
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "medians": med,
        "runs": {k: [round(x, 3) for x in v] for k, v in runs.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
    }
    if not args.json:
        print(
            f"{args.seconds} s per measurement, median of {args.repeat}; qd {args.qd}; "
            f"idle pause {summary['idle_pause']} s; "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        print(f"  await rt.run(noop)                   {med['rt_run_us']:10.1f} us per call")
        print(f"  await loop.run_in_executor(noop)     {med['executor_us']:10.1f} us per call")
        print(f"  4 KiB randread, native (qd {args.qd:<4})     {med['native']:12,.0f} IOPS")
        print(f"  4 KiB randread, bridge 1 I/O per call {med['bridge-1']:12,.0f} IOPS")
        print(f"  4 KiB randread, bridge {args.qd} I/Os per call {med['bridge-N']:10,.0f} IOPS")
        for k, v in ratios.items():
            print(f"  {k:<48} {v:6.3f}")
        print()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
