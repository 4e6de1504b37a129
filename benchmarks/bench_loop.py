"""Loop overheads on a real SPDK app thread, each next to its baseline in the same run.

    python benchmarks/bench_loop.py [--seconds S] [--json]

1. one idle loop turn vs a bare ctypes ``spdk_thread_poll`` call (generated binding,
   argtypes set, as a user would write it; the prebuilt-argument PyDLL call is shown too);
2. a task switch (``await spdk_io.sleep(0)`` between two tasks) vs asyncio's ``sleep(0)``;
3. the round trip of ``ThreadHandle.call`` between two SPDK threads on two OS threads.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import statistics
import time
from typing import Any

import spdk_io
from spdk_io import _generated as g
from spdk_io import loop as loop_mod
from spdk_io._loader import fast
from spdk_io.thread import Poller, SpdkThread, ThreadHandle, current_thread


def bare_poll_ns(seconds: float) -> tuple[float, float]:
    """ns per call: the generated binding, and a PyDLL call with prebuilt arguments.

    A timed poller is registered meanwhile, as one is while the loop's task sleeps.
    """
    with Poller(lambda: False, period_us=60_000_000, name="like-a-sleep"):
        return _bare_poll_ns(seconds)


def _bare_poll_ns(seconds: float) -> tuple[float, float]:
    thread = current_thread().ptr
    poll = g.spdk_thread_poll
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10_000):
            poll(thread, 0, 0)
        n += 10_000
    generated = (time.perf_counter() - t0) / n * 1e9
    fpoll = fast("spdk_thread_poll", ctypes.c_int)
    args = (
        ctypes.c_void_p(ctypes.cast(thread, ctypes.c_void_p).value),
        ctypes.c_uint32(0),
        ctypes.c_uint64(0),
    )
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10_000):
            fpoll(*args)
        n += 10_000
    prebuilt = (time.perf_counter() - t0) / n * 1e9
    return generated, prebuilt


def measure_idle_turn(env: spdk_io.Env, seconds: float) -> float:
    """ns per loop turn while the only task sleeps (IDLE_SPIN raised so the loop never naps)."""
    loop = current_thread().loop
    saved = loop_mod.IDLE_SPIN
    loop_mod.IDLE_SPIN = 1 << 62
    try:
        before = loop.turns
        t0 = time.perf_counter()
        env.block_on(spdk_io.sleep(seconds))
        elapsed = time.perf_counter() - t0
    finally:
        loop_mod.IDLE_SPIN = saved
    return elapsed / (loop.turns - before) * 1e9


async def switch_ns(switches: int) -> float:
    async def pinger() -> None:
        for _ in range(switches // 2):
            await spdk_io.sleep(0)

    t0 = time.perf_counter()
    await spdk_io.gather(pinger(), pinger())
    return (time.perf_counter() - t0) / switches * 1e9


def asyncio_switch_ns(switches: int) -> float:
    async def pinger() -> None:
        for _ in range(switches // 2):
            await asyncio.sleep(0)

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(pinger(), pinger())
        return (time.perf_counter() - t0) / switches * 1e9

    return asyncio.run(main())


async def call_round_trip_us(calls: int) -> float:
    box: list[ThreadHandle] = []
    stop: list[bool] = []

    async def server() -> None:
        box.append(ThreadHandle.current())
        while not stop:
            await spdk_io.sleep(0.01)

    handle = SpdkThread.spawn(server, name="bench-server")
    while not box:
        await spdk_io.sleep(0.001)
    target = box[0]
    for _ in range(100):  # warm up
        await target.call(lambda: None)
    t0 = time.perf_counter()
    for _ in range(calls):
        await target.call(lambda: None)
    elapsed = time.perf_counter() - t0
    stop.append(True)
    await handle
    return elapsed / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per sample")
    parser.add_argument("--repeat", type=int, default=5, help="samples; medians are reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    # The measurements alternate, so a noisy neighbour hits all of them alike.
    with spdk_io.Env(name="bench_loop") as env:
        for _ in range(args.repeat):
            gen_ns, prebuilt_ns = bare_poll_ns(args.seconds)
            add("bare_poll_generated_ns", gen_ns)
            add("bare_poll_prebuilt_pydll_ns", prebuilt_ns)
            add("idle_turn_ns", measure_idle_turn(env, args.seconds))
            add("task_switch_ns", env.block_on(switch_ns(200_000)))
            add("asyncio_sleep0_ns", asyncio_switch_ns(200_000))
            add("thread_call_round_trip_us", env.block_on(call_round_trip_us(2_000)))
    med = {k: statistics.median(v) for k, v in samples.items()}
    results: dict[str, Any] = {k: round(v, 1) for k, v in med.items()}
    results["idle_turn_over_bare_generated"] = round(
        med["idle_turn_ns"] / med["bare_poll_generated_ns"], 2
    )
    results["idle_turn_over_bare_prebuilt"] = round(
        med["idle_turn_ns"] / med["bare_poll_prebuilt_pydll_ns"], 2
    )
    results["asyncio_over_ours"] = round(med["asyncio_sleep0_ns"] / med["task_switch_ns"], 2)
    if args.json:
        print(json.dumps(results))
    else:
        width = max(map(len, results))
        for k, v in results.items():
            print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
