"""A failed start or teardown leaves the process able to start SPDK again (issue #7).

Where SPDK truly cannot be restarted, every later start raises at once and says
why.  Each test runs in a fresh process: they bring SPDK up and down.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ran_again, run_py, then_run_again


def test_stop_from_another_os_thread_changes_nothing() -> None:
    proc = run_py(
        then_run_again(
            """
        import threading
        import spdk_io
        from spdk_io.env import Env, is_up
        from spdk_io.errors import WrongThreadError

        env = Env(name="wrong_thread").start()

        def other() -> None:
            try:
                env.stop()
            except WrongThreadError as exc:
                print("refused:", exc, flush=True)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        print("still up:", is_up(), flush=True)

        async def use() -> str:
            return (await spdk_io.rpc.call("spdk_get_version"))["version"]

        print("still usable:", env.block_on(use()), flush=True)
        env.stop()
        print("down:", not is_up(), flush=True)
        """
        )
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused: " in proc.stdout and "another OS thread" in proc.stdout
    assert "still up: True" in proc.stdout
    assert "still usable: SPDK v26.05" in proc.stdout
    assert "down: True" in proc.stdout
    assert ran_again(proc.stdout), proc.stdout + proc.stderr


def test_io_left_pending_on_an_error_bdev_is_aborted_at_teardown() -> None:
    proc = run_py(
        then_run_again(
            """
        import time
        import spdk_io
        from spdk_io import bdev_modules as bm
        from spdk_io.bdev import BdevDesc
        from spdk_io.dma import DmaBuf

        async def main() -> None:
            await bm.create_malloc("Pend0", 64, 4096)
            await bm.create_error("Pend0")
            await bm.inject_error("EE_Pend0", "write", "pending", 1)
            desc = BdevDesc.open("EE_Pend0", write=True)
            buf = DmaBuf.alloc(4096)
            op = desc.write(buf, 0)  # never completes by itself
            await spdk_io.sleep(0.01)
            print("pending:", desc.inflight, not op.done(), flush=True)

        t0 = time.monotonic()
        spdk_io.run(main())
        print("first run done", "fast" if time.monotonic() - t0 < 9 else "slow", flush=True)
        """
        ),
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pending: 1 True" in proc.stdout
    assert "first run done fast" in proc.stdout
    assert "ETIMEDOUT" not in proc.stdout + proc.stderr
    assert ran_again(proc.stdout), proc.stdout + proc.stderr


def test_config_whose_runtime_method_fails_twice() -> None:
    proc = run_py(
        then_run_again(
            """
        import spdk_io
        from spdk_io.errors import SpdkError

        config = {"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {"name": "X", "num_blocks": -5}}]}]}

        async def main() -> None:
            pass

        for i in range(2):
            try:
                spdk_io.run(main(), config=config)
            except SpdkError as exc:
                print("failed:", exc.op, flush=True)
        """
        ),
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("failed: spdk_subsystem_load_config (runtime methods)") == 2
    assert ran_again(proc.stdout), proc.stdout + proc.stderr


def test_startup_method_runs_again_after_a_previous_run() -> None:
    # A startup-only method must be applied by the second run too (the RPC
    # state must be back at STARTUP when the next run loads its config).
    proc = run_py(
        """
        import spdk_io

        async def main() -> int:
            info = await spdk_io.rpc.call("framework_get_config", {"name": "bdev"})
            return [m for m in info if m["method"] == "bdev_set_options"][0]["params"][
                "bdev_io_pool_size"]

        for size in (4095, 8191):
            config = {"subsystems": [{"subsystem": "bdev", "config": [
                {"method": "bdev_set_options", "params": {"bdev_io_pool_size": size}}]}]}
            print("pool", spdk_io.run(main(), config=config), flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "pool 4095" in proc.stdout and "pool 8191" in proc.stdout, proc.stdout


def test_unknown_config_method_is_named_and_process_restarts() -> None:
    proc = run_py(
        then_run_again(
            """
        import spdk_io
        from spdk_io.errors import SpdkError

        config = {"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_no_such_method", "params": {"name": "X"}}]}]}

        async def main() -> None:
            pass

        try:
            spdk_io.run(main(), config=config)
        except SpdkError as exc:
            print("error:", exc, flush=True)
        """
        )
    )
    assert proc.returncode == 0, proc.stderr
    assert "error: " in proc.stdout
    line = proc.stdout.split("error: ", 1)[1].splitlines()[0]
    assert "bdev_no_such_method" in line and "ENOENT" in line
    assert ran_again(proc.stdout), proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("option", "field"),
    [
        ("mem_size_mb=16", "mem_size_mb"),
        ("mem_size_mb=64", "mem_size_mb"),
        ("main_core=5", "main_core"),
        ("core_mask='0x1', main_core=1", "main_core"),
    ],
)
def test_bad_option_is_refused_before_spdk_and_process_restarts(option: str, field: str) -> None:
    proc = run_py(
        then_run_again(
            f"""
        import spdk_io

        async def main() -> None:
            pass

        try:
            spdk_io.run(main(), no_huge=True, {option})
        except ValueError as exc:
            print("refused:", exc, flush=True)
        """
        ),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"refused: {field}" in proc.stdout, proc.stdout
    assert "EAL" not in proc.stderr  # refused before DPDK was touched
    assert ran_again(proc.stdout), proc.stdout + proc.stderr


def _has_hugepages() -> bool:
    root = Path("/sys/kernel/mm/hugepages")
    try:
        return any(int((d / "free_hugepages").read_text()) > 0 for d in root.iterdir())
    except OSError:
        return False


@pytest.mark.skipif(_has_hugepages(), reason="this machine has hugepages")
def test_hugepages_requested_without_any_is_refused_and_process_restarts() -> None:
    proc = run_py(
        then_run_again(
            """
        import spdk_io

        async def main() -> None:
            pass

        try:
            spdk_io.run(main(), no_huge=False)
        except ValueError as exc:
            print("refused:", exc, flush=True)
        """
        )
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused: no_huge=False" in proc.stdout, proc.stdout
    assert ran_again(proc.stdout), proc.stdout + proc.stderr


def test_first_subsystem_init_failure_makes_later_starts_fail_at_once() -> None:
    # SPDK never clears its "init interrupted" flag once the first spdk_subsystem_init
    # of a process failed: a later start would wait forever.  It must refuse at once.
    proc = run_py(
        """
        import time
        import spdk_io
        from spdk_io.errors import EnvUnusableError
        from spdk_io.errors import SpdkError

        bad = {"subsystems": [{"subsystem": "iobuf", "config": [
            {"method": "iobuf_set_options", "params": {"small_pool_count": 4000000}}]}]}

        async def main() -> None:
            pass

        try:
            spdk_io.run(main(), config=bad)
        except SpdkError as exc:
            print("first:", exc.op, flush=True)
        for i in range(2):
            t0 = time.monotonic()
            try:
                spdk_io.run(main())
            except EnvUnusableError as exc:
                print("refused:", exc, time.monotonic() - t0 < 1, flush=True)
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "first: spdk_subsystem_init" in proc.stdout
    assert proc.stdout.count("refused: ") == 2, proc.stdout
    assert "spdk_subsystem_init" in proc.stdout.split("refused: ")[1]
    assert proc.stdout.count(" True\n") == 2


def test_subsystem_init_failure_after_a_good_run_leaves_process_restartable() -> None:
    # iobuf options set by a config stay set in the process (SPDK keeps them), so
    # the run after the failure sets them back.
    proc = run_py(
        """
        import spdk_io
        from spdk_io.errors import SpdkError

        def iobuf(small: int) -> dict:
            return {"subsystems": [{"subsystem": "iobuf", "config": [
                {"method": "iobuf_set_options", "params": {"small_pool_count": small}}]}]}

        async def version() -> str:
            return (await spdk_io.rpc.call("spdk_get_version"))["version"]

        print("good:", spdk_io.run(version()), flush=True)
        try:
            spdk_io.run(version(), config=iobuf(4000000))
        except SpdkError as exc:
            print("failed:", exc.op, flush=True)
        print("good again:", spdk_io.run(version(), config=iobuf(8192)), flush=True)
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "failed: spdk_subsystem_init" in proc.stdout
    assert "good again: SPDK v26.05" in proc.stdout, proc.stdout + proc.stderr


def test_env_object_can_be_started_again_and_stop_is_idempotent() -> None:
    proc = run_py(
        then_run_again(
            """
        import spdk_io
        from spdk_io.env import Env

        async def version() -> str:
            return (await spdk_io.rpc.call("spdk_get_version"))["version"]

        env = Env(name="twice")
        for i in range(2):
            with env:
                print(i, env.block_on(version()), flush=True)
            env.stop()
            env.stop()
        """
        )
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 SPDK v26.05" in proc.stdout and "1 SPDK v26.05" in proc.stdout
    assert ran_again(proc.stdout), proc.stdout + proc.stderr


def test_second_env_while_one_is_up_is_refused_and_changes_nothing() -> None:
    proc = run_py(
        then_run_again(
            """
        import spdk_io
        from spdk_io.env import Env

        async def version() -> str:
            return (await spdk_io.rpc.call("spdk_get_version"))["version"]

        with Env(name="first") as first:
            try:
                Env(name="second").start()
            except RuntimeError as exc:
                print("refused:", exc, flush=True)
            try:
                spdk_io.run(version())
            except RuntimeError as exc:
                print("run refused:", exc, flush=True)
            print("first still works:", first.block_on(version()), flush=True)
        """
        )
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused: an spdk_io Env is already running" in proc.stdout
    assert "run refused: an spdk_io Env is already running" in proc.stdout
    assert "first still works: SPDK v26.05" in proc.stdout
    assert ran_again(proc.stdout), proc.stdout + proc.stderr


def test_teardown_that_cannot_finish_makes_later_starts_fail_at_once() -> None:
    # I/O that not even a reset completes in time: teardown gives up, leaks what is
    # left rather than freeing it under SPDK, and later starts say why they refuse.
    proc = run_py(
        """
        import time
        import spdk_io
        from spdk_io import bdev_modules as bm
        from spdk_io.bdev import BdevDesc
        from spdk_io.dma import DmaBuf
        from spdk_io.errors import EnvUnusableError
        from spdk_io.errors import SpdkError

        spdk_io.thread.RELEASE_TIMEOUT = 0.05  # shorter than _close_all's grace period
        spdk_io.env.TEARDOWN_TIMEOUT = 0.05

        async def main() -> None:
            await bm.create_malloc("Stuck0", 64, 4096)
            await bm.create_error("Stuck0")
            await bm.inject_error("EE_Stuck0", "write", "pending", 1)
            desc = BdevDesc.open("EE_Stuck0", write=True)
            desc.write(DmaBuf.alloc(4096), 0)

        try:
            spdk_io.run(main())
        except SpdkError as exc:
            print("teardown failed:", exc.op, flush=True)
        t0 = time.monotonic()
        try:
            spdk_io.run(main())
        except EnvUnusableError as exc:
            print("refused:", exc, time.monotonic() - t0 < 1, flush=True)
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "teardown failed: spdk_subsystem_fini" in proc.stdout, proc.stdout + proc.stderr
    assert "refused: SPDK cannot be started again" in proc.stdout
    assert "spdk_subsystem_fini" in proc.stdout.split("refused: ")[1]
    assert " True\n" in proc.stdout
