"""Error context against real SPDK failures: every SpdkError names its operation, object,
SPDK thread and task, in ``str()`` and as PEP 678 notes (each once); debug mode
(``spdk_io.debug``, ``SPDK_IO_DEBUG``) notes the line that submitted a failed operation."""

from __future__ import annotations

import copy
import pickle
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

import spdk_io
from spdk_io import bdev_modules as bm
from spdk_io import rpc
from spdk_io.bdev import BdevDesc
from spdk_io.blob import BlobId, Blobstore, BlobstoreOptions
from spdk_io.dma import DmaBuf
from spdk_io.errors import (
    BdevRemovedError,
    BlobNotFoundError,
    NvmeError,
    RpcError,
    SpdkError,
    ThreadExitedError,
)
from spdk_io.loop import Op
from spdk_io.nvme.status import NvmeStatus
from spdk_io.thread import SpdkThread, ThreadHandle, current_thread
from tests.conftest import run_py
from tests.test_nvme_io import exported

Run = Callable[[Awaitable[Any]], Any]
BS = 4096
HERE = __file__


def notes(exc: BaseException) -> list[str]:
    return list(getattr(exc, "__notes__", []))


def submitted(exc: BaseException) -> list[str]:
    """The debug-mode notes (``submitted at ...``), as their first lines."""
    return [n.splitlines()[0] for n in notes(exc) if n.startswith("submitted at ")]


def line() -> int:
    """The line of the caller's next line (where it submits an operation)."""
    return sys._getframe(1).f_lineno + 1


@asynccontextmanager
async def error_bdev(base: str) -> AsyncIterator[str]:
    """An error bdev over a new malloc bdev ``base``; its name.  Both deleted afterwards."""
    await bm.create_malloc(base, 64, BS)
    try:
        await bm.create_error(base)
        try:
            yield f"EE_{base}"
        finally:
            await bm.delete_error(f"EE_{base}")
    finally:
        await bm.delete_malloc(base)


@contextmanager
def debug_mode(on: bool) -> Iterator[None]:
    was = spdk_io.debug()
    spdk_io.debug(on)
    try:
        yield
    finally:
        spdk_io.debug(was)


def test_a_failed_io_names_operation_object_thread_and_awaiting_task(run: Run) -> None:
    """The EIO is created in SPDK's completion callback, where no task runs: the task is
    the one that awaits the read.  Passing through more awaits adds no note twice."""

    async def reader(d: BdevDesc, buf: DmaBuf) -> None:
        await d.read(buf, 0)

    async def main() -> tuple[SpdkError, SpdkError, str]:
        async with error_bdev("CtxIo") as ee:
            with BdevDesc.open(ee) as d, DmaBuf.alloc(BS) as buf:
                await bm.inject_error(ee, "read", "failure", 2)
                with pytest.raises(SpdkError) as one:
                    await spdk_io.spawn(reader(d, buf), "ctx-reader")
                with pytest.raises(SpdkError) as two:  # through a gather's task, then gather
                    await spdk_io.gather(reader(d, buf))
                await d.read(buf, 0)  # two were injected: this one succeeds
        return one.value, two.value, current_thread().name

    with debug_mode(False):  # the exact notes: none from debug mode
        one, two, thread = run(main())
    assert one.errno_name == "EIO" and one.obj == "EE_CtxIo" and one.op
    assert (one.thread, one.task) == (thread, "ctx-reader")
    assert str(one) == (
        f"{one.op}(EE_CtxIo) failed: EIO (Input/output error) [thread {thread}, task ctx-reader]"
    )
    assert notes(one) == [
        f"operation: {one.op}",
        "object: EE_CtxIo",
        f"SPDK thread: {thread}",
        "task: ctx-reader",
    ]
    assert two.task is not None and two.task.startswith("gather[0]")  # the task awaiting it
    assert str(two).endswith(f"[thread {thread}, task {two.task}]")
    assert notes(two) == [
        f"operation: {two.op}",
        "object: EE_CtxIo",
        f"SPDK thread: {thread}",
        f"task: {two.task}",
    ]


