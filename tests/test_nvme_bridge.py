"""NVMe-oF namespaces as bdevs (``bdev_modules.attach_nvme_controller``), and the Python
initiator cross-checked against SPDK's own ``nvmf_tgt`` (a subprocess configured with
SPDK's rpc.py).

The in-process target is SPDK's default nvmf target configured over ``spdk_io.rpc``;
its namespaces get their own NGUID, so the NVMe bdev does not collide with the malloc
bdev behind it (they would share its UUID otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import spdk_io
from spdk_io.bdev import Bdev, BdevDesc
from spdk_io.bdev_modules import attach_nvme_controller, detach_nvme_controller, nvme_controllers
from spdk_io.dma import DmaBuf
from spdk_io.errors import BdevRemovedError, RpcError, SpdkError
from spdk_io.nvme import Controller, ControllerOptions, TransportId
from tests.conftest import free_port
from tests.nvmf_rpc import exported_namespace
from tests.spdk_target import NvmfTgt

Run = Callable[[Awaitable[Any]], Any]

HOSTNQN = "nqn.2014-08.io.spdk-io:test-host"


async def controller_names() -> set[str]:
    return {c.name for c in await nvme_controllers()}


def bdev_names() -> set[str]:
    return {b.name for b in Bdev.list()}


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


@pytest.fixture(scope="module")
def tgt() -> Iterator[NvmfTgt]:
    """One SPDK nvmf_tgt (core 1) for this module's cross-checks."""
    with NvmfTgt() as t:
        yield t


# ------------------------------------------------------------------ the bridge, in-process


