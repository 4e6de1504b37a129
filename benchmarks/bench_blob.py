"""Blob I/O against bdev I/O: 4 KiB random reads and writes at QD128, spdk_io and SPDK's C.

    PYTHONPATH=. python benchmarks/bench_blob.py [--seconds 3] [--repeat 3] [--warmup 1]
                                                 [--bdevperf PATH] [--no-bdevperf] [--json]

The question: does a blob cost much over the bdev under it?  The target is Blob I/O at
least 0.9x spdk_io's own bdev I/O on the same bdev, in the same run.

**spdk_io, one process** (SPDK on core 0, mask 0x1, 1024 MiB, hugepages only if the
machine has free ones).  One malloc bdev, ``Bench0``: 256 MiB of 4096 B blocks (the
block size of bench_bdev.py and bdevperf's usual runs; the blobstore's I/O unit is then
4096 B too).  On it, a blobstore (1 MiB clusters) and one thick blob of 240 clusters
(240 MiB, every cluster allocated when it is made, so no write allocates).  The
blobstore's metadata fills the bdev's first clusters (2 here) and its data clusters
are the rest; a fresh blobstore gives a new blob the lowest free clusters, so the blob
is the first 240 data clusters, and the bdev I/O is aimed at exactly those 240 MiB:
the same bytes of RAM, and never the blobstore's metadata.  Both use the same seeded
table of random 4 KiB offsets in those 240 MiB (a marker written through the blob
and read through the bdev checks the mapping first).  Measured, each with one task
per queue slot (128 tasks, one 4 KiB buffer each, ``await io(buf, offset)`` in a
loop, as ``spdk_io.perf`` does):

* ``bdev``: :meth:`BdevDesc.read` / :meth:`BdevDesc.write` (byte offsets, one ``Op``
  per I/O): spdk_io's general bdev I/O, the same call shape as the blob's.  **The
  target's denominator.**
* ``blob``: :meth:`Blob.read` / :meth:`Blob.write` on the blob.
* ``slot``: :class:`~spdk_io.bdev.IoSlot` (prebuilt arguments, what ``python -m
  spdk_io perf`` drives): the fastest bdev path spdk_io has, as context.

Rounds alternate (bdev, blob, slot, bdev, blob, slot, ...; reads, then writes, in each
repeat) after an unmeasured warm-up of each, so noise hits every path alike; each
round's blob/bdev ratio is reported, and the median of the rounds.  ``cpu %`` is the
process's CPU time over the round's wall time: SPDK polls, so well under ~95 % means
the core was shared and that round is suspect.  ``IOPS/cpu-s`` divides the I/Os by
the process's CPU time instead of the wall time: close to IOPS on a quiet machine,
and much less sensitive to sharing the core (nothing progresses while the process is
descheduled: the malloc bdev completes only when polled).  The blob/bdev ratio is
also given on it, as a check of the wall-clock ratio on a busy machine.

**SPDK's C, as context** (each run its own process on core 0, same memory flags as
bench_bdev.py): ``bdevperf -q 128 -o 4096 -w randread|randwrite -t SECONDS`` over

* ``lvol``: an lvol of 240 MiB (thick) in an lvstore (1 MiB clusters) on the same kind
  of malloc bdev: the lvol bdev is SPDK's own C user of the blobstore;
* ``malloc``: the malloc bdev itself.

Its C-side ratio lvol/malloc says what the blobstore costs without Python.  bdevperf is
found via ``--bdevperf``, ``$SPDK_IO_BDEVPERF``, or PATH (``--no-bdevperf`` skips it).

All runs are deterministic up to the machine's noise: fixed geometry, a fixed seed for
the offsets, fixed core.  On a busy machine (see the load average in the header, and
``cpu %``) rerun with ``--repeat 5``.  Exit status: 0 (also when the target is missed),
2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_bdev import find_bdevperf, no_huge, parse_bdevperf  # noqa: E402

MIB = 1 << 20
MEM_MB = 1024
CORE_MASK = "0x1"
BLOCK = 4096
IO_SIZE = 4096
QUEUE_DEPTH = 128
BDEV_MIB = 256
CLUSTER = 1 * MIB
BLOB_MIB = 240  # the blob, the bdev range measured, and the lvol
BDEV_NAME = "Bench0"
WORKLOADS = ("randread", "randwrite")
PATHS = ("bdev", "blob", "slot")
TARGET = 0.9
SEED = 1
_TABLE = 1 << 16  # offsets per table (cycled; each worker starts elsewhere in it)


# -- spdk_io, in this process ---------------------------------------------------------------


@dataclass
class _Counter:
    ios: int = 0
    stop: bool = False


@dataclass
class Round:
    """One measured round of one path and workload."""

    path: str
    workload: str
    repeat: int
    ios: int
    seconds: float
    cpu_pct: float
    iops: float = field(init=False)
    #: I/Os per second of this process's CPU time: what IOPS would be with the core to
    #: itself (SPDK polls, so the process uses its whole core when nothing else runs).
    iops_cpu: float = field(init=False)

    def __post_init__(self) -> None:
        self.iops = round(self.ios / self.seconds, 1) if self.seconds > 0 else 0.0
        cpu_s = self.seconds * self.cpu_pct / 100
        self.iops_cpu = round(self.ios / cpu_s, 1) if cpu_s > 0 else 0.0


def offsets_table(region: int) -> list[int]:
    """``_TABLE`` random, I/O-size-aligned byte offsets in ``[0, region)`` (seeded)."""
    rng = random.Random(SEED)
    slots = region // IO_SIZE
    return [rng.randrange(slots) * IO_SIZE for _ in range(_TABLE)]


async def _byte_worker(
    io: Callable[[Any, int], Any], buf: Any, offsets: list[int], start: int, c: _Counter
) -> None:
    """``await io(buf, offset)`` until told to stop: the bdev and blob paths."""
    mask = len(offsets) - 1
    i = start
    try:
        while not c.stop:
            await io(buf, offsets[i & mask])
            i += 1
    finally:
        c.ios += i - start


async def _slot_worker(
    io: Callable[[int, int], Any], offsets: list[int], start: int, c: _Counter
) -> None:
    """``await io(offset_blocks, 1)`` until told to stop: the IoSlot path."""
    mask = len(offsets) - 1
    i = start
    try:
        while not c.stop:
            await io(offsets[i & mask], 1)
            i += 1
    finally:
        c.ios += i - start


async def _round(
    workers: Callable[[_Counter], list[Any]], seconds: float
) -> tuple[int, float, float]:
    """Run the workers for ``seconds``; (I/Os, wall seconds, cpu %).  Every I/O has
    completed on return."""
    from spdk_io.loop import gather, sleep, spawn

    c = _Counter()
    t0, p0 = time.perf_counter(), time.process_time()
    task = spawn(gather(*workers(c)), name="bench-blob-workers")
    try:
        await sleep(seconds)
    finally:
        c.stop = True
        await task
    wall, cpu = time.perf_counter() - t0, time.process_time() - p0
    return c.ios, wall, round(100 * cpu / wall, 1) if wall > 0 else 0.0


async def _measure(seconds: float, repeat: int, warmup: float, log: bool) -> list[Round]:
    from spdk_io import bdev_modules as bm
    from spdk_io.bdev import BdevDesc
    from spdk_io.blob import Blobstore, BlobstoreOptions
    from spdk_io.dma import DmaBuf

    await bm.create_malloc(BDEV_NAME, BDEV_MIB * MIB // BLOCK, BLOCK)
    bs = await Blobstore.init(BDEV_NAME, BlobstoreOptions(cluster_size=CLUSTER))
    if bs.total_clusters < BLOB_MIB * MIB // CLUSTER:
        raise RuntimeError(f"the blobstore has only {bs.total_clusters} data clusters")
    blob = await bs.open_blob(await bs.create_blob(BLOB_MIB * MIB // CLUSTER))
    region = blob.size
    desc = BdevDesc.open(BDEV_NAME, write=True)
    # The data clusters are the bdev's last ones; the blob has the first of them.
    base = desc.num_blocks * desc.block_size - bs.total_clusters * bs.cluster_size
    table = offsets_table(region)
    bdev_table = [base + o for o in table]
    lba_table = [(base + o) // BLOCK for o in table]
    bufs = [DmaBuf.alloc(IO_SIZE, 4096) for _ in range(QUEUE_DEPTH)]
    await _same_bytes(blob, desc, base, bufs[0], bufs[1])
    slots = [desc.slot(b) for b in bufs]
    starts = [w * (_TABLE // QUEUE_DEPTH) for w in range(QUEUE_DEPTH)]

    def workers(path: str, workload: str) -> Callable[[_Counter], list[Any]]:
        read = workload == "randread"

        def make(c: _Counter) -> list[Any]:
            if path == "slot":
                return [
                    _slot_worker(s.read_blocks if read else s.write_blocks, lba_table, st, c)
                    for s, st in zip(slots, starts, strict=True)
                ]
            if path == "bdev":
                io: Callable[[Any, int], Any] = desc.read if read else desc.write
                t = bdev_table
            else:
                io, t = (blob.read if read else blob.write), table
            return [_byte_worker(io, b, t, st, c) for b, st in zip(bufs, starts, strict=True)]

        return make

    rounds: list[Round] = []
    try:
        if warmup > 0:
            for wl in WORKLOADS:
                for path in PATHS:
                    await _round(workers(path, wl), warmup)
        for r in range(repeat):
            for wl in WORKLOADS:
                for path in PATHS:  # alternate, so noise hits every path alike
                    ios, wall, cpu = await _round(workers(path, wl), seconds)
                    rounds.append(Round(path, wl, r, ios, round(wall, 3), cpu))
                    if log:
                        print(
                            f"[{r + 1}/{repeat}] {wl:<9} {path:<4} {ios / wall:>12,.0f} IOPS "
                            f"cpu {cpu:.0f} %",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        for s in slots:
            s.close()
        desc.close()
        for b in bufs:
            b.free()
        await blob.aclose()
        await bs.unload()
        await bm.delete_malloc(BDEV_NAME)
    return rounds


async def _same_bytes(blob: Any, desc: Any, base: int, a: Any, b: Any) -> None:
    """Check that the blob's first and last I/O units are the bdev's at ``base`` and
    ``base + blob.size - IO_SIZE`` (a marker written through the blob, read through the
    bdev): the bdev rounds then cover the blob's bytes."""
    for off in (0, blob.size - IO_SIZE):
        a.fill(0xA5 if off else 0x5A)
        await blob.write(a, off)
        await desc.read(b, base + off)
        if b.tobytes() != a.tobytes():
            raise RuntimeError(f"the blob's byte {off} is not the bdev's byte {base + off}")


