"""The machinery of :mod:`spdk_io.cores` both kinds of interpreter share: the pipes
between them, running a target by name with pickled arguments and outcome, and a
worker interpreter's side (serving calls on its core until told to stop)."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import pickle
import re
import struct
import traceback
from collections.abc import Callable
from typing import Any

from spdk_io.errors import Cancelled, CoreError
from spdk_io.loop import Op, Task, current_loop, wait, wait_for
from spdk_io.thread import Poller, SpdkThread, release_current

#: How often (microseconds) each side looks for messages from the other.
POLL_US = 50
#: Seconds the calls a stopping worker still runs get to unwind.
UNWIND_TIMEOUT = 5.0
#: Bytes one :meth:`Link.receive` reads at most (the rest waits for the next poll).
RECEIVE_MAX = 1 << 20
_HEADER = struct.Struct("!I")
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_current: Worker | None = None  # in a worker interpreter: what it serves


def worker() -> Worker | None:
    """What this interpreter serves if it is a core's worker (``None`` in the main one)."""
    return _current


# -- messages between interpreters ---------------------------------------------------------


class Link:
    """One end of a core's two pipes: length-prefixed pickled tuples out and in.

    Never blocks: what the pipe does not take now stays queued and goes with the
    next :meth:`flush`.  Each end is used by one OS thread only.
    """

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._out = bytearray()
        self._in = bytearray()
        self.eof = False  # the other side has gone

    def send(self, message: tuple[Any, ...]) -> None:
        body = pickle.dumps(message, protocol=5)
        self._out += _HEADER.pack(len(body))
        self._out += body
        self.flush()

    def flush(self) -> bool:
        """Write what is queued; whether everything went."""
        while self._out:
            try:
                n = os.write(self.write_fd, self._out)
            except BlockingIOError:
                return False
            except OSError:  # the other side has gone: nobody will read it
                self._out.clear()
                self.eof = True
                break
            del self._out[:n]
        return True

    def receive(self) -> list[tuple[Any, ...]]:
        """The messages that have arrived completely.  Reads at most
        :data:`RECEIVE_MAX` bytes per call, so a big message being written meanwhile
        cannot keep the poller (and its SPDK thread) here: the rest comes next poll."""
        budget = RECEIVE_MAX
        while budget > 0:
            budget -= 1 << 16
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            self._in += chunk
        messages: list[tuple[Any, ...]] = []
        while len(self._in) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(self._in)
            end = _HEADER.size + n
            if len(self._in) < end:
                break
            messages.append(pickle.loads(self._in[_HEADER.size : end]))
            del self._in[:end]
        return messages


# -- what runs: a target by name, arguments and outcome as pickles -----------------------


def target_name(target: object) -> str:
    """``"module:function"`` for a target, or ``TypeError``/``ValueError`` saying why not."""
    if isinstance(target, str):
        if not _TARGET.fullmatch(target):
            raise ValueError(f"target {target!r} is not of the form 'package.module:function'")
        return target
    if inspect.iscoroutine(target):
        target.close()  # never run: close it so Python does not warn
        raise TypeError("target must be a function (or 'module:function'), not a coroutine")
    if inspect.ismethod(target):  # sent by name, its instance (or class) would be lost
        raise TypeError(
            f"target {target.__qualname__} is a bound method: only a module-level function "
            "crosses cores (by name); pass what the method needs as arguments"
        )
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not callable(target) or not isinstance(module, str) or not isinstance(qualname, str):
        raise TypeError(f"target must be a function or 'module:function', not {target!r}")
    if "<" in qualname or module == "__main__":
        raise TypeError(
            f"target {qualname} must be a function defined at the top of an importable "
            f"module (not in __main__, not a lambda or a local function): each core's "
            "interpreter imports it by name"
        )
    return f"{module}:{qualname}"


def resolve(target: str) -> Callable[..., Any]:
    module, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"target {target} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


async def execute(
    core: int, target: str, blob: bytes, given_up: Callable[[], bool]
) -> tuple[Any, ...]:
    """Run ``target(*pickle.loads(blob))``; the reply: ``("ok", result pickle)`` or
    ``("err", exception pickle or b"", traceback text)``.  ``Cancelled`` propagates
    only if ``given_up()`` (the caller cancelled, or the core stops); a ``Cancelled``
    of the target's own is replied as a :class:`CoreError`."""
    try:
        result = resolve(target)(*pickle.loads(blob))
        if inspect.isawaitable(result):
            result = await result
    except Cancelled as exc:
        if given_up():
            raise
        tb = "".join(traceback.format_exception(exc))
        err = CoreError(
            f"{target} was cancelled on core {core}, though its caller did not cancel it "
            f"(it raised Cancelled: {exc})",
            core,
            tb,
        )
        return ("err", pickle.dumps(err, protocol=5), tb)
    except BaseException as exc:
        tb = "".join(traceback.format_exception(exc))
        exc.add_note(f"raised by {target} on core {core}")
        try:
            return ("err", pickle.dumps(exc, protocol=5), tb)
        except Exception:
            return ("err", b"", tb)
    try:
        return ("ok", pickle.dumps(result, protocol=5))
    except Exception as exc:
        err = CoreError(
            f"{target} on core {core} returned a {type(result).__name__}, which cannot be "
            f"pickled back: {exc}",
            core,
        )
        return ("err", pickle.dumps(err, protocol=5), "")


