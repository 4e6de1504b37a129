"""The NVMe initiator against a target this same process serves (SPDK's nvmf subsystem,
configured over RPC), on one loop and one thread: connect, namespaces, I/O, detach."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import spdk_io
from spdk_io import rpc
from spdk_io.dma import DmaBuf
from spdk_io.errors import SpdkError
from spdk_io.nvme import Controller, TransportId
from tests.conftest import free_port

Run = Callable[[Awaitable[Any]], Any]


@asynccontextmanager
async def rpc_target(
    nqn: str, blocks: int = 1024, block_size: int = 512
) -> AsyncIterator[TransportId]:
    """A malloc namespace exported over TCP by SPDK's default target; its transport ID."""
    port = free_port()
    bdev = f"M{port}"
    await rpc.call(
        "bdev_malloc_create", {"name": bdev, "num_blocks": blocks, "block_size": block_size}
    )
    with contextlib.suppress(spdk_io.RpcError):  # already there (one per session)
        await rpc.call("nvmf_create_transport", {"trtype": "TCP"})
    await rpc.call(
        "nvmf_create_subsystem", {"nqn": nqn, "allow_any_host": True, "serial_number": "SPDKIO1"}
    )
    try:
        await rpc.call("nvmf_subsystem_add_ns", {"nqn": nqn, "namespace": {"bdev_name": bdev}})
        trid = TransportId.tcp("127.0.0.1", port, nqn)
        await rpc.call(
            "nvmf_subsystem_add_listener",
            {
                "nqn": nqn,
                "listen_address": {
                    "trtype": "TCP",
                    "adrfam": "IPv4",
                    "traddr": "127.0.0.1",
                    "trsvcid": str(port),
                },
            },
        )
        yield trid
    finally:
        await rpc.call("nvmf_delete_subsystem", {"nqn": nqn})
        await rpc.call("bdev_malloc_delete", {"name": bdev})


def test_loopback_connect_write_read_detach(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:loop1"

    async def main() -> None:
        async with rpc_target(nqn) as trid:
            ctrlr = await Controller.connect(trid)
            async with ctrlr:
                assert ctrlr.serial == "SPDKIO1"
                assert ctrlr.subnqn == nqn
                assert ctrlr.namespace_ids() == [1]
                ns = ctrlr.namespace(1)
                assert (ns.sector_size, ns.num_sectors, ns.size) == (512, 1024, 512 * 1024)
                qp = await ctrlr.alloc_qpair()
                data = DmaBuf.alloc(4096)
                data[:] = bytes(range(256)) * 16
                await qp.write_blocks(ns, data, 8, 8)
                back = DmaBuf.alloc(4096)
                await qp.read_blocks(ns, back, 8, 8)
                assert bytes(back) == bytes(data)
                with pytest.raises(ValueError, match="past the end"):
                    qp.read_blocks(ns, back, 1020, 8)
            assert ctrlr.closed and qp.closed
            with pytest.raises(RuntimeError, match="detached"):
                ctrlr.namespace_ids()

    run(main())


@pytest.mark.parametrize("what", ["nothing listening", "unknown subsystem"])
def test_refused_connection_names_the_transport_id(run: Run, what: str) -> None:
    nqn = "nqn.2016-06.io.spdk:loop2"

    async def main() -> None:
        async with rpc_target(nqn) as trid:
            bad = (
                TransportId.tcp("127.0.0.1", free_port(), nqn)
                if what == "nothing listening"
                else trid.with_subnqn("nqn.2016-06.io.spdk:nobody")
            )
            with pytest.raises(SpdkError, match="ECONNREFUSED") as info:
                await spdk_io.wait_for(Controller.connect(bad), 10)
            assert str(bad) in str(info.value)

    run(main())
