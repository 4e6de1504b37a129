"""Shared fixtures: one real SPDK environment per test session, and a time limit on every test.

Nothing of SPDK is mocked.  Tests that need a fresh process (``spdk_io.run``,
teardown after failures, Ctrl-C) run Python in a subprocess via ``run_py``.
"""

from __future__ import annotations

import faulthandler
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
#: The cores this process may run on, before DPDK pins the OS thread that initialises
#: SPDK to its main core (children inherit the pin: see :func:`_unpin`).
_AFFINITY = frozenset(os.sched_getaffinity(0))

# Tests crash child processes on purpose (a regression test shows the crash before its
# fix): no core files from them, in the checkout or anywhere else.
resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))

#: Seconds a test may take before it is failed (soft, via SIGALRM) ...
TEST_TIME_LIMIT = int(os.environ.get("SPDK_IO_TEST_TIMEOUT", "60"))
#: ... and before the whole process is killed with a traceback (hard: a hang inside C).
HARD_LIMIT_MARGIN = 30


def _spdk_missing() -> str | None:
    """Why SPDK cannot be found (``None`` when it is installed)."""
    from spdk_io._discover import find_spdk  # pure: finds, loads nothing

    try:
        find_spdk()
    except ImportError as exc:
        return str(exc)
    return None


_SPDK_MISSING = _spdk_missing()


def pytest_configure(config: pytest.Config) -> None:
    """Two tiers: ``-m spdk_free`` runs anywhere; everything else needs real SPDK."""
    if _SPDK_MISSING is not None and "spdk_free" not in (config.getoption("markexpr") or ""):
        raise pytest.UsageError(
            f"SPDK is not installed ({_SPDK_MISSING}).\nspdk_io's tests run against real "
            "SPDK; without it only the SPDK-free tier runs: python -m pytest -m spdk_free"
        )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Without SPDK, modules of the SPDK tier are not even imported (their imports load it)."""
    if _SPDK_MISSING is None or collection_path.suffix != ".py":
        return None
    if not collection_path.name.startswith("test_"):
        return None
    return "pytest.mark.spdk_free" not in collection_path.read_text()


class TestTimeout(Exception):
    """Raised in the main thread when a test runs past its time limit."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise TestTimeout(f"test exceeded {TEST_TIME_LIMIT} s")


@pytest.fixture(autouse=True)
def time_limit() -> Iterator[None]:
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(TEST_TIME_LIMIT)
    faulthandler.dump_traceback_later(TEST_TIME_LIMIT + HARD_LIMIT_MARGIN, exit=True)
    try:
        yield
    finally:
        signal.alarm(0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def env() -> Iterator[Any]:
    """SPDK brought up once for the session (no hugepages, 512 MiB)."""
    from spdk_io.env import Env

    with Env(name="spdk_io_tests", mem_size_mb=512) as e:
        yield e
        # Teardown runs outside any test's time limit: bound it too (hard, with a traceback).
        faulthandler.dump_traceback_later(TEST_TIME_LIMIT + HARD_LIMIT_MARGIN, exit=True)
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def run(env: Any) -> Callable[[Awaitable[Any]], Any]:
    """Run a coroutine on the session's app thread and return its result."""

    def _run(aw: Awaitable[T]) -> T:
        result: T = env.block_on(aw)
        return result

    return _run


def _child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, with the checkout first on PYTHONPATH (and ``env`` on top)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return full_env


def _argv(code: str | None, args: list[str] | None) -> list[str]:
    return ["-c", textwrap.dedent(code)] if code is not None else list(args or [])


def _unpin() -> None:
    """Let this OS thread (and so the children it starts) run on every core again: a
    multi-core child (tests/test_cores.py) may only use the cores its parent may."""
    if os.sched_getaffinity(0) != _AFFINITY:
        os.sched_setaffinity(0, _AFFINITY)


def run_py(
    code: str | None = None,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    *,
    args: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (or ``args``, such as ``["-m", "spdk_io", ...]``) in a fresh Python
    process (its own SPDK), from the repo root."""
    _unpin()
    return subprocess.run(
        [sys.executable, *_argv(code, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=_child_env(env),
        check=False,
    )


def start_py(code: str | None = None, *, args: list[str] | None = None) -> subprocess.Popen[str]:
    """Start Python (``-c code``, or ``args`` such as ``["-m", "spdk_io", ...]``) in a
    fresh process from the repo root, with pipes: for tests that signal a running child."""
    _unpin()
    return subprocess.Popen(
        [sys.executable, *_argv(code, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_child_env(),
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Wait for the child's first line, ``READY``; fail the test with its stderr otherwise."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"child did not start: {line!r}\n{err[-3000:]}")


def finish_within(proc: subprocess.Popen[str], limit: float) -> tuple[str, str, float]:
    """The child's output and how long it took to exit; killed and failed after ``limit`` s."""
    t0 = time.monotonic()
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"child did not exit within {limit} s\n{out}\n{err[-3000:]}")
    return out, err, time.monotonic() - t0


#: Appended by :func:`then_run_again`: a plain run must work afterwards.
RUN_AGAIN = """
async def _again() -> str:
    return (await spdk_io.rpc.call("spdk_get_version"))["version"]

print("run again:", spdk_io.run(_again()), flush=True)
"""


def then_run_again(code: str) -> str:
    """``code`` (which imports spdk_io) followed by a plain run that must work."""
    return textwrap.dedent(code) + RUN_AGAIN


def ran_again(stdout: str) -> bool:
    """Whether the run :func:`then_run_again` appended brought SPDK up again."""
    return "run again: SPDK v26.05" in stdout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for NVMe-oF listeners).

    The kernel picks it, so parallel test runs on one machine do not collide."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spdk_tool(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one of SPDK's own tools (``spdk_nvme_identify``, ``spdk_nvme_perf``, ...) with
    no hugepages, as an independent client; its output is returned, not checked."""
    return subprocess.run(
        [name, "--no-huge", "-s", "512", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
