"""bdev I/O throughput and latency: SPDK's bdevperf, a naive ctypes loop, and ours, side by side.

    PYTHONPATH=. python benchmarks/bench_bdev.py [--seconds 5] [--repeat 1] [--only NAME]
                                                 [--bdevperf PATH] [--json]

For each scenario this runs, one at a time and each as its own process on core 0
(mask 0x1, 1024 MiB, hugepages only if the machine has free ones, as spdk_io does):

* ``bdevperf`` (SPDK's C tool), found via ``--bdevperf``, ``$SPDK_IO_BDEVPERF``, or PATH;
  SPDK's ``make install`` does not install it: copy ``build/examples/bdevperf``;
* ``benchmarks/naive_loop.py``: one ``spdk_bdev_read_blocks`` per I/O from a shared
  ctypes callback, no coroutines (``naive``; ``naive-prebuilt`` is its cheapest variant);
* ``python -m spdk_io perf`` (``ours``).

All three get the same bdev geometry (null: 2^20 x 4 KiB blocks; malloc: 128 MiB of
4 KiB blocks).  Ratios reported (target in brackets):

* ``null_randread_4k_qd128``: ours / naive IOPS (> 1), ours / bdevperf IOPS;
* ``malloc_randread_4k_qd128``: ours / bdevperf IOPS (>= 0.6);
* ``malloc_read_128k_qd32``: ours / bdevperf MiB/s (>= 0.95);
* ``null_randread_4k_qd1``: ours minus bdevperf average latency, in us (<= 1.5).

Rows without a target (ours vs the naive loop elsewhere, naive vs bdevperf) are context.
bdevperf's null-bdev I/O completes in ~0.1-0.2 us, so the QD1 difference is close to
our absolute latency.  bdevperf has no JSON output outside its RPC mode (``-z``): its
"Total" row is parsed (IOPS, MiB/s, Fail/s, TO/s, average/min/max latency in us).

With ``--repeat N`` the tools alternate N times and medians are reported.  The ``cpu %``
column is each process's CPU time over its wall time (start-up included): all three
poll, so well under ~90 % means the run shared core 0 with something else (e.g. another
SPDK process, which also defaults to core 0) and its numbers are suspect.  Every run
has a timeout of ``seconds + 60`` s.  Exit status: 0 (also when targets are missed),
2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NAIVE = HERE / "naive_loop.py"
MEM_MB = 1024
CORE_MASK = "0x1"
NULL_BLOCKS = 1 << 20
BLOCK = 4096
MALLOC_MIB = 128


@dataclass(frozen=True)
class Scenario:
    name: str
    bdev: str  # null | malloc
    workload: str
    queue_depth: int
    io_size: int
    tools: tuple[str, ...]


SCENARIOS = (
    Scenario(
        "null_randread_4k_qd128",
        "null",
        "randread",
        128,
        4096,
        ("bdevperf", "naive", "naive-prebuilt", "ours"),
    ),
    Scenario(
        "malloc_randread_4k_qd128",
        "malloc",
        "randread",
        128,
        4096,
        ("bdevperf", "naive", "ours"),
    ),
    Scenario(
        "malloc_read_128k_qd32",
        "malloc",
        "read",
        32,
        131072,
        ("bdevperf", "naive", "ours"),
    ),
    Scenario(
        "null_randread_4k_qd1",
        "null",
        "randread",
        1,
        4096,
        ("bdevperf", "naive", "ours"),
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}
METRICS = ("iops", "mib_s", "avg_lat_us", "p99_lat_us", "p999_lat_us", "io_errors")
#: Reported too: the process's CPU time over its wall time (start-up included).
EXTRA = ("cpu_pct",)


def find_bdevperf(explicit: str | None) -> str | None:
    """``--bdevperf``, else ``$SPDK_IO_BDEVPERF``, else ``bdevperf`` on PATH."""
    for cand in (explicit, os.environ.get("SPDK_IO_BDEVPERF")):
        if cand:
            return cand if os.access(cand, os.X_OK) else None
    return shutil.which("bdevperf")


def no_huge() -> bool:
    """Whether to run without hugepages: the rule spdk_io's EnvOptions applies."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("HugePages_Free:"):
                return int(line.split()[1]) == 0
    except (OSError, ValueError):
        pass
    return True


def bdev_config(bdev: str) -> dict[str, Any]:
    if bdev == "null":
        method, params = "bdev_null_create", {"name": "Null0", "num_blocks": NULL_BLOCKS}
    else:
        num = MALLOC_MIB * (1 << 20) // BLOCK
        method, params = "bdev_malloc_create", {"name": "Malloc0", "num_blocks": num}
    params["block_size"] = BLOCK
    return {"subsystems": [{"subsystem": "bdev", "config": [{"method": method, "params": params}]}]}


# bdevperf v26.05 has no JSON output outside its RPC mode: read the "Total" row of
#   Device Information : runtime(s) IOPS MiB/s Fail/s TO/s Average min max   (latency in us)
_NUM = r"(-?\d+(?:\.\d+)?)"
_TOTAL = re.compile(r"^\s*Total\s*:" + r"\s+" + r"\s+".join([_NUM] * 7) + r"\s*$", re.M)


