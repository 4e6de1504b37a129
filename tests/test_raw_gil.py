"""The raw layer against real SPDK: PyDLL-bound calls take callbacks, blocking ones free the GIL.

Most functions of :mod:`spdk_io.raw` are called with the GIL held (``ctypes.PyDLL``);
a callback C makes during such a call runs on the calling thread, which already holds
the GIL.  The functions listed in ``raw.RELEASES_GIL`` release it, so other Python
threads run while they block.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import spdk_io
from spdk_io import raw
from spdk_io._loader import fast

Run = Callable[[Awaitable[Any]], Any]


def keeps_gil(fn: Any) -> bool:
    """Whether a ctypes function object is called with the GIL held (PyDLL's flag)."""
    return bool(fn._flags_ & ctypes._FUNCFLAG_PYTHONAPI)  # type: ignore[attr-defined]  # private ctypes flag, not in typeshed


def test_callback_runs_during_a_pydll_call() -> None:
    """SPDK's JSON writer calls its write callback from inside spdk_json_write_end."""
    names = ("spdk_json_write_begin", "spdk_json_write_named_string", "spdk_json_write_end")
    assert all(keeps_gil(getattr(raw, n)) for n in names)
    chunks: list[bytes] = []
    threads: set[int] = set()

    def write(ctx: int | None, data: int | None, size: int) -> int:
        threads.add(threading.get_ident())
        raw.spdk_get_ticks()  # a PyDLL call from inside a callback of a PyDLL call
        chunks.append(ctypes.string_at(data or 0, size))
        return 0

    cb = raw.spdk_json_write_cb(write)
    w = raw.spdk_json_write_begin(cb, None, 0)
    assert w
    raw.spdk_json_write_object_begin(w)
    raw.spdk_json_write_named_string(w, b"name", b"Malloc0")
    raw.spdk_json_write_named_uint64(w, b"blocks", 2**40 + 3)
    raw.spdk_json_write_object_end(w)
    assert raw.spdk_json_write_end(w) == 0
    assert b"".join(chunks) == b'{"name":"Malloc0","blocks":1099511627779}'
    assert threads == {threading.get_ident()}


def test_raw_send_msg_callback_runs_on_the_target_thread(run: Run) -> None:
    """spdk_thread_send_msg (PyDLL) with a raw callback; the app thread's loop polls it."""
    assert keeps_gil(raw.spdk_thread_send_msg) and keeps_gil(raw.spdk_get_thread)

    async def main() -> tuple[list[int], int]:
        seen: list[int] = []

        def on_msg(ctx: int | None) -> None:
            seen.append(ctx or 0)
            seen.append(threading.get_ident())

        cb = raw.spdk_msg_fn(on_msg)
        rc = raw.spdk_thread_send_msg(raw.spdk_get_thread(), cb, 1234)
        assert rc == 0
        while not seen:
            await spdk_io.sleep(0)
        return seen, threading.get_ident()

    seen, ident = run(main())
    assert seen == [1234, ident]


def ticks_seen_during(delay: Callable[[int], None], seconds: float) -> tuple[int, int, list[int]]:
    """Run ``delay`` in this thread while another Python thread samples the TSC.

    Returns the ticks just before and after the call and the other thread's samples.
    """
    samples: list[int] = []
    stop = threading.Event()
    started = threading.Event()

    def sample() -> None:
        started.set()
        while not stop.is_set():
            samples.append(raw.spdk_get_ticks())

    other = threading.Thread(target=sample, daemon=True)
    other.start()
    started.wait()
    try:
        before = raw.spdk_get_ticks()
        delay(int(seconds * 1_000_000))
        after = raw.spdk_get_ticks()
    finally:
        stop.set()
        other.join()
    return before, after, samples


def middle(before: int, after: int, samples: list[int]) -> list[int]:
    """The samples taken in the middle 80% of the call (well after it started)."""
    margin = (after - before) // 10
    return [t for t in samples if before + margin < t < after - margin]


@pytest.mark.usefixtures("env")  # spdk_delay_us converts with the env's TSC rate
def test_blocking_listed_call_releases_the_gil() -> None:
    """Another Python thread runs while raw.spdk_delay_us spins; held, it could not."""
    assert "spdk_delay_us" in raw.RELEASES_GIL and not keeps_gil(raw.spdk_delay_us)
    assert middle(*ticks_seen_during(raw.spdk_delay_us, 0.3))
    # The same function bound on PyDLL: nothing else runs in Python meanwhile.
    held = fast("spdk_delay_us", None, [ctypes.c_uint])
    assert not middle(*ticks_seen_during(held, 0.3))