def test_an_error_raised_in_a_task_names_that_task(run: Run) -> None:
    """A synchronous raise (a message to an exited thread) names the task it is raised in."""

    async def main() -> tuple[ThreadExitedError, str, str]:
        gone = await SpdkThread.spawn(ThreadHandle.current, name="ctx-gone")
        with pytest.raises(ThreadExitedError) as info:
            gone.send(lambda: None)
        return info.value, current_thread().name, spdk_io.current_task().name

    exc, thread, task = run(main())
    assert (exc.op, exc.obj) == ("spdk_thread_send_msg", "ctx-gone")
    assert (exc.thread, exc.task) == (thread, task)
    assert str(exc).startswith("spdk_thread_send_msg(ctx-gone) failed: ESHUTDOWN")
    assert str(exc).endswith(f"[thread {thread}, task {task}]")
    assert f"SPDK thread: {thread}" in notes(exc) and f"task: {task}" in notes(exc)


def test_an_error_in_a_spawned_thread_names_that_thread(run: Run) -> None:
    async def main() -> tuple[SpdkError, ThreadExitedError]:
        async with error_bdev("CtxThr") as ee:
            await bm.inject_error(ee, "read", "failure", 1)

            async def read_it() -> None:
                with BdevDesc.open(ee) as d, DmaBuf.alloc(BS) as buf:
                    await d.read(buf, 0)

            async def worker() -> SpdkError:
                with pytest.raises(SpdkError) as info:
                    await spdk_io.spawn(read_it(), "ctx-sub")
                return info.value

            failed_io = await SpdkThread.spawn(worker, name="ctx-worker")

        gone = await SpdkThread.spawn(ThreadHandle.current, name="ctx-gone2")

        def plain() -> ThreadExitedError:  # a plain function: no task runs
            with pytest.raises(ThreadExitedError) as info:
                gone.send(lambda: None)
            return info.value

        return failed_io, await SpdkThread.spawn(plain, name="ctx-plain")

    failed_io, refused = run(main())
    assert (failed_io.thread, failed_io.task) == ("ctx-worker", "ctx-sub")
    assert str(failed_io).endswith("[thread ctx-worker, task ctx-sub]")
    assert (refused.thread, refused.task) == ("ctx-plain", None)
    assert str(refused).endswith("[thread ctx-plain]")
    assert "SPDK thread: ctx-plain" in notes(refused)
    assert not any(n.startswith("task:") for n in notes(refused))


def test_a_blob_op_on_a_deleted_blob_names_the_blob_and_task(run: Run) -> None:
    async def main() -> tuple[BlobNotFoundError, BlobId, str]:
        await bm.create_malloc("CtxBlob", 2048, 512)
        try:
            bs = await Blobstore.init("CtxBlob", BlobstoreOptions(cluster_size=64 * 1024))
            try:
                bid = await bs.create_blob(1)
                await bs.delete_blob(bid)
                with pytest.raises(BlobNotFoundError) as info:
                    await bs.open_blob(bid)
            finally:
                await bs.unload()
        finally:
            await bm.delete_malloc("CtxBlob")
        return info.value, bid, spdk_io.current_task().name

    exc, bid, task = run(main())
    assert exc.obj == bid and exc.task == task and exc.thread is not None
    assert str(exc).startswith(f"spdk_bs_open_blob({bid}) failed: ENOENT")
    assert str(exc).endswith(f"[thread {exc.thread}, task {task}]")
    assert notes(exc)[:4] == [
        "operation: spdk_bs_open_blob",
        f"object: {bid}",
        f"SPDK thread: {exc.thread}",
        f"task: {task}",
    ]


def test_an_nvme_status_error_names_the_status_thread_and_task(run: Run) -> None:
    """A read past the end of an NVMe-oF namespace: the target answers LBA Out of Range."""

    async def main() -> tuple[NvmeError, str, int]:
        async with exported() as t:
            raw = DmaBuf.alloc(512)
            with debug_mode(True):
                at = line()
                op = t.qp.io_raw(t.ns, 0x02, buf=raw, cdw10=t.ns.num_sectors)
                with pytest.raises(NvmeError) as info:
                    await op
            raw.free()
        return info.value, spdk_io.current_task().name, at

    exc, task, at = run(main())
    assert (exc.sct, exc.sc) == (0, 0x80) and exc.task == task
    assert "NVMe status Generic / LBA Out of Range" in str(exc)
    assert str(exc).endswith(f"[thread {exc.thread}, task {task}]")
    assert f"NVMe status: {exc.status}" in notes(exc)
    assert f"task: {task}" in notes(exc) and f"object: {exc.obj}" in notes(exc)
    assert submitted(exc) == [f"submitted at {HERE}:{at} in main"]


