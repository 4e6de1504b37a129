"""Write to an in-memory (malloc) bdev and read it back: the smallest complete program.

python examples/hello_bdev.py
"""

from __future__ import annotations

import spdk_io
from spdk_io import bdev_modules
from spdk_io.bdev import BdevDesc
from spdk_io.dma import DmaBuf


async def main() -> bytes:
    bdev = await bdev_modules.create_malloc("Malloc0", num_blocks=1024, block_size=4096)
    print(f"created {bdev.name}: {bdev.num_blocks} blocks of {bdev.block_size} bytes")
    with BdevDesc.open(bdev.name, write=True) as desc, DmaBuf.alloc(4096) as buf:
        buf[:13] = b"Hello, SPDK!\n"
        await desc.write(buf, offset=0)
        buf.fill(0)
        await desc.read(buf, offset=0)
        return buf[:13]


if __name__ == "__main__":
    print(spdk_io.run(main(), name="hello_bdev").decode(), end="")