def run_spdk_io(seconds: float, repeat: int, warmup: float, log: bool = True) -> list[Round]:
    """The spdk_io rounds, in this process (SPDK is started and stopped here)."""
    import spdk_io

    return spdk_io.run(
        _measure(seconds, repeat, warmup, log),
        name="bench_blob",
        core_mask=CORE_MASK,
        mem_size_mb=MEM_MB,
    )


# -- bdevperf, as context ------------------------------------------------------------------


def bdevperf_config(kind: str) -> dict[str, Any]:
    """SPDK JSON config: the malloc bdev, and for ``lvol`` an lvstore and a thick lvol on it."""
    cfg: list[dict[str, Any]] = [
        {
            "method": "bdev_malloc_create",
            "params": {
                "name": "Malloc0",
                "num_blocks": BDEV_MIB * MIB // BLOCK,
                "block_size": BLOCK,
            },
        }
    ]
    if kind == "lvol":
        cfg += [
            {
                "method": "bdev_lvol_create_lvstore",
                "params": {"bdev_name": "Malloc0", "lvs_name": "lvs0", "cluster_sz": CLUSTER},
            },
            {
                "method": "bdev_lvol_create",
                "params": {
                    "lvs_name": "lvs0",
                    "lvol_name": "lvol0",
                    "size_in_mib": BLOB_MIB,
                    "thin_provision": False,
                },
            },
        ]
    return {"subsystems": [{"subsystem": "bdev", "config": cfg}]}


