"""Typed options of an NVMe-oF target and its transports, and the checks of NVMe names.

Every option is checked when the dataclass is made (``TypeError``/``ValueError``
naming the field), so nothing bad reaches SPDK.  ``None`` means "SPDK's default"
(for a transport: that transport's own default, from ``spdk_nvmf_transport_opts_init``).
"""

from __future__ import annotations

import ctypes
import enum
import re
import uuid
from dataclasses import dataclass, fields
from typing import ClassVar

from spdk_io import _generated as g
from spdk_io._validate import flag, integer, text

__all__ = [
    "DISCOVERY_NQN",
    "DiscoveryFilter",
    "TargetOptions",
    "TransportOptions",
    "check_model",
    "check_nqn",
    "check_serial",
]

#: The well-known NQN of a discovery subsystem.
DISCOVERY_NQN = g.SPDK_NVMF_DISCOVERY_NQN.decode()
#: The longest target name SPDK keeps (``NVMF_TGT_NAME_MAX_LENGTH`` with its NUL).
MAX_TARGET_NAME = g.NVMF_TGT_NAME_MAX_LENGTH - 1
_U16 = 2**16 - 1
_U32 = 2**32 - 1

# NVMe base spec 4.5 (NQN): "nqn.yyyy-mm.<reverse domain>[:<anything>]", or the UUID
# form; SPDK's nvmf_nqn_is_valid applies the same rules (domain labels start with a
# letter, end with a letter or digit, and hold letters, digits and '-').
_LABEL = r"[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_NQN_RE = re.compile(rf"nqn\.\d{{4}}-\d{{2}}\.{_LABEL}(?:\.{_LABEL})*(?::.*)?", re.DOTALL)
_UUID_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"


def check_nqn(nqn: object, what: str = "nqn") -> str:
    """``nqn`` if it is a valid NVMe Qualified Name, else ``TypeError``/``ValueError``."""
    value = text(nqn, what)
    size = len(value.encode())
    if not g.SPDK_NVMF_NQN_MIN_LEN <= size <= g.SPDK_NVMF_NQN_MAX_LEN:
        raise ValueError(
            f"{what} must be {g.SPDK_NVMF_NQN_MIN_LEN}..{g.SPDK_NVMF_NQN_MAX_LEN} bytes, "
            f"got {size}: {value[:60]!r}"
        )
    if value.startswith(_UUID_PREFIX):
        try:
            uuid.UUID(value[len(_UUID_PREFIX) :])
        except ValueError:
            raise ValueError(f"{what} {value!r}: the part after 'uuid:' is not a UUID") from None
        if len(value) != len(_UUID_PREFIX) + 36:
            raise ValueError(f"{what} {value!r}: the UUID must be in its 36-character form")
        return value
    if not _NQN_RE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not an NVMe Qualified Name: expected "
            "'nqn.yyyy-mm.reverse.domain[:name]' (e.g. 'nqn.2016-06.io.spdk:cnode1') or "
            f"'{_UUID_PREFIX}<uuid>'"
        )
    return value


def _printable(value: object, what: str, max_len: int) -> str:
    """ASCII 0x20..0x7e of at most ``max_len`` bytes (the NVMe identify fields)."""
    s = text(value, what)
    if not all(0x20 <= ord(c) <= 0x7E for c in s):
        raise ValueError(f"{what} must be printable ASCII, got {s!r}")
    if len(s) > max_len:
        raise ValueError(f"{what} is longer than {max_len} characters: {s!r}")
    return s


def check_serial(serial: object) -> str:
    """A controller serial number: printable ASCII, at most 20 characters."""
    return _printable(serial, "serial", g.SPDK_NVME_CTRLR_SN_LEN)


def check_model(model: object) -> str:
    """A controller model number: printable ASCII, at most 40 characters."""
    return _printable(model, "model", g.SPDK_NVME_CTRLR_MN_LEN)


class DiscoveryFilter(enum.IntFlag):
    """Which listeners a discovery log page lists to a host (``discovery_filter``).

    ``MATCH_ANY`` lists every listener; the others keep only listeners whose
    transport type / address / service id match those the host asked on.
    """

    MATCH_ANY = 0
    TRANSPORT_TYPE = 1 << g.SPDK_NVMF_TGT_DISCOVERY_FILTER_TYPE
    ADDRESS = 1 << g.SPDK_NVMF_TGT_DISCOVERY_FILTER_ADDRESS
    SVCID = 1 << g.SPDK_NVMF_TGT_DISCOVERY_FILTER_SVCID


