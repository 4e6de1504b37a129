"""Multi-core scaling: ``python -m spdk_io perf`` on one core against ``-m 0x3`` (two).

    PYTHONPATH=. python3.13 benchmarks/bench_cores.py [--seconds 3] [--repeat 3] [--json]

Null bdev, 4 KiB random reads, queue depth 128 per core.  Each round runs, one after
the other and each as its own process, the tool on core 0 alone (``-m 0x1``), on core 1
alone (``-m 0x2``) and on both (``-m 0x3``, one worker interpreter for core 1; Python
3.13+).  With ``--repeat N`` the rounds alternate N times and medians are reported.

Ratios: two cores' total IOPS over each one-core baseline measured in the same run
(target >= 1.8), and each core's share of the two-core run over that core alone (near
1: the other core cost it nothing; robust when other processes load one core more).
The ``cpu %`` column is each process's CPU time over its wall time (start-up
included): two polling cores should approach 200 %, one 100 %; much less means the run
shared its cores with other processes, and its numbers are noise.  Exit status 0 (also
when the target is missed), 2 on bad arguments.
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
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MASKS = ("0x1", "0x2", "0x3")
TARGET = 1.8


def run_once(mask: str, seconds: float) -> dict[str, Any]:
    """One perf process on ``mask``: its total IOPS, per-core IOPS and CPU %."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "spdk_io", "perf", "-m", mask, "--bdev", "null", "-q", "128",
         "-o", "4096", "-w", "randread", "-t", str(seconds), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=seconds + 90, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"perf -m {mask} failed:\n{proc.stderr[-2000:]}")
    doc = json.loads(proc.stdout.splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / wall
    return {
        "iops": doc["total"]["iops"],
        "per_core": {c: r["iops"] for c, r in doc["cores"].items()},
        "cpu_pct": round(100 * cpu),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.seconds <= 0 or args.repeat < 1:
        p.error("--seconds must be > 0 and --repeat >= 1")
    if sys.version_info < (3, 13):
        p.error("two cores need Python 3.13+ (isolated interpreters)")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MASKS}
    for _ in range(args.repeat):
        for mask in MASKS:
            runs[mask].append(run_once(mask, args.seconds))
    med = {m: statistics.median(r["iops"] for r in runs[m]) for m in MASKS}
    cpu = {m: statistics.median(r["cpu_pct"] for r in runs[m]) for m in MASKS}
    ratios = {f"0x3/{m}": round(med["0x3"] / med[m], 2) for m in ("0x1", "0x2")}
    # Each core's share of the two-core run against the same core alone: near 1 means
    # running the other core beside it cost it nothing (robust to uneven load per core).
    for core, alone in (("0", "0x1"), ("1", "0x2")):
        share = statistics.median(r["per_core"][core] for r in runs["0x3"])
        ratios[f"core {core} in 0x3 / alone"] = round(share / med[alone], 2)
    if args.json:
        print(json.dumps({"median_iops": med, "cpu_pct": cpu, "ratios": ratios, "runs": runs}))
        return 0
    print(f"null bdev, 4 KiB randread, QD128 per core, {args.seconds} s x {args.repeat}")
    print(f"{'mask':6} {'median IOPS':>14} {'cpu %':>6}")
    for m in MASKS:
        print(f"{m:6} {med[m]:>14,.0f} {cpu[m]:>6.0f}")
    for name, ratio in ratios.items():
        if name.startswith("0x3/"):
            verdict = " (ok)" if ratio >= TARGET else f" (below the {TARGET} target)"
        else:
            verdict = ""
        print(f"{name}: {ratio:.2f}x{verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