def bdevperf_command(bdevperf: str, workload: str, seconds: int, cfg: Path) -> list[str]:
    # The malloc bdev is claimed by the lvstore, so bdevperf drives only the lvol (a leaf).
    return [
        bdevperf,
        *(["--no-huge"] if no_huge() else []),
        "-s", str(MEM_MB), "-m", CORE_MASK,
        "--no-rpc-server", "--disable-cpumask-locks",
        "-q", str(QUEUE_DEPTH), "-o", str(IO_SIZE), "-w", workload,
        "-t", str(seconds), "--json", str(cfg),
    ]  # fmt: skip


def run_bdevperf(cmd: list[str], seconds: int) -> dict[str, Any]:
    """One bdevperf run: IOPS and cpu %, or ``{"error": ...}``."""
    before = os.times()
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {seconds + 60} s"}
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    tail = (out.stderr.strip().splitlines() or ["(no stderr)"])[-1]
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {tail}"}
    try:
        res = parse_bdevperf(out.stdout + out.stderr, seconds)
    except ValueError as exc:
        return {"error": f"{exc}; stderr: {tail}"}
    return {"iops": res["iops"], "cpu_pct": round(100 * cpu / wall, 1) if wall > 0 else 0.0}


def bdevperf_rounds(bdevperf: str, seconds: int, repeat: int) -> dict[str, dict[str, Any]]:
    """``{"lvol randread": {"iops": median, "runs": [...]}, ...}``: lvol and malloc
    alternate, ``repeat`` times per workload."""
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_blob_") as tmp:
        cfgs = {}
        for kind in ("lvol", "malloc"):
            cfgs[kind] = Path(tmp) / f"{kind}.json"
            cfgs[kind].write_text(json.dumps(bdevperf_config(kind)))
        for wl in WORKLOADS:
            runs: dict[str, list[dict[str, Any]]] = {"lvol": [], "malloc": []}
            for r in range(repeat):
                for kind in ("lvol", "malloc"):
                    print(f"[{r + 1}/{repeat}] {wl:<9} bdevperf {kind} ...", file=sys.stderr,
                          flush=True)  # fmt: skip
                    cmd = bdevperf_command(bdevperf, wl, seconds, cfgs[kind])
                    runs[kind].append(run_bdevperf(cmd, seconds))
            for kind, rs in runs.items():
                good = [x for x in rs if "error" not in x]
                entry: dict[str, Any] = {"runs": rs}
                if good:
                    entry["iops"] = round(statistics.median(x["iops"] for x in good), 1)
                    entry["cpu_pct"] = round(statistics.median(x["cpu_pct"] for x in good), 1)
                else:
                    entry["error"] = rs[-1]["error"] if rs else "not run"
                out[f"{kind} {wl}"] = entry
    return out


