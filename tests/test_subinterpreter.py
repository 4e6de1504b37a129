"""spdk_io in a Python 3.13+ isolated subinterpreter (its own GIL; ctypes works there).

Every interpreter imports its own spdk_io: no module keeps process-global Python
state, so a subinterpreter imports everything, loads SPDK's libraries and runs a loop
of its own while the main interpreter holds its own copies.
"""

from __future__ import annotations

import sys

import pytest

from tests.conftest import run_py

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 13), reason="isolated subinterpreters run ctypes from Python 3.13"
)


def test_import_and_loop_in_isolated_subinterpreters_on_two_threads() -> None:
    proc = run_py(
        '''
        import threading
        import _interpreters
        import spdk_io.loop  # the main interpreter's own copy

        CODE = """
        import heapq, sys, time
        import spdk_io, spdk_io.bdev, spdk_io.env, spdk_io.perf, spdk_io.raw, spdk_io.rpc
        from spdk_io.loop import Loop, gather, sleep

        timers = []
        def call_later(seconds, fn):
            heapq.heappush(timers, (time.monotonic() + seconds, id(fn), fn))
            return lambda: None
        def poll():
            fired = 0
            while timers and timers[0][0] <= time.monotonic():
                heapq.heappop(timers)[2]()
                fired += 1
            return fired

        async def main():
            async def one(i):
                await sleep(0.001 * i)
                return i
            return await gather(*(one(i) for i in range(20)))

        assert Loop(poll, call_later=call_later).run_until_complete(main()) == list(range(20))
        assert spdk_io.raw.GENERATED_FROM_SPDK
        """

        errors = []

        def worker():
            iid = _interpreters.create("isolated")
            try:
                errors.append(_interpreters.exec(iid, CODE))  # an error snapshot, or None
            finally:
                _interpreters.destroy(iid)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("errors:", errors)
        print("main's loop module untouched:", spdk_io.loop.current_loop.__module__)
        '''
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "errors: [None, None]" in proc.stdout, proc.stdout
