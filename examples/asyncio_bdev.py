"""Block I/O from an asyncio program: SPDK runs on its own OS thread (spdk_io.aio).

python examples/asyncio_bdev.py

The spdk_io coroutines (``write_then_read``) run on SPDK's app thread; asyncio
awaits them with ``rt.run`` while its own tasks (a ticker here) keep running.
Cancelling an ``rt.run`` cancels the spdk_io task, whose cleanup runs first.
"""

from __future__ import annotations

import asyncio

import spdk_io
import spdk_io.aio
from spdk_io import bdev_modules
from spdk_io.bdev import BdevDesc
from spdk_io.dma import DmaBuf


async def create_bdev() -> str:
    bdev = await bdev_modules.create_malloc("Malloc0", num_blocks=1024, block_size=4096)
    return f"{bdev.name}: {bdev.num_blocks} blocks of {bdev.block_size} bytes"


async def write_then_read(block: int, data: bytes) -> bytes:
    """On SPDK's thread: write ``data`` at ``block`` and read it back."""
    with BdevDesc.open("Malloc0", write=True) as desc, DmaBuf.alloc(4096) as buf:
        buf[: len(data)] = data
        await desc.write(buf, offset=block * 4096)
        buf.fill(0)
        await desc.read(buf, offset=block * 4096)
        return buf[: len(data)]


async def wait_forever() -> None:
    """On SPDK's thread: wait until cancelled, then clean up."""
    try:
        await spdk_io.sleep(float("inf"))
    finally:
        print("spdk_io task cancelled: cleanup ran on SPDK's thread")


async def ticker(ticks: list[int]) -> None:
    while True:
        ticks.append(1)
        await asyncio.sleep(0.001)


async def main() -> None:
    async with spdk_io.aio.Runtime(name="asyncio_bdev", mem_size_mb=512) as rt:
        print("created", await rt.run(create_bdev))
        ticks: list[int] = []
        tick_task = asyncio.create_task(ticker(ticks))
        # Eight I/O calls at once, awaited from asyncio; asyncio's ticker runs meanwhile.
        results = await asyncio.gather(
            *(rt.run(write_then_read, i, f"block {i}".encode()) for i in range(8))
        )
        print("read back:", b", ".join(results).decode())
        try:
            async with asyncio.timeout(0.05):
                await rt.run(wait_forever)
        except TimeoutError:
            print("timed out in asyncio")
        tick_task.cancel()
        print("asyncio ran meanwhile:", len(ticks) > 0)
    print("SPDK stopped")


if __name__ == "__main__":
    asyncio.run(main())
