"""More than one core (spdk_io.cores): work placed on each core's isolated interpreter.

Every multi-core Env runs in a subprocess (the session's shared Env is single-core),
with mask 0x3 (this machine has 2 cores), on Python 3.13+.  The functions placed on
cores are in tests/cores_jobs.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from spdk_io.env import min_mem_size_mb
from tests.conftest import finish_within, run_py, start_py, wait_ready

needs_313 = pytest.mark.skipif(
    sys.version_info < (3, 13), reason="extra cores run isolated interpreters (Python 3.13+)"
)

MEM = min_mem_size_mb(2) + 64
PRELUDE = f"""
import spdk_io
from spdk_io import cores, loop
from spdk_io.bdev import Bdev
MEM = {MEM}
CONFIG = {{"subsystems": [{{"subsystem": "bdev", "config": [
    {{"method": "bdev_malloc_create",
      "params": {{"name": "Malloc0", "num_blocks": 256, "block_size": 4096}}}},
    {{"method": "bdev_malloc_create",
      "params": {{"name": "Malloc1", "num_blocks": 256, "block_size": 4096}}}}]}}]}}
async def awaited(aw):
    return await aw
def go(main):
    return spdk_io.run(main(), core_mask="0x3", mem_size_mb=MEM, config=CONFIG)
