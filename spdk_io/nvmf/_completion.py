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
from spdk_io.loop import Op

__all__ = ["status_op", "submit"]


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