# -- report ----------------------------------------------------------------------------------


def summarize(rounds: list[Round]) -> dict[str, Any]:
    """Median IOPS per path and workload, and the blob/bdev (and blob/slot) ratio of each
    repeat's rounds with their median."""
    out: dict[str, Any] = {}
    for wl in WORKLOADS:
        by: dict[str, list[Round]] = {p: [x for x in rounds if x.workload == wl and x.path == p]
                                      for p in PATHS}  # fmt: skip
        entry: dict[str, Any] = {
            p: {
                "iops": round(statistics.median(x.iops for x in rs), 1),
                "us_per_io": round(1e6 / statistics.median(x.iops for x in rs), 3),
                "cpu_pct": round(statistics.median(x.cpu_pct for x in rs), 1),
                "iops_per_cpu_s": round(statistics.median(x.iops_cpu for x in rs), 1),
                "rounds": [x.iops for x in rs],
            }
            for p, rs in by.items()
            if rs
        }
        for other in ("bdev", "slot"):
            per = [
                round(b.iops / o.iops, 3)
                for b, o in zip(by["blob"], by[other], strict=True)
                if o.iops
            ]
            if per:
                entry[f"blob/{other}"] = {"rounds": per, "median": round(statistics.median(per), 3)}
        per = [
            round(b.iops_cpu / o.iops_cpu, 3)
            for b, o in zip(by["blob"], by["bdev"], strict=True)
            if o.iops_cpu
        ]
        if per:
            entry["blob/bdev per cpu-s"] = {
                "rounds": per,
                "median": round(statistics.median(per), 3),
            }
        out[wl] = entry
    return out


def print_report(
    spdk: dict[str, Any], c_side: dict[str, dict[str, Any]] | None, header: str
) -> None:
    print(header)
    print(f"{'workload':<10} {'path':<28} {'IOPS':>12} {'us/IO':>8} {'cpu %':>6} "
          f"{'IOPS/cpu-s':>11}  rounds (IOPS)")  # fmt: skip
    labels = {
        "bdev": "spdk_io BdevDesc.read/write",
        "blob": "spdk_io Blob.read/write",
        "slot": "spdk_io IoSlot",
    }
    for wl, entry in spdk.items():
        for p in PATHS:
            if p in entry:
                e = entry[p]
                rs = " ".join(f"{x:,.0f}" for x in e["rounds"])
                print(f"{wl:<10} {labels[p]:<28} {e['iops']:>12,.0f} {e['us_per_io']:>8.2f} "
                      f"{e['cpu_pct']:>6.0f} {e['iops_per_cpu_s']:>11,.0f}  {rs}")  # fmt: skip
        for kind in ("lvol", "malloc"):
            e = (c_side or {}).get(f"{kind} {wl}")
            if e is None:
                continue
            name = f"bdevperf {kind}"
            if "error" in e:
                print(f"{wl:<10} {name:<28} ERROR: {e['error']}")
            else:
                rs = " ".join(f"{x['iops']:,.0f}" for x in e["runs"] if "iops" in x)
                print(f"{wl:<10} {name:<28} {e['iops']:>12,.0f} {1e6 / e['iops']:>8.2f} "
                      f"{e['cpu_pct']:>6.0f} {'':>11}  {rs}")  # fmt: skip
    print()
    print(f"{'workload':<10} {'ratio':<34} {'median':>7}  {'target':<7} {'met':<4} rounds")
    for wl, entry in spdk.items():
        for key, label, target in (
            ("blob/bdev", "blob/bdev IOPS (spdk_io)", TARGET),
            ("blob/bdev per cpu-s", "blob/bdev IOPS per cpu-s (spdk_io)", None),
            ("blob/slot", "blob/slot IOPS (spdk_io)", None),
        ):
            r = entry.get(key)
            if r is None:
                continue
            met = "-" if target is None else ("yes" if r["median"] >= target else "NO")
            tgt = f">= {target}" if target is not None else ""
            rs = " ".join(f"{x:.3f}" for x in r["rounds"])
            print(f"{wl:<10} {label:<34} {r['median']:>7.3f}  {tgt:<7} {met:<4} {rs}")
        for label, value in c_ratios(spdk, c_side, wl):
            print(f"{wl:<10} {label:<34} {value:>7.3f}  {'':<7} {'-':<4}")


