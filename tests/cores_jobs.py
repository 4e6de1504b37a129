"""Functions tests/test_cores.py places on cores by name (each core's interpreter imports
them); each reports what it observed from real SPDK."""

from __future__ import annotations

import inspect
import os
import threading
from pathlib import Path

from spdk_io import cores, loop, rpc
from spdk_io.bdev import Bdev
from spdk_io.dma import DmaBuf
from spdk_io.errors import Cancelled
from spdk_io.thread import Poller, SpdkThread, ThreadHandle, current_thread

BLOCK = 4096


def where() -> tuple[int, int, list[int], int]:
    """The core this runs on as spdk_io and the OS see it, and the SPDK thread's id."""
    return (
        cores.current(),
        threading.get_ident(),
        sorted(os.sched_getaffinity(0)),
        current_thread().id,
    )


async def write(bdev: str, offset: int, data: bytes) -> int:
    """Write ``data`` at ``offset`` of ``bdev``; the core it ran on."""
    buf = DmaBuf.alloc(len(data))
    buf[:] = data
    with Bdev.get(bdev).open(write=True) as desc:
        await desc.write(buf, offset)
    return cores.current()


async def read(bdev: str, offset: int, length: int) -> bytes:
    """``length`` bytes of ``bdev`` at ``offset``."""
    buf = DmaBuf.alloc(length)
    with Bdev.get(bdev).open() as desc:
        await desc.read(buf, offset)
    return buf.tobytes()


async def io(bdev: str, region: int, rounds: int) -> tuple[int, int]:
    """Write then read back a pattern in 4 KiB block ``region + i`` for ``rounds`` rounds,
    checking every read; (core, blocks verified)."""
    me = cores.current()
    out, back = DmaBuf.alloc(BLOCK), DmaBuf.alloc(BLOCK)
    verified = 0
    with Bdev.get(bdev).open(write=True) as desc:
        for i in range(rounds):
            pattern = bytes([me + 1, i & 0xFF]) * (BLOCK // 2)
            out[:] = pattern
            offset = (region + i % 16) * BLOCK
            await desc.write(out, offset)
            await desc.read(back, offset)
            if back.tobytes() != pattern:
                raise AssertionError(f"core {me}: block {region + i % 16} read back differs")
            verified += 1
    return me, verified


async def forever(bdev: str, marker: str) -> None:
    """Read ``bdev`` until cancelled; then write ``marker`` (a file) saying so."""
    buf = DmaBuf.alloc(BLOCK)
    desc = Bdev.get(bdev).open()  # left open on purpose: the core's teardown closes it
    try:
        while True:
            await desc.read(buf, 0)
    except Cancelled:
        Path(marker).write_text(f"cancelled on core {cores.current()}")
        raise


def fail(message: str) -> None:
    raise ValueError(message)


class _Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def fail_unpicklable(message: str) -> None:
    raise _Unpicklable(message)


def unpicklable_result() -> object:
    return threading.Lock()


async def refused_here(app_thread_id: int, socket: str, mem: int) -> list[str]:
    """What a worker may not do: each refusal's type and message."""
    import spdk_io
    from spdk_io import trace
    from spdk_io.nvme import Controller
    from spdk_io.nvmf import Target

    seen = []
    for what in (
        lambda: SpdkThread.spawn(where),
        lambda: rpc.call("spdk_get_version"),
        lambda: ThreadHandle(app_thread_id, "app_thread").send(where),
        lambda: Target.create("worker_tgt"),
        lambda: rpc.serve(socket),
        lambda: SpdkThread.create("worker_thread"),
        lambda: spdk_io.Env(mem_size_mb=mem).start(),
        lambda: spdk_io.App(mem_size_mb=mem).run(ping()),
        lambda: Controller.connect("trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420"),
        lambda: trace.start("worker", -1, "bdev", 1024),
        trace.stop,
    ):
        try:
            result = what()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            seen.append(f"{type(exc).__name__}: {exc}")
        else:
            seen.append("allowed")
    try:
        await cores.run_on(cores.main_core(), where)
    except Exception as exc:
        seen.append(f"{type(exc).__name__}: {exc}")
    return seen


async def ping() -> str:
    await loop.sleep(0.001)
    return "pong"


def crash_core() -> str:
    """Make this core's loop stop with an error (a poller that raises): its worker ends."""

    def broken() -> bool:
        raise RuntimeError("poller broke")

    Poller(broken, 0, name="broken")
    return "armed"


def big(n: int) -> bytes:
    """``n`` bytes, more than a pipe holds at once."""
    return bytes(i & 0xFF for i in range(n))


def log_here(message: str) -> None:
    """Make SPDK log ``message`` (an error) from this core's OS thread."""
    from spdk_io import _generated as g

    g.spdk_log(g.SPDK_LOG_ERROR, b"cores_jobs.c", 1, b"log_here", message.encode() + b"\n")


async def self_cancel() -> str:
    """Cancel a task of its own and await it: the ``Cancelled`` is the job's, not its
    caller's."""

    async def sleeper() -> None:
        await loop.sleep(10)

    task = loop.spawn(sleeper())
    await loop.sleep(0.01)
    task.cancel()
    await task
    return "never"


def zeros(n: int) -> bytes:
    """``n`` zero bytes (a reply that takes long to cross)."""
    return bytes(n)


def start_thread() -> str:
    """Leave a Python thread running for good (what a job must not do)."""
    threading.Thread(target=threading.Event().wait).start()
    return "started"


class Holder:
    """Has a method, which cannot be a target (its instance would not cross)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def get(self) -> int:
        return self.value