def parse_bdevperf(text: str, seconds: float) -> dict[str, float]:
    m = _TOTAL.search(text)
    if m is None:
        raise ValueError("no 'Total' row in bdevperf's output")
    iops, mib_s, fail_s, _to_s, avg, _lo, _hi = map(float, m.groups())
    return {
        "iops": iops,
        "mib_s": mib_s,
        "avg_lat_us": avg,
        "io_errors": round(fail_s * seconds),
    }


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            obj: dict[str, Any] = json.loads(line)
            return obj
    raise ValueError("no JSON object in the output")


def command(tool: str, sc: Scenario, seconds: int, bdevperf: str, cfg: Path) -> list[str]:
    common = ["-q", str(sc.queue_depth), "-o", str(sc.io_size), "-w", sc.workload]
    if tool == "bdevperf":
        return [
            bdevperf,
            *(["--no-huge"] if no_huge() else []),
            "-s", str(MEM_MB), "-m", CORE_MASK,
            # Neither a shared RPC socket nor core locks: other SPDK apps may be running.
            "--no-rpc-server", "--disable-cpumask-locks",
            *common, "-t", str(seconds), "--json", str(cfg),
        ]  # fmt: skip
    py = [sys.executable]
    if tool.startswith("naive"):
        extra = ["--prebuilt"] if tool == "naive-prebuilt" else []
        return [
            *py, str(NAIVE), *common, "-t", str(seconds), "--bdev", sc.bdev,
            "--malloc-mib", str(MALLOC_MIB), *extra, "--json",
        ]  # fmt: skip
    return [
        *py, "-m", "spdk_io", "perf", *common, "-t", str(seconds), "--bdev", sc.bdev,
        "--malloc-mib", str(MALLOC_MIB), "--json",
    ]  # fmt: skip


def run_one(tool: str, sc: Scenario, seconds: int, bdevperf: str, cfg: Path) -> dict[str, Any]:
    """One run of one tool: its metrics, or ``{"error": ...}``."""
    cmd = command(tool, sc, seconds, bdevperf, cfg)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 60, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {seconds + 60} s"}
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    # A polling tool alone on its core uses ~100 %: less means it shared core 0 with others.
    cpu_pct = round(100 * cpu / wall, 1) if wall > 0 else 0.0
    tail = (out.stderr.strip().splitlines() or ["(no stderr)"])[-1]
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {tail}"}
    try:
        if tool == "bdevperf":
            res: dict[str, Any] = dict(parse_bdevperf(out.stdout + out.stderr, seconds))
        else:
            res = last_json(out.stdout)
    except (ValueError, json.JSONDecodeError) as exc:
        return {"error": f"{exc}; stderr: {tail}"}
    return {**{k: res[k] for k in METRICS if k in res}, "cpu_pct": cpu_pct}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[-1]["error"] if runs else "not run"}
    keys = [k for k in (*METRICS, *EXTRA) if all(k in r for r in good)]
    med: dict[str, Any] = {k: round(statistics.median(r[k] for r in good), 3) for k in keys}
    if "io_errors" in med:
        med["io_errors"] = int(med["io_errors"])
    med["runs"] = len(good)
    if len(good) < len(runs):
        med["failed_runs"] = len(runs) - len(good)
    return med


