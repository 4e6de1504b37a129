"""Does a long streaming run keep its memory flat?  ``python -m spdk_io perf`` at QD128 for
N minutes, its resident set size sampled from outside.

    PYTHONPATH=. python benchmarks/bench_rss.py [--minutes 10] [--every 5] [--bdev null]
                                                [--warmup 60] [--json]

Runs ``python -m spdk_io perf -q 128 -o 4096 -w randread --bdev BDEV -t MINUTES*60 --json``
(which drives the bdev through :class:`spdk_io.bdev.IoStream`) and reads ``VmRSS`` from
``/proc/PID/status`` every ``--every`` seconds.  The baseline is the first sample at or
after ``--warmup`` seconds (the first minute: allocation of buffers, tables, caches);
reported is the largest deviation of any later sample from it, in percent (target:
within 5 %), with perf's own result.  Exit status: 0 (also when the target is missed),
1 if perf failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: The largest deviation from the baseline RSS that counts as flat, in percent.
TARGET_PCT = 5.0


def rss_kib(pid: int) -> int | None:
    """``VmRSS`` of ``pid`` in KiB, or ``None`` once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def deviation(samples: list[tuple[float, int]], warmup: float, end: float) -> dict[str, Any]:
    """Baseline (the first sample at or after ``warmup`` s) and the largest deviation of a
    later sample up to ``end`` s (perf's teardown frees memory: not part of the run) from
    it, in percent; ``None`` values if there are no samples after it."""
    after = [(t, kib) for t, kib in samples if warmup <= t <= end]
    if len(after) < 2:
        return {"baseline_kib": None, "max_dev_pct": None, "samples_after_warmup": len(after)}
    base = after[0][1]
    worst = max(after[1:], key=lambda s: abs(s[1] - base))
    return {
        "baseline_kib": base,
        "max_dev_pct": round(100 * (worst[1] - base) / base, 2),
        "worst_at_s": round(worst[0], 1),
        "min_kib": min(k for _, k in after),
        "max_kib": max(k for _, k in after),
        "samples_after_warmup": len(after),
    }


def run(minutes: float, every: float, bdev: str, warmup: float) -> dict[str, Any]:
    seconds = max(1, round(minutes * 60))
    cmd = [
        sys.executable, "-m", "spdk_io", "perf", "-q", "128", "-o", "4096", "-w", "randread",
        "--bdev", bdev, "-t", str(seconds), "--json",
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    # Output goes to files, not pipes nobody reads while it runs (a chatty log would block).
    with (
        tempfile.TemporaryFile("w+") as out_f,
        tempfile.TemporaryFile("w+") as err_f,
        subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True, env=env) as proc,
    ):
        try:
            while proc.poll() is None:
                kib = rss_kib(proc.pid)
                if kib is not None:
                    samples.append((time.monotonic() - t0, kib))
                time.sleep(every)
            proc.wait(timeout=60)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    perf: dict[str, Any] | str
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    perf = json.loads(lines[-1]) if proc.returncode == 0 and lines else f"exit {proc.returncode}"
    return {
        "command": " ".join(cmd),
        "minutes": minutes,
        "every_s": every,
        "warmup_s": warmup,
        "returncode": proc.returncode,
        "stderr_tail": err.strip().splitlines()[-1:] if err.strip() else [],
        "perf": perf,
        "target_pct": TARGET_PCT,
        **deviation(samples, warmup, seconds),  # perf starts up first: it still runs then
        "samples": [(round(t, 1), k) for t, k in samples],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="run time in minutes")
    p.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--bdev", default="null", choices=("null", "malloc"))
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    a = p.parse_args(argv)
    if a.minutes <= 0 or a.every <= 0 or a.warmup < 0:
        p.error("need --minutes > 0, --every > 0, --warmup >= 0")
    r = run(a.minutes, a.every, a.bdev, a.warmup)
    if not a.json:
        dev = r["max_dev_pct"]
        verdict = "-" if dev is None else ("yes" if abs(dev) <= TARGET_PCT else "NO")
        iops = r["perf"]["iops"] if isinstance(r["perf"], dict) else r["perf"]
        print(
            f"perf QD128 {r['minutes']} min on {a.bdev}: {iops} IOPS; RSS baseline "
            f"{r['baseline_kib']} KiB at >= {a.warmup:.0f} s, max deviation after it "
            f"{dev} % (target within {TARGET_PCT} %: {verdict}); "
            f"{r['samples_after_warmup']} samples"
        )
    print(json.dumps(r))
    return 0 if r["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
