"""NVMe-oF target throughput and latency: SPDK's nvmf_tgt vs the Python-hosted target.

    PYTHONPATH=. python benchmarks/bench_nvmf_target.py [--seconds 3] [--repeat 3] [--json]

Each repeat runs, one target at a time, both targets on core 1 and measures each with
``spdk_nvme_perf -c 0x1`` (core 0) over TCP loopback, 4 KiB randread on one null-bdev
namespace (2^20 x 4 KiB blocks), at QD128 and at QD1:

* ``nvmf_tgt -m 0x2 --no-huge -s 1024``, configured over its RPC socket with SPDK's
  ``rpc.py`` (``spdk-rpc``);
* this script in ``--python-target`` mode: :class:`spdk_io.nvmf.Target` under
  ``spdk_io.run(core_mask="0x2", mem_size_mb=1024)``.

Medians over the repeats are printed with the ratios Python / nvmf_tgt (issue #9's
targets: IOPS at QD128 >= 0.95x, average latency at QD1 <= 1.05x).  The machine's two
cores are shared with other work: compare within one run, and expect noise.
Exit status: 0 (also when targets are missed), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NQN = "nqn.2016-06.io.spdk:bench"
NULL_MIB = 4096  # 2^20 blocks of 4 KiB
BLOCK = 4096
TARGET_MASK = "0x2"
PERF_MASK = "0x1"
MEM_MB = 1024


@dataclass(frozen=True)
class Sample:
    target: str
    queue_depth: int
    iops: float
    avg_lat_us: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _trid(port: int) -> str:
    return f"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN}"


def _spdk_rpc() -> str:
    exe = Path(sys.executable).parent / "spdk-rpc"
    return str(exe) if exe.exists() else (shutil.which("spdk-rpc") or "spdk-rpc")


def _perf(port: int, qd: int, seconds: int) -> tuple[float, float]:
    out = subprocess.run(
        ["spdk_nvme_perf", "--no-huge", "-s", "512", "-c", PERF_MASK, "-q", str(qd),
         "-o", str(BLOCK), "-w", "randread", "-t", str(seconds), "-r", _trid(port)],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )  # fmt: skip
    m = re.search(r"^Total\s*:\s*([\d.]+)\s+[\d.]+\s+([\d.]+)", out.stdout, re.M)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"spdk_nvme_perf failed:\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}")
    return float(m.group(1)), float(m.group(2))


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _start_nvmf_tgt(port: int, sock: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["nvmf_tgt", "-m", TARGET_MASK, "--no-huge", "-s", str(MEM_MB), "-r", sock],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    rpc = _spdk_rpc()
    deadline = time.monotonic() + 30
    while not os.path.exists(sock):
        if time.monotonic() > deadline or proc.poll() is not None:
            _stop(proc)
            raise RuntimeError("nvmf_tgt did not start")
        time.sleep(0.05)
    for args in (
        ["framework_wait_init"],
        ["bdev_null_create", "Null0", str(NULL_MIB), str(BLOCK)],
        ["nvmf_create_transport", "-t", "TCP"],
        ["nvmf_create_subsystem", NQN, "-a", "-s", "BENCH0001"],
        ["nvmf_subsystem_add_ns", NQN, "Null0"],
        ["nvmf_subsystem_add_listener", NQN, "-t", "tcp", "-f", "ipv4", "-a", "127.0.0.1",
         "-s", str(port)],
    ):  # fmt: skip
        subprocess.run([rpc, "-s", sock, *args], check=True, capture_output=True, timeout=60)
    return proc


def _start_python(port: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--python-target", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        _stop(proc)
        raise RuntimeError("the Python target did not start")
    return proc


def python_target(port: int) -> None:
    """The measured Python target: one null namespace over TCP, until SIGINT."""
    import spdk_io
    from spdk_io import bdev_modules
    from spdk_io.nvmf import Target, TransportId

    async def main() -> None:
        await bdev_modules.create_null("Null0", NULL_MIB * (1 << 20) // BLOCK, BLOCK)
        async with await Target.create("bench") as target:
            await target.add_transport("TCP")
            sub = await target.create_subsystem(NQN, serial="BENCH0001", allow_any_host=True)
            await sub.add_namespace("Null0")
            await sub.add_listener(TransportId.tcp("127.0.0.1", port))
            await sub.start()
            print("READY", flush=True)
            await spdk_io.sleep(float("inf"))

    with contextlib.suppress(KeyboardInterrupt):  # SIGINT is how the benchmark stops it
        spdk_io.run(main(), name="bench_nvmf", core_mask=TARGET_MASK, mem_size_mb=MEM_MB)


def measure(kind: str, seconds: int) -> list[Sample]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "nvmf_tgt":
            proc = _start_nvmf_tgt(port, str(Path(tmp) / "rpc.sock"))
        else:
            proc = _start_python(port)
        try:
            out = []
            for qd in (128, 1):
                iops, lat = _perf(port, qd, seconds)
                out.append(Sample(kind, qd, iops, lat))
            return out
        finally:
            _stop(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=int, default=3, help="spdk_nvme_perf run time (s)")
    p.add_argument("--repeat", type=int, default=3, help="repeats; medians are reported")
    p.add_argument("--json", action="store_true", help="print only the JSON summary")
    p.add_argument("--python-target", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.python_target is not None:
        python_target(args.python_target)
        return 0
    if args.seconds < 1 or args.repeat < 1:
        print("--seconds and --repeat must be >= 1", file=sys.stderr)
        return 2
    samples: list[Sample] = []
    for i in range(args.repeat):
        for kind in ("nvmf_tgt", "python"):
            got = measure(kind, args.seconds)
            samples += got
            if not args.json:
                for s in got:
                    print(f"run {i + 1} {kind:8} QD{s.queue_depth:<3} {s.iops:>12,.0f} IOPS "
                          f"avg {s.avg_lat_us:8.2f} us", flush=True)  # fmt: skip

    def median(kind: str, qd: int, field: str) -> float:
        values = [
            float(getattr(s, field)) for s in samples if s.target == kind and s.queue_depth == qd
        ]
        return statistics.median(values)

    summary = {
        f"{kind}_qd{qd}_{field}": median(kind, qd, field)
        for kind in ("nvmf_tgt", "python")
        for qd in (128, 1)
        for field in ("iops", "avg_lat_us")
    }
    summary["ratio_iops_qd128"] = summary["python_qd128_iops"] / summary["nvmf_tgt_qd128_iops"]
    summary["ratio_lat_qd1"] = summary["python_qd1_avg_lat_us"] / summary["nvmf_tgt_qd1_avg_lat_us"]
    if args.json:
        print(json.dumps({"summary": summary, "samples": [asdict(s) for s in samples]}))
        return 0
    print(f"\nmedians of {args.repeat} run(s), {args.seconds} s each, 4 KiB randread, null bdev")
    for qd in (128, 1):
        for kind in ("nvmf_tgt", "python"):
            print(f"  {kind:8} QD{qd:<3} {summary[f'{kind}_qd{qd}_iops']:>12,.0f} IOPS  "
                  f"avg {summary[f'{kind}_qd{qd}_avg_lat_us']:8.2f} us")  # fmt: skip
    print(f"  Python/nvmf_tgt IOPS at QD128: {summary['ratio_iops_qd128']:.2f}x (target >= 0.95)")
    print(f"  Python/nvmf_tgt avg latency at QD1: {summary['ratio_lat_qd1']:.2f}x (target <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
