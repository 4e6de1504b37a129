"""NVMe controllers: connected without blocking the loop, detached the same way.

``await Controller.connect(trid)`` uses ``spdk_nvme_connect_async`` and polls the probe
from a poller, so a target served by this very loop (``spdk_io.nvmf``) answers while
we wait: the blocking ``spdk_nvme_connect`` would spin forever there.  A connected
:class:`Controller` is a :class:`~spdk_io.resource.Resource` owned by the SPDK thread
that connected it: an admin poller (its child) processes admin completions and keep-alive;
its queue pairs on the same thread are children too and close first.  Detaching is
asynchronous (``spdk_nvme_detach_async``): ``await ctrlr.detach()`` (or ``aclose()``,
or leaving ``async with``) returns once SPDK has let go of the controller.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io._validate import flag, integer, text
from spdk_io.errors import SpdkError
from spdk_io.loop import Op
from spdk_io.nvme.transport import TransportId, transport_id
from spdk_io.resource import Resource
from spdk_io.thread import Poller, SpdkThread, current_thread

if TYPE_CHECKING:
    from spdk_io.nvme.qpair import Qpair, QpairOptions

__all__ = ["Controller", "ControllerOptions", "Namespace"]

#: How often the admin poller runs, in microseconds (admin completions, keep-alive).
ADMIN_POLL_US = 1000
_U32 = 2**32 - 1
_NQN_MAX = 223


@dataclass(frozen=True)
class ControllerOptions:
    """How to connect: ``None`` keeps SPDK's default (``spdk_nvme_ctrlr_get_default_ctrlr_opts``).

    ``hostnqn`` is who we say we are (a subsystem that does not allow any host checks
    it); ``host_id``/``extended_host_id`` are 8 and 16 bytes.  Every field is checked
    when the options are made.
    """

    num_io_queues: int | None = None
    io_queue_size: int | None = None
    io_queue_requests: int | None = None
    admin_queue_size: int | None = None
    keep_alive_timeout_ms: int | None = None
    admin_timeout_ms: int | None = None
    fabrics_connect_timeout_us: int | None = None
    transport_retry_count: int | None = None
    hostnqn: str | None = None
    host_id: bytes | None = None
    extended_host_id: bytes | None = None
    src_addr: str | None = None
    src_svcid: str | None = None
    header_digest: bool = False
    data_digest: bool = False

    def __post_init__(self) -> None:
        for name, hi in (
            ("num_io_queues", 65535),
            ("io_queue_size", 65536),
            ("io_queue_requests", _U32),
            ("admin_queue_size", 4096),
            ("keep_alive_timeout_ms", _U32),
            ("admin_timeout_ms", _U32),
            ("fabrics_connect_timeout_us", 2**64 - 1),
            ("transport_retry_count", 255),
        ):
            value = getattr(self, name)
            if value is not None:
                integer(value, name, 0 if name != "num_io_queues" else 1, hi)
        if self.hostnqn is not None:
            text(self.hostnqn, "hostnqn", max_len=_NQN_MAX)
        for name, size in (("host_id", 8), ("extended_host_id", 16)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, bytes) or len(value) != size):
                raise ValueError(f"{name} must be {size} bytes")
        if self.src_addr is not None:
            text(self.src_addr, "src_addr", max_len=256)
        if self.src_svcid is not None:
            text(self.src_svcid, "src_svcid", max_len=32)
        flag(self.header_digest, "header_digest")
        flag(self.data_digest, "data_digest")

    def to_c(self) -> Any:
        """SPDK's defaults with these options applied (a new ``spdk_nvme_ctrlr_opts``)."""
        opts = g.struct_spdk_nvme_ctrlr_opts()
        g.spdk_nvme_ctrlr_get_default_ctrlr_opts(ctypes.byref(opts), ctypes.sizeof(opts))
        for name in (
            "num_io_queues",
            "io_queue_size",
            "io_queue_requests",
            "admin_queue_size",
            "keep_alive_timeout_ms",
            "admin_timeout_ms",
            "fabrics_connect_timeout_us",
            "transport_retry_count",
        ):
            value = getattr(self, name)
            if value is not None:
                setattr(opts, name, value)
        for name in ("hostnqn", "src_addr", "src_svcid"):
            value = getattr(self, name)
            if value is not None:
                setattr(opts, name, value.encode())
        if self.host_id is not None:
            opts.host_id[:] = list(self.host_id)
        if self.extended_host_id is not None:
            opts.extended_host_id[:] = list(self.extended_host_id)
        opts.header_digest = self.header_digest
        opts.data_digest = self.data_digest
        return opts


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
    thread that connected it.  Made by :meth:`connect`; closed by :meth:`detach`."""

    def __init__(self, ptr: Any, trid: TransportId, options: ControllerOptions) -> None:
        """Wrap a controller SPDK attached (use :meth:`connect`)."""
        self.thread: SpdkThread = current_thread()
        self._ptr: Any = ptr  # None once detaching started
        self.trid = trid
        self.options = options
        #: Open queue pairs on *other* SPDK threads (same-thread ones are children).
        self._foreign: set[int] = set()
        self._detached: Op[None] = Op(f"detach {trid}")
        super().__init__(self.thread)
        self._admin = Poller(self._poll_admin, ADMIN_POLL_US, "nvme_admin", parent=self)

    @classmethod
    async def connect(
        cls, trid: TransportId | str, options: ControllerOptions | None = None
    ) -> Self:
        """Connect to the controller at ``trid`` without blocking the loop.

        Raises :class:`~spdk_io.errors.SpdkError` (``ECONNREFUSED``) naming ``trid``
        when nothing attaches.  If the awaiting task is cancelled, a controller that
        attaches later is detached.
        """
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
        state = "detached" if self.closed else "attached"
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

    @property
    def name(self) -> str:
        return self.trid.subnqn or self.trid.traddr or self.trid.trtype

    @property
    def failed(self) -> bool:
        """Whether SPDK marked the controller failed (target gone, reset failed)."""
        return self.closed or bool(g.spdk_nvme_ctrlr_is_failed(self._ptr))

    @property
    def max_transfer_bytes(self) -> int:
        """The largest data transfer of one command, in bytes."""
        return int(g.spdk_nvme_ctrlr_get_max_xfer_size(self.handle))

    def _cdata(self) -> Any:
        return g.spdk_nvme_ctrlr_get_data(self.handle).contents

    @property
    def serial(self) -> str:
        return bytes(self._cdata().sn).decode(errors="replace").strip(" \0")

    @property
    def model(self) -> str:
        return bytes(self._cdata().mn).decode(errors="replace").strip(" \0")

    @property
    def firmware(self) -> str:
        return bytes(self._cdata().fr).decode(errors="replace").strip(" \0")

    @property
    def subnqn(self) -> str:
        return bytes(self._cdata().subnqn).split(b"\0", 1)[0].decode(errors="replace")

    # -- namespaces ----------------------------------------------------------------------

    def namespace_ids(self) -> list[int]:
        """The active namespace IDs, ascending."""
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
        nsid = integer(nsid, "nsid", 1, _U32 - 1)
        if not g.spdk_nvme_ctrlr_is_active_ns(self.handle, nsid):
            raise LookupError(f"controller {self.name} has no active namespace {nsid}")
        return Namespace(self, nsid)

    # -- queue pairs ---------------------------------------------------------------------

    async def alloc_qpair(self, options: QpairOptions | None = None) -> Qpair:
        """A connected I/O queue pair for the current SPDK thread (see :class:`Qpair`)."""
        from spdk_io.nvme.qpair import Qpair

        return await Qpair.connect(self, options)

    def adopt_foreign(self, qpair_id: int, opened: bool) -> None:
        """Count a queue pair on another SPDK thread as open (``opened``) or closed:
        detaching is refused while one is open (called by :class:`Qpair`)."""
        if opened:
            self._foreign.add(qpair_id)
        else:
            self._foreign.discard(qpair_id)

    # -- polling and detaching -----------------------------------------------------------

    def _poll_admin(self) -> bool:
        return bool(g.spdk_nvme_ctrlr_process_admin_completions(self._ptr) > 0)

    def _refusal(self) -> BaseException | None:
        if self._foreign:
            return BlockingIOError(
                f"{len(self._foreign)} queue pair(s) on other SPDK threads are still open"
            )
        return None

    def _release(self) -> None:
        """Start ``spdk_nvme_detach_async``; a poller finishes it (:meth:`detach` awaits)."""
        ptr, self._ptr = self._ptr, None
        _start_detach(ptr, self._detached)

    async def aclose(self) -> None:
        """Detach once no queue pair has I/O in flight (the same as :meth:`detach`)."""
        await self.detach()

    async def detach(self) -> None:
        """Close the queue pairs, detach the controller, and wait until SPDK is done.
        Idempotent."""
        if not self.closed:
            await super().aclose()
        await self._detached

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.detach()


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


class Namespace:
    """An active namespace of a controller: what it is, for I/O through a :class:`Qpair`.

    It owns no SPDK handle; it is valid while its controller is attached (afterwards
    its properties raise ``RuntimeError``).
    """

    def __init__(self, ctrlr: Controller, nsid: int) -> None:
        self.ctrlr = ctrlr
        self.id = nsid
        ptr = g.spdk_nvme_ctrlr_get_ns(ctrlr.handle, nsid)
        if not ptr:
            raise LookupError(f"controller {ctrlr.name} has no namespace {nsid}")
        self._ptr: Any = ptr
        # Fixed for the life of the namespace (read once; the hot path uses them).
        self.sector_size = int(g.spdk_nvme_ns_get_sector_size(ptr))
        self.num_sectors = int(g.spdk_nvme_ns_get_num_sectors(ptr))

    def __repr__(self) -> str:
        return f"<Namespace {self.ctrlr.name} ns {self.id}>"

    def __str__(self) -> str:
        return f"{self.ctrlr.name} ns {self.id}"

    @property
    def handle(self) -> Any:
        """The ``struct spdk_nvme_ns *``; valid while the controller is attached."""
        self.ctrlr.check_open()
        return self._ptr

    @property
    def size(self) -> int:
        """Size in bytes."""
        return self.sector_size * self.num_sectors

    @property
    def extended_sector_size(self) -> int:
        """Sector size including interleaved metadata."""
        return int(g.spdk_nvme_ns_get_extended_sector_size(self.handle))

    @property
    def metadata_size(self) -> int:
        return int(g.spdk_nvme_ns_get_md_size(self.handle))

    @property
    def optimal_io_boundary(self) -> int:
        """Optimal I/O boundary in sectors (0: none reported)."""
        return int(g.spdk_nvme_ns_get_optimal_io_boundary(self.handle))

    @property
    def uuid(self) -> str | None:
        """The namespace UUID, or ``None`` if it reports none."""
        u = g.spdk_nvme_ns_get_uuid(self.handle)
        if not u:
            return None
        raw = bytes(ctypes.string_at(ctypes.addressof(u.contents), 16))
        import uuid as _uuid

        return str(_uuid.UUID(bytes=raw))
