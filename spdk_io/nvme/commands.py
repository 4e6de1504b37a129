"""Submitting NVMe commands and settling their completions: the one way, for admin
commands (per controller) and I/O commands (per queue pair).

:class:`Commands` pins the buffers of a command, registers its completion with the
callback bridge, calls SPDK, and counts what the device holds.  A submission SPDK
refuses for lack of request objects (``-ENOMEM``) waits in order and is submitted again
as commands complete.  When the completion arrives, the buffers are unpinned and the
:class:`~spdk_io.loop.Op` settles: its result is what ``decode(cpl)`` returns, or the
status error (:class:`~spdk_io.errors.NvmeError`).  A cancelled awaiter changes nothing
of this: the device's buffers stay pinned until it completes the command.

A command the controller's timeout callback reports is marked by its command identifier
(:meth:`Commands.mark_timed_out`); when it completes (aborted, or late), its awaiter gets
:class:`TimeoutError` whatever the status was.
"""

from __future__ import annotations

import ctypes
import errno
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from spdk_io import _bridge
from spdk_io.dma import DmaBuf, pin_all
from spdk_io.errors import NvmeError, SpdkError
from spdk_io.loop import Op
from spdk_io.nvme.status import NvmeStatus

__all__ = ["Commands", "cdw0", "status_error", "status_word"]

_u16_at = ctypes.c_uint16.from_address
_u32_at = ctypes.c_uint32.from_address
#: Offsets in ``struct spdk_nvme_cpl``: cdw0, cdw1, sqhd, sqid, cid, then the status word.
CDW0_OFFSET = 0
CID_OFFSET = 12
STATUS_OFFSET = 14

#: ``decode(cpl_address)`` turns a successful completion into the operation's result.
Decode = Callable[[int], Any]
#: What an operation keeps until its command completes: ``(bufs, call, decode, obj, seq,
#: failed)`` (``seq`` numbers the submissions SPDK accepted, to tell a timed-out command
#: from a later one that reuses its command identifier; ``failed`` decodes a failure).
Kept = tuple[list[DmaBuf], Callable[[int], int], Decode, object, int, "Decode | None"]


def status_word(cpl: int) -> int:
    """The 16-bit status field (phase bit included) of the completion at ``cpl``."""
    return _u16_at(cpl + STATUS_OFFSET).value


def cdw0(cpl: int) -> int:
    """Dword 0 of the completion at ``cpl`` (command-specific result)."""
    return _u32_at(cpl + CDW0_OFFSET).value


def cid(cpl: int) -> int:
    """The command identifier of the completion at ``cpl``."""
    return _u16_at(cpl + CID_OFFSET).value


def status_error(word: int, what: str, obj: object) -> NvmeError:
    """The exception for a failed completion's status word."""
    return NvmeError(NvmeStatus.from_word(word), what, obj)


def _none(cpl: int) -> None:
    return None


