"""Ctrl-C: handled by the loop as an event, never inside a C callback.

SIGINT during heavy bdev I/O must end ``spdk_io.run`` promptly with
``KeyboardInterrupt`` after a clean teardown, every time; a second Ctrl-C during
teardown lets it finish; a handler the application installed is left alone.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import spdk_io
from spdk_io import loop as L
from spdk_io.errors import Cancelled
from tests.conftest import finish_within, start_py, wait_ready

Run = Callable[[Awaitable[Any]], Any]

#: The child prints these: READY once I/O runs, then one line per outcome.
_HEAVY_IO = """
import signal, sys
import spdk_io
from spdk_io import bdev_modules as bm, env as spdk_env
from spdk_io.bdev import BdevDesc
from spdk_io.dma import DmaBuf

async def worker(desc, i):
    with DmaBuf.alloc(4096) as buf:
        while True:
            await desc.write(buf, offset=i * 4096)
            await desc.read(buf, offset=i * 4096)

async def main():
    await bm.create_malloc("M0", num_blocks=256, block_size=4096)
    with BdevDesc.open("M0", write=True) as desc:
        tasks = [spdk_io.spawn(worker(desc, i), name=f"w{i}") for i in range(256)]
        await spdk_io.sleep(0.05)
        print("READY", flush=True)
        await spdk_io.gather(*tasks)

try:
    spdk_io.run(main(), name="sigint_test", mem_size_mb=512)
    print("RETURNED", flush=True)
except KeyboardInterrupt:
    print("KEYBOARD-INTERRUPT", flush=True)
print("ENV-DOWN" if not spdk_io.env.is_up() else "ENV-UP", flush=True)
print("HANDLER-RESTORED" if signal.getsignal(signal.SIGINT) is signal.default_int_handler
      else "HANDLER-CHANGED", flush=True)
"""


def _assert_clean_interrupt(out: str, err: str, code: int | None) -> None:
    assert code == 0, f"exit code {code}\n{out}\n{err[-3000:]}"
    assert out.split() == ["KEYBOARD-INTERRUPT", "ENV-DOWN", "HANDLER-RESTORED"], (out, err)
    for bad in ("Exception ignored", "CallbackError", "Traceback", "never awaited"):
        assert bad not in err, f"{bad!r} in stderr:\n{err[-3000:]}"


@pytest.mark.parametrize("attempt", range(20))
def test_ctrl_c_during_heavy_io_raises_keyboard_interrupt_and_tears_down(attempt: int) -> None:
    proc = start_py(_HEAVY_IO)
    wait_ready(proc)
    time.sleep(0.2 + 0.2 * (attempt % 5))  # hit the I/O at different moments
    proc.send_signal(signal.SIGINT)
    out, err, _ = finish_within(proc, 10)
    _assert_clean_interrupt(out, err, proc.returncode)


_SLOW_TEARDOWN = """
import signal, sys, time
import spdk_io
from spdk_io.thread import on_release

async def hook():
    await spdk_io.sleep(0.8)
    print("HOOK-DONE", flush=True)

on_release(hook)

async def main():
    try:
        print("READY", flush=True)
        await spdk_io.sleep(60)
    finally:
        await spdk_io.sleep(0.8)  # unwinding takes a while: a 2nd Ctrl-C arrives meanwhile
        print("UNWOUND", flush=True)

try:
    spdk_io.run(main(), name="sigint_twice", mem_size_mb=512)
    print("RETURNED", flush=True)
except KeyboardInterrupt:
    print("KEYBOARD-INTERRUPT", flush=True)
print("ENV-DOWN" if not spdk_io.env.is_up() else "ENV-UP", flush=True)
print("HANDLER-RESTORED" if signal.getsignal(signal.SIGINT) is signal.default_int_handler
      else "HANDLER-CHANGED", flush=True)
"""


def test_more_ctrl_c_during_unwinding_and_teardown_let_them_finish() -> None:
    """Documented choice: Ctrl-C after the first is recorded, teardown runs to its end
    (bounded in time), and ``KeyboardInterrupt`` is raised once."""
    proc = start_py(_SLOW_TEARDOWN)
    wait_ready(proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # cancels main; its finally takes 0.8 s
    time.sleep(0.4)
    proc.send_signal(signal.SIGINT)  # while main unwinds
    time.sleep(0.8)
    proc.send_signal(signal.SIGINT)  # while the teardown hook runs
    out, err, _ = finish_within(proc, 15)
    assert proc.returncode == 0, (out, err[-3000:])
    assert out.split() == [
        "UNWOUND",
        "HOOK-DONE",
        "KEYBOARD-INTERRUPT",
        "ENV-DOWN",
        "HANDLER-RESTORED",
    ], (out, err[-3000:])
    assert "Exception ignored" not in err and "Traceback" not in err, err[-3000:]


# -- in this process: the loop raises KeyboardInterrupt itself ------------------------------


def test_ctrl_c_is_raised_from_the_loop_and_cancels_tasks(run: Run) -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # precondition
    log: list[str] = []

    async def sleeper() -> None:
        try:
            await spdk_io.sleep(30)
        except Cancelled:
            log.append("task cancelled")
            raise

    async def main() -> None:
        spdk_io.spawn(sleeper(), name="sleeper")
        await spdk_io.sleep(0.01)
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        os.kill(os.getpid(), signal.SIGINT)  # handled as an event: nothing raised here
        log.append("kill returned")
        await spdk_io.sleep(30)

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run(main())
    assert time.monotonic() - t0 < 10
    assert log == ["kill returned", "task cancelled"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_application_sigint_handler_is_left_alone(run: Run) -> None:
    seen: list[int] = []

    def mine(signum: int, frame: object) -> None:
        seen.append(signum)

    async def main() -> str:
        assert signal.getsignal(signal.SIGINT) is mine
        os.kill(os.getpid(), signal.SIGINT)
        await spdk_io.sleep(0.01)
        return "finished"

    old = signal.signal(signal.SIGINT, mine)
    try:
        assert run(main()) == "finished"
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, old)
    assert seen == [signal.SIGINT]


def test_interrupts_deferred_raises_at_the_end_of_the_block() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # precondition
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), L.interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        done.append("block finished")
    assert done == ["block finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with L.interrupts_deferred() as d:  # nothing arrived: nothing raised
        pass
    assert not d.interrupted
