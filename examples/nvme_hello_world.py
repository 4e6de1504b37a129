"""Write "Hello world!" to an NVMe namespace and read it back: SPDK's
examples/nvme/hello_world, with the NVMe driver used directly.

python examples/nvme_hello_world.py              # serves its own target, see below
TRID='trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:cnode1'
python examples/nvme_hello_world.py -r "$TRID"     # any controller: TCP, RDMA, PCIe

Without ``-r`` it is self-contained: this process serves a malloc bdev as an NVMe/TCP
namespace on 127.0.0.1 (SPDK's nvmf target, configured over JSON-RPC) and connects to
it on the same loop.  It writes to LBA 0 of every namespace: use a scratch one.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

import spdk_io
from spdk_io import rpc
from spdk_io.dma import DmaBuf
from spdk_io.nvme import Controller, TransportId

MESSAGE = b"Hello world!\n"
NQN = "nqn.2016-06.io.spdk:hello"


@asynccontextmanager
async def local_namespace() -> AsyncIterator[TransportId]:
    """A 4 MiB malloc bdev served as namespace 1 of ``NQN`` over TCP; its address."""
    with socket.socket() as s:  # a free port, picked by the kernel
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await rpc.call("bdev_malloc_create", {"name": "Hello0", "num_blocks": 8192, "block_size": 512})
    await rpc.call("nvmf_create_transport", {"trtype": "TCP"})
    await rpc.call(
        "nvmf_create_subsystem",
        {
            "nqn": NQN,
            "allow_any_host": True,
            "serial_number": "HELLO0001",
            "model_number": "spdk_io hello",
        },
    )
    await rpc.call("nvmf_subsystem_add_ns", {"nqn": NQN, "namespace": {"bdev_name": "Hello0"}})
    address = {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": str(port)}
    await rpc.call("nvmf_subsystem_add_listener", {"nqn": NQN, "listen_address": address})
    try:
        yield TransportId.tcp("127.0.0.1", port, NQN)
    finally:
        await rpc.call("nvmf_delete_subsystem", {"nqn": NQN})
        await rpc.call("bdev_malloc_delete", {"name": "Hello0"})


async def hello_world(trid: TransportId) -> None:
    print(f"Attaching to {trid}")
    async with await Controller.connect(trid) as ctrlr:
        print(f"Attached to {trid}")
        namespaces = list(ctrlr.namespaces())
        print(f"Using controller {ctrlr.model} ({ctrlr.serial}) with {len(namespaces)} namespaces.")
        for ns in namespaces:
            print(f"  Namespace ID: {ns.id} size: {ns.size / 1e9:.3f}GB")
        print("Initialization complete.")
        qpair = await ctrlr.alloc_qpair()
        for ns in namespaces:
            with DmaBuf.alloc(ns.sector_size) as buf:
                buf[: len(MESSAGE)] = MESSAGE
                await qpair.write_blocks(ns, buf, 0, 1)
                buf.fill(0)
                await qpair.read_blocks(ns, buf, 0, 1)
                if bytes(buf[: len(MESSAGE)]) != MESSAGE:
                    raise SystemExit("Read data doesn't match write data")
                print(bytes(buf[: len(MESSAGE)]).decode(), end="")
        qpair.close()
    print("Detached")


async def main(trid: TransportId | None) -> None:
    print("Initializing NVMe Controllers")
    target: AbstractAsyncContextManager[TransportId] = (
        local_namespace() if trid is None else nullcontext(trid)
    )
    async with target as where:
        await hello_world(where)


def transport_id(text: str) -> TransportId:
    try:
        return TransportId.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-r",
        "--transport",
        type=transport_id,
        metavar="TRID",
        help="the controller, as SPDK writes it: 'trtype:TCP adrfam:IPv4 traddr:... "
        "trsvcid:... subnqn:...' (default: serve a malloc namespace in-process)",
    )
    args = parser.parse_args()
    spdk_io.run(main(args.transport), name="nvme_hello_world")