def test_an_rpc_error_names_its_method_thread_and_task(run: Run) -> None:
    async def main() -> tuple[RpcError, str, str]:
        with pytest.raises(RpcError) as info:
            await rpc.call("bdev_malloc_delete", {"name": "NoSuchCtxBdev"})
        return info.value, current_thread().name, spdk_io.current_task().name

    exc, thread, task = run(main())
    assert exc.errno_name == "ENODEV" and (exc.thread, exc.task) == (thread, task)
    assert str(exc).startswith("rpc bdev_malloc_delete failed: [-19] ")
    assert str(exc).endswith(f"[thread {thread}, task {task}]")
    assert notes(exc)[:3] == [
        "operation: rpc bdev_malloc_delete",
        f"SPDK thread: {thread}",
        f"task: {task}",
    ]


def submit_read(d: BdevDesc, buf: DmaBuf) -> tuple[Op[None], int]:
    """Submit a read one call below the test's coroutine; the op, and the line."""
    at = line()
    return d.read(buf, 0), at


def test_debug_mode_notes_the_line_that_submitted_a_failed_io(run: Run) -> None:
    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with error_bdev("CtxDbg") as ee:
            with BdevDesc.open(ee) as d, DmaBuf.alloc(BS) as buf, d.slot(buf) as slot:
                await bm.inject_error(ee, "read", "failure", 5)
                with debug_mode(True):
                    at = line()
                    pending, inner = submit_read(d, buf)  # submitted here, awaited later
                    await spdk_io.sleep(0)
                    with pytest.raises(SpdkError) as one:
                        await pending
                    out["one"], out["one_at"], out["one_inner"] = one.value, at, inner
                    out["slot_at"] = line()
                    reused = slot.read_blocks(0, 1)  # the slot's one Op, rearmed per I/O
                    with pytest.raises(SpdkError) as two:
                        await reused
                    out["slot"] = two.value
                    pending = d.read(buf, 0)  # submitted in debug mode ...
                with pytest.raises(SpdkError) as three:  # ... and failing after it was off
                    await pending
                out["toggled"] = three.value
                with debug_mode(False):
                    with pytest.raises(SpdkError) as four:
                        await d.read(buf, 0)
                    out["off"] = four.value
                    with pytest.raises(SpdkError) as five:
                        await slot.read_blocks(0, 1)
                    out["slot_off"] = five.value
        return out

    out = run(main())
    one = out["one"]
    assert submitted(one) == [f"submitted at {HERE}:{out['one_inner']} in submit_read"]
    note = next(n for n in notes(one) if n.startswith("submitted at "))
    # the submission traceback: main's call of submit_read, then the read in it
    assert f'File "{HERE}", line {out["one_at"]}, in main' in note
    assert note.index("in main") < note.index(f"line {out['one_inner']}, in submit_read")
    assert "pending, inner = submit_read(d, buf)" in note
    assert submitted(out["slot"]) == [f"submitted at {HERE}:{out['slot_at']} in main"]
    for exc in (out["toggled"], out["off"], out["slot_off"]):
        assert isinstance(exc, SpdkError) and exc.task is not None and not submitted(exc)


def test_debug_mode_off_runs_ops_plain_code() -> None:
    """Off costs nothing: Op's constructor and rearm are the plain ones, which record
    nothing; on swaps in recording ones, and off swaps the plain ones back."""
    was = spdk_io.debug()
    try:
        spdk_io.debug(False)
        plain = (Op.__init__, Op.rearm)
        assert not hasattr(Op("x"), "_source")  # the slot stays unset: nothing ran for it
        spdk_io.debug(True)
        assert (Op.__init__, Op.rearm) != plain
        assert hasattr(Op("x"), "_source")
        spdk_io.debug(False)
        assert (Op.__init__, Op.rearm) == plain
        op: Op[None] = Op("x")
        op.set_result(None)
        op.rearm()
        assert not hasattr(op, "_source")
    finally:
        spdk_io.debug(was)


