"""How to connect to an NVMe controller: :class:`ControllerOptions`, checked when made."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from spdk_io import _generated as g
from spdk_io._validate import FOREVER, duration, flag, integer, text

__all__ = ["ControllerOptions", "command_timeout_us"]

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
    #: Seconds an admin or I/O command may take before it is aborted and its awaiter
    #: gets ``TimeoutError`` (``None``: no timeout).  See :meth:`Controller.set_timeout`.
    command_timeout: float | None = None

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
        if self.command_timeout is not None:
            command_timeout_us(self.command_timeout)

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


def command_timeout_us(seconds: object) -> int:
    """A command timeout in whole microseconds (at least 1; ``inf`` is refused: use None)."""
    value = duration(seconds, "command_timeout")
    if value == FOREVER:
        raise ValueError("command_timeout must be finite (None means no timeout)")
    if value <= 0:
        raise ValueError(f"command_timeout must be > 0 seconds, got {seconds!r}")
    return max(1, round(value * 1e6))