def deliver(op: Op[Any], core: int, target: str, reply: tuple[Any, ...]) -> None:
    """Finish ``op`` with a reply of :func:`execute` (unless its caller gave up)."""
    if op.done():
        return
    exc: object = None
    tb = reply[2] if len(reply) > 2 else ""
    try:
        if reply[0] == "ok":
            op.set_result(pickle.loads(reply[1]))
            return
        exc = pickle.loads(reply[1]) if reply[1] else None
    except Exception as unpickling:
        tb = tb or f"{type(unpickling).__name__}: {unpickling}"
    if not isinstance(exc, BaseException):
        exc = CoreError(
            f"{target} on core {core} failed, and what it sent back cannot be unpickled "
            f"here; its traceback:\n{tb}",
            core,
            tb,
        )
    elif tb:
        exc.add_note(f"traceback on core {core}:\n{tb.rstrip()}")
    op.set_exception(exc)


def local_call(core: int, target: str, blob: bytes) -> Op[Any]:
    """Run a call on this interpreter's own loop, through pickle as on any core."""

    given_up = False

    async def run() -> None:
        try:
            reply = await execute(core, target, blob, lambda: given_up)
        except Cancelled:
            return
        deliver(op, core, target, reply)

    def abort() -> None:  # the caller gave up: so does the call
        nonlocal given_up
        given_up = True
        task.cancel()

    op: Op[Any] = Op(f"{target} on core {core}", abort)
    task = current_loop().spawn(run(), f"{target} on core {core}")
    return op


# -- a worker interpreter's side ---------------------------------------------------------


class Worker:
    """What a worker interpreter serves: calls from main, until told to stop."""

    def __init__(self, core: int, cores: tuple[int, ...], main: int, link: Link) -> None:
        self.core = core
        self.cores = cores
        self.main_core = main
        self.link = link
        self.tasks: dict[int, Task[None]] = {}
        self.given_up: set[int] = set()  # calls cancelled by their caller or by stop
        self.stopping: Op[None] = Op(f"stop core {core}")

    async def serve(self) -> None:
        poller = Poller(self._pump, POLL_US, name=f"core{self.core} inbox")
        self.link.send(("ready",))
        try:
            await self.stopping
        finally:
            self.given_up.update(self.tasks)
            tasks = list(self.tasks.values())
            for task in tasks:
                task.cancel()
            if tasks:
                with contextlib.suppress(TimeoutError):
                    await wait_for(wait(tasks), UNWIND_TIMEOUT)
            poller.close()
            await release_current()

    def _stop(self) -> None:
        if not self.stopping.done():
            self.stopping.set_result(None)

    def _pump(self) -> bool:
        self.link.flush()
        messages = self.link.receive()
        for message in messages:
            kind = message[0]
            if kind == "call":
                _, call_id, target, blob = message
                self.tasks[call_id] = current_loop().spawn(
                    self._run(call_id, target, blob), f"{target} on core {self.core}"
                )
            elif kind == "cancel":
                task = self.tasks.get(message[1])
                if task is not None:
                    self.given_up.add(message[1])
                    task.cancel()
            elif kind == "stop":
                self._stop()
        if self.link.eof:  # main has gone
            self._stop()
        return bool(messages)

    async def _run(self, call_id: int, target: str, blob: bytes) -> None:
        try:
            reply = await execute(self.core, target, blob, lambda: call_id in self.given_up)
        except Cancelled:
            return  # the caller gave up, or the core stops (main fails the call)
        finally:
            self.tasks.pop(call_id, None)
            self.given_up.discard(call_id)
        try:
            self.link.send((reply[0], call_id, *reply[1:]))
        except Exception as exc:  # too big for a message (4 GiB): the caller must not wait
            err = CoreError(
                f"{target} on core {self.core}: its reply cannot be sent: {exc}", self.core
            )
            self.link.send(("err", call_id, pickle.dumps(err, protocol=5), ""))


def worker_main(
    core: int, cores: tuple[int, ...], main: int, thread_id: int, read_fd: int, write_fd: int
) -> None:
    """A worker interpreter's life (called by its bootstrap): pin to ``core``, take the
    SPDK thread main created, serve calls until told to stop, release, exit and destroy
    it.  Main judges that by the thread being gone, so replies still queued when it
    goes (nobody waits for them any more) are dropped."""
    global _current
    os.sched_setaffinity(0, {core})  # 0: this OS thread (DPDK pinned main's to its core)
    from spdk_io import env  # env imports cores, which imports this module

    env.join()
    link = Link(read_fd, write_fd)
    thread = SpdkThread.attach(thread_id, f"core{core}")
    try:  # from here on this thread is ours to close, whatever fails
        link.send(("attached",))
        _current = Worker(core, cores, main, link)
        thread.block_on(_current.serve())
    finally:
        thread.close()