def ratios(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The numbers the project reports, each with its target and verdict."""

    def get(sc: str, tool: str, key: str) -> float | None:
        v = results.get(sc, {}).get(tool, {}).get(key)
        return float(v) if isinstance(v, int | float) else None

    def ratio(sc: str, a: str, b: str, key: str) -> float | None:
        x, y = get(sc, a, key), get(sc, b, key)
        return round(x / y, 3) if x is not None and y else None

    def diff(sc: str, a: str, b: str, key: str) -> float | None:
        x, y = get(sc, a, key), get(sc, b, key)
        return round(x - y, 3) if x is not None and y is not None else None

    # (scenario, label, fn, tool, other tool, metric, op, target); no target = informational
    rows = [
        ("null_randread_4k_qd128", "ours/naive IOPS", ratio, "ours", "naive", "iops", ">", 1.0),
        ("null_randread_4k_qd128", "ours/naive-prebuilt IOPS", ratio, "ours", "naive-prebuilt",
         "iops", None, None),
        ("null_randread_4k_qd128", "ours/bdevperf IOPS", ratio, "ours", "bdevperf", "iops",
         None, None),
        ("malloc_randread_4k_qd128", "ours/bdevperf IOPS", ratio, "ours", "bdevperf", "iops",
         ">=", 0.6),
        ("malloc_randread_4k_qd128", "ours/naive IOPS", ratio, "ours", "naive", "iops",
         None, None),
        ("malloc_read_128k_qd32", "ours/bdevperf MiB/s", ratio, "ours", "bdevperf", "mib_s",
         ">=", 0.95),
        ("malloc_read_128k_qd32", "ours/naive MiB/s", ratio, "ours", "naive", "mib_s",
         None, None),
        ("null_randread_4k_qd1", "ours-bdevperf avg lat (us)", diff, "ours", "bdevperf",
         "avg_lat_us", "<=", 1.5),
        ("null_randread_4k_qd1", "naive-bdevperf avg lat (us)", diff, "naive", "bdevperf",
         "avg_lat_us", None, None),
        ("null_randread_4k_qd1", "ours-naive avg lat (us)", diff, "ours", "naive",
         "avg_lat_us", None, None),
    ]  # fmt: skip
    out = []
    for sc, label, fn, tool, other, key, op, target in rows:
        if sc not in results:
            continue
        value = fn(sc, tool, other, key)
        ok: bool | None = None
        if value is not None and target is not None:
            ok = value > target if op == ">" else value >= target if op == ">=" else value <= target
        out.append({
            "scenario": sc, "metric": label, "value": value,
            "target": f"{op} {target}" if op else None, "met": ok,
        })  # fmt: skip
    return out


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def print_table(
    results: dict[str, dict[str, dict[str, Any]]], rows: list[dict[str, Any]], header: str
) -> None:
    print(header)
    print(f"{'scenario':<26} {'tool':<15} {'IOPS':>12} {'MiB/s':>10} {'avg us':>10} "
          f"{'p99 us':>10} {'errors':>6} {'cpu %':>6}")  # fmt: skip
    for sc, tools in results.items():
        for tool, r in tools.items():
            if "error" in r:
                print(f"{sc:<26} {tool:<15} ERROR: {r['error']}")
                continue
            print(
                f"{sc:<26} {tool:<15} {_fmt(r.get('iops'), 0):>12} {_fmt(r.get('mib_s')):>10} "
                f"{_fmt(r.get('avg_lat_us'), 2):>10} {_fmt(r.get('p99_lat_us'), 2):>10} "
                f"{_fmt(r.get('io_errors')):>6} {_fmt(r.get('cpu_pct'), 0):>6}"
            )
    print()
    print(f"{'scenario':<26} {'metric':<28} {'value':>11}  {'target':<8} met")
    for row in rows:
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        value = "unavailable" if row["value"] is None else f"{row['value']:.3f}"
        print(f"{row['scenario']:<26} {row['metric']:<28} {value:>11}  "
              f"{row['target'] or '':<8} {met}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=int, default=5, help="run time of each run (whole s)")
    p.add_argument("--repeat", type=int, default=1, help="runs per tool; medians are reported")
    p.add_argument("--only", action="append", choices=sorted(BY_NAME), metavar="SCENARIO",
                   help=f"run only this scenario (repeatable): {', '.join(BY_NAME)}")  # fmt: skip
    p.add_argument("--bdevperf", default=None, help="path of SPDK's bdevperf binary")
    p.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = p.parse_args(argv)
    if args.seconds < 1 or args.repeat < 1:
        p.error("--seconds and --repeat must be >= 1")
    scenarios = [BY_NAME[n] for n in args.only] if args.only else list(SCENARIOS)
    bdevperf = find_bdevperf(args.bdevperf)
    if bdevperf is None:
        print(
            "bench_bdev: bdevperf not found (--bdevperf, $SPDK_IO_BDEVPERF, PATH); SPDK's "
            "make install does not install it, copy build/examples/bdevperf. Running the "
            "Python tools only; ratios to bdevperf are unavailable.",
            file=sys.stderr,
        )
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_bdev_") as tmp:
        for sc in scenarios:
            cfg = Path(tmp) / f"{sc.bdev}.json"
            cfg.write_text(json.dumps(bdev_config(sc.bdev)))
            tools = [t for t in sc.tools if t != "bdevperf" or bdevperf]
            runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
            for i in range(args.repeat):
                for tool in tools:  # alternate, so noise hits every tool alike
                    print(f"[{sc.name} {i + 1}/{args.repeat}] {tool} ...", file=sys.stderr,
                          flush=True)  # fmt: skip
                    runs[tool].append(run_one(tool, sc, args.seconds, bdevperf or "", cfg))
            results[sc.name] = {t: median_of(runs[t]) for t in sc.tools if t in runs}
            if "bdevperf" not in runs:
                results[sc.name]["bdevperf"] = {"error": "bdevperf not found"}
    rows = ratios(results)
    load = os.getloadavg()
    summary = {
        "bdevperf": bdevperf,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "core_mask": CORE_MASK,
        "mem_size_mb": MEM_MB,
        "no_huge": no_huge(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "results": results,
        "ratios": {f"{r['scenario']}: {r['metric']}": r for r in rows},
    }
    if not args.json:
        print_table(
            results, rows,
            f"bdevperf: {bdevperf or 'NOT FOUND'}; {args.seconds} s per run, "
            f"median of {args.repeat}; core mask {CORE_MASK}, {MEM_MB} MiB, "
            f"{'no hugepages' if no_huge() else 'hugepages'}; load average now "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        )  # fmt: skip
        print()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
