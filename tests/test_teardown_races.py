"""Teardown while something is still running: spawned threads, a raising poller, I/O a
removed device still holds, Ctrl-C during start-up.  Each case must end with a clean
teardown and a process that can run SPDK again (each test in a fresh process)."""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import finish_within, ran_again, run_py, start_py, then_run_again, wait_ready


def test_spawned_thread_still_running_at_teardown_is_stopped_first() -> None:
    proc = run_py(
        then_run_again(
            """
        import spdk_io
        from spdk_io import SpdkThread

        async def late() -> str:
            await spdk_io.sleep(30)
            return "done"

        async def main() -> None:
            global h
            h = SpdkThread.spawn(late, name="late")
            await spdk_io.sleep(0.05)

        spdk_io.run(main())
        print("worker finished:", h.is_finished(), flush=True)
        try:
            h.join(5)
        except spdk_io.Cancelled:
            print("worker was cancelled", flush=True)
        """
        ),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "worker finished: True" in proc.stdout
    assert "worker was cancelled" in proc.stdout
    assert ran_again(proc.stdout)


def test_spawned_thread_doing_io_at_teardown_releases_before_subsystems_finish() -> None:
    proc = run_py(
        then_run_again(
            """
        import spdk_io
        from spdk_io import SpdkThread, bdev_modules as bm
        from spdk_io.bdev import BdevDesc
        from spdk_io.dma import DmaBuf

        async def reader() -> None:
            with BdevDesc.open("Late0") as d, DmaBuf.alloc(4096) as buf:
                while True:
                    await d.read_blocks(buf, 0, 1)

        async def main() -> None:
            await bm.create_malloc("Late0", 64, 4096)
            SpdkThread.spawn(reader, name="reader")
            await spdk_io.sleep(0.1)

        spdk_io.run(main())
        print("first run down", flush=True)
        """
        ),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "first run down" in proc.stdout and ran_again(proc.stdout)


def test_a_poller_that_keeps_raising_is_stopped_and_teardown_completes() -> None:
    proc = run_py(
        then_run_again(
            """
        import spdk_io
        from spdk_io import Poller

        async def main() -> None:
            Poller(lambda: 1 / 0)
            await spdk_io.sleep(0.05)

        try:
            spdk_io.run(main())
        except spdk_io.CallbackError as exc:
            print("first run:", exc, flush=True)
        """
        )
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "first run: poller raised ZeroDivisionError" in proc.stdout
    assert ran_again(proc.stdout)


def test_io_a_removed_device_holds_is_reset_at_teardown() -> None:
    proc = run_py(
        then_run_again(
            """
        import time
        import spdk_io
        from spdk_io import bdev_modules as bm
        from spdk_io.bdev import BdevDesc
        from spdk_io.dma import DmaBuf

        async def main() -> None:
            await bm.create_malloc("Held0", 64, 512)
            await bm.create_error("Held0")
            d = BdevDesc.open("EE_Held0", write=True)
            await bm.inject_error("EE_Held0", "read", "pending", 1)
            d.read_blocks(DmaBuf.alloc(512), 0, 1)  # held by the device
            deleting = spdk_io.spawn(bm.delete_error("EE_Held0"))  # hot-remove
            await spdk_io.sleep(0.05)
            deleting.cancel()

        t0 = time.monotonic()
        spdk_io.run(main())
        print(f"first run down in {time.monotonic() - t0:.0f} s", flush=True)
        """
        ),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ran_again(proc.stdout)
    took = int(proc.stdout.split("first run down in ")[1].split()[0])
    assert took < 8, proc.stdout  # a reset, not SPDK's 10 s timeouts


@pytest.mark.parametrize("delay", [0.05, 0.12, 0.2, 0.26])
def test_ctrl_c_during_start_up_leaves_the_process_able_to_start_again(delay: float) -> None:
    code = then_run_again(
        f"""
        import os, signal, threading
        import spdk_io
        from spdk_io import bdev_modules, rpc, bdev, dma, env, thread  # imported before timing

        threading.Timer({delay}, os.kill, (os.getpid(), signal.SIGINT)).start()

        async def main() -> None:
            await spdk_io.sleep(5)

        try:
            spdk_io.run(main())
        except KeyboardInterrupt:
            print("first run: KeyboardInterrupt", flush=True)
        """
    )
    proc = run_py(code, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "first run: KeyboardInterrupt" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert ran_again(proc.stdout)


def test_join_inside_a_running_loop_is_refused_at_once() -> None:
    proc = run_py(
        """
        import spdk_io
        from spdk_io import SpdkThread, ThreadHandle

        async def worker(app: ThreadHandle) -> str:
            return await app.call(lambda: "from app")

        async def main() -> str:
            h = SpdkThread.spawn(worker, ThreadHandle.current(), name="w")
            try:
                h.join()
            except RuntimeError as exc:
                print("refused:", exc, flush=True)
            return await h

        print(spdk_io.run(main()), flush=True)
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused:" in proc.stdout and "await" in proc.stdout
    assert "from app" in proc.stdout


def test_second_ctrl_c_while_a_task_blocks_interrupts_at_once() -> None:
    proc = start_py(
        """
        import time
        import spdk_io

        async def main() -> None:
            print("READY", flush=True)
            while True:
                time.sleep(0.05)  # never awaits: the loop cannot act on the first Ctrl-C

        try:
            spdk_io.run(main())
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
        """
    )
    wait_ready(proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err, _ = finish_within(proc, 15)
    assert proc.returncode == 0, err[-3000:]
    assert "KeyboardInterrupt" in out
