"""The NVMe initiator against a target this same process serves (SPDK's nvmf subsystem,
configured over RPC), on one loop and one thread: connect, namespaces, I/O, detach."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import spdk_io
from spdk_io.dma import DmaBuf
from spdk_io.errors import SpdkError
from spdk_io.nvme import Controller, TransportId
from tests.conftest import free_port
from tests.nvmf_rpc import exported_namespace

Run = Callable[[Awaitable[Any]], Any]


def test_loopback_connect_write_read_detach(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:loop1"

    async def main() -> None:
        async with exported_namespace(nqn=nqn, blocks=1024, serial="SPDKIO1") as target:
            ctrlr = await Controller.connect(target.trid)
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
        async with exported_namespace(nqn=nqn) as target:
            bad = (
                TransportId.tcp("127.0.0.1", free_port(), nqn)
                if what == "nothing listening"
                else target.trid.with_subnqn("nqn.2016-06.io.spdk:nobody")
            )
            with pytest.raises(SpdkError, match="ECONNREFUSED") as info:
                await spdk_io.wait_for(Controller.connect(bad), 10)
            assert str(bad) in str(info.value)

    run(main())