"""


def run_cores(body: str, timeout: float = 90) -> str:
    """Run ``PRELUDE`` + ``body`` in a fresh 3.13 process; its stdout (it must succeed)."""
    proc = run_py(PRELUDE + textwrap.dedent(body), timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    return proc.stdout


@needs_313
def test_each_core_runs_its_work_on_its_own_os_thread_pinned_to_it() -> None:
    out = run_cores(
        """
        import threading
        async def main():
            here = await cores.run_on(0, "tests.cores_jobs:where")
            there = await cores.run_on(1, "tests.cores_jobs:where")
            print("cores", cores.running(), cores.main_core(), cores.current())
            print("main", here[0], here[2], here[1] == threading.get_ident())
            print("other", there[0], there[2], there[1] != threading.get_ident(),
                  there[3] != here[3])
        go(main)
        """
    )
    assert "cores (0, 1) 0 0" in out
    assert "main 0 [0] True" in out
    assert "other 1 [1] True True" in out


@needs_313
def test_io_from_two_cores_to_one_bdev_and_data_crosses_cores() -> None:
    out = run_cores(
        """
        async def main():
            both = await loop.gather(
                cores.run_on(0, "tests.cores_jobs:io", "Malloc0", 0, 200),
                cores.run_on(1, "tests.cores_jobs:io", "Malloc0", 32, 200),
            )
            print("both", sorted(both))
            a, b = bytes(range(256)) * 16, bytes(reversed(range(256))) * 16
            J = "tests.cores_jobs:"
            print("wrote on", await cores.run_on(1, J + "write", "Malloc0", 4096 * 100, a))
            print("1->0", await cores.run_on(0, J + "read", "Malloc0", 4096 * 100, 4096) == a)
            print("wrote on", await cores.run_on(0, J + "write", "Malloc0", 4096 * 101, b))
            print("0->1", await cores.run_on(1, J + "read", "Malloc0", 4096 * 101, 4096) == b)
        go(main)
        """
    )
    assert "both [(0, 200), (1, 200)]" in out
    assert "wrote on 1\n1->0 True\nwrote on 0\n0->1 True" in out


@needs_313
def test_io_from_two_cores_to_two_bdevs() -> None:
    out = run_cores(
        """
        async def main():
            done = await loop.gather(
                cores.run_on(0, "tests.cores_jobs:io", "Malloc0", 0, 300),
                cores.run_on(1, "tests.cores_jobs:io", "Malloc1", 0, 300),
            )
            print("done", done)
            # Each bdev holds the pattern of the core that wrote it (last round, block 11).
            for name in ("Malloc0", "Malloc1"):
                data = await cores.run_on(0, "tests.cores_jobs:read", name, 4096 * 11, 4096)
                print(name, data[0], data[1])
        go(main)
        """
    )
    assert "done [(0, 300), (1, 300)]" in out
    # round 299 -> block 299 % 16 = 11, pattern bytes (core + 1, 299 & 0xff)
    assert f"Malloc0 1 {299 & 0xFF}" in out
    assert f"Malloc1 2 {299 & 0xFF}" in out


@needs_313
def test_errors_reach_the_caller_clearly() -> None:
    out = run_cores(
        """
        def show(what, fn):
            try:
                fn()
            except Exception as exc:
                print(what, type(exc).__name__, str(exc).splitlines()[0])

        async def expect(what, aw):
            try:
                await aw
            except Exception as exc:
                notes = " | ".join(getattr(exc, "__notes__", []))
                extra = getattr(exc, "remote_traceback", "")
                print(what, type(exc).__name__, str(exc).splitlines()[0],
                      "NOTE-CORE1" if "on core 1" in notes else "",
                      "REMOTE-TB" if "fail_unpicklable" in extra else "")

        async def main():
            await expect("raise", cores.run_on(1, "tests.cores_jobs:fail", "boom"))
            await expect("raise0", cores.run_on(0, "tests.cores_jobs:fail", "boom0"))
            J = "tests.cores_jobs:"
            await expect("unpicklable-exc", cores.run_on(1, J + "fail_unpicklable", "odd"))
            await expect("unpicklable-result", cores.run_on(1, J + "unpicklable_result"))
            await expect("no-module", cores.run_on(1, "tests.no_such_module:f"))
            show("bad-target", lambda: cores.run_on(1, "not a target"))
            show("local", lambda: cores.run_on(1, lambda: 1))
            from tests.cores_jobs import Holder
            show("method", lambda: cores.run_on(1, Holder(7).get))
            show("unknown-core", lambda: cores.run_on(5, "tests.cores_jobs:where"))
            show("bad-args", lambda: cores.run_on(1, "tests.cores_jobs:where", lambda: 1))
            print("still works", await cores.run_on(1, "tests.cores_jobs:ping"))
        go(main)
        """
    )
    assert "raise ValueError boom NOTE-CORE1" in out
    assert "raise0 ValueError boom0" in out
    assert "unpicklable-exc CoreError tests.cores_jobs:fail_unpicklable on core 1 failed" in out
    assert "REMOTE-TB" in out
    assert (
        "unpicklable-result CoreError tests.cores_jobs:unpicklable_result on core 1 returned" in out
    )
    assert "no-module ModuleNotFoundError No module named 'tests.no_such_module'" in out
    assert "bad-target ValueError target 'not a target' is not of the form" in out
    assert "local TypeError" in out
    assert "method TypeError target Holder.get is a bound method" in out
    assert "unknown-core ValueError core 5 is not one of the cores running, [0, 1]" in out
    assert "bad-args TypeError the arguments for tests.cores_jobs:where cannot be pickled" in out
    assert "still works pong" in out


@needs_313
def test_what_crosses_interpreters_unsafely_is_refused() -> None:
    out = run_cores(
        """
        from spdk_io import stats
        from spdk_io.thread import ThreadHandle, current_thread
        async def main():
            J = "tests.cores_jobs:refused_here"
            sock = "/tmp/spdk_io_never.sock"
            for line in await cores.run_on(1, J, current_thread().id, sock, MEM):
                print("worker:", line.splitlines()[0][:90])
            _, _, _, tid = await cores.run_on(1, "tests.cores_jobs:where")
            try:
                ThreadHandle(tid, "core1").send(print)
            except Exception as exc:
                print("main send:", type(exc).__name__)
            try:
                await stats.thread_stats()
            except Exception as exc:
                print("main stats:", type(exc).__name__)
        go(main)
        """
    )
    lines = [line for line in out.splitlines() if line.startswith("worker:")]
    assert lines[0].startswith("worker: MainInterpreterOnlyError: SpdkThread.spawn"), out
    assert lines[1].startswith("worker: MainInterpreterOnlyError: spdk_io.rpc.call"), out
    assert lines[2].startswith("worker: WrongThreadError: SPDK thread app_thread"), out
    for line, what in zip(
        lines[3:],
        [
            "nvmf.Target.create",
            "spdk_io.rpc.serve",
            "SpdkThread.create",
            "Env.start",
            "App.run",
            "nvme.Controller.connect",
            "spdk_io.trace.start",
            "spdk_io.trace.stop",
        ],
        strict=False,
    ):
        assert line.startswith(f"worker: MainInterpreterOnlyError: {what} "), out
    assert lines[11].startswith("worker: CoreError: run_on core 0 from the worker of core 1"), out
    assert len(lines) == 12, out
    assert "main send: WrongThreadError" in out
    assert "main stats: CoreError" in out


@needs_313
def test_cancelling_the_caller_cancels_the_remote_task(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    out = run_cores(
        f"""
        import os
        async def main():
            task = spdk_io.spawn(_wait())
            await loop.sleep(0.3)
            task.cancel()
            try:
                await task
            except spdk_io.Cancelled:
                print("caller cancelled")
            while not os.path.exists({str(marker)!r}):  # (the test's time limit bounds it)
                await loop.sleep(0.01)
            print("marker", open({str(marker)!r}).read())
        async def _wait():
            await cores.run_on(1, "tests.cores_jobs:forever", "Malloc0", {str(marker)!r})
        go(main)
        """
    )
    assert "caller cancelled" in out
    assert "marker cancelled on core 1" in out


@needs_313
def test_teardown_with_work_running_on_every_core(tmp_path: Path) -> None:
    markers = [tmp_path / "m0", tmp_path / "m1"]
    out = run_cores(
        f"""
        async def main():
            for core, marker in ((0, {str(markers[0])!r}), (1, {str(markers[1])!r})):
                job = cores.run_on(core, "tests.cores_jobs:forever", "Malloc0", marker)
                spdk_io.spawn(awaited(job))
            await loop.sleep(0.3)
            return "main returned"
        print(go(main))
        print("after", Bdev.__name__)
        """
    )
    assert "main returned" in out
    # Each core's task was cancelled by the teardown, on its own core.
    assert markers[0].read_text() == "cancelled on core 0"
    assert markers[1].read_text() == "cancelled on core 1"


@needs_313
def test_ctrl_c_stops_every_core(tmp_path: Path) -> None:
    name = f"cores_sigint_{os.getpid()}"
    proc = start_py(
        PRELUDE.replace('core_mask="0x3"', f'core_mask="0x3", name={name!r}')
        + f"""