@dataclass(frozen=True)
class TargetOptions:
    """Options of ``spdk_nvmf_tgt_create`` (``struct spdk_nvmf_target_opts``).

    ``max_subsystems`` 0 is SPDK's default (1024); ``crdt`` are the three Command
    Retry Delay Times in 100 ms units.
    """

    max_subsystems: int = 0
    discovery_filter: DiscoveryFilter = DiscoveryFilter.MATCH_ANY
    crdt: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        integer(self.max_subsystems, "max_subsystems", lo=0, hi=_U32)
        if not isinstance(self.discovery_filter, DiscoveryFilter):
            raise TypeError(
                "discovery_filter must be a DiscoveryFilter, not "
                f"{type(self.discovery_filter).__name__}"
            )
        if not isinstance(self.crdt, tuple) or len(self.crdt) != 3:
            raise TypeError("crdt must be a tuple of three ints (100 ms units)")
        for i, value in enumerate(self.crdt):
            integer(value, f"crdt[{i}]", lo=0, hi=_U16)

    def to_c(self, name: str) -> g.struct_spdk_nvmf_target_opts:
        """The C options for a target named ``name`` (``size`` set: SPDK reads that many)."""
        opts = g.struct_spdk_nvmf_target_opts()
        opts.size = ctypes.sizeof(opts)
        opts.name = name.encode()
        opts.max_subsystems = self.max_subsystems
        opts.discovery_filter = int(self.discovery_filter)
        for i, value in enumerate(self.crdt):
            opts.crdt[i] = value
        return opts


@dataclass(frozen=True)
class TransportOptions:
    """Options of one transport (``struct spdk_nvmf_transport_opts``); ``None``: the
    transport's default.  Sizes are bytes, times as their names say."""

    max_queue_depth: int | None = None
    max_qpairs_per_ctrlr: int | None = None
    in_capsule_data_size: int | None = None
    max_io_size: int | None = None
    io_unit_size: int | None = None
    max_aq_depth: int | None = None
    num_shared_buffers: int | None = None
    buf_cache_size: int | None = None
    dif_insert_or_strip: bool | None = None
    abort_timeout_sec: int | None = None
    association_timeout_ms: int | None = None
    acceptor_poll_rate_us: int | None = None
    zcopy: bool | None = None

    #: Fields that are 16-bit in C (the rest of the integers are 32-bit).
    _U16_FIELDS: ClassVar[frozenset[str]] = frozenset({"max_queue_depth", "max_qpairs_per_ctrlr"})
    #: Python field -> C field, where the names differ.
    _C_NAMES: ClassVar[dict[str, str]] = {
        "association_timeout_ms": "association_timeout",
        "acceptor_poll_rate_us": "acceptor_poll_rate",
    }

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name in ("dif_insert_or_strip", "zcopy"):
                flag(value, f.name)
            else:
                hi = _U16 if f.name in self._U16_FIELDS else _U32
                integer(value, f.name, lo=0, hi=hi)
        if self.max_queue_depth is not None and self.max_queue_depth < 2:
            raise ValueError(f"max_queue_depth must be >= 2, got {self.max_queue_depth}")
        if self.max_qpairs_per_ctrlr is not None and self.max_qpairs_per_ctrlr < 2:
            raise ValueError(
                f"max_qpairs_per_ctrlr must be >= 2 (the admin queue and one I/O queue), "
                f"got {self.max_qpairs_per_ctrlr}"
            )
        if self.io_unit_size is not None and self.io_unit_size % 512:
            raise ValueError(f"io_unit_size must be a multiple of 512, got {self.io_unit_size}")

    def to_c(self, trtype: str) -> g.struct_spdk_nvmf_transport_opts:
        """``trtype``'s defaults with these options over them; ``ValueError`` if SPDK
        has no such transport (``spdk_nvmf_transport_opts_init`` refuses it)."""
        opts = g.struct_spdk_nvmf_transport_opts()
        if not g.spdk_nvmf_transport_opts_init(
            trtype.encode(), ctypes.byref(opts), ctypes.sizeof(opts)
        ):
            raise ValueError(
                f"unknown NVMe-oF transport type {trtype!r}: SPDK has no such transport "
                "loaded (TCP is always there; RDMA, FC and VFIOUSER only if built in)"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                setattr(opts, self._C_NAMES.get(f.name, f.name), value)
        return opts
