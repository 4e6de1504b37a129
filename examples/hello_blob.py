"""SPDK's examples/blob/hello_world/hello_blob.c, in spdk_io: a blobstore on a malloc bdev,
one blob made, sized, written, read back and deleted.

python examples/hello_blob.py

Where the C example chains callbacks (each step starts the next from its completion),
this awaits each step in turn; an error raises at the step that failed, and leaving
the ``async with`` blocks closes the blob and unloads the blobstore all the same.
"""

from __future__ import annotations

import spdk_io
from spdk_io import bdev_modules
from spdk_io.blob import Blobstore
from spdk_io.dma import DmaBuf


async def main() -> None:
    # The C example's hello_blob.json: a 16 MiB malloc bdev of 512-byte blocks.
    bdev = await bdev_modules.create_malloc("Malloc0", num_blocks=32768, block_size=512)
    print(f"created {bdev.name}: {bdev.num_blocks} blocks of {bdev.block_size} bytes")

    # A new, empty blobstore with SPDK's default options (1 MiB clusters).  This thread
    # (the app thread) is its metadata thread: create, open, resize, sync run here.
    async with await Blobstore.init(bdev) as bs:
        io_unit = bs.io_unit_size  # I/O is in whole units of this size (the bdev's block)
        print(f"blobstore on {bs.bdev}: io_unit_size {io_unit}, cluster_size {bs.cluster_size}")

        blob_id = await bs.create_blob()  # no clusters yet
        print(f"new blob id {blob_id}")

        async with await bs.open_blob(blob_id) as blob:
            # As in C: size the blob to every free cluster.  Resizing changes the
            # in-memory metadata only; sync() makes it durable (closing would too).
            free = bs.free_clusters
            print(f"blobstore has FREE clusters of {free}")
            await blob.resize(free)
            print(f"resized blob now has USED clusters of {blob.num_clusters}")
            await blob.sync()

            # Write one I/O unit of 0x5a at offset 0, from a DMA-able buffer (the
            # blobstore's channel for this thread is made on its first I/O).
            with DmaBuf.alloc(io_unit) as wbuf, DmaBuf.alloc(io_unit) as rbuf:
                wbuf.fill(0x5A)
                await blob.write(wbuf, 0)
                print(f"wrote {io_unit} bytes of 0x5a at offset 0")

                # Read it back and compare.
                await blob.read(rbuf, 0)
                if rbuf.tobytes() != wbuf.tobytes():
                    raise RuntimeError("read back differs from what was written")
                print("read SUCCESS and data matches!")
        # Leaving the block closed the blob (syncing its metadata); now it may be deleted.
        print(f"closed blob {blob_id}")

        await bs.delete_blob(blob_id)
        print(f"deleted blob {blob_id}; blobstore has FREE clusters of {bs.free_clusters}")
    # Leaving the block unloaded the blobstore: SPDK wrote a clean super block.
    print(f"unloaded the blobstore: {bs.unloaded}")


if __name__ == "__main__":
    spdk_io.run(main(), name="hello_blob")
