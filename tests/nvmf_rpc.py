"""A namespace exported over NVMe/TCP by this process's SPDK nvmf target (the default
target, configured over ``spdk_io.rpc``): the tests' one helper for an in-process target."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from spdk_io import bdev_modules, rpc
from spdk_io.errors import RpcError
from spdk_io.nvme import TransportId
from tests.conftest import free_port

_ids = itertools.count(1)


@dataclass(frozen=True)
class ExportedNamespace:
    """A namespace the in-process target exports: where to connect, and its bdevs."""

    trid: TransportId
    nqn: str
    #: The malloc bdev that holds the data.
    bdev: str
    #: The bdev namespace 1 is: the delay bdev over ``bdev`` if there is one, else ``bdev``.
    exported_bdev: str


def listener_params(trid: TransportId) -> dict[str, Any]:
    """``trid``'s listener as ``nvmf_subsystem_add_listener`` and ``..._remove_listener``
    take it."""
    address = {"trtype": "TCP", "adrfam": "IPv4", "traddr": trid.traddr, "trsvcid": trid.trsvcid}
    return {"nqn": trid.subnqn, "listen_address": address}


@asynccontextmanager
async def exported_namespace(
    *,
    nqn: str | None = None,
    blocks: int = 2048,
    block_size: int = 512,
    delay_us: int = 0,
    allow_any_host: bool = True,
    serial: str = "SPDKIO0001",
    own_nguid: bool = False,
) -> AsyncIterator[ExportedNamespace]:
    """A malloc bdev (behind a delay bdev of ``delay_us`` for every I/O if that is not 0)
    as namespace 1 of subsystem ``nqn`` (a new, unique one by default), listening on a
    free TCP port of 127.0.0.1; everything is deleted afterwards, also after a failure.

    ``own_nguid`` gives the namespace a random NGUID of its own instead of the malloc
    bdev's UUID, so that the NVMe bdev of this namespace, attached in this same process,
    does not collide with the malloc bdev."""
    n = next(_ids)
    nqn = nqn or f"nqn.2016-06.io.spdk:tests-{n}"
    bdev = f"NvmfRpc{n}"
    async with AsyncExitStack() as stack:
        await bdev_modules.create_malloc(bdev, num_blocks=blocks, block_size=block_size)
        stack.push_async_callback(bdev_modules.delete_malloc, bdev)
        exported_bdev = bdev
        if delay_us:
            exported_bdev = f"NvmfRpcDelay{n}"
            await bdev_modules.create_delay(
                exported_bdev, bdev, avg_read_latency_us=delay_us, avg_write_latency_us=delay_us
            )
            stack.push_async_callback(bdev_modules.delete_delay, exported_bdev)
        with contextlib.suppress(RpcError):  # already there (one per session)
            await rpc.call("nvmf_create_transport", {"trtype": "TCP"})
        subsystem = {"nqn": nqn, "allow_any_host": allow_any_host, "serial_number": serial}
        await rpc.call("nvmf_create_subsystem", subsystem)
        stack.push_async_callback(rpc.call, "nvmf_delete_subsystem", {"nqn": nqn})
        namespace: dict[str, Any] = {"bdev_name": exported_bdev}
        if own_nguid:
            namespace["nguid"] = uuid.uuid4().hex
        await rpc.call("nvmf_subsystem_add_ns", {"nqn": nqn, "namespace": namespace})
        trid = TransportId.tcp("127.0.0.1", free_port(), nqn)
        await rpc.call("nvmf_subsystem_add_listener", listener_params(trid))
        yield ExportedNamespace(trid, nqn, bdev, exported_bdev)