def test_debug_switch_refuses_bad_input_and_reports_its_state() -> None:
    was = spdk_io.debug()
    try:
        assert spdk_io.debug(True) is True and spdk_io.debug() is True
        assert spdk_io.debug(False) is False and spdk_io.debug() is False
        with pytest.raises(TypeError):
            spdk_io.debug(1)  # type: ignore[arg-type]  # the point: only a bool
        assert spdk_io.debug() is False
    finally:
        spdk_io.debug(was)


DEBUG_CHILD = """
import spdk_io
from spdk_io.errors import SpdkError
from spdk_io.loop import Loop, Op

print(spdk_io.debug())
failing: list[Op[None]] = []

def poll() -> int:  # completes like a C callback: between tasks
    while failing:
        failing.pop().set_exception(SpdkError(5, "op", "obj"))
    return 0

async def main() -> None:
    op: Op[None] = Op("x")
    failing.append(op)  # line 16: the submission is the Op's creation on line 15
    try:
        await op
    except SpdkError as exc:
        print([n.splitlines()[0] for n in exc.__notes__])

Loop(poll, name="child").run_until_complete(main())
"""


@pytest.mark.parametrize(("value", "on"), [("1", True), ("yes", True), ("0", False), ("", False)])
def test_spdk_io_debug_environment_variable(value: str, on: bool) -> None:
    child = run_py(DEBUG_CHILD, env={"SPDK_IO_DEBUG": value, "PYTHONDEVMODE": ""})
    assert child.returncode == 0, child.stderr
    first, second = child.stdout.splitlines()
    assert first == str(on)
    expected = ["operation: op", "object: obj", "SPDK thread: child", "task: main"]
    if on:
        expected.append("submitted at <string>:15 in main")
    assert second == repr(expected)


@pytest.mark.parametrize(
    ("flags", "value", "on"),
    [(["-X", "dev"], "", True), (["-E"], "1", False)],
    ids=["dev mode turns it on", "-E ignores the variable"],
)
def test_python_flags_for_debug_mode(flags: list[str], value: str, on: bool) -> None:
    code = "import spdk_io; print(spdk_io.debug())"
    child = run_py(args=[*flags, "-c", code], env={"SPDK_IO_DEBUG": value, "PYTHONDEVMODE": ""})
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == str(on)


def test_an_error_from_another_thread_keeps_its_thread_and_notes_the_awaiter(run: Run) -> None:
    """An error made on a worker thread where no task runs (a plain function run by
    ``call``) is not given the origin's task: that task never ran on the worker.  Where
    it was awaited is a note of its own, once however many awaits it passes through."""

    def plain_fail() -> None:
        raise ThreadExitedError("ctx-elsewhere", "plain")

    async def task_fail() -> None:
        raise SpdkError(5, "in a task", "ctx-obj")

    async def main() -> tuple[SpdkError, SpdkError, str, str]:
        box: list[ThreadHandle] = []
        stop: list[bool] = []

        async def server() -> None:
            box.append(ThreadHandle.current())
            while not stop:
                await spdk_io.sleep(0.001)

        joined = SpdkThread.spawn(server, name="ctx-server")
        while not box:
            await spdk_io.sleep(0.001)

        async def relay() -> None:  # one more await on the origin: no second note
            await box[0].call(plain_fail)

        with pytest.raises(ThreadExitedError) as plain:
            await spdk_io.spawn(relay(), "ctx-relay")
        with pytest.raises(SpdkError) as in_task:
            await box[0].call(task_fail)
        stop.append(True)
        await joined
        return plain.value, in_task.value, current_thread().name, spdk_io.current_task().name

    plain, in_task, thread, task = run(main())
    assert (plain.thread, plain.task) == ("ctx-server", None)
    assert str(plain).endswith("[thread ctx-server]")
    assert notes(plain) == [
        "operation: plain",
        "object: ctx-elsewhere",
        "SPDK thread: ctx-server",
        f"awaited in task ctx-relay on SPDK thread {thread}",
    ]
    assert in_task.thread == "ctx-server" and in_task.task is not None
    assert in_task.task.startswith("call from ")  # the worker's task that ran it
    assert str(in_task).endswith(f"[thread ctx-server, task {in_task.task}]")
    assert notes(in_task)[-1] == f"awaited in task {task} on SPDK thread {thread}"
    assert sum(n.startswith("awaited in") for n in notes(in_task)) == 1


