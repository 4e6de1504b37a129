"""Target and initiator in one process, on one loop and one thread: spdk_io.nvmf serves a
bdev over NVMe/TCP on 127.0.0.1 and spdk_io.nvme connects to it, writes, reads back and
verifies.  (The blocking connect would deadlock here: the target is served by the loop
that waits.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spdk_io
from spdk_io import bdev_modules as bm
from spdk_io.dma import DmaBuf
from spdk_io.errors import SpdkError
from spdk_io.nvme import Controller, TransportId
from spdk_io.nvmf import Target
from tests.conftest import free_port

Run = Callable[[Awaitable[Any]], Any]
BS = 512
BLOCKS = 2048


@asynccontextmanager
async def served(tag: str, *, delay_us: int = 0) -> AsyncIterator[TransportId]:
    """A malloc bdev (behind a delay bdev if ``delay_us``) served by a typed Target."""
    nqn = f"nqn.2016-06.io.spdk:loopback-{tag}"
    base = f"LoopM_{tag}"
    await bm.create_malloc(base, BLOCKS, BS)
    exported = base
    if delay_us:
        exported = f"LoopD_{tag}"
        await bm.create_delay(exported, base, delay_us, delay_us, delay_us, delay_us)
    try:
        async with await Target.create(f"loop_{tag}") as target:
            await target.add_transport("TCP")
            sub = await target.create_subsystem(nqn, serial="LOOP0001", allow_any_host=True)
            await sub.add_namespace(exported)
            address = await sub.add_listener(TransportId.tcp("127.0.0.1", free_port()))
            await sub.start()
            yield address.with_subnqn(nqn)
    finally:
        if delay_us:
            await bm.delete_delay(exported)
        await bm.delete_malloc(base)


def test_one_process_serves_and_uses_its_own_target(run: Run) -> None:
    async def main() -> None:
        async with served("rw") as trid, await Controller.connect(trid) as ctrlr:
            assert ctrlr.serial == "LOOP0001"
            (ns,) = list(ctrlr.namespaces())
            assert (ns.sector_size, ns.num_sectors) == (BS, BLOCKS)
            qp = await ctrlr.alloc_qpair()
            out, back = DmaBuf.alloc(64 * BS), DmaBuf.alloc(64 * BS)
            for i in range(8):
                out[:] = bytes((i * 31 + j) & 0xFF for j in range(len(out)))
                await qp.write_blocks(ns, out, i * 64, 64)
                await qp.read_blocks(ns, back, i * 64, 64)
                assert bytes(back) == bytes(out)

    run(main())


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, BLOCKS - 8), st.integers(1, 8), st.binary(min_size=1, max_size=1)),
        min_size=1,
        max_size=12,
    )
)
def test_loopback_agrees_with_a_model(run: Run, ops: list[tuple[int, int, bytes]]) -> None:
    """Writes of random ranges (overlapping too), then one read of it all: the device
    matches a model.  (`run` only drives the loop: nothing of it is reset per example.)"""

    async def main() -> None:
        model = bytearray(BLOCKS * BS)
        async with served("model") as trid, await Controller.connect(trid) as ctrlr:
            ns = ctrlr.namespace(1)
            qp = await ctrlr.alloc_qpair()
            step = ctrlr.max_transfer_bytes // BS  # one command moves at most this
            zero = DmaBuf.alloc(step * BS)
            for lba in range(0, BLOCKS, step):
                await qp.write_blocks(ns, zero, lba, step)
            for lba, n, fill in ops:
                buf = DmaBuf.alloc(n * BS)
                buf[:] = fill * (n * BS)
                await qp.write_blocks(ns, buf, lba, n)
                model[lba * BS : (lba + n) * BS] = fill * (n * BS)
            back = DmaBuf.alloc(step * BS)
            for lba in range(0, BLOCKS, step):
                await qp.read_blocks(ns, back, lba, step)
                assert bytes(back) == bytes(model[lba * BS : (lba + step) * BS])

    run(main())


def test_target_destroyed_under_inflight_io_fails_it_and_later_calls_raise(run: Run) -> None:
    async def main() -> None:
        tag = "gone"
        async with served(tag, delay_us=300_000) as trid:
            ctrlr = await Controller.connect(trid)
            ns = ctrlr.namespace(1)
            qp = await ctrlr.alloc_qpair()
            buf = DmaBuf.alloc(BS)
            pending = [spdk_io.spawn(_read(qp, ns, buf)) for _ in range(4)]
            await spdk_io.sleep(0.05)
        # the target is gone (destroyed while 4 reads were in flight)
        results = await spdk_io.wait_for(spdk_io.gather(*[_outcome(t) for t in pending]), 30)
        assert all(isinstance(r, SpdkError) for r in results), results
        with pytest.raises(SpdkError):
            await spdk_io.wait_for(qp.read_blocks(ns, buf, 0, 1), 10)
        await spdk_io.wait_for(ctrlr.detach(), 30)
        assert buf.pins == 0

    run(main())


async def _read(qp: Any, ns: Any, buf: DmaBuf) -> None:
    await qp.read_blocks(ns, buf, 0, 1)


async def _outcome(task: spdk_io.Task[None]) -> Exception | None:
    """The exception ``task`` failed with, or ``None``."""
    try:
        await task
    except Exception as exc:
        return exc
    return None
