"""The target goes away under the initiator: SPDK's nvmf_tgt killed in its subprocess, and
the in-process target's listener removed or subsystem deleted, with I/O in flight.  In-flight
commands fail instead of hanging, later calls raise, ``failed`` turns True, detaching
completes, and a reset recovers once the target is back."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import spdk_io
from spdk_io import rpc
from spdk_io.dma import DmaBuf
from spdk_io.errors import SpdkError
from spdk_io.nvme import Controller, TransportId
from tests.conftest import free_port
from tests.nvmf_rpc import listener_params
from tests.spdk_target import NvmfTgt
from tests.test_nvme_admin import SERIAL, target, until

Run = Callable[[Awaitable[Any]], Any]


def export_delayed(tgt: NvmfTgt, nqn: str, port: int, delay_us: int) -> TransportId:
    """A malloc bdev behind a delay bdev as namespace 1 of ``nqn`` on SPDK's nvmf_tgt."""
    base, bdev = f"m{port}", f"d{port}"
    tgt.rpc("bdev_malloc_create", "-b", base, "16", "512")
    lat = str(delay_us)
    tgt.rpc("bdev_delay_create", "-b", base, "-d", bdev, "-r", lat, "-t", lat, "-w", lat, "-n", lat)
    tgt.rpc("nvmf_create_subsystem", nqn, "-s", SERIAL, "-a")
    tgt.rpc("nvmf_subsystem_add_ns", nqn, bdev)
    tgt.rpc(
        "nvmf_subsystem_add_listener",
        nqn,
        *("-t", "tcp", "-f", "ipv4", "-a", "127.0.0.1", "-s", str(port)),
    )
    return TransportId.tcp("127.0.0.1", port, nqn)


async def gone_checks(ctrlr: Controller, op: Awaitable[None], buf: DmaBuf) -> None:
    """What must hold once the target went away with ``op`` (a read into ``buf``) in flight."""
    with pytest.raises(SpdkError):  # fails (aborted, or the queue pair failed): no hang
        await spdk_io.wait_for(op, 15)
    assert buf.pins == 0
    await until(lambda: ctrlr.failed, 15)
    with pytest.raises(SpdkError, match="failed"):
        ctrlr.identify()
    with pytest.raises(SpdkError, match="failed"):
        ctrlr.get_feature(0x07)
    assert ctrlr.commands.inflight == 0


def test_killed_target_fails_in_flight_io_and_detach_completes(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:faults-kill"
    with NvmfTgt() as tgt:
        trid = export_delayed(tgt, nqn, free_port(), 3_000_000)

        async def main() -> None:
            ctrlr = await spdk_io.wait_for(Controller.connect(trid), 15)
            assert ctrlr.serial == SERIAL and not ctrlr.failed
            ns = ctrlr.namespace(1)
            qp = await ctrlr.alloc_qpair()
            buf = DmaBuf.alloc(4096)
            op = qp.read_blocks(ns, buf, 0, 8)
            await spdk_io.sleep(0.1)
            assert qp.inflight == 1
            admin = [ctrlr.identify() for _ in range(3)]  # in flight too, maybe
            tgt.kill()
            for cmd in admin:  # each completes or fails: none hangs
                with contextlib.suppress(SpdkError):
                    assert (await spdk_io.wait_for(cmd, 15)).serial == SERIAL
            await gone_checks(ctrlr, op, buf)
            with pytest.raises(SpdkError):
                qp.read_blocks(ns, buf, 0, 8)
            assert "failed" in repr(ctrlr)
            await spdk_io.wait_for(ctrlr.detach(), 15)
            assert ctrlr.closed and qp.closed
            with pytest.raises(RuntimeError, match="detached"):
                ctrlr.identify()

        run(main())


@pytest.mark.parametrize("how", ["remove listener", "delete subsystem"])
def test_in_process_target_goes_away_with_io_in_flight(run: Run, how: str) -> None:
    nqn = f"nqn.2016-06.io.spdk:faults-{how.replace(' ', '-')}"

    async def main() -> None:
        async with target(nqn=nqn, delay_us=1_000_000) as exported:
            ctrlr = await Controller.connect(exported.trid)
            ns = ctrlr.namespace(1)
            qp = await ctrlr.alloc_qpair()
            buf = DmaBuf.alloc(4096)
            op = qp.read_blocks(ns, buf, 0, 8)
            await spdk_io.sleep(0.05)
            listener = listener_params(exported.trid)
            if how == "remove listener":
                await rpc.call("nvmf_subsystem_remove_listener", listener)
            else:
                await rpc.call("nvmf_delete_subsystem", {"nqn": nqn})
            await gone_checks(ctrlr, op, buf)

            if how == "remove listener":  # the target is back: a reset recovers
                await rpc.call("nvmf_subsystem_add_listener", listener)
                await spdk_io.wait_for(ctrlr.reset(), 20)
                assert not ctrlr.failed
                assert (await ctrlr.identify()).serial == SERIAL
                await spdk_io.wait_for(qp.read_blocks(ns, buf, 0, 1), 5)
            else:  # nothing to reconnect to: the reset fails, the controller stays failed
                with pytest.raises(SpdkError):
                    await spdk_io.wait_for(ctrlr.reset(), 20)
                assert ctrlr.failed
                # the exported_namespace() cleanup deletes it again: make that a no-op
                with contextlib.suppress(spdk_io.RpcError):
                    await rpc.call("nvmf_create_subsystem", {"nqn": nqn, "allow_any_host": True})
            await spdk_io.wait_for(ctrlr.detach(), 15)
            assert ctrlr.closed and qp.closed

    run(main())