def test_an_error_made_in_one_task_for_anothers_operation_names_the_awaiter(run: Run) -> None:
    """A task that completes another task's operation inline (as freeing a queue pair
    completes its aborted commands) only created the error: the awaiting task is its task."""

    async def main() -> tuple[SpdkError, SpdkError, str]:
        op: Op[None] = Op("waited")

        async def waiter() -> None:
            await op

        w = spdk_io.spawn(waiter(), "ctx-waiter")
        await spdk_io.sleep(0)  # it parks on the op
        op.set_exception(SpdkError(5, "inline", "ctx-obj"))  # made in main
        with pytest.raises(SpdkError) as moved:
            await w
        own: Op[None] = Op("own")  # not awaited yet: nothing tells whose it is
        own.set_exception(SpdkError(5, "own", "ctx-obj"))
        with pytest.raises(SpdkError) as kept:
            await own
        return moved.value, kept.value, spdk_io.current_task().name

    with debug_mode(False):
        moved, kept, me = run(main())
    assert moved.task == "ctx-waiter"
    assert str(moved).endswith(f"[thread {moved.thread}, task ctx-waiter]")
    assert notes(moved) == [
        "operation: inline",
        "object: ctx-obj",
        f"SPDK thread: {moved.thread}",
        f"created in task {me}",
        "task: ctx-waiter",
    ]
    assert kept.task == me and f"task: {me}" in notes(kept)


def test_debug_mode_never_tells_one_ops_submission_to_another(run: Run) -> None:
    """One exception object failing several Ops at once has no single submission site; an
    Op made where no task runs (a message) has none; a task's own Op records nothing."""

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with debug_mode(True):
            out["first_at"] = line()
            first: Op[None] = Op("first")
            second: Op[None] = Op("second")
            third: Op[None] = Op("third")
            shared = SpdkError(5, "shared")

            def fail_all() -> None:  # a message: like a C callback failing many at once
                first.set_exception(shared)
                second.set_exception(shared)
                third.set_exception(shared)

            ThreadHandle.current().send(fail_all)
            for op in (first, second, third):
                with pytest.raises(SpdkError) as info:
                    await op
                assert info.value is shared
            out["shared"] = shared

            made: list[Op[None]] = []
            ThreadHandle.current().send(lambda: made.append(Op("in a message")))
            while not made:
                await spdk_io.sleep(0)
            made[0].set_exception(SpdkError(5, "from a message"))
            with pytest.raises(SpdkError) as info:
                await made[0]
            out["message"] = info.value

            async def nothing() -> None:
                pass

            t = spdk_io.spawn(nothing())
            out["task_done_recorded"] = hasattr(t._done, "_source")  # white box
            await t
        return out

    out = run(main())
    shared = out["shared"]
    assert submitted(shared) == []
    assert notes(pickle.loads(pickle.dumps(shared))) == notes(shared)
    assert [n.splitlines()[0] for n in notes(shared) if "operations at once" in n] == [
        "failed 3 operations at once (one exception object): no single submission site; "
        f"the first was submitted at {HERE}:{out['first_at']} in main"
    ]
    assert submitted(out["message"]) == []
    assert out["task_done_recorded"] is False


