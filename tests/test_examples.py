"""The examples run as documented."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def run_example(name: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_hello_bdev() -> None:
    assert run_example("hello_bdev.py").endswith("Hello, SPDK!\n")


def test_threads() -> None:
    out = run_example("threads.py")
    for i in range(3):
        assert f"worker{i}: hello worker {i} from app_thread" in out
