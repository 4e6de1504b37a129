"""NVMe controllers: connected without blocking the loop, detached the same way.

``await Controller.connect(trid)`` uses ``spdk_nvme_connect_async`` and polls the probe
from a poller, so a target served by this very loop (``spdk_io.nvmf``) answers while
we wait: the blocking ``spdk_nvme_connect`` would spin forever there.  A connected
:class:`Controller` is a :class:`~spdk_io.resource.Resource` owned by the SPDK thread
that connected it: an admin poller (its child) processes admin completions and keep-alive;
its queue pairs on the same thread are children too and close first.  Detaching is
asynchronous (``spdk_nvme_detach_async``): ``await ctrlr.detach()`` (or ``aclose()``,
or leaving ``async with``) returns once SPDK has let go of the controller.

Admin commands (identify, log pages, features, a raw passthrough) return an
:class:`~spdk_io.loop.Op` to await; they go through the controller's own
:class:`~spdk_io.nvme.commands.Commands`, so their buffers stay pinned until the device
completes them, also when the awaiting task is cancelled.  Bad arguments raise before
anything is submitted.  A command timeout (``ControllerOptions.command_timeout`` or
:meth:`Controller.set_timeout`) aborts a late command and its awaiter gets
``TimeoutError``.  ``await ctrlr.reset()`` disconnects and reconnects the controller and
its queue pairs by polling, never blocking the loop.  When the target goes away, the
admin poller marks the controller failed (:attr:`Controller.failed`): commands in flight
fail, new ones raise, and detaching still works.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, Self

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io._validate import integer
from spdk_io.dma import DmaBuf
from spdk_io.env import main_interpreter_only
from spdk_io.errors import SpdkError
from spdk_io.loop import Op
from spdk_io.nvme.commands import Commands, cdw0
from spdk_io.nvme.data import (
    ControllerData,
    ErrorLogEntry,
    HealthLog,
    NamespaceData,
    parse_active_ns_list,
    parse_error_log,
)
from spdk_io.nvme.namespace import Namespace
from spdk_io.nvme.options import ControllerOptions, command_timeout_us
from spdk_io.nvme.transport import TransportId, transport_id
from spdk_io.resource import Resource
from spdk_io.thread import Poller, SpdkThread, current_thread

if TYPE_CHECKING:
    from spdk_io.nvme.qpair import Qpair, QpairOptions

__all__ = ["Controller"]

#: How often the admin poller runs, in microseconds (admin completions, keep-alive).
ADMIN_POLL_US = 1000
#: How long reconnecting the queue pairs after a reset may take, in seconds.
RESET_QPAIR_TIMEOUT = 10.0
_U32 = 2**32 - 1
#: The namespace ID that means "all namespaces" (log pages, features).
GLOBAL_NSID: Final = 0xFFFFFFFF
#: Identify data and the active namespace list are one 4096-byte page.
IDENTIFY_BYTES: Final = 4096
_OPC_IDENTIFY: Final = 0x06
_CNS_NAMESPACE, _CNS_CONTROLLER, _CNS_ACTIVE_NS_LIST = 0x00, 0x01, 0x02
_LID_ERROR, _LID_HEALTH = 0x01, 0x02
_ERROR_ENTRY_BYTES, _HEALTH_BYTES = 64, 512
#: Admin opcodes SPDK's driver owns: Asynchronous Event Request (it keeps them posted;
#: one more would complete only on an event) and Fabrics commands (connect, properties).
_SPDK_OWNED_OPCODES: Final = {0x0C: "Asynchronous Event Request", 0x7F: "Fabrics"}
_QP = ctypes.POINTER(g.struct_spdk_nvme_qpair)


def _u32(value: object, what: str) -> int:
    return integer(value, what, 0, _U32)


def _refused(trid: TransportId) -> SpdkError:
    return SpdkError(
        errno.ECONNREFUSED,
        "connect",
        str(trid),
        "no controller attached: nothing listens there, the subsystem NQN is unknown, "
        "or the subsystem does not allow this host (SPDK's log says which)",
    )


class Controller(Resource):
    """A connected NVMe controller (``struct spdk_nvme_ctrlr``), owned by the SPDK
    thread that connected it.  Made by :meth:`connect`; closed by :meth:`detach`.

    Admin commands are submitted from the owning thread only (``WrongThreadError``
    elsewhere); ``commands`` counts the admin commands in flight.
    """

    def __init__(self, ptr: Any, trid: TransportId, options: ControllerOptions) -> None:
        """Wrap a controller SPDK attached (use :meth:`connect`)."""
        self.thread: SpdkThread = current_thread()
        self._ptr: Any = ptr  # None once detaching started
        self.trid = trid
        self.options = options
        #: Every open queue pair of this controller, by its ``struct spdk_nvme_qpair`` address.
        self._queues: dict[int, Qpair] = {}
        self._detached: Op[None] = Op(f"detach {trid}")
        #: The admin queue's commands (submitted, not completed).
        self.commands = Commands(self.name)
        #: The errno the admin queue failed with (target gone); 0 while it works.
        self._failure = 0
        self._resetting: Op[None] | None = None
        self._cdata: ControllerData | None = None
        self._timeout: float | None = None
        self._timeout_key = 0
        super().__init__(self.thread)
        self._admin = Poller(self._poll_admin, ADMIN_POLL_US, "nvme_admin", parent=self)
        if options.command_timeout is not None:
            self.set_timeout(options.command_timeout)

    @classmethod
    async def connect(
        cls, trid: TransportId | str, options: ControllerOptions | None = None
    ) -> Self:
        """Connect to the controller at ``trid`` without blocking the loop.

        Raises :class:`~spdk_io.errors.SpdkError` (``ECONNREFUSED``) naming ``trid``
        when nothing attaches.  If the awaiting task is cancelled, a controller that
        attaches later is detached.  Main interpreter only
        (:class:`~spdk_io.errors.MainInterpreterOnlyError` in a core's worker): SPDK has
        one controller per (trid, host NQN) per process, whose admin queue would then be
        processed by two interpreters; use the controller as a bdev on other cores.
        """
        main_interpreter_only("nvme.Controller.connect")
        trid = transport_id(trid)
        if options is None:
            options = ControllerOptions()
        elif not isinstance(options, ControllerOptions):
            raise TypeError(f"options must be ControllerOptions, not {type(options).__name__}")
        current_thread()
        opts = options.to_c()
        trid_c = trid.to_c()
        op: Op[Any] = Op(f"connect {trid}")
        abandoned = False

        def attached(ptr: Any) -> None:
            if abandoned:
                _detach_orphan(ptr)
            else:
                op.set_result(ptr)

        key = ctypes.addressof(opts)  # SPDK passes the options pointer as cb_ctx
        _bridge.once_at(key, attached, op)
        probe = g.spdk_nvme_connect_async(
            ctypes.byref(trid_c), ctypes.byref(opts), _bridge.nvme_attach_cb
        )
        if not probe:
            _bridge.forget(key)
            raise SpdkError(errno.EINVAL, "spdk_nvme_connect_async", str(trid))

        def poll() -> bool:
            if g.spdk_nvme_probe_poll_async(probe) == -errno.EAGAIN:
                return True
            poller.close()  # SPDK freed the probe context
            _bridge.forget(key)
            if not op.done() and not abandoned:
                op.set_exception(_refused(trid))
            keep.clear()
            return True

        keep = [opts, trid_c]  # SPDK reads both until the probe ends
        poller = Poller(poll, 0, "nvme_connect")
        try:
            ptr = await op
        except BaseException:
            abandoned = True
            raise
        return cls(ptr, trid, options)

    # -- what it is ----------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "detached" if self.closed else ("failed" if self._failure else "attached")
        return f"<Controller {self.trid} {state}>"

    @property
    def handle(self) -> Any:
        """The ``struct spdk_nvme_ctrlr *`` (for :mod:`spdk_io.raw`); valid while attached."""
        self.check_open()
        return self._ptr

    def check_open(self) -> None:
        """Raise ``RuntimeError`` once the controller is detached (or detaching)."""
        if self.closed:
            raise RuntimeError(f"controller {self.trid} is detached")

    def check_usable(self, what: str) -> None:
        """Raise unless commands can be submitted now: on the owning OS thread
        (``WrongThreadError``), attached (``RuntimeError``), not failed and not resetting
        (:class:`~spdk_io.errors.SpdkError` ``ENXIO``/``EBUSY``)."""
        self.thread.check_owner()
        self.check_open()
        if self._failure:
            raise SpdkError(
                self._failure, what, self.name, "the controller failed: reset() or detach() it"
            )
        if self._resetting is not None:
            raise SpdkError(errno.EBUSY, what, self.name, "the controller is resetting")

    @property
    def name(self) -> str:
        return self.trid.subnqn or self.trid.traddr or self.trid.trtype

    @property
    def failed(self) -> bool:
        """Whether the controller failed (target gone, reset failed) or is detached."""
        return self.closed or bool(self._failure) or bool(g.spdk_nvme_ctrlr_is_failed(self._ptr))

    @property
    def resetting(self) -> bool:
        """Whether a :meth:`reset` is in progress."""
        return self._resetting is not None

    @property
    def max_transfer_bytes(self) -> int:
        """The largest data transfer of one command, in bytes."""
        return int(g.spdk_nvme_ctrlr_get_max_xfer_size(self.handle))

    @property
    def data(self) -> ControllerData:
        """The Identify Controller data SPDK read when it attached (read again after a
        reset); :meth:`identify` asks the controller now."""
        if self._cdata is None:
            self._cdata = ControllerData.from_struct(
                g.spdk_nvme_ctrlr_get_data(self.handle).contents
            )
        return self._cdata

    @property
    def serial(self) -> str:
        return self.data.serial

    @property
    def model(self) -> str:
        return self.data.model

    @property
    def firmware(self) -> str:
        return self.data.firmware

    @property
    def subnqn(self) -> str:
        return self.data.subnqn

    # -- namespaces ----------------------------------------------------------------------

    def namespace_ids(self) -> list[int]:
        """The active namespace IDs, ascending (as SPDK knows them)."""
        ptr = self.handle
        out = []
        nsid = g.spdk_nvme_ctrlr_get_first_active_ns(ptr)
        while nsid:
            out.append(int(nsid))
            nsid = g.spdk_nvme_ctrlr_get_next_active_ns(ptr, nsid)
        return out

    def namespaces(self) -> Iterator[Namespace]:
        """The active namespaces."""
        for nsid in self.namespace_ids():
            yield Namespace(self, nsid)

    def namespace(self, nsid: int) -> Namespace:
        """Active namespace ``nsid``; ``LookupError`` if there is none."""
        nsid = self._active_nsid(nsid)
        return Namespace(self, nsid)

    def _active_nsid(self, nsid: object) -> int:
        nsid = integer(nsid, "nsid", 1, _U32 - 1)
        if not g.spdk_nvme_ctrlr_is_active_ns(self.handle, nsid):
            raise LookupError(f"controller {self.name} has no active namespace {nsid}")
        return nsid

    # -- admin commands ------------------------------------------------------------------

    def _admin_cmd(
        self,
        what: str,
        call: Callable[[int], int],
        buf: DmaBuf | None = None,
        decode: Callable[[int], Any] = cdw0,
    ) -> Op[Any]:
        self.check_usable(what)
        return self.commands.submit(what, call, (buf,) if buf is not None else (), decode, None)

    def _data_buf(self, buf: object, what: str = "buf") -> DmaBuf | None:
        if buf is None:
            return None
        if not isinstance(buf, DmaBuf):
            raise TypeError(f"{what} must be a DmaBuf or None, not {type(buf).__name__}")
        limit = self.max_transfer_bytes
        if len(buf) > limit:
            raise ValueError(
                f"{what} holds {len(buf)} bytes; {self.name} transfers at most {limit} per command"
            )
        return buf

    def admin_raw(
        self,
        opcode: int,
        *,
        nsid: int = 0,
        cdw10: int = 0,
        cdw11: int = 0,
        cdw12: int = 0,
        cdw13: int = 0,
        cdw14: int = 0,
        cdw15: int = 0,
        buf: DmaBuf | None = None,
    ) -> Op[int]:
        """Submit admin command ``opcode`` as given (SPDK checks nothing); its result is
        completion dword 0.  Data moves through ``buf`` (its whole length) in the direction
        the opcode's low two bits say.  Opcodes SPDK owns (Asynchronous Event Request,
        Fabrics) raise ``ValueError``."""
        opcode = integer(opcode, "opcode", 0, 0xFF)
        if opcode in _SPDK_OWNED_OPCODES:
            raise ValueError(
                f"opcode {opcode:#04x} ({_SPDK_OWNED_OPCODES[opcode]}) is SPDK's own: "
                "the driver issues it"
            )
        cmd = g.struct_spdk_nvme_cmd()
        cmd.opc = opcode
        cmd.nsid = _u32(nsid, "nsid")
        for i, value in enumerate((cdw10, cdw11, cdw12, cdw13, cdw14, cdw15), 10):
            setattr(cmd, f"cdw{i}", _u32(value, f"cdw{i}"))
        data = self._data_buf(buf)
        if data is not None and not opcode & 0x3:
            raise ValueError(f"opcode {opcode:#04x} transfers no data: pass no buf")
        return self._raw(f"admin opcode {opcode:#04x}", cmd, data, cdw0)

    def _raw(
        self, what: str, cmd: Any, buf: DmaBuf | None, decode: Callable[[int], Any]
    ) -> Op[Any]:
        ptr = self.handle
        addr, size = (buf.addr, len(buf)) if buf is not None else (None, 0)
        cmd_ref = ctypes.byref(cmd)  # keeps cmd alive with the call (SPDK copies it)
        return self._admin_cmd(
            what,
            lambda key: g.spdk_nvme_ctrlr_cmd_admin_raw(
                ptr, cmd_ref, addr, size, _bridge.nvme_cmd_cb, key
            ),
            buf,
            decode,
        )

    def _identify(self, what: str, cns: int, nsid: int, parse: Callable[[bytes], Any]) -> Op[Any]:
        cmd = g.struct_spdk_nvme_cmd()
        cmd.opc = _OPC_IDENTIFY
        cmd.nsid = nsid
        cmd.cdw10 = cns
        self.check_usable(what)
        buf = DmaBuf.alloc(IDENTIFY_BYTES)
        return self._raw(what, cmd, buf, lambda cpl: parse(_take_bytes(buf)))

    def identify(self) -> Op[ControllerData]:
        """Identify Controller (opcode 06h, CNS 01h), asked now."""
        return self._identify("identify controller", _CNS_CONTROLLER, 0, ControllerData.from_bytes)

    def identify_namespace(self, nsid: int) -> Op[NamespaceData]:
        """Identify Namespace (CNS 00h) of active namespace ``nsid`` (``LookupError``
        for another)."""
        nsid = self._active_nsid(nsid)
        return self._identify(
            f"identify namespace {nsid}", _CNS_NAMESPACE, nsid, NamespaceData.from_bytes
        )

    def active_namespaces(self, after: int = 0) -> Op[list[int]]:
        """The Active Namespace ID list (CNS 02h): active IDs greater than ``after``,
        ascending, at most 1024 of them."""
        after = integer(after, "after", 0, 0xFFFFFFFD)
        return self._identify(
            "identify active namespace list", _CNS_ACTIVE_NS_LIST, after, parse_active_ns_list
        )

    def get_log_page(
        self, lid: int, size: int, *, nsid: int = GLOBAL_NSID, offset: int = 0
    ) -> Op[bytes]:
        """``size`` bytes of log page ``lid`` from byte ``offset``, as the controller
        returns them (``size`` and ``offset`` are multiples of 4)."""
        lid = integer(lid, "lid", 0, 0xFF)
        size = integer(size, "size", 4, self.max_transfer_bytes)
        offset = integer(offset, "offset", 0, 2**64 - 4)
        if size % 4 or offset % 4:
            raise ValueError(f"size {size} and offset {offset} must be multiples of 4 bytes")
        nsid = _u32(nsid, "nsid")
        if nsid not in (0, GLOBAL_NSID):
            self._active_nsid(nsid)
        return self._log_page(f"get log page {lid:#04x}", lid, nsid, size, offset, bytes)

    def _log_page(
        self, what: str, lid: int, nsid: int, size: int, offset: int, parse: Callable[[bytes], Any]
    ) -> Op[Any]:
        self.check_usable(what)
        ptr = self.handle
        buf = DmaBuf.alloc(size)
        addr = buf.addr
        return self._admin_cmd(
            what,
            lambda key: g.spdk_nvme_ctrlr_cmd_get_log_page(
                ptr, lid, nsid, addr, size, offset, _bridge.nvme_cmd_cb, key
            ),
            buf,
            lambda cpl: parse(_take_bytes(buf)),
        )

    def error_log(self, entries: int | None = None) -> Op[list[ErrorLogEntry]]:
        """The Error Information log (LID 01h): its used entries, newest first.  Reads
        ``entries`` entries (default: as many as the controller keeps, ELPE + 1)."""
        most = self.max_transfer_bytes // _ERROR_ENTRY_BYTES
        if entries is None:
            entries = min(self.data.elpe + 1, most)
        entries = integer(entries, "entries", 1, most)
        return self._log_page(
            "get error log",
            _LID_ERROR,
            GLOBAL_NSID,
            entries * _ERROR_ENTRY_BYTES,
            0,
            parse_error_log,
        )

    def health_log(self, nsid: int = GLOBAL_NSID) -> Op[HealthLog]:
        """The SMART / Health Information log (LID 02h), of the controller or of
        active namespace ``nsid``."""
        nsid = _u32(nsid, "nsid")
        if nsid != GLOBAL_NSID:
            self._active_nsid(nsid)
        return self._log_page(
            "get health log", _LID_HEALTH, nsid, _HEALTH_BYTES, 0, HealthLog.from_bytes
        )

    def get_feature(
        self, fid: int, cdw11: int = 0, *, nsid: int | None = None, buf: DmaBuf | None = None
    ) -> Op[int]:
        """Get Features ``fid``; the result is completion dword 0 (data, if the feature
        has any, goes into ``buf``).  ``nsid`` names a namespace-specific feature's
        namespace."""
        fid = integer(fid, "fid", 0, 0xFF)
        cdw11 = _u32(cdw11, "cdw11")
        data = self._data_buf(buf)
        ptr = self.handle
        addr, size = (data.addr, len(data)) if data is not None else (None, 0)
        what = f"get feature {fid:#04x}"
        if nsid is None:
            return self._admin_cmd(
                what,
                lambda key: g.spdk_nvme_ctrlr_cmd_get_feature(
                    ptr, fid, cdw11, addr, size, _bridge.nvme_cmd_cb, key
                ),
                data,
            )
        ns = _u32(nsid, "nsid")
        return self._admin_cmd(
            what,
            lambda key: g.spdk_nvme_ctrlr_cmd_get_feature_ns(
                ptr, fid, cdw11, addr, size, _bridge.nvme_cmd_cb, key, ns
            ),
            data,
        )

    def set_feature(
        self,
        fid: int,
        cdw11: int = 0,
        cdw12: int = 0,
        *,
        nsid: int | None = None,
        buf: DmaBuf | None = None,
    ) -> Op[int]:
        """Set Features ``fid`` (data, if the feature takes any, from ``buf``); the result
        is completion dword 0."""
        fid = integer(fid, "fid", 0, 0xFF)
        cdw11 = _u32(cdw11, "cdw11")
        cdw12 = _u32(cdw12, "cdw12")
        data = self._data_buf(buf)
        ptr = self.handle
        addr, size = (data.addr, len(data)) if data is not None else (None, 0)
        what = f"set feature {fid:#04x}"
        if nsid is None:
            return self._admin_cmd(
                what,
                lambda key: g.spdk_nvme_ctrlr_cmd_set_feature(
                    ptr, fid, cdw11, cdw12, addr, size, _bridge.nvme_cmd_cb, key
                ),
                data,
            )
        ns = _u32(nsid, "nsid")
        return self._admin_cmd(
            what,
            lambda key: g.spdk_nvme_ctrlr_cmd_set_feature_ns(
                ptr, fid, cdw11, cdw12, addr, size, _bridge.nvme_cmd_cb, key, ns
            ),
            data,
        )

    # -- timeouts ------------------------------------------------------------------------

    @property
    def timeout(self) -> float | None:
        """The command timeout in seconds (``None``: none)."""
        return self._timeout

    def set_timeout(self, seconds: float | None) -> None:
        """Abort admin and I/O commands that take longer than ``seconds``; their
        awaiters get ``TimeoutError`` once the device completes them (their buffers stay
        pinned until then).  ``None`` turns the timeout off.  Commands already in flight
        are checked against the new value."""
        us = command_timeout_us(seconds) if seconds is not None else 0
        ptr = self.handle
        self.thread.check_owner()
        if seconds is None:
            g.spdk_nvme_ctrlr_register_timeout_callback(ptr, 0, 0, None, None)
            self._timeout = None
            return
        if not self._timeout_key:
            self._timeout_key = _bridge.persistent(self._on_timeout)
        g.spdk_nvme_ctrlr_register_timeout_callback(
            ptr, us, us, _bridge.nvme_timeout_cb, self._timeout_key
        )
        self._timeout = us / 1e6

    def _on_timeout(self, qpair: int | None, cid: int) -> None:
        """SPDK's timeout callback: mark the command and abort it (from the controller's
        thread; the callback runs on the thread polling the queue)."""
        if self._ptr is None or self._timeout is None:
            return
        if qpair is None:
            commands = self.commands
        else:
            qp = self._queues.get(qpair)
            if qp is None:
                return
            commands = qp.commands
        if not commands.mark_timed_out(cid, self._timeout):
            return
        if qpair is None or self._queues[qpair].thread is self.thread:
            self._abort(qpair, cid)
        else:
            self.thread.handle().send(lambda: self._abort(qpair, cid))

    def _abort(self, qpair: int | None, cid: int) -> None:
        if self.closed or self._failure or self._resetting is not None:
            return  # the command fails with its queue, or completes: TimeoutError either way
        ptr = self._ptr
        qp = ctypes.cast(qpair, _QP) if qpair is not None else None
        # If SPDK refuses the abort, the command completes late: TimeoutError all the same.
        with contextlib.suppress(SpdkError):
            self.commands.submit(
                f"abort cid {cid}",
                lambda key: g.spdk_nvme_ctrlr_cmd_abort(ptr, qp, cid, _bridge.nvme_cmd_cb, key),
                decode=cdw0,
            )

    # -- queue pairs ---------------------------------------------------------------------

    async def alloc_qpair(self, options: QpairOptions | None = None) -> Qpair:
        """A connected I/O queue pair for the current SPDK thread (see :class:`Qpair`)."""
        from spdk_io.nvme.qpair import Qpair

        return await Qpair.connect(self, options)

    def add_queue(self, qpair: Qpair, address: int) -> None:
        """Know ``qpair`` (at ``struct spdk_nvme_qpair`` address ``address``) while it is
        open: for timeouts and :meth:`reset` (called by :class:`Qpair`)."""
        self._queues[address] = qpair

    def remove_queue(self, qpair: Qpair) -> None:
        """Forget ``qpair`` (it closed; called by :class:`Qpair`)."""
        for address, qp in list(self._queues.items()):
            if qp is qpair:
                del self._queues[address]

    # -- reset ---------------------------------------------------------------------------

    async def reset(self) -> None:
        """Reset the controller as SPDK's bdev_nvme does, polling, never blocking the loop:
        disconnect the I/O queue pairs and the admin queue, reconnect the controller
        (``spdk_nvme_ctrlr_reconnect_poll_async``), then reconnect the queue pairs.

        Commands in flight fail (aborted); commands submitted meanwhile raise ``EBUSY``.
        A controller that failed can be reset to recover.  Raises
        :class:`~spdk_io.errors.SpdkError` if the controller cannot reconnect (it is then
        failed), or ``EBUSY`` with a reset in progress or queue pairs open on other SPDK
        threads (they cannot be reconnected from here).  If the awaiting task is
        cancelled, the reset still finishes; detaching waits for it.
        """
        self.thread.check_owner()
        ptr = self.handle
        if self._resetting is not None:
            raise SpdkError(errno.EBUSY, "reset", self.name, "a reset is in progress")
        others = [qp for qp in self._queues.values() if qp.thread is not self.thread]
        if others:
            raise SpdkError(
                errno.EBUSY,
                "reset",
                self.name,
                f"{len(others)} queue pair(s) on other SPDK threads are open",
            )
        queues = [(ctypes.cast(a, _QP), qp) for a, qp in self._queues.items()]
        for qptr, _qp in queues:
            g.spdk_nvme_ctrlr_disconnect_io_qpair(qptr)
        rc = g.spdk_nvme_ctrlr_disconnect(ptr)
        if rc:
            self._failure = self._failure or -rc
            raise SpdkError(-rc, "spdk_nvme_ctrlr_disconnect", self.name)
        done: Op[None] = Op(f"reset {self.name}")
        self._resetting = done
        self._cdata = None
        self._admin.pause()
        phase = ["disconnect"]
        pending = list(queues)
        deadline = [0.0]

        def finish(err: SpdkError | None) -> None:
            poller.close()
            self._resetting = None
            self._admin.resume()
            if err is None:
                self._failure = 0
                for _qptr, qp in queues:
                    qp.reconnected()
                done.set_result(None)
            else:
                self._failure = err.errno or errno.EIO
                done.set_exception(err)

        def step() -> bool:
            if phase[0] == "disconnect":
                if g.spdk_nvme_ctrlr_process_admin_completions(ptr) == -errno.ENXIO:
                    g.spdk_nvme_ctrlr_reconnect_async(ptr)
                    phase[0] = "reconnect"
                return True
            if phase[0] == "reconnect":
                rc = g.spdk_nvme_ctrlr_reconnect_poll_async(ptr)
                if rc == -errno.EAGAIN:
                    return True
                if rc:
                    finish(SpdkError(errno.ECONNREFUSED, "reset", self.name, "reconnect failed"))
                    return True
                phase[0] = "qpairs"
                deadline[0] = time.monotonic() + RESET_QPAIR_TIMEOUT
            for item in list(pending):
                qptr, _qp = item
                rc = g.spdk_nvme_ctrlr_reconnect_io_qpair(qptr)
                if rc == 0 and g.spdk_nvme_qpair_is_connected(qptr):
                    pending.remove(item)
                elif rc not in (0, -errno.EAGAIN):
                    finish(SpdkError(-rc, "spdk_nvme_ctrlr_reconnect_io_qpair", self.name))
                    return True
            if not pending:
                finish(None)
            elif time.monotonic() > deadline[0]:
                finish(SpdkError(errno.ETIMEDOUT, "reconnect I/O qpairs", self.name))
            return True

        poller = Poller(step, 0, "nvme_reset", parent=self)
        await done

    # -- polling and detaching -----------------------------------------------------------

    def _poll_admin(self) -> bool:
        rc = int(g.spdk_nvme_ctrlr_process_admin_completions(self._ptr))
        if rc < 0 and not self._failure:
            # The admin queue is gone (target gone, connection lost): fail the controller
            # and disconnect its queue pairs.  SPDK polls no queue pair of a failed
            # controller, so without the disconnect their commands in flight would hang;
            # disconnecting aborts them.
            self._failure = -rc
            g.spdk_nvme_ctrlr_fail(self._ptr)
            for address, qp in list(self._queues.items()):
                if qp.thread is self.thread:
                    _disconnect_qpair(qp, address)
                else:
                    qp.thread.handle().send(functools.partial(_disconnect_qpair, qp, address))
        return rc > 0

    def _refusal(self) -> BaseException | None:
        foreign = sum(qp.thread is not self.thread for qp in self._queues.values())
        if foreign:
            return BlockingIOError(f"{foreign} queue pair(s) on other SPDK threads are still open")
        if self._resetting is not None:
            return BlockingIOError(f"controller {self.name} is resetting")
        if self.commands.inflight:
            return BlockingIOError(f"{self.commands.inflight} admin command(s) in flight")
        return None

    def _release(self) -> None:
        """Start ``spdk_nvme_detach_async``; a poller finishes it (:meth:`detach` awaits)."""
        ptr, self._ptr = self._ptr, None
        if self._timeout_key:
            _bridge.forget(self._timeout_key)
            self._timeout_key = 0
        _start_detach(ptr, self._detached)

    async def aclose(self) -> None:
        """Detach once no queue pair has I/O in flight (the same as :meth:`detach`)."""
        await self.detach()

    async def detach(self) -> None:
        """Close the queue pairs, detach the controller, and wait until SPDK is done.
        Waits for commands in flight and a reset in progress.  Idempotent."""
        if not self.closed:
            await super().aclose()
        await self._detached

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.detach()


def _disconnect_qpair(qp: Qpair, address: int) -> None:
    """Disconnect an open queue pair (on its own thread): its commands in flight abort."""
    if not qp.closed:
        g.spdk_nvme_ctrlr_disconnect_io_qpair(ctypes.cast(address, _QP))


def _take_bytes(buf: DmaBuf) -> bytes:
    """The bytes of an internal buffer whose command completed; the buffer is freed."""
    data = buf.tobytes()
    buf.free()
    return data


def _start_detach(ptr: Any, done: Op[None] | None) -> None:
    """Detach ``ptr`` asynchronously; ``done`` (if given) finishes when SPDK is done."""
    ctx = ctypes.POINTER(g.struct_spdk_nvme_detach_ctx)()
    rc = g.spdk_nvme_detach_async(ptr, ctypes.byref(ctx))
    if rc != 0 or not ctx:
        if done is not None and not done.done():
            if rc:
                done.set_exception(SpdkError(-rc, "spdk_nvme_detach_async"))
            else:
                done.set_result(None)
        return

    def poll() -> bool:
        if g.spdk_nvme_detach_poll_async(ctx) == -errno.EAGAIN:
            return True
        poller.close()
        if done is not None and not done.done():
            done.set_result(None)
        return True

    poller = Poller(poll, 0, "nvme_detach")


def _detach_orphan(ptr: Any) -> None:
    """A controller attached after its connect was cancelled: detach it."""
    _start_detach(ptr, None)