class Commands:
    """The commands one submission queue (admin or I/O) has handed to SPDK.

    ``obj`` names the queue in errors (a controller or namespace).  ``inflight`` counts
    commands SPDK holds (submitted or waiting for a request object), and never goes
    negative.
    """

    def __init__(self, obj: object) -> None:
        self.obj = obj
        #: Commands submitted (or waiting to be) and not completed.
        self.inflight = 0
        #: Submissions SPDK accepted so far (each command's ``seq``).
        self.accepted = 0
        #: Submissions SPDK refused with -ENOMEM, in order: retried on completions (read
        #: it; only this class changes it).
        self.queued: deque[tuple[Callable[[int], int], int, Op[Any]]] = deque()
        #: Command identifiers the timeout callback reported: cid -> (accepted then, seconds).
        self._timed_out: dict[int, tuple[int, float]] = {}

    def submit(
        self,
        what: str,
        call: Callable[[int], int],
        bufs: Sequence[DmaBuf] = (),
        decode: Decode = _none,
        obj: object = None,
        *,
        failed: Decode | None = None,
    ) -> Op[Any]:
        """Pin ``bufs``, register the completion, and ``call(key)`` (SPDK's rc).

        ``failed(cpl)``, if given, turns a failed completion into the result instead of
        the status error (it raises for failures it does not accept: a compare's
        miscompare is ``False``, any other failure an error).
        ``op.keep`` holds ``(bufs, call, decode, obj, seq, failed)`` until it completes:
        the buffers stay pinned, and ``call`` keeps alive what it captured that SPDK
        reads by address.  An rc other than 0 and ``-ENOMEM`` unpins, unregisters and
        raises :class:`~spdk_io.errors.SpdkError`.
        """
        op: Op[Any] = Op(what)
        pinned = pin_all(bufs)
        who = obj if obj is not None else self.obj
        op.keep = (pinned, call, decode, who, self.accepted + 1, failed)
        key = _bridge.once(self._complete, op)
        rc: int | None = None
        try:
            rc = call(key) if not self.queued else -errno.ENOMEM
        finally:
            if rc != 0 and rc != -errno.ENOMEM:
                _bridge.forget(key)
                op.keep = None
                for b in pinned:
                    b.unpin()
        if rc != 0 and rc != -errno.ENOMEM:
            raise SpdkError(-rc, what, obj if obj is not None else self.obj)
        self.inflight += 1
        if rc:
            self.queued.append((call, key, op))
        else:
            self.accepted += 1
        return op

    def mark_timed_out(self, cid: int, seconds: float) -> bool:
        """Record that the command with identifier ``cid`` passed its timeout: its awaiter
        gets :class:`TimeoutError` when it completes.  False (nothing recorded) when none
        of this queue's commands is in flight: the command is SPDK's own (keep-alive)."""
        if not self.inflight:
            return False
        self._timed_out[cid] = (self.accepted, seconds)
        return True

    def _complete(self, op: Op[Any], cpl: int) -> None:
        self.inflight -= 1
        bufs, _call, decode, obj, seq, failed = cast(Kept, op.keep)
        for b in bufs:
            b.unpin()
        word = _u16_at(cpl + STATUS_OFFSET).value
        fn = failed if word & 0xFFFE else decode
        mark = (
            self._timed_out.pop(_u16_at(cpl + CID_OFFSET).value, None) if self._timed_out else None
        )
        if mark is not None and seq <= mark[0]:  # submitted before the mark: it is the one
            what = f"{op.what}({obj})" if obj is not None else op.what
            op.set_exception(TimeoutError(f"{what} timed out after {mark[1]:g} s"))
        elif fn is None:
            op.set_exception(status_error(word, op.what, obj))
        else:
            try:
                value = fn(cpl)
            except BaseException as exc:
                op.set_exception(exc)
            else:
                op.set_result(value)
        if self.queued:
            self.resubmit()

    def submit_held(self, call: Callable[[int], int], key: int, op: Op[Any]) -> None:
        """Submit a command whose caller holds its registration (a persistent ``key``),
        its buffers and its pending ``op``: a queue pair's slot, which calls SPDK itself
        first and comes here when SPDK said ``-ENOMEM``.  ``call(key)`` runs now, or after
        the commands already waiting for a request object; the command is counted in
        flight.  Any other refusal raises :class:`~spdk_io.errors.SpdkError`, counting
        nothing.  Its completion must uncount it (``inflight -= 1``) and call
        :meth:`resubmit` while anything is :attr:`queued`."""
        rc = call(key) if not self.queued else -errno.ENOMEM
        if rc and rc != -errno.ENOMEM:
            raise SpdkError(-rc, op.what, self.obj)
        self.inflight += 1
        if rc:
            self.queued.append((call, key, op))

    def resubmit(self) -> None:
        """Submit what waits for a request object (:attr:`queued`), in order, until SPDK
        refuses again.  Called on every completion while anything waits: by
        :class:`Commands` itself, and by a slot whose own command completed (it uncounts
        it from :attr:`inflight` first)."""
        while self.queued:
            call, key, op = self.queued[0]
            rc = call(key)
            if rc == -errno.ENOMEM:
                return
            self.queued.popleft()
            if op.keep is None:  # a held command (a slot's): its key and buffer are its own
                if rc:
                    self.inflight -= 1
                    op.set_exception(SpdkError(-rc, op.what, self.obj))
            elif not rc:
                self.accepted += 1
                bufs, call, decode, obj, _seq, failed = cast(Kept, op.keep)
                op.keep = (bufs, call, decode, obj, self.accepted, failed)
            else:
                _bridge.forget(key)
                self.inflight -= 1
                bufs, _call, _decode, obj, _seq, _failed = cast(Kept, op.keep)
                op.keep = None
                for b in bufs:
                    b.unpin()
                op.set_exception(SpdkError(-rc, op.what, obj))
