"""What happens when SPDK threads exit: messages to them, replies from them, what they leave open.

Each scenario that used to abort, hang or stall runs in a fresh process (``run_py``)
and asserts on its exit status and on SPDK's log lines.
"""

from __future__ import annotations

from tests.conftest import run_py

#: SPDK's log lines when a thread exits holding something, or is forced out after 5 s.
_STALL_MARKS = ("got timeout", "still has channel", "still registered at thread exit")


def _assert_clean(proc: object) -> None:
    import subprocess

    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 0, proc.stderr
    for mark in _STALL_MARKS:
        assert mark not in proc.stderr, proc.stderr


def test_send_and_call_to_exited_thread_raise_and_change_nothing() -> None:
    proc = run_py(
        """
        import errno
        import spdk_io
        from spdk_io import SpdkThread, ThreadHandle
        from spdk_io.errors import SpdkError
        from spdk_io.errors import ThreadExitedError

        async def main() -> None:
            h = SpdkThread.spawn(ThreadHandle.current, name="gone-worker")
            target = await h          # the worker has exited and been destroyed
            ran = []
            for attempt in (lambda: target.send(lambda: ran.append(1)),
                            lambda: target.call(lambda: ran.append(2))):
                try:
                    attempt()
                except ThreadExitedError as exc:
                    assert isinstance(exc, SpdkError) and exc.errno == errno.ESHUTDOWN
                    assert "gone-worker" in str(exc), str(exc)
                else:
                    raise AssertionError("no error")
            await spdk_io.sleep(0.01)
            assert ran == []
            # the app thread still works
            assert await ThreadHandle.current().call(lambda: 7) == 7
            print("refused")

        spdk_io.run(main())
        """
    )
    _assert_clean(proc)
    assert "refused" in proc.stdout


def test_call_whose_target_exits_before_replying_fails_instead_of_hanging() -> None:
    proc = run_py(
        """
        import threading
        import spdk_io
        from spdk_io import SpdkThread, ThreadHandle
        from spdk_io.errors import ThreadExitedError

        async def main() -> None:
            box = []
            ready, leave = threading.Event(), threading.Event()

            async def server() -> None:
                box.append(ThreadHandle.current())
                ready.set()
                while not leave.is_set():
                    await spdk_io.sleep(0.001)
                # returns with a call still being served

            h = SpdkThread.spawn(server, name="leaver")
            while not ready.is_set():
                await spdk_io.sleep(0.001)

            async def forever() -> None:
                leave.set()
                await spdk_io.sleep(3600)

            try:
                await spdk_io.wait_for(box[0].call(forever), 20)
            except ThreadExitedError as exc:
                assert "leaver" in str(exc)
                print("caller told")
            await h

        spdk_io.run(main())
        """
    )
    _assert_clean(proc)
    assert "caller told" in proc.stdout


def test_reply_to_an_origin_that_exited_is_dropped() -> None:
    proc = run_py(
        """
        import spdk_io
        from spdk_io import SpdkThread, ThreadHandle

        async def main() -> None:
            app = ThreadHandle.current()
            done = []

            async def slow() -> int:
                await spdk_io.sleep(0.2)
                done.append(1)
                return 1

            async def asker() -> None:
                async def ask() -> None:
                    await app.call(slow)
                spdk_io.spawn(ask())          # never awaited: the worker leaves first
                await spdk_io.sleep(0.01)

            await SpdkThread.spawn(asker, name="asker")
            while not done:
                await spdk_io.sleep(0.01)
            await spdk_io.sleep(0.1)          # the reply to the exited worker is sent now
            print("dropped")

        spdk_io.run(main())
        """
    )
    _assert_clean(proc)
    assert "dropped" in proc.stdout


def test_join_awaited_by_a_thread_that_exited() -> None:
    proc = run_py(
        """
        import spdk_io
        from spdk_io import SpdkThread

        async def main() -> None:
            inner = []

            async def slow() -> int:
                await spdk_io.sleep(0.2)
                return 5

            async def parent() -> None:
                h = SpdkThread.spawn(slow, name="child")
                inner.append(h)

                async def waiter() -> None:
                    await h
                spdk_io.spawn(waiter())       # the parent exits before the child ends
                await spdk_io.sleep(0.01)

            await SpdkThread.spawn(parent, name="parent")
            assert await inner[0] == 5        # a second, live awaiter still gets it
            await spdk_io.sleep(0.05)
            print("joined")

        spdk_io.run(main())
        """
    )
    _assert_clean(proc)
    assert "joined" in proc.stdout


