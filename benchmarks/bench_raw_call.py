"""Cheap raw-layer calls bound both ways, in one run: PyDLL (the generated binding) vs CDLL.

    PYTHONPATH=. python benchmarks/bench_raw_call.py [--seconds S] [--repeat N] [--json]

For a few short SPDK functions, ns per call through :mod:`spdk_io.raw` (bound on
``ctypes.PyDLL``: the GIL stays held) and through a ``ctypes.CDLL`` twin with the same
``argtypes``/``restype`` (the GIL is released and re-acquired around the call, as every
raw call did before), and the ratio PyDLL/CDLL.  The calls run on the app thread of an
:class:`spdk_io.Env` with one null bdev; arguments are the Python objects a raw user
would pass.  With ``--repeat N`` the two variants alternate N times and medians are
reported.  Exit status 0, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import spdk_io
from spdk_io import bdev_modules as bm
from spdk_io import raw
from spdk_io._loader import lib

BDEV = "NullRawCall"
BLOCK = 4096
NULL_BLOCKS = 1024
BATCH = 10_000


def cdll_twin(name: str) -> Any:
    """``name`` bound on the GIL-releasing library, like its generated binding otherwise."""
    generated = getattr(raw, name)
    fn = lib[name]  # indexing makes a new function object: its argtypes are its own
    fn.argtypes = generated.argtypes
    fn.restype = generated.restype
    return fn


def bound(fn: Any, args: tuple[Any, ...]) -> Callable[[], object]:
    """A call of ``fn`` with ``args``, as a raw user writes it."""
    return lambda: fn(*args)


def ns_per_call(call: Callable[[], object], seconds: float) -> float:
    """ns per ``call()`` (including the Python loop around it) over about ``seconds``."""
    n = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(BATCH):
            call()
        n += BATCH
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return elapsed / n * 1e9


async def measure(seconds: float, repeat: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    await bm.create_null(BDEV, NULL_BLOCKS, BLOCK)
    try:
        bdev = raw.spdk_bdev_get_by_name(BDEV.encode())
        thread = raw.spdk_get_thread()
        assert bdev and thread
        calls: dict[str, tuple[str, tuple[Any, ...]]] = {
            "get_ticks": ("spdk_get_ticks", ()),
            "bdev_get_block_size": ("spdk_bdev_get_block_size", (bdev,)),
            "bdev_get_name": ("spdk_bdev_get_name", (bdev,)),
            "thread_get_id": ("spdk_thread_get_id", (thread,)),
        }
        for r in range(repeat):
            for label, (name, args) in calls.items():
                fns = {"pydll": getattr(raw, name), "cdll": cdll_twin(name)}
                assert name not in raw.RELEASES_GIL
                if name != "spdk_get_ticks":  # the same answer both ways
                    assert fns["pydll"](*args) == fns["cdll"](*args)
                order = ["pydll", "cdll"] if r % 2 == 0 else ["cdll", "pydll"]
                for variant in order:
                    fn = fns[variant]
                    key = f"{label}_{variant}_ns"
                    samples.setdefault(key, []).append(ns_per_call(bound(fn, args), seconds))
    finally:
        await bm.delete_null(BDEV)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.2, help="per sample")
    parser.add_argument("--repeat", type=int, default=5, help="samples; medians are reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.seconds <= 0 or args.repeat < 1:
        parser.error("--seconds must be > 0 and --repeat >= 1")
    with spdk_io.Env(name="bench_raw_call") as env:
        samples = env.block_on(measure(args.seconds, args.repeat))
    med = {k: statistics.median(v) for k, v in samples.items()}
    results: dict[str, Any] = {k: round(v, 1) for k, v in med.items()}
    for label in sorted({k.rsplit("_", 2)[0] for k in med}):
        results[f"{label}_pydll_over_cdll"] = round(
            med[f"{label}_pydll_ns"] / med[f"{label}_cdll_ns"], 3
        )
    if args.json:
        print(json.dumps(results))
    else:
        width = max(map(len, results))
        for k, v in results.items():
            print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
