"""The end of an object's asynchronous teardown (an NVMe-oF target's destroy, a
blobstore's unload), which many may wait for.

(Single completions use :func:`spdk_io._bridge.submit`: several SPDK calls complete
synchronously, before they return, so the ``Op`` and its key exist before the call.)
"""

from __future__ import annotations

from collections.abc import Callable

from spdk_io.loop import Op, Task, spawn

__all__ = ["Ending"]


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