def test_spawned_thread_releases_descriptor_it_left_open() -> None:
    proc = run_py(
        """
        import time
        import spdk_io
        from spdk_io import SpdkThread
        from spdk_io import bdev_modules as bm
        from spdk_io.bdev import BdevDesc
        from spdk_io.dma import DmaBuf

        async def main() -> None:
            await bm.create_malloc("Left0", 64, 4096)

            async def worker() -> None:
                d = BdevDesc.open("Left0", write=True)   # never closed
                buf = DmaBuf.alloc(4096)
                await d.write(buf, 0)
                d.write(buf, 4096)                        # nor awaited

            t0 = time.monotonic()
            await SpdkThread.spawn(worker, name="leaky")
            print(f"joined in {time.monotonic() - t0:.2f}")
            await bm.delete_malloc("Left0")                # used to abort the process
            print("deleted")

        spdk_io.run(main())
        """
    )
    _assert_clean(proc)
    assert "deleted" in proc.stdout


def test_dropped_poller_on_spawned_thread_is_unregistered_at_exit() -> None:
    proc = run_py(
        """
        import gc
        import spdk_io
        from spdk_io import SpdkThread
        from spdk_io.thread import Poller

        count = []

        async def worker() -> None:
            Poller(lambda: count.append(1), name="dropped")        # reference dropped
            Poller(lambda: False, period_us=1000, name="dropped-timed")
            gc.collect()
            while len(count) < 10:
                await spdk_io.sleep(0)

        async def main() -> None:
            await SpdkThread.spawn(worker, name="poller-owner")
            n = len(count)
            await spdk_io.sleep(0.02)
            assert len(count) == n        # it stopped with its thread
            print("stopped")

        spdk_io.run(main())
        """
    )
    _assert_clean(proc)
    assert "stopped" in proc.stdout


def test_dropped_poller_on_app_thread_is_unregistered_at_teardown() -> None:
    proc = run_py(
        """
        import gc
        import spdk_io
        from spdk_io.thread import Poller

        async def main() -> None:
            count = []
            Poller(lambda: count.append(1), name="dropped")
            gc.collect()
            while len(count) < 10:           # keeps running: the SPDK thread holds it
                await spdk_io.sleep(0)

        spdk_io.run(main())
        print("clean")
        """
    )
    _assert_clean(proc)
    assert "clean" in proc.stdout


def test_call_arriving_while_target_releases_is_refused() -> None:
    proc = run_py(
        """
        import threading
        import spdk_io
        from spdk_io import SpdkThread, ThreadHandle
        from spdk_io.errors import ThreadExitedError
        from spdk_io.thread import current_thread, on_release

        releasing = threading.Event()
        box, ran = [], []

        async def slow_release() -> None:
            if current_thread().name == "slowexit":
                releasing.set()
                await spdk_io.sleep(0.3)   # the thread is on its way out meanwhile

        on_release(slow_release)

        def worker() -> None:
            box.append(ThreadHandle.current())

        async def main() -> None:
            h = SpdkThread.spawn(worker, name="slowexit")
            while not releasing.is_set():
                await spdk_io.sleep(0.001)
            try:
                await spdk_io.wait_for(box[0].call(lambda: ran.append(1)), 20)
            except ThreadExitedError as exc:
                assert "slowexit" in str(exc)
                print("refused while releasing")
            await h
            assert ran == []

        spdk_io.run(main())
        """
    )
    _assert_clean(proc)
    assert "refused while releasing" in proc.stdout


def test_thread_release_closes_leftovers_newest_first_children_with_parents() -> None:
    """What a spawned thread left open is closed when it returns, in the right order."""
    proc = run_py(
        """
        import spdk_io
        from spdk_io import bdev_modules as bm
        from spdk_io.bdev import BdevDesc
        from spdk_io.dma import DmaBuf
        from spdk_io.thread import Poller, SpdkThread, current_thread


        async def worker() -> list[str]:
            me = current_thread()
            d = BdevDesc.open("Res0", write=True)
            slot = d.slot(DmaBuf.alloc(4096))
            p = Poller(lambda: False, period_us=1000, name="late")
            kinds = [type(r).__name__ for r in me.resources()]
            await slot.write_blocks(0, 1)
            return kinds

        async def main() -> None:
            await bm.create_malloc("Res0", 64, 4096)
            kinds = await SpdkThread.spawn(worker, name="leaver")
            print("kinds", kinds)
            await bm.delete_malloc("Res0")   # would abort if the worker's descriptor were open
            print("deleted")

        spdk_io.run(main())
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "kinds ['BdevDesc', 'IoChannel', 'IoSlot', 'Poller']" in proc.stdout
    assert "deleted" in proc.stdout
    assert "still has channel" not in proc.stderr
