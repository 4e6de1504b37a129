"""A minimal NVMe-oF target: one malloc bdev exported over TCP (as SPDK's examples/nvmf).

python examples/nvmf_target.py [--port 4420] [--seconds N]

Prints the transport ID hosts connect to, then serves until Ctrl-C (or N seconds);
try ``spdk_nvme_identify -r '<that transport ID>'`` from another shell.
"""

from __future__ import annotations

import argparse

import spdk_io
from spdk_io import bdev_modules
from spdk_io.nvmf import Target, TransportId

NQN = "nqn.2016-06.io.spdk:cnode1"


async def main(port: int, seconds: float) -> None:
    await bdev_modules.create_malloc("Malloc0", num_blocks=16384, block_size=4096)
    async with await Target.create("example_tgt") as target:
        await target.add_transport("TCP")
        sub = await target.create_subsystem(
            NQN, serial="SPDK00000000000001", model="spdk_io example", allow_any_host=True
        )
        await sub.add_namespace("Malloc0")
        address = await sub.add_listener(TransportId.tcp("127.0.0.1", port))
        await sub.start()
        print(f"serving {address.with_subnqn(NQN)}", flush=True)
        await spdk_io.sleep(seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4420)
    parser.add_argument("--seconds", type=float, default=float("inf"))
    args = parser.parse_args()
    try:
        spdk_io.run(main(args.port, args.seconds), name="nvmf_target")
    except KeyboardInterrupt:
        print("stopped")