def test_a_lost_rpc_connection_fails_each_call_with_its_own_error(run: Run) -> None:
    """Every call in flight gets its own ConnectionError: its own traceback and, in debug
    mode, the line that made that call."""

    async def main() -> tuple[list[BaseException], list[int]]:
        assert "version" in await rpc.call("spdk_get_version")  # the client exists
        client = rpc._client  # white box: make SPDK drop the connection (test_rpc_robust)
        assert client is not None and client.sock is not None
        client.sock.send(b"}")
        with debug_mode(True):
            at = [line()]
            one = rpc.call("spdk_get_version")
            at.append(line())
            two = rpc.call("spdk_get_version")
            failed: list[BaseException] = []
            for op in (one, two):
                with pytest.raises(ConnectionError) as info:
                    await op
                failed.append(info.value)
        return failed, at

    (one, two), at = run(main())
    assert one is not two
    assert submitted(one) == [f"submitted at {HERE}:{at[0]} in main"]
    assert submitted(two) == [f"submitted at {HERE}:{at[1]} in main"]
    again = pickle.loads(pickle.dumps(one))  # what debug mode keeps on it pickles too
    assert type(again) is ConnectionError and notes(again) == notes(one)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SpdkError(5, "spdk_bdev_read", "Malloc0", "detail"),
        lambda: RpcError("bdev_get_bdevs", -19, "No such device", {"name": "x"}),
        lambda: NvmeError(NvmeStatus(0, 0x80, dnr=True), "read", "ns 1"),
        lambda: ThreadExitedError("worker-1", "call"),
        lambda: BdevRemovedError("Malloc0"),
        lambda: BlobNotFoundError("spdk_bs_open_blob", 7),
    ],
    ids=["SpdkError", "RpcError", "NvmeError", "ThreadExitedError", "BdevRemoved", "BlobNotFound"],
)
def test_errors_pickle_and_copy_with_their_context(make: Callable[[], SpdkError]) -> None:
    exc = make()
    exc.add_context("app_thread", "main")
    exc.add_note("a note of the caller's")
    for again in (pickle.loads(pickle.dumps(exc)), copy.copy(exc), copy.deepcopy(exc)):
        assert type(again) is type(exc) and str(again) == str(exc)
        assert (again.errno, again.args, again.op, again.obj) == (
            exc.errno,
            exc.args,
            exc.op,
            exc.obj,
        )
        assert vars(again).keys() == vars(exc).keys()
        assert notes(again) == notes(exc) and again.__notes__ is not exc.__notes__
        again.add_context("elsewhere", "other")  # its own context: the first values stay
        assert str(again) == str(exc)
        again.add_note("only on the copy")
        assert "only on the copy" not in notes(exc)


def test_joiners_of_a_failed_thread_get_no_submission_note(run: Run) -> None:
    """A spawned thread's exception, raised in its code, reaches every joiner as one
    object: no joiner's line is its submission site (its traceback says where it was
    raised; each joiner's says where it awaited)."""

    async def main() -> list[BaseException]:
        go: list[bool] = []

        async def fails() -> None:
            while not go:
                await spdk_io.sleep(0.001)
            raise LookupError("in the spawned thread")

        async def joiner(h: Any) -> BaseException:
            with pytest.raises(LookupError) as info:
                await h
            return info.value

        with debug_mode(True):
            h = SpdkThread.spawn(fails, name="ctx-fails")
            joiners = [spdk_io.spawn(joiner(h), f"ctx-joiner-{i}") for i in range(2)]
            await spdk_io.sleep(0)  # both wait on the join
            go.append(True)
            return list(await spdk_io.gather(*joiners))

    one, two = run(main())
    assert one is two  # the thread's outcome, as raised there
    assert notes(one) == []


def test_a_noted_exceptions_traceback_does_not_stop_it_pickling() -> None:
    """What debug mode keeps on a noted exception may hold a traceback (an exception that
    spdk_io raised and caught before failing the Op): pickled, it is forgotten."""
    from spdk_io.loop import _Noted  # white box: the mark itself

    try:
        raise SpdkError(5, "raised")
    except SpdkError as exc:
        caught = exc
    caught._spdk_io_noted = _Noted((0, ()), caught.__traceback__, "submitted at x", "x")  # type: ignore[attr-defined]
    caught.add_note("submitted at x")
    again = pickle.loads(pickle.dumps(caught))
    assert notes(again) == notes(caught) and again._spdk_io_noted is None