def c_ratios(
    spdk: dict[str, Any], c_side: dict[str, dict[str, Any]] | None, wl: str
) -> list[tuple[str, float]]:
    """The context ratios involving bdevperf (medians of the runs)."""
    if not c_side:
        return []
    lvol = c_side.get(f"lvol {wl}", {}).get("iops")
    malloc = c_side.get(f"malloc {wl}", {}).get("iops")
    blob = spdk.get(wl, {}).get("blob", {}).get("iops")
    bdev = spdk.get(wl, {}).get("bdev", {}).get("iops")
    out = []
    if lvol and malloc:
        out.append(("lvol/malloc IOPS (bdevperf, C)", round(lvol / malloc, 3)))
    if blob and lvol:
        out.append(("spdk_io blob / bdevperf lvol IOPS", round(blob / lvol, 3)))
    if bdev and malloc:
        out.append(("spdk_io bdev / bdevperf malloc", round(bdev / malloc, 3)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=int, default=3, help="length of each round (whole s)")
    p.add_argument("--repeat", type=int, default=3, help="rounds per path and workload")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured first round (s)")
    p.add_argument("--bdevperf", default=None, help="path of SPDK's bdevperf binary")
    p.add_argument("--no-bdevperf", action="store_true", help="skip the bdevperf context")
    p.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = p.parse_args(argv)
    if args.seconds < 1 or args.repeat < 1 or args.warmup < 0:
        p.error("--seconds and --repeat must be >= 1, --warmup >= 0")
    bdevperf = None if args.no_bdevperf else find_bdevperf(args.bdevperf)
    if bdevperf is None and not args.no_bdevperf:
        print("bench_blob: bdevperf not found (--bdevperf, $SPDK_IO_BDEVPERF, PATH); "
              "running spdk_io only", file=sys.stderr)  # fmt: skip
    rounds = run_spdk_io(args.seconds, args.repeat, args.warmup)
    spdk = summarize(rounds)
    c_side = bdevperf_rounds(bdevperf, args.seconds, args.repeat) if bdevperf else None
    load = os.getloadavg()
    cmd = (
        f"PYTHONPATH=. python benchmarks/bench_blob.py --seconds {args.seconds} "
        f"--repeat {args.repeat} --warmup {args.warmup:g}"
        + (" --no-bdevperf" if args.no_bdevperf else "")
    )
    summary = {
        "command": cmd,
        "bdevperf": bdevperf,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "core_mask": CORE_MASK,
        "mem_size_mb": MEM_MB,
        "no_huge": no_huge(),
        "geometry": {
            "bdev_mib": BDEV_MIB,
            "block_size": BLOCK,
            "cluster_size": CLUSTER,
            "blob_mib": BLOB_MIB,
            "io_size": IO_SIZE,
            "queue_depth": QUEUE_DEPTH,
        },
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "spdk_io": spdk,
        "bdevperf_runs": c_side,
        "context_ratios": {wl: dict(c_ratios(spdk, c_side, wl)) for wl in WORKLOADS},
    }
    if not args.json:
        print_report(
            spdk, c_side,
            f"{cmd}\nmalloc bdev {BDEV_MIB} MiB of {BLOCK} B blocks, blob/lvol {BLOB_MIB} MiB "
            f"(thick, {CLUSTER // MIB} MiB clusters); {IO_SIZE} B at QD{QUEUE_DEPTH}; "
            f"{args.seconds} s rounds, median of {args.repeat}; core mask {CORE_MASK}, "
            f"{MEM_MB} MiB, {'no hugepages' if no_huge() else 'hugepages'}; load average now "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        )  # fmt: skip
        print()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
