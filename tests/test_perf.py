"""The perf tool, run as users run it: ``python -m spdk_io perf``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def perf(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "spdk_io", "perf", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--bdev", "null", "-q", "8", "-w", "randread"),
        ("--bdev", "malloc", "-q", "4", "-w", "rw", "-M", "70", "--malloc-mib", "16"),
        ("--bdev", "malloc", "-q", "2", "-o", "131072", "-w", "read", "--malloc-mib", "16"),
    ],
)
def test_perf_json_last_line(args: tuple[str, ...]) -> None:
    proc = perf(*args, "-t", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("iops", "mib_s", "avg_lat_us", "p99_lat_us", "io_errors"):
        assert key in result
    assert result["ios"] > 0 and result["iops"] > 0 and result["io_errors"] == 0
    assert result["p99_lat_us"] >= result["p50_lat_us"] > 0


def test_perf_human_output_and_bad_arguments() -> None:
    proc = perf("--bdev", "null", "-q", "2", "-t", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert "IOPS" in proc.stdout
    bad = perf("-q", "0", "-t", "0.3")
    assert bad.returncode == 2 and "queue depth" in bad.stderr
    missing = perf("--bdev", "NoSuchBdev", "-t", "0.3")
    assert missing.returncode == 2 and "NoSuchBdev" in missing.stderr
