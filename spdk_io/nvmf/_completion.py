"""Awaiting SPDK's NVMe-oF completions: one ``Op`` per call, registered before the call.

Several nvmf calls complete synchronously, before they return (adding a transport
that exists, a state change with nothing to do), so the ``Op`` and its bridge key
always exist before the C call is made.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from spdk_io import _bridge
from spdk_io.errors import SpdkError
from spdk_io.loop import Op, Task, spawn

__all__ = ["Ending", "status_op", "submit"]


def status_op(what: str, obj: object) -> tuple[Op[None], int]:
    """An ``Op`` that a ``(..., int status)`` completion finishes (an ``SpdkError`` for a
    non-zero status), and the key to pass SPDK as ``cb_arg``."""
    op: Op[None] = Op(what)

    def done(status: int) -> None:
        if status == 0:
            op.set_result(None)
        else:
            op.set_exception(SpdkError(abs(status) or errno.EIO, what, obj))

    return op, _bridge.once(done, op)


def submit(what: str, obj: object, call: Callable[[int], int | None]) -> Op[None]:
    """Start ``call(key)`` with a fresh completion key; return the ``Op`` to await.

    ``call`` returns SPDK's rc (``None`` for a ``void`` function); a non-zero rc
    means SPDK will not call back: the key is dropped and ``SpdkError`` raised.
    """
    op, key = status_op(what, obj)
    try:
        rc = call(key)
    except BaseException:
        _bridge.forget(key)
        raise
    if rc:
        _bridge.forget(key)
        raise SpdkError(abs(rc), what, obj)
    return op


class Ending:
    """The end of an asynchronous destroy, which a C completion finishes once.

    Any number of tasks may wait for it (:meth:`wait`), and hooks run the moment it
    finishes (:meth:`then`), inside the completion, in the order they were added.
    """

    def __init__(self, what: str) -> None:
        self._op: Op[None] = Op(what)
        self._hooks: list[Callable[[], None]] = []
        self._task: Task[None] | None = None

    def done(self) -> bool:
        return self._op.done()

    def finish(self, err: BaseException | None = None) -> None:
        """Record the end (``err``: how it failed) and run the hooks."""
        if err is None:
            self._op.set_result(None)
        else:
            self._op.set_exception(err)
        hooks, self._hooks = self._hooks, []
        for fn in hooks:
            fn()

    def then(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` when it has finished (now, if it has)."""
        if self.done():
            fn()
        else:
            self._hooks.append(fn)

    def wait(self) -> Task[None]:
        """A task that finishes with it (raising its error); the same one every time."""
        if self._task is None:
            self._task = spawn(_wait(self._op), self._op.what)
        return self._task


async def _wait(op: Op[None]) -> None:
    await op
