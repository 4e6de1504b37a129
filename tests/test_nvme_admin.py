"""The controller half of spdk_io.nvme against a target this process serves (SPDK's nvmf
subsystem, configured over RPC): admin commands and their typed data, cross-checked with
SPDK's own spdk_nvme_identify; timeouts, cancellation, reset, detach and bad input."""

from __future__ import annotations

import functools
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import spdk_io
from spdk_io import SpdkThread, rpc
from spdk_io.dma import DmaBuf
from spdk_io.errors import NvmeError, SpdkError
from spdk_io.nvme import Controller, ControllerOptions
from spdk_io.nvme.data import (
    ControllerData,
    HealthLog,
    NamespaceData,
    ProtectionType,
    max_transfer_bytes,
)
from tests.conftest import spdk_tool
from tests.nvmf_rpc import exported_namespace

Run = Callable[[Awaitable[Any]], Any]
SERIAL = "SPDKIOADM1"
BLOCKS, BLOCK_SIZE = 2048, 512


#: The namespace these tests (and test_nvme_faults) connect to, of the geometry and serial
#: they check.
target = functools.partial(exported_namespace, blocks=BLOCKS, block_size=BLOCK_SIZE, serial=SERIAL)


async def until(cond: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll (letting the loop run) until ``cond()``; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await spdk_io.sleep(0.01)


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Run blocking ``fn`` in an OS thread while this loop keeps polling (the target
    it talks to is served here)."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    while t.is_alive():
        await spdk_io.sleep(0.01)
    return out[0]


def field(text: str, name: str) -> str:
    m = re.search(rf"^{re.escape(name)}:\s*(.*?)\s*$", text, re.M)
    assert m is not None, f"{name!r} not in spdk_nvme_identify's output:\n{text[:3000]}"
    return m.group(1)


def test_identify_matches_spdk_nvme_identify(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:adm-identify"

    async def main() -> None:
        async with target(nqn=nqn) as exported, await Controller.connect(exported.trid) as ctrlr:
            cd = await ctrlr.identify()
            assert isinstance(cd, ControllerData)
            assert (cd.serial, cd.subnqn) == (SERIAL, nqn)
            cached = ctrlr.data
            assert (cd.serial, cd.model, cd.firmware, cd.nn, cd.mdts, cd.cntlid) == (
                cached.serial,
                cached.model,
                cached.firmware,
                cached.nn,
                cached.mdts,
                cached.cntlid,
            )
            assert await ctrlr.active_namespaces() == ctrlr.namespace_ids() == [1]
            assert await ctrlr.active_namespaces(after=1) == []
            ns = ctrlr.namespace(1)
            nd = await ns.identify()
            assert isinstance(nd, NamespaceData)
            assert (nd.nsze, nd.block_size) == (BLOCKS, BLOCK_SIZE)
            assert (nd.nsze, nd.nguid, nd.lba_format) == (
                ns.data.nsze,
                ns.data.nguid,
                ns.data.lba_format,
            )
            assert (ns.id, ns.sector_size, ns.num_sectors, ns.size) == (
                1,
                BLOCK_SIZE,
                BLOCKS,
                BLOCKS * BLOCK_SIZE,
            )
            assert (ns.metadata_size, ns.extended_lba, ns.protection_type) == (
                0,
                False,
                ProtectionType.NONE,
            )
            assert ns.uuid is not None and ns.nguid == uuid.UUID(ns.uuid).bytes  # SPDK's: the same
            assert ns.optimal_io_boundary == nd.noiob
            assert ctrlr.commands.inflight == 0

            # SPDK's own tool, as a second host, sees the same controller.
            out = await in_thread(lambda: spdk_tool("spdk_nvme_identify", "-r", str(exported.trid)))
            assert out.returncode == 0, out.stderr[-2000:]
            text = out.stdout
            assert field(text, "Serial Number") == cd.serial
            assert field(text, "Model Number") == cd.model
            assert field(text, "Firmware Version") == cd.firmware
            assert int(field(text, "Number of Namespaces")) == cd.nn
            # MDTS in bytes: 2^MDTS pages of the minimum page size (4 KiB on SPDK's target).
            assert cd.mdts > 0
            assert int(field(text, "Max Data Transfer Size")) == max_transfer_bytes(cd.mdts, 4096)

    run(main())


def test_log_pages_and_features(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:adm-logs"

    async def main() -> None:
        async with target(nqn=nqn) as exported, await Controller.connect(exported.trid) as ctrlr:
            health = await ctrlr.health_log()
            assert isinstance(health, HealthLog)
            raw = await ctrlr.get_log_page(0x02, 512)
            assert isinstance(raw, bytes) and len(raw) == 512
            assert HealthLog.from_bytes(raw).critical_warning == health.critical_warning
            errors = await ctrlr.error_log()
            assert errors == []  # SPDK's target keeps no error log: its page is all zero
            # Firmware Slot Information (LID 03h): SPDK's target reports its version in slot 1.
            fw = await ctrlr.get_log_page(0x03, 512)
            assert fw[8:16].decode().strip(" \0") == ctrlr.firmware

            # Number of Queues (FID 07h): 0-based I/O queue counts, which SPDK's target sets
            # from its transport's I/O queue pair limit.
            queues = await ctrlr.get_feature(0x07)
            tcp = [t for t in await rpc.call("nvmf_get_transports") if t["trtype"] == "TCP"]
            granted = tcp[0]["max_io_qpairs_per_ctrlr"] - 1
            assert queues == granted << 16 | granted
            # Asynchronous Event Configuration (FID 0Bh): set, then read back.
            before = await ctrlr.get_feature(0x0B)
            await ctrlr.set_feature(0x0B, before ^ 0x100)
            assert await ctrlr.get_feature(0x0B) == before ^ 0x100
            await ctrlr.set_feature(0x0B, before)
            assert await ctrlr.get_feature(0x0B) == before

            # The device refuses: typed NVMe errors, and the controller goes on working.
            with pytest.raises(NvmeError) as info:
                await ctrlr.get_feature(0xEE)
            assert info.value.sc_name == "Invalid Field in Command"
            with pytest.raises(NvmeError) as info2:
                await ctrlr.get_log_page(0xBF, 512)
            assert info2.value.sc_name == "Invalid Log Page"
            assert ctrlr.commands.inflight == 0 and not ctrlr.failed
            assert (await ctrlr.identify()).serial == SERIAL

    run(main())


def test_admin_raw_and_bad_arguments_change_nothing(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:adm-raw"

    async def main() -> None:
        async with target(nqn=nqn) as exported, await Controller.connect(exported.trid) as ctrlr:
            buf = DmaBuf.alloc(4096)
            cdw0 = await ctrlr.admin_raw(0x06, cdw10=0x01, buf=buf)
            assert cdw0 == 0 and buf.pins == 0
            assert ControllerData.from_bytes(bytes(buf)) == await ctrlr.identify()
            with pytest.raises(NvmeError) as info:
                await ctrlr.admin_raw(0xC3)  # a vendor opcode SPDK's target does not know
            assert info.value.sc_name == "Invalid Command Opcode"

            bad: list[tuple[type[Exception], Callable[[], object]]] = [
                (ValueError, lambda: ctrlr.admin_raw(0x0C)),  # SPDK keeps AERs posted
                (ValueError, lambda: ctrlr.admin_raw(0x7F)),  # Fabrics: SPDK's
                (ValueError, lambda: ctrlr.admin_raw(256)),
                (TypeError, lambda: ctrlr.admin_raw(True)),
                (ValueError, lambda: ctrlr.admin_raw(0x06, cdw10=-1)),
                (ValueError, lambda: ctrlr.admin_raw(0x06, cdw15=2**32)),
                (ValueError, lambda: ctrlr.admin_raw(0x04, buf=buf)),  # no data transfer
                (TypeError, lambda: ctrlr.admin_raw(0x06, buf=bytearray(4096))),  # type: ignore[arg-type]  # the check under test
                (ValueError, lambda: ctrlr.admin_raw(0x06, buf=DmaBuf.alloc(1 << 22))),
                (ValueError, lambda: ctrlr.get_log_page(0x02, 510)),
                (ValueError, lambda: ctrlr.get_log_page(0x02, 512, offset=2)),
                (ValueError, lambda: ctrlr.get_log_page(0x100, 512)),
                (ValueError, lambda: ctrlr.error_log(0)),
                (ValueError, lambda: ctrlr.get_feature(-1)),
                (ValueError, lambda: ctrlr.set_feature(0x0B, 2**32)),
                (LookupError, lambda: ctrlr.namespace(7)),
                (LookupError, lambda: ctrlr.identify_namespace(7)),
                (LookupError, lambda: ctrlr.health_log(7)),
                (LookupError, lambda: ctrlr.get_log_page(0x02, 512, nsid=7)),
                (ValueError, lambda: ctrlr.identify_namespace(0)),
                (ValueError, lambda: ctrlr.set_timeout(0)),
                (ValueError, lambda: ctrlr.set_timeout(float("inf"))),
                (TypeError, lambda: ctrlr.set_timeout("1")),  # type: ignore[arg-type]  # the check under test
            ]
            for exc, call in bad:
                with pytest.raises(exc):
                    call()
                assert ctrlr.commands.inflight == 0 and buf.pins == 0
            assert ctrlr.timeout is None
            with pytest.raises(ValueError, match="command_timeout"):
                ControllerOptions(command_timeout=-1)
            assert (await ctrlr.identify()).serial == SERIAL

    run(main())


def test_timeout_aborts_the_command_and_raises_timeout_error(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:adm-timeout"

    async def main() -> None:
        async with target(nqn=nqn, delay_us=2_000_000) as exported:
            opts = ControllerOptions(command_timeout=0.2)
            async with await Controller.connect(exported.trid, opts) as ctrlr:
                assert ctrlr.timeout == 0.2
                ns = ctrlr.namespace(1)
                qp = await ctrlr.alloc_qpair()
                buf = DmaBuf.alloc(4096)
                t0 = time.monotonic()
                op = qp.read_blocks(ns, buf, 0, 8)
                assert buf.pins == 1
                with pytest.raises(TimeoutError, match=r"read.*timed out after 0\.2 s"):
                    await op
                took = time.monotonic() - t0
                assert 0.2 <= took < 1.9, took  # aborted: not the delay's 2 s
                assert buf.pins == 0 and qp.inflight == 0
                assert not ctrlr.failed
                # Without the timeout, the same read takes its 2 s and succeeds.
                ctrlr.set_timeout(None)
                assert ctrlr.timeout is None
                t0 = time.monotonic()
                await qp.read_blocks(ns, buf, 0, 8)
                assert time.monotonic() - t0 >= 1.9
                assert (await ctrlr.identify()).serial == SERIAL

    run(main())


def test_cancelled_read_keeps_its_buffer_pinned_until_the_device_completes(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:adm-cancel"

    async def main() -> None:
        async with (
            target(nqn=nqn, delay_us=1_000_000) as exported,
            await Controller.connect(exported.trid) as ctrlr,
        ):
            ns = ctrlr.namespace(1)
            qp = await ctrlr.alloc_qpair()
            buf = DmaBuf.alloc(4096)

            async def reader() -> None:
                await qp.read_blocks(ns, buf, 0, 8)

            task = spdk_io.spawn(reader())
            await spdk_io.sleep(0.1)
            task.cancel()
            with pytest.raises(spdk_io.Cancelled):
                await task
            assert buf.pins == 1 and qp.inflight == 1
            with pytest.raises(BufferError):
                buf.free()  # the device still writes into it
            with pytest.raises(BlockingIOError):
                qp.close()
            await until(lambda: qp.inflight == 0, 5)
            assert buf.pins == 0
            await qp.read_blocks(ns, buf, 0, 8)  # the queue pair works on
            buf.free()

    run(main())


def test_reset_reconnects_against_an_in_process_target(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:adm-reset"

    async def main() -> None:
        async with target(nqn=nqn) as exported, await Controller.connect(exported.trid) as ctrlr:
            ns = ctrlr.namespace(1)
            qp = await ctrlr.alloc_qpair()
            data = DmaBuf.alloc(4096)
            data[:] = bytes(range(256)) * 16
            await qp.write_blocks(ns, data, 16, 8)
            cntlid = ctrlr.data.cntlid

            task = spdk_io.spawn(ctrlr.reset())
            await spdk_io.sleep(0)
            assert ctrlr.resetting
            with pytest.raises(SpdkError, match="EBUSY"):
                await ctrlr.reset()
            with pytest.raises(SpdkError, match="EBUSY"):
                ctrlr.identify()
            await spdk_io.wait_for(task, 20)
            assert not ctrlr.resetting and not ctrlr.failed
            assert ctrlr.data.cntlid != cntlid  # a new controller on the target
            back = DmaBuf.alloc(4096)
            await qp.read_blocks(ns, back, 16, 8)
            assert bytes(back) == bytes(data)
            assert (await ctrlr.identify()).serial == SERIAL
            await spdk_io.wait_for(ctrlr.reset(), 20)  # and again
            await qp.read_blocks(ns, back, 16, 8)

    run(main())


def test_reset_fails_in_flight_io_instead_of_hanging(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:adm-reset-io"

    async def main() -> None:
        async with (
            target(nqn=nqn, delay_us=1_000_000) as exported,
            await Controller.connect(exported.trid) as ctrlr,
        ):
            ns = ctrlr.namespace(1)
            qp = await ctrlr.alloc_qpair()
            buf = DmaBuf.alloc(4096)
            op = qp.read_blocks(ns, buf, 0, 8)
            await spdk_io.sleep(0.05)
            await spdk_io.wait_for(ctrlr.reset(), 20)
            with pytest.raises(NvmeError) as info:
                await spdk_io.wait_for(op, 5)
            assert "Aborted" in info.value.sc_name
            assert buf.pins == 0
            await spdk_io.wait_for(qp.read_blocks(ns, buf, 0, 8), 5)

    run(main())


def test_detach(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:adm-detach"

    async def controllers() -> int:
        found = await rpc.call("nvmf_subsystem_get_controllers", {"nqn": nqn})
        return len(found)

    async def main() -> None:
        async with target(nqn=nqn, delay_us=500_000) as exported:
            ctrlr = await Controller.connect(exported.trid)
            ns = ctrlr.namespace(1)
            qp = await ctrlr.alloc_qpair()
            buf = DmaBuf.alloc(4096)
            op = qp.read_blocks(ns, buf, 0, 8)
            detach = spdk_io.spawn(ctrlr.detach())
            await spdk_io.sleep(0.1)
            assert not detach.done() and not op.done()  # waits for the read
            await spdk_io.wait_for(detach, 10)
            await op  # which succeeded
            assert ctrlr.closed and qp.closed and buf.pins == 0
            await ctrlr.detach()  # twice is fine
            for call in (ctrlr.identify, lambda: ctrlr.get_feature(7), lambda: ctrlr.namespace(1)):
                with pytest.raises(RuntimeError, match="detached"):
                    call()
            with pytest.raises(RuntimeError, match=r"closed|detached"):
                qp.read_blocks(ns, buf, 0, 8)
            for _ in range(200):
                if await controllers() == 0:
                    break
                await spdk_io.sleep(0.02)
            assert await controllers() == 0

            # A connect cancelled before the controller attached: it is detached when it does.
            task = spdk_io.spawn(Controller.connect(exported.trid))
            await spdk_io.sleep(0)
            task.cancel()
            with pytest.raises(spdk_io.Cancelled):
                await task
            seen = 0
            for _ in range(300):  # it attaches (the target sees it), then goes away
                n = await controllers()
                seen = max(seen, n)
                if seen and n == 0:
                    break
                await spdk_io.sleep(0.01)
            assert await controllers() == 0

    run(main())


def test_host_not_allowed_is_refused_naming_the_transport_id(run: Run) -> None:
    nqn = "nqn.2016-06.io.spdk:adm-hosts"

    async def main() -> None:
        async with target(nqn=nqn, allow_any_host=False) as exported:
            with pytest.raises(SpdkError, match="ECONNREFUSED") as info:
                await spdk_io.wait_for(Controller.connect(exported.trid), 10)
            assert str(exported.trid) in str(info.value)
            host = "nqn.2014-08.org.nvmexpress:uuid:0f8fad5b-d9cb-469f-a165-70867728950e"
            await rpc.call("nvmf_subsystem_add_host", {"nqn": nqn, "host": host})
            async with await Controller.connect(
                exported.trid, ControllerOptions(hostnqn=host)
            ) as c:
                assert (await c.identify()).serial == SERIAL

    run(main())


def test_timeout_of_a_queue_pair_on_another_spdk_thread(run: Run) -> None:
    """The timeout callback runs on the queue pair's thread; the abort is sent to the
    controller's thread, whose admin queue carries it."""
    nqn = "nqn.2016-06.io.spdk:adm-timeout-foreign"

    async def worker(ctrlr: Controller) -> tuple[float, int, int]:
        ns = ctrlr.namespace(1)
        qp = await ctrlr.alloc_qpair()
        buf = DmaBuf.alloc(4096)
        t0 = time.monotonic()
        try:
            await qp.read_blocks(ns, buf, 0, 8)
        except TimeoutError:
            pass
        else:
            raise AssertionError("the read did not time out")
        took = time.monotonic() - t0
        pins, inflight = buf.pins, qp.inflight
        qp.close()
        return took, pins, inflight

    async def main() -> None:
        async with target(nqn=nqn, delay_us=2_000_000) as exported:
            opts = ControllerOptions(command_timeout=0.2)
            async with await Controller.connect(exported.trid, opts) as ctrlr:
                handle = SpdkThread.spawn(worker, ctrlr, name="nvme_foreign")
                took, pins, inflight = await spdk_io.wait_for(handle, 10)
                assert 0.2 <= took < 1.9, took  # aborted through the controller's thread
                assert (pins, inflight) == (0, 0)
                assert ctrlr.commands.inflight == 0 and not ctrlr.failed

    run(main())