async def main():
    for core, marker in ((0, {str(tmp_path / "m0")!r}), (1, {str(tmp_path / "m1")!r})):
        spdk_io.spawn(awaited(cores.run_on(core, "tests.cores_jobs:forever", "Malloc0", marker)))
    await cores.run_on(1, "tests.cores_jobs:ping")
    await loop.sleep(0.2)
    print("READY", flush=True)
    await loop.sleep(60)
go(main)
"""
    )
    wait_ready(proc)
    proc.send_signal(signal.SIGINT)
    out, err, _ = finish_within(proc, 30)
    assert proc.returncode == -signal.SIGINT, (out, err[-3000:])
    assert "KeyboardInterrupt" in err
    assert (tmp_path / "m0").read_text() == "cancelled on core 0"
    assert (tmp_path / "m1").read_text() == "cancelled on core 1"
    # SPDK names its shared memory after the app name, or with a .pid<PID> suffix.
    ours = re.compile(rf"{name}|\.pid{proc.pid}$")
    leftovers = [f for f in os.listdir("/dev/shm") if ours.search(f)]
    assert leftovers == []


@needs_313
def test_a_crashed_core_fails_its_calls_with_core_error(tmp_path: Path) -> None:
    out = run_cores(
        f"""
        async def main():
            job = cores.run_on(1, "tests.cores_jobs:forever", "Malloc0", {str(tmp_path / "m")!r})
            waiting = spdk_io.spawn(awaited(job))
            await loop.sleep(0.2)
            print(await cores.run_on(1, "tests.cores_jobs:crash_core"))
            try:
                await waiting
            except spdk_io.CoreError as exc:
                print("pending:", exc.core, "poller broke" in str(exc))
            try:
                cores.run_on(1, "tests.cores_jobs:ping")
            except spdk_io.CoreError as exc:
                print("later:", exc.core, str(exc)[:30])
            print("core 0 still works:", await cores.run_on(0, "tests.cores_jobs:ping"))
        go(main)
        """
    )
    assert "armed" in out
    assert "pending: 1 True" in out
    assert "later: 1 core 1 is not running" in out
    assert "core 0 still works: pong" in out


@needs_313
def test_results_larger_than_a_pipe_cross_whole() -> None:
    out = run_cores(
        """
        async def main():
            data = await cores.run_on(1, "tests.cores_jobs:big", 5_000_000)
            print("big", len(data), data == bytes(i & 0xFF for i in range(5_000_000)))
        go(main)
        """
    )
    assert "big 5000000 True" in out


def test_run_on_under_app_is_refused() -> None:
    proc = run_py(
        """
        import spdk_io
        from spdk_io import cores
        async def main():
            try:
                cores.run_on(0, "tests.cores_jobs:ping")
            except spdk_io.CoreError as exc:
                print("refused:", exc)
        spdk_io.App(mem_size_mb=MEM).run(main())
        """.replace("MEM", str(MEM))
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: run_on needs spdk_io.run or Env" in proc.stdout


@needs_313
def test_spdk_logs_to_stderr_while_cores_run_and_to_logging_after() -> None:
    proc = run_py(
        PRELUDE
        + textwrap.dedent(
            """
            import logging
            seen = []
            class Keep(logging.Handler):
                def emit(self, record):
                    seen.append(record.getMessage())
            logging.getLogger("spdk").addHandler(Keep())
            async def main():
                await cores.run_on(1, "tests.cores_jobs:log_here", "from-core-1")
                await cores.run_on(0, "tests.cores_jobs:log_here", "from-core-0")
            go(main)
            async def after():
                await cores.run_on(0, "tests.cores_jobs:log_here", "after-cores")
            spdk_io.run(after(), mem_size_mb=MEM)
            print("python logging saw", seen)
            """
        ).replace("MEM", str(MEM))
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "python logging saw ['after-cores']" in proc.stdout
    assert "from-core-1" in proc.stderr and "from-core-0" in proc.stderr


@needs_313
def test_perf_runs_one_job_per_core_and_adds_them_up() -> None:
    proc = run_py(
        args=["-m", "spdk_io", "perf", "-m", "0x3", "--bdev", "null", "-q", "16", "-t", "1",
              "--json"],
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.splitlines()[-1])
    per_core, total = doc["cores"], doc["total"]
    assert sorted(per_core) == ["0", "1"]
    assert all(r["ios"] > 0 and r["io_errors"] == 0 for r in per_core.values())
    assert total["ios"] == sum(r["ios"] for r in per_core.values())
    assert total["max_lat_us"] == max(r["max_lat_us"] for r in per_core.values())


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="the error of Python before 3.13")
def test_perf_with_more_than_one_core_before_python_313_is_a_clear_error() -> None:
    proc = run_py(args=["-m", "spdk_io", "perf", "-m", "0x3", "--bdev", "null", "-t", "1"])
    assert proc.returncode == 2
    assert "needs Python 3.13+" in proc.stderr


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="the error of Python before 3.13")
def test_more_than_one_core_before_python_313_is_a_clear_error() -> None:
    import spdk_io
    from spdk_io import env
    from spdk_io.errors import CoreError

    was_up = env.env_initialised_once()
    with pytest.raises(CoreError, match=r"needs Python 3\.13\+"):
        spdk_io.Env(core_mask="0x3", mem_size_mb=MEM)
    assert env.env_initialised_once() == was_up  # SPDK untouched


@needs_313
def test_a_job_cancelling_itself_is_answered_on_every_core() -> None:
    out = run_cores(
        """
        async def main():
            for core in (0, 1):
                try:
                    print("result", await cores.run_on(core, "tests.cores_jobs:self_cancel"))
                except spdk_io.CoreError as exc:
                    print("core", core, exc.core, str(exc).splitlines()[0])
        go(main)
        """
    )
    for core in (0, 1):
        assert (
            f"core {core} {core} tests.cores_jobs:self_cancel was cancelled on core {core}" in out
        ), out


@needs_313
def test_a_large_reply_still_crossing_at_stop_does_not_fail_the_stop() -> None:
    out = run_cores(
        """
        async def fetch():
            await cores.run_on(1, "tests.cores_jobs:zeros", 300_000_000)
        async def main():
            loop.spawn(fetch())
            await loop.sleep(0.5)
        go(main)
        async def again():
            return await cores.run_on(1, "tests.cores_jobs:ping")
        print("stopped cleanly, then", go(again))
        """,
        timeout=120,
    )
    assert "stopped cleanly, then pong" in out


@needs_313
def test_a_job_leaving_a_python_thread_running_does_not_make_spdk_unusable() -> None:
    proc = run_py(
        PRELUDE
        + textwrap.dedent(
            """
            import warnings
            async def main():
                return await cores.run_on(1, "tests.cores_jobs:start_thread")
            cores.STOP_TIMEOUT = 3.0  # read when the stop starts
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                print("job", go(main))
            print("warned", [str(w.message)[:60] for w in caught])
            async def after():
                return await cores.run_on(0, "tests.cores_jobs:ping")
            print("SPDK after:", spdk_io.run(after(), mem_size_mb=MEM), flush=True)
            import os
            os._exit(0)  # the leaked interpreter would hold up Python's exit (see README)
            """
        ).replace("MEM", str(MEM)),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "job started" in proc.stdout
    assert "warned ['the interpreters of cores [1] did not end within" in proc.stdout
    assert "SPDK after: pong" in proc.stdout


@needs_313
def test_a_core_failing_to_start_leaks_no_spdk_thread_and_gives_the_log_back() -> None:
    proc = run_py(
        PRELUDE
        + textwrap.dedent(
            """
            import logging
            from spdk_io import stats
            seen = []
            class Keep(logging.Handler):
                def emit(self, record):
                    seen.append(record.getMessage())
            logging.getLogger("spdk").addHandler(Keep())
            async def nothing():
                pass
            real_core, real_create = cores._Core, cores.create_for_core
            def boom(*args):  # as os.pipe or the like failing at that point
                raise OSError(24, "Too many open files (injected)")
            for where in ("after the SPDK thread", "creating the SPDK thread"):
                if where == "after the SPDK thread":
                    cores._Core = boom
                else:
                    cores.create_for_core = boom
                try:
                    go(nothing)
                except OSError as exc:
                    print("failed", where, exc.errno)
                cores._Core, cores.create_for_core = real_core, real_create
            async def after():
                names = [t.name for t in await loop.wait_for(stats.thread_stats(), 30)]
                await cores.run_on(0, "tests.cores_jobs:log_here", "after-failed-start")
                return names
            print("threads after:", spdk_io.run(after(), mem_size_mb=MEM))
            print("python logging saw", seen)
            """
        ).replace("MEM", str(MEM)),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "failed after the SPDK thread 24" in proc.stdout
    assert "failed creating the SPDK thread 24" in proc.stdout
    threads = re.search(r"threads after: (\[.*\])", proc.stdout)
    assert threads is not None, proc.stdout
    assert "core1" not in threads.group(1), proc.stdout
    assert "python logging saw ['after-failed-start']" in proc.stdout


def test_attaching_an_spdk_thread_needs_the_id_of_a_live_one() -> None:
    proc = run_py(
        """
        import threading
        import spdk_io
        from spdk_io.thread import SpdkThread, current_thread
        async def main():
            me = current_thread().id  # the app thread: polled by this OS thread
            unknown = me + 1000
            def other():  # an OS thread polling no SPDK thread yet
                for tid in (unknown, 0, me):
                    try:
                        SpdkThread.attach(tid, "x")
                        print("attached", tid)
                    except (ValueError, RuntimeError) as exc:
                        print("refused", tid, type(exc).__name__, exc)
            t = threading.Thread(target=other)
            t.start()
            t.join()
        spdk_io.run(main(), mem_size_mb=MEM)
        """.replace("MEM", str(min_mem_size_mb(1) + 64))
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"refused \d+ ValueError no live SPDK thread has id \d+", proc.stdout), (
        proc.stdout
    )
    assert "refused 0 ValueError thread_id" in proc.stdout, proc.stdout
    # The app thread is polled already: a second poller is refused (not taken over).
    assert re.search(r"refused \d+ RuntimeError this interpreter already polls", proc.stdout), (
        proc.stdout
    )
    assert "attached" not in proc.stdout, proc.stdout