def test_attach_in_process_namespace_io_and_detach(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:bridge1"

    async def main() -> None:
        async with exported_namespace(
            nqn=nqn, blocks=2048, block_size=512, own_nguid=True
        ) as exported:
            trid, backing = exported.trid, exported.bdev
            bdevs = await attach_nvme_controller("Br1", str(trid))  # the string form too
            try:
                assert [b.name for b in bdevs] == ["Br1n1"]
                nbdev = bdevs[0]
                assert (nbdev.product_name, nbdev.block_size, nbdev.num_blocks) == (
                    "NVMe disk",
                    512,
                    2048,
                )
                [ctrlr] = await nvme_controllers("Br1")
                [path] = ctrlr.paths
                assert (path.trid, path.state, path.cntlid > 0) == (trid, "enabled", True)
                data = pattern(8192, 3)
                with BdevDesc.open("Br1n1", write=True) as desc, DmaBuf.alloc(8192) as buf:
                    buf[:] = data
                    await desc.write_blocks(buf, 100, 16)
                    buf.fill(0)
                    await desc.read_blocks(buf, 100, 16)
                    assert bytes(buf) == data
                # The data went over NVMe/TCP to the malloc bdev behind the namespace.
                with BdevDesc.open(backing) as desc, DmaBuf.alloc(8192) as buf:
                    await desc.read_blocks(buf, 100, 16)
                    assert bytes(buf) == data
            finally:
                await detach_nvme_controller("Br1")
            with pytest.raises(LookupError):
                Bdev.get("Br1n1")
            assert "Br1" not in await controller_names()
            with pytest.raises(RpcError, match="bdev_nvme_detach_controller") as info:
                await detach_nvme_controller("Br1")
            assert info.value.errno_name == "ENODEV"

    run(main())


def test_a_namespace_with_a_local_bdevs_uuid_attaches_without_a_bdev(run: Run) -> None:
    """What the docs warn about: SPDK cannot register a second bdev with that UUID."""
    nqn = "nqn.2016-06.io.spdk:bridge5"

    async def main() -> None:
        async with exported_namespace(nqn=nqn) as exported:
            trid = exported.trid
            assert await attach_nvme_controller("Br5", trid) == []
            try:
                assert [p.trid for p in (await nvme_controllers("Br5"))[0].paths] == [trid]
                assert "Br5n1" not in bdev_names()
            finally:
                await detach_nvme_controller("Br5")
            assert "Br5" not in await controller_names()

    run(main())


def test_detach_hot_removes_an_open_descriptor(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:bridge2"

    async def main() -> None:
        async with exported_namespace(nqn=nqn, own_nguid=True) as exported:
            trid = exported.trid
            await attach_nvme_controller("Br2", trid)
            desc = BdevDesc.open("Br2n1", write=True)
            buf = DmaBuf.alloc(512)
            await desc.read_blocks(buf, 0, 1)
            await detach_nvme_controller("Br2")
            for _ in range(200):  # the remove event arrives by message
                if desc.closed:
                    break
                await spdk_io.sleep(0.01)
            assert desc.closed
            with pytest.raises(BdevRemovedError):
                desc.read_blocks(buf, 0, 1)
            assert "Br2n1" not in bdev_names()
            buf.free()

    run(main())


@pytest.mark.parametrize(
    ("trid", "kwargs", "error", "match"),
    [
        ("trtype:TCP traddr:127.0.0.1 trsvcid:4420 bogus:1", {}, ValueError, "unknown key"),
        ("traddr:127.0.0.1 trsvcid:4420", {}, ValueError, "no trtype"),
        ("trtype:TCP trsvcid:4420", {}, ValueError, "no traddr"),
        (42, {}, TypeError, "transport ID"),
        ("trtype:TCP traddr:127.0.0.1 trsvcid:1", {"multipath": "both"}, ValueError, "multipath"),
        ("trtype:TCP traddr:127.0.0.1 trsvcid:1", {"prchk_guard": 1}, TypeError, "prchk_guard"),
        ("trtype:TCP traddr:127.0.0.1 trsvcid:1", {"num_io_queues": 0}, ValueError, "num_io"),
        ("trtype:TCP traddr:127.0.0.1 trsvcid:1", {"hostnqn": "a" * 224}, ValueError, "hostnqn"),
        (
            "trtype:TCP traddr:127.0.0.1 trsvcid:1",
            {"ctrlr_loss_timeout_sec": 10, "reconnect_delay_sec": 0},
            ValueError,
            "reconnect_delay_sec must not be 0",
        ),
        (
            "trtype:TCP traddr:127.0.0.1 trsvcid:1",
            {"ctrlr_loss_timeout_sec": 5, "reconnect_delay_sec": 6},
            ValueError,
            "longer than ctrlr_loss",
        ),
        (
            "trtype:TCP traddr:127.0.0.1 trsvcid:1",
            {"ctrlr_loss_timeout_sec": 0, "fast_io_fail_timeout_sec": 2},
            ValueError,
            "never reconnect",
        ),
        (
            "trtype:TCP traddr:127.0.0.1 trsvcid:1",
            {"ctrlr_loss_timeout_sec": -2},
            ValueError,
            "ctrlr_loss_timeout_sec",
        ),
    ],
)
def test_bad_input_is_refused_before_spdk_sees_it(
    run: Run, trid: Any, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    async def main() -> None:
        before = (await controller_names(), bdev_names())
        with pytest.raises(error, match=match):
            await attach_nvme_controller("Bad", trid, **kwargs)
        assert (await controller_names(), bdev_names()) == before

    run(main())


def test_refusals_name_the_method_and_trid_and_leave_nothing(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:bridge3"

    async def main() -> None:
        async with exported_namespace(nqn=nqn, own_nguid=True) as exported:
            trid = exported.trid
            before = (await controller_names(), bdev_names())
            nobody = TransportId.tcp("127.0.0.1", free_port(), nqn)
            unknown = trid.with_subnqn("nqn.2016-06.io.spdk:nobody")
            for bad in (nobody, unknown):
                with pytest.raises(RpcError, match="bdev_nvme_attach_controller") as info:
                    await attach_nvme_controller("Br3", bad, ctrlr_loss_timeout_sec=0)
                assert str(bad) in str(info.value)
                assert (await controller_names(), bdev_names()) == before

            [first] = await attach_nvme_controller("Br3", trid)
            try:
                # The same name on the same path, and on another path with multipath off.
                with pytest.raises(RpcError, match="already exists") as info:
                    await attach_nvme_controller("Br3", trid)
                assert info.value.errno_name == "EALREADY"
                with pytest.raises(RpcError, match="already exists"):
                    await attach_nvme_controller("Br3", nobody, multipath="disable")
                [ctrlr] = await nvme_controllers("Br3")
                assert [p.trid for p in ctrlr.paths] == [trid]
                assert Bdev.get(first.name) == first
            finally:
                await detach_nvme_controller("Br3")
            assert (await controller_names(), bdev_names()) == before

    run(main())


def test_cancelled_attach_is_detached_again(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:bridge4"

    async def main() -> None:
        async with exported_namespace(nqn=nqn, own_nguid=True) as exported:
            trid = exported.trid
            with pytest.raises(TimeoutError):
                await spdk_io.wait_for(attach_nvme_controller("Br4", trid), 0.001)
            await spdk_io.sleep(1.0)  # the attach finishes, then is undone
            assert "Br4" not in await controller_names()
            assert "Br4n1" not in bdev_names()
            # The name is free again.
            assert [b.name for b in await attach_nvme_controller("Br4", trid)] == ["Br4n1"]
            await detach_nvme_controller("Br4")

    run(main())


# ------------------------------------------------------------------ against SPDK's nvmf_tgt


def test_bridge_against_nvmf_tgt_cross_read_by_the_initiator(run: Run, tgt: NvmfTgt) -> None:
    """Write through the NVMe bdev, read back through it and through the Python initiator."""
    trid = tgt.export("nqn.2016-06.io.spdk:xbridge", free_port(), size_mb=8, block_size=4096)

    async def main() -> None:
        [nbdev] = await attach_nvme_controller("Tgt1", trid, hostnqn=HOSTNQN)
        try:
            assert (nbdev.name, nbdev.block_size, nbdev.num_blocks) == ("Tgt1n1", 4096, 2048)
            data = pattern(4 * 4096, 11)
            with BdevDesc.open("Tgt1n1", write=True) as desc, DmaBuf.alloc(len(data)) as buf:
                buf[:] = data
                await desc.write(buf, offset=7 * 4096)
                buf.fill(0)
                await desc.read(buf, offset=7 * 4096)
                assert bytes(buf) == data
            async with await Controller.connect(trid) as ctrlr:
                qp = await ctrlr.alloc_qpair()
                with DmaBuf.alloc(len(data)) as back:
                    await qp.read_blocks(ctrlr.namespace(1), back, 7, 4)
                    assert bytes(back) == data
                qp.close()
            [ctrlr_info] = await nvme_controllers("Tgt1")
            assert ctrlr_info.paths[0].hostnqn == HOSTNQN
        finally:
            await detach_nvme_controller("Tgt1")
        assert "Tgt1n1" not in bdev_names()

    run(main())
    # The target saw our host NQN, and no controller is left connected.
    assert json.loads(tgt.rpc("nvmf_subsystem_get_controllers", trid.subnqn or "")) == []


def test_initiator_against_nvmf_tgt(run: Run, tgt: NvmfTgt) -> None:
    """Serial, model, namespace as nvmf_tgt reports them; data written is read back."""
    nqn = "nqn.2016-06.io.spdk:xinit"
    trid = tgt.export(nqn, free_port(), size_mb=16, block_size=512, serial="XCHECK42")
    [sub] = [s for s in json.loads(tgt.rpc("nvmf_get_subsystems")) if s["nqn"] == nqn]
    [tbdev] = json.loads(tgt.rpc("bdev_get_bdevs", "-b", sub["namespaces"][0]["bdev_name"]))

    async def main() -> None:
        ctrlr = await Controller.connect(trid)
        async with ctrlr:
            assert ctrlr.serial == sub["serial_number"] == "XCHECK42"
            assert ctrlr.model == sub["model_number"]
            assert ctrlr.subnqn == nqn
            assert ctrlr.namespace_ids() == [ns["nsid"] for ns in sub["namespaces"]] == [1]
            ns = ctrlr.namespace(1)
            assert (ns.sector_size, ns.num_sectors) == (512, 16 * 2048)
            assert (ns.sector_size, ns.num_sectors) == (tbdev["block_size"], tbdev["num_blocks"])
            assert ns.uuid == sub["namespaces"][0]["uuid"]
            qp = await ctrlr.alloc_qpair()
            with DmaBuf.alloc(64 * 512) as data, DmaBuf.alloc(64 * 512) as back:
                data[:] = pattern(len(data), 5)
                await qp.write_blocks(ns, data, ns.num_sectors - 64, 64)  # the very end
                await qp.read_blocks(ns, back, ns.num_sectors - 64, 64)
                assert bytes(back) == bytes(data)
        assert ctrlr.closed and qp.closed

    run(main())
    assert json.loads(tgt.rpc("nvmf_subsystem_get_controllers", nqn)) == []


def test_nvmf_tgt_refuses_a_host_until_it_is_added(run: Run, tgt: NvmfTgt) -> None:
    nqn = "nqn.2016-06.io.spdk:xhosts"
    trid = tgt.export(nqn, free_port(), allow_any_host=False)
    options = ControllerOptions(hostnqn=HOSTNQN)

    async def refused() -> None:
        with pytest.raises(SpdkError, match="ECONNREFUSED") as info:
            await spdk_io.wait_for(Controller.connect(trid, options), 20)
        assert str(trid) in str(info.value)
        with pytest.raises(RpcError, match="bdev_nvme_attach_controller") as rinfo:
            await attach_nvme_controller("Hosts", trid, hostnqn=HOSTNQN)
        assert str(trid) in str(rinfo.value)
        assert "Hosts" not in await controller_names()

    async def admitted() -> None:
        async with await Controller.connect(trid, options) as ctrlr:
            assert ctrlr.subnqn == nqn
            [info] = json.loads(tgt.rpc("nvmf_subsystem_get_controllers", nqn))
            assert info["hostnqn"] == HOSTNQN
        [nbdev] = await attach_nvme_controller("Hosts", trid, hostnqn=HOSTNQN)
        assert nbdev.name == "Hostsn1"
        await detach_nvme_controller("Hosts")

    run(refused())
    tgt.rpc("nvmf_subsystem_add_host", nqn, HOSTNQN)
    run(admitted())
