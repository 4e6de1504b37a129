"""Typed, frozen records of NVMe identify data and log pages.

Each record is parsed from SPDK's struct (``from_struct``) or from the page's raw
little-endian bytes as a controller returns them (``from_bytes``: what a raw admin
command read into a buffer):

* :class:`ControllerData` - Identify Controller (opcode 06h, CNS 01h),
  ``struct spdk_nvme_ctrlr_data``;
* :class:`NamespaceData` - Identify Namespace (CNS 00h), ``struct spdk_nvme_ns_data``;
* :func:`parse_active_ns_list` - the Active Namespace ID list (CNS 02h);
* :class:`HealthLog` - SMART / Health Information (Get Log Page 02h, LID 02h);
* :class:`ErrorLogEntry` and :func:`parse_error_log` - Error Information (LID 01h).

Records hold plain Python values (no pointer into SPDK's memory) and the page's
bytes as ``raw``, so a field not decoded here is still there.  Strings are ASCII
with the padding stripped; 128-bit counters are ``int``; flag sets are ``IntFlag``
with the spec's bit positions (unknown bits are kept).
"""

from __future__ import annotations

import ctypes
import enum
import struct
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeVar

from spdk_io import _generated as g
from spdk_io._validate import integer
from spdk_io.nvme.status import NvmeStatus

__all__ = [
    "DATA_UNIT_BYTES",
    "AdminCommands",
    "ControllerAttributes",
    "ControllerData",
    "ControllerType",
    "CriticalWarning",
    "ErrorLogEntry",
    "HealthLog",
    "LbaFormat",
    "LogPageAttributes",
    "MultiPathCapabilities",
    "NamespaceData",
    "NamespaceFeatures",
    "NvmCommands",
    "NvmeVersion",
    "ProtectionCapabilities",
    "ProtectionType",
    "RelativePerformance",
    "ReservationCapabilities",
    "SglSupport",
    "max_transfer_bytes",
    "parse_active_ns_list",
    "parse_error_log",
]

Buffer = bytes | bytearray | memoryview


# ----------------------------------------------------------------------- flag sets


class MultiPathCapabilities(enum.IntFlag):
    """CMIC: multi-path I/O and namespace sharing capabilities."""

    MULTI_PORT = 1 << 0
    MULTI_CONTROLLER = 1 << 1
    SRIOV = 1 << 2
    ANA_REPORTING = 1 << 3


class ControllerAttributes(enum.IntFlag):
    """CTRATT: optional controller attributes."""

    HOST_ID_128BIT = 1 << 0
    NON_OPERATIONAL_POWER_STATE_PERMISSIVE = 1 << 1
    NVM_SETS = 1 << 2
    READ_RECOVERY_LEVELS = 1 << 3
    ENDURANCE_GROUPS = 1 << 4
    PREDICTABLE_LATENCY_MODE = 1 << 5
    TRAFFIC_BASED_KEEP_ALIVE = 1 << 6
    NAMESPACE_GRANULARITY = 1 << 7
    SQ_ASSOCIATIONS = 1 << 8
    UUID_LIST = 1 << 9
    MULTI_DOMAIN_SUBSYSTEM = 1 << 10
    FIXED_CAPACITY_MANAGEMENT = 1 << 11
    VARIABLE_CAPACITY_MANAGEMENT = 1 << 12
    DELETE_ENDURANCE_GROUP = 1 << 13
    DELETE_NVM_SET = 1 << 14
    EXTENDED_LBA_FORMATS = 1 << 15
    MDTS_EXCLUDES_METADATA = 1 << 16
    FLEXIBLE_DATA_PLACEMENT = 1 << 19


class AdminCommands(enum.IntFlag):
    """OACS: optional admin commands the controller supports."""

    SECURITY_SEND_RECEIVE = 1 << 0
    FORMAT_NVM = 1 << 1
    FIRMWARE = 1 << 2
    NAMESPACE_MANAGEMENT = 1 << 3
    DEVICE_SELF_TEST = 1 << 4
    DIRECTIVES = 1 << 5
    NVME_MI = 1 << 6
    VIRTUALIZATION_MANAGEMENT = 1 << 7
    DOORBELL_BUFFER_CONFIG = 1 << 8
    GET_LBA_STATUS = 1 << 9
    COMMAND_FEATURE_LOCKDOWN = 1 << 10
    HOST_MANAGED_LIVE_MIGRATION = 1 << 11


class LogPageAttributes(enum.IntFlag):
    """LPA: what Get Log Page supports."""

    SMART_PER_NAMESPACE = 1 << 0
    COMMANDS_EFFECTS = 1 << 1
    EXTENDED_DATA = 1 << 2
    TELEMETRY = 1 << 3
    PERSISTENT_EVENT = 1 << 4
    SUPPORTED_LOG_PAGES = 1 << 5
    TELEMETRY_DATA_AREA_4 = 1 << 6


class NvmCommands(enum.IntFlag):
    """ONCS: optional NVM commands the controller supports."""

    COMPARE = 1 << 0
    WRITE_UNCORRECTABLE = 1 << 1
    DATASET_MANAGEMENT = 1 << 2
    WRITE_ZEROES = 1 << 3
    SAVE_SELECT = 1 << 4
    RESERVATIONS = 1 << 5
    TIMESTAMP = 1 << 6
    VERIFY = 1 << 7
    COPY = 1 << 8


class NamespaceFeatures(enum.IntFlag):
    """NSFEAT: namespace features."""

    THIN_PROVISIONING = 1 << 0
    ATOMIC_WRITE_FIELDS = 1 << 1
    DEALLOCATED_ERROR = 1 << 2
    GUID_NEVER_REUSED = 1 << 3
    OPTIMAL_PERFORMANCE_FIELDS = 1 << 4


class ProtectionCapabilities(enum.IntFlag):
    """DPC: end-to-end data protection the namespace supports."""

    TYPE1 = 1 << 0
    TYPE2 = 1 << 1
    TYPE3 = 1 << 2
    PI_FIRST = 1 << 3
    PI_LAST = 1 << 4


class ReservationCapabilities(enum.IntFlag):
    """RESCAP: reservation types the namespace supports."""

    PERSIST_THROUGH_POWER_LOSS = 1 << 0
    WRITE_EXCLUSIVE = 1 << 1
    EXCLUSIVE_ACCESS = 1 << 2
    WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 1 << 3
    EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 1 << 4
    WRITE_EXCLUSIVE_ALL_REGISTRANTS = 1 << 5
    EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 1 << 6
    IGNORE_EXISTING_KEY = 1 << 7


class CriticalWarning(enum.IntFlag):
    """SMART critical warnings (an empty set is healthy)."""

    AVAILABLE_SPARE = 1 << 0
    TEMPERATURE = 1 << 1
    DEVICE_RELIABILITY = 1 << 2
    READ_ONLY = 1 << 3
    VOLATILE_MEMORY_BACKUP = 1 << 4
    PMR_READ_ONLY = 1 << 5


# ----------------------------------------------------------------------- enums


class _Reserved(enum.IntEnum):
    """An IntEnum that takes reserved values too (as ``RESERVED_<n>`` members)."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"RESERVED_{value}"
        member._value_ = value
        return member


class ControllerType(_Reserved):
    """CNTRLTYPE: what the controller is for (``NOT_REPORTED`` before NVMe 1.4)."""

    NOT_REPORTED = 0
    IO = 1
    DISCOVERY = 2
    ADMINISTRATIVE = 3


class SglSupport(_Reserved):
    """SGLS bits 1:0: whether NVM commands take SGLs, and their alignment."""

    NOT_SUPPORTED = 0
    SUPPORTED = 1
    SUPPORTED_DWORD_ALIGNED = 2


class ProtectionType(_Reserved):
    """DPS bits 2:0: the end-to-end protection type the namespace is formatted with."""

    NONE = 0
    TYPE1 = 1
    TYPE2 = 2
    TYPE3 = 3


class RelativePerformance(enum.IntEnum):
    """RP of an LBA format: its performance relative to the others."""

    BEST = 0
    BETTER = 1
    GOOD = 2
    DEGRADED = 3


class NvmeVersion(NamedTuple):
    """The NVMe version a controller implements (VER); compares like a tuple."""

    major: int
    minor: int
    tertiary: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.tertiary}"


# ----------------------------------------------------------------------- helpers

_S = TypeVar("_S", bound=ctypes.Structure)


def _struct_from_bytes(cls: type[_S], data: Buffer, what: str) -> _S:
    """``cls`` from the first ``sizeof(cls)`` bytes of ``data`` (a longer buffer is fine)."""
    size = ctypes.sizeof(cls)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes-like, not {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) < size:
        raise ValueError(f"{what} needs {size} bytes, got {len(view)}")
    return cls.from_buffer_copy(view[:size])


class _Fields:
    """Field offsets and sizes of a generated struct, to read the page's bytes by name."""

    def __init__(self, cls: type[ctypes.Structure]) -> None:
        self._cls = cls

    def span(self, name: str) -> tuple[int, int]:
        field = getattr(self._cls, name)
        return int(field.offset), int(field.offset) + int(field.size)

    def uint(self, raw: bytes, name: str) -> int:
        """The little-endian unsigned integer in field ``name`` (any width: u8 ... u128)."""
        lo, hi = self.span(name)
        return int.from_bytes(raw[lo:hi], "little")

    def blob(self, raw: bytes, name: str) -> bytes:
        lo, hi = self.span(name)
        return raw[lo:hi]

    def text(self, raw: bytes, name: str) -> str:
        """An ASCII string field: space/NUL padding stripped, non-ASCII bytes replaced."""
        return self.blob(raw, name).split(b"\0", 1)[0].decode("ascii", "replace").strip()


def _log2_size(n: int) -> int:
    """``2 ** n`` bytes, or 0 for a size field left 0 (not reported)."""
    return 1 << n if n else 0


def max_transfer_bytes(mdts: int, mpsmin_bytes: int) -> int | None:
    """The largest data transfer a controller takes, in bytes; ``None`` if unlimited.

    ``mdts`` is Identify Controller's MDTS (a power of two in units of the minimum
    memory page size, 0 = no limit) and ``mpsmin_bytes`` that page size,
    ``2 ** (12 + CAP.MPSMIN)``.  (SPDK's ``spdk_nvme_ctrlr_get_max_xfer_size`` also
    applies the transport's own limit.)
    """
    mdts = integer(mdts, "mdts", lo=0, hi=255)
    mpsmin_bytes = integer(mpsmin_bytes, "mpsmin_bytes", lo=4096, hi=1 << 27)
    if mpsmin_bytes & (mpsmin_bytes - 1):
        raise ValueError(f"mpsmin_bytes must be a power of two, got {mpsmin_bytes}")
    return None if mdts == 0 else mpsmin_bytes << mdts


# ----------------------------------------------------------------------- identify controller

_CD: Final = _Fields(g.struct_spdk_nvme_ctrlr_data)
_CD_NVMF: Final = _Fields(g.struct_spdk_nvme_cdata_nvmf_specific)


@dataclass(frozen=True, slots=True)
class ControllerData:
    """Identify Controller data (4096 bytes).

    Sizes are as the spec encodes them unless named otherwise: ``mdts`` is a power of
    two of the minimum page size (:func:`max_transfer_bytes`), ``sqes``/``cqes`` are
    ``(required, maximum)`` entry sizes in bytes (0: not reported), ``ioccsz`` and
    ``iorcsz`` are in 16-byte units, temperatures in Kelvin, capacities in bytes.
    """

    vid: int
    ssvid: int
    serial: str
    model: str
    firmware: str
    rab: int
    ieee_oui: int
    cmic: MultiPathCapabilities
    mdts: int
    cntlid: int
    version: NvmeVersion
    rtd3r: int
    rtd3e: int
    oaes: int
    ctratt: ControllerAttributes
    cntrltype: ControllerType
    fguid: bytes
    crdt: tuple[int, int, int]
    oacs: AdminCommands
    acl: int
    aerl: int
    frmw: int
    lpa: LogPageAttributes
    elpe: int
    npss: int
    wctemp: int
    cctemp: int
    tnvmcap: int
    unvmcap: int
    kas: int
    sqes: tuple[int, int]
    cqes: tuple[int, int]
    maxcmd: int
    nn: int
    oncs: NvmCommands
    fuses: int
    fna: int
    vwc: int
    awun: int
    awupf: int
    acwu: int
    sgls: int
    mnan: int
    subnqn: str
    ioccsz: int
    iorcsz: int
    icdoff: int
    msdbd: int
    raw: bytes = field(repr=False)

    @classmethod
    def from_struct(cls, s: g.struct_spdk_nvme_ctrlr_data) -> ControllerData:
        """Parse SPDK's ``struct spdk_nvme_ctrlr_data`` (for example from
        ``spdk_nvme_ctrlr_get_data(ctrlr).contents``); nothing refers to it afterwards."""
        raw = bytes(s)
        nvmf = _CD.blob(raw, "nvmf_specific")
        sqes, cqes = _CD.uint(raw, "sqes"), _CD.uint(raw, "cqes")
        return cls(
            vid=s.vid,
            ssvid=s.ssvid,
            serial=_CD.text(raw, "sn"),
            model=_CD.text(raw, "mn"),
            firmware=_CD.text(raw, "fr"),
            rab=s.rab,
            ieee_oui=_CD.uint(raw, "ieee"),
            cmic=MultiPathCapabilities(_CD.uint(raw, "cmic")),
            mdts=s.mdts,
            cntlid=s.cntlid,
            version=NvmeVersion(s.ver.bits.mjr, s.ver.bits.mnr, s.ver.bits.ter),
            rtd3r=s.rtd3r,
            rtd3e=s.rtd3e,
            oaes=_CD.uint(raw, "oaes"),
            ctratt=ControllerAttributes(s.ctratt.raw),
            cntrltype=ControllerType(s.cntrltype),
            fguid=_CD.blob(raw, "fguid"),
            crdt=(s.crdt[0], s.crdt[1], s.crdt[2]),
            oacs=AdminCommands(_CD.uint(raw, "oacs")),
            acl=s.acl,
            aerl=s.aerl,
            frmw=_CD.uint(raw, "frmw"),
            lpa=LogPageAttributes(_CD.uint(raw, "lpa")),
            elpe=s.elpe,
            npss=s.npss,
            wctemp=s.wctemp,
            cctemp=s.cctemp,
            tnvmcap=_CD.uint(raw, "tnvmcap"),
            unvmcap=_CD.uint(raw, "unvmcap"),
            kas=s.kas,
            sqes=(_log2_size(sqes & 0xF), _log2_size(sqes >> 4)),
            cqes=(_log2_size(cqes & 0xF), _log2_size(cqes >> 4)),
            maxcmd=s.maxcmd,
            nn=s.nn,
            oncs=NvmCommands(s.oncs.raw),
            fuses=s.fuses.raw,
            fna=_CD.uint(raw, "fna"),
            vwc=_CD.uint(raw, "vwc"),
            awun=s.awun,
            awupf=s.awupf,
            acwu=s.acwu,
            sgls=_CD.uint(raw, "sgls"),
            mnan=s.mnan,
            subnqn=_CD.text(raw, "subnqn"),
            ioccsz=_CD_NVMF.uint(nvmf, "ioccsz"),
            iorcsz=_CD_NVMF.uint(nvmf, "iorcsz"),
            icdoff=_CD_NVMF.uint(nvmf, "icdoff"),
            msdbd=_CD_NVMF.uint(nvmf, "msdbd"),
            raw=raw,
        )

    @classmethod
    def from_bytes(cls, data: Buffer) -> ControllerData:
        """Parse the page's raw bytes (at least the struct's size; more is ignored)."""
        return cls.from_struct(
            _struct_from_bytes(g.struct_spdk_nvme_ctrlr_data, data, "Identify Controller data")
        )

    @property
    def volatile_write_cache(self) -> bool:
        """Whether a volatile write cache is present (VWC bit 0): Flush matters."""
        return bool(self.vwc & 1)

    @property
    def compare_and_write(self) -> bool:
        """Whether the fused Compare and Write is supported (FUSES bit 0)."""
        return bool(self.fuses & 1)

    @property
    def sgl_support(self) -> SglSupport:
        """Whether NVM commands take SGLs (SGLS bits 1:0)."""
        return SglSupport(self.sgls & 0x3)

    @property
    def supports_compare(self) -> bool:
        """Compare (ONCS bit 0)."""
        return NvmCommands.COMPARE in self.oncs

    @property
    def supports_write_uncorrectable(self) -> bool:
        """Write Uncorrectable (ONCS bit 1)."""
        return NvmCommands.WRITE_UNCORRECTABLE in self.oncs

    @property
    def supports_dsm(self) -> bool:
        """Dataset Management, i.e. deallocate / unmap (ONCS bit 2)."""
        return NvmCommands.DATASET_MANAGEMENT in self.oncs

    @property
    def supports_write_zeroes(self) -> bool:
        """Write Zeroes (ONCS bit 3)."""
        return NvmCommands.WRITE_ZEROES in self.oncs

    @property
    def supports_reservations(self) -> bool:
        """Reservations (ONCS bit 5)."""
        return NvmCommands.RESERVATIONS in self.oncs

    @property
    def supports_verify(self) -> bool:
        """Verify (ONCS bit 7)."""
        return NvmCommands.VERIFY in self.oncs

    @property
    def supports_copy(self) -> bool:
        """Copy (ONCS bit 8)."""
        return NvmCommands.COPY in self.oncs


# ----------------------------------------------------------------------- identify namespace


class LbaFormat(NamedTuple):
    """One LBA format of a namespace: metadata bytes, data size, relative performance."""

    ms: int
    lbads: int
    rp: RelativePerformance

    @property
    def data_size(self) -> int:
        """The logical block's data size in bytes (``2 ** lbads``; 0 if the format is unused)."""
        return 1 << self.lbads if self.lbads else 0

    @classmethod
    def from_dword(cls, dword: int) -> LbaFormat:
        """Decode one LBA Format Data Structure (MS 15:0, LBADS 23:16, RP 25:24)."""
        return cls(dword & 0xFFFF, (dword >> 16) & 0xFF, RelativePerformance((dword >> 24) & 0x3))


_NS: Final = _Fields(g.struct_spdk_nvme_ns_data)


@dataclass(frozen=True, slots=True)
class NamespaceData:
    """Identify Namespace data (4096 bytes) of the NVM command set.

    Sizes are in logical blocks unless named otherwise (``nvmcap`` is in bytes);
    ``lba_formats`` has the ``nlbaf + 1`` formats the namespace offers, and
    ``lba_format`` is the one it is formatted with (FLBAS, including its two
    high bits for namespaces with more than 16 formats).
    """

    nsze: int
    ncap: int
    nuse: int
    nsfeat: NamespaceFeatures
    nlbaf: int
    lba_format_index: int
    extended_lba: bool
    lba_formats: tuple[LbaFormat, ...]
    lba_format: LbaFormat
    mc: int
    dpc: ProtectionCapabilities
    protection_type: ProtectionType
    pi_first: bool
    shared: bool
    rescap: ReservationCapabilities
    dlfeat: int
    nawun: int
    nawupf: int
    nacwu: int
    nabsn: int
    nabo: int
    nabspf: int
    noiob: int
    nvmcap: int
    npwg: int
    npwa: int
    npdg: int
    npda: int
    nows: int
    mssrl: int
    mcl: int
    msrc: int
    anagrpid: int
    write_protected: bool
    nvmsetid: int
    endgid: int
    nguid: bytes
    eui64: bytes
    raw: bytes = field(repr=False)

    @classmethod
    def from_struct(cls, s: g.struct_spdk_nvme_ns_data) -> NamespaceData:
        """Parse SPDK's ``struct spdk_nvme_ns_data`` (for example from
        ``spdk_nvme_ns_get_data(ns).contents``); nothing refers to it afterwards."""
        raw = bytes(s)
        lo, hi = _NS.span("lbaf")
        every = [
            LbaFormat.from_dword(d) for d in struct.unpack_from(f"<{(hi - lo) // 4}I", raw, lo)
        ]
        index = s.flbas.format | s.flbas.msb_format << 4
        return cls(
            nsze=s.nsze,
            ncap=s.ncap,
            nuse=s.nuse,
            nsfeat=NamespaceFeatures(_NS.uint(raw, "nsfeat")),
            nlbaf=s.nlbaf,
            lba_format_index=index,
            extended_lba=bool(s.flbas.extended),
            lba_formats=tuple(every[: s.nlbaf + 1]),
            lba_format=every[index],
            mc=_NS.uint(raw, "mc"),
            dpc=ProtectionCapabilities(_NS.uint(raw, "dpc")),
            protection_type=ProtectionType(s.dps.pit),
            pi_first=bool(s.dps.md_start),
            shared=bool(s.nmic.shrns),
            rescap=ReservationCapabilities(s.nsrescap.raw),
            dlfeat=s.dlfeat.raw,
            nawun=s.nawun,
            nawupf=s.nawupf,
            nacwu=s.nacwu,
            nabsn=s.nabsn,
            nabo=s.nabo,
            nabspf=s.nabspf,
            noiob=s.noiob,
            nvmcap=_NS.uint(raw, "nvmcap"),
            npwg=s.npwg,
            npwa=s.npwa,
            npdg=s.npdg,
            npda=s.npda,
            nows=s.nows,
            mssrl=s.mssrl,
            mcl=s.mcl,
            msrc=s.msrc,
            anagrpid=s.anagrpid,
            write_protected=bool(s.nsattr.cwp),
            nvmsetid=s.nvmsetid,
            endgid=s.endgid,
            nguid=_NS.blob(raw, "nguid"),
            eui64=_NS.blob(raw, "eui64"),
            raw=raw,
        )

    @classmethod
    def from_bytes(cls, data: Buffer) -> NamespaceData:
        """Parse the page's raw bytes (at least the struct's size; more is ignored)."""
        return cls.from_struct(
            _struct_from_bytes(g.struct_spdk_nvme_ns_data, data, "Identify Namespace data")
        )

    @property
    def block_size(self) -> int:
        """The data size of a logical block in bytes, in the current format."""
        return self.lba_format.data_size

    @property
    def metadata_size(self) -> int:
        """Metadata bytes per logical block, in the current format."""
        return self.lba_format.ms

    @property
    def thin_provisioned(self) -> bool:
        """Whether the namespace is thin provisioned (NSFEAT bit 0)."""
        return NamespaceFeatures.THIN_PROVISIONING in self.nsfeat


# ----------------------------------------------------------------------- log pages

_HL: Final = _Fields(g.struct_spdk_nvme_health_information_page)

#: Bytes per SMART data unit (1000 units of 512 bytes).
DATA_UNIT_BYTES: Final = 512_000


@dataclass(frozen=True, slots=True)
class HealthLog:
    """SMART / Health Information log page (512 bytes).

    Temperatures are in Kelvin (``*_celsius`` properties convert; 0 = not
    reported), ``percentage_used`` may exceed 100, data units are thousands of
    512-byte blocks (``bytes_read``/``bytes_written``), times are in minutes
    except ``power_on_hours``.
    """

    critical_warning: CriticalWarning
    temperature: int
    available_spare: int
    available_spare_threshold: int
    percentage_used: int
    data_units_read: int
    data_units_written: int
    host_read_commands: int
    host_write_commands: int
    controller_busy_time: int
    power_cycles: int
    power_on_hours: int
    unsafe_shutdowns: int
    media_errors: int
    num_error_info_log_entries: int
    warning_temp_time: int
    critical_temp_time: int
    temp_sensors: tuple[int, ...]
    raw: bytes = field(repr=False)

    @classmethod
    def from_struct(cls, s: g.struct_spdk_nvme_health_information_page) -> HealthLog:
        """Parse SPDK's ``struct spdk_nvme_health_information_page``."""
        raw = bytes(s)
        u = _HL.uint
        return cls(
            critical_warning=CriticalWarning(s.critical_warning.raw),
            temperature=s.temperature,
            available_spare=s.available_spare,
            available_spare_threshold=s.available_spare_threshold,
            percentage_used=s.percentage_used,
            data_units_read=u(raw, "data_units_read"),
            data_units_written=u(raw, "data_units_written"),
            host_read_commands=u(raw, "host_read_commands"),
            host_write_commands=u(raw, "host_write_commands"),
            controller_busy_time=u(raw, "controller_busy_time"),
            power_cycles=u(raw, "power_cycles"),
            power_on_hours=u(raw, "power_on_hours"),
            unsafe_shutdowns=u(raw, "unsafe_shutdowns"),
            media_errors=u(raw, "media_errors"),
            num_error_info_log_entries=u(raw, "num_error_info_log_entries"),
            warning_temp_time=s.warning_temp_time,
            critical_temp_time=s.critical_temp_time,
            temp_sensors=tuple(s.temp_sensor),
            raw=raw,
        )

    @classmethod
    def from_bytes(cls, data: Buffer) -> HealthLog:
        """Parse the page's raw bytes (at least the struct's size; more is ignored)."""
        return cls.from_struct(
            _struct_from_bytes(
                g.struct_spdk_nvme_health_information_page, data, "the health log page"
            )
        )

    @property
    def temperature_celsius(self) -> int:
        """The composite temperature in degrees Celsius."""
        return self.temperature - 273

    @property
    def bytes_read(self) -> int:
        """Data read by the host, in bytes (as the controller rounds it: 512,000-byte units)."""
        return self.data_units_read * DATA_UNIT_BYTES

    @property
    def bytes_written(self) -> int:
        """Data written by the host, in bytes (512,000-byte units)."""
        return self.data_units_written * DATA_UNIT_BYTES


_EL: Final = _Fields(g.struct_spdk_nvme_error_information_entry)


@dataclass(frozen=True, slots=True)
class ErrorLogEntry:
    """One Error Information log entry (64 bytes).

    ``sqid``/``cid`` identify the failed command (0xFFFF: not tied to one),
    ``error_location`` is the byte (bits 7:0) and bit (10:8) of the command
    field in error (0xFFFF: not applicable), ``vendor_specific`` the log page
    with vendor information (0: none).
    """

    error_count: int
    sqid: int
    cid: int
    status: NvmeStatus
    error_location: int
    lba: int
    nsid: int
    vendor_specific: int
    trtype: int
    command_specific: int
    trtype_specific: int
    raw: bytes = field(repr=False)

    @classmethod
    def from_struct(cls, s: g.struct_spdk_nvme_error_information_entry) -> ErrorLogEntry:
        """Parse SPDK's ``struct spdk_nvme_error_information_entry``."""
        raw = bytes(s)
        return cls(
            error_count=s.error_count,
            sqid=s.sqid,
            cid=s.cid,
            status=NvmeStatus.from_word(_EL.uint(raw, "status")),
            error_location=s.error_location,
            lba=s.lba,
            nsid=s.nsid,
            vendor_specific=s.vendor_specific,
            trtype=s.trtype,
            command_specific=s.command_specific,
            trtype_specific=s.trtype_specific,
            raw=raw,
        )

    @classmethod
    def from_bytes(cls, data: Buffer) -> ErrorLogEntry:
        """Parse the page's raw bytes (at least the struct's size; more is ignored)."""
        return cls.from_struct(
            _struct_from_bytes(
                g.struct_spdk_nvme_error_information_entry, data, "an error log entry"
            )
        )


def parse_error_log(data: Buffer) -> list[ErrorLogEntry]:
    """The entries of an Error Information log page (64 bytes each), newest first as
    the controller returns them; unused entries (error count 0) are left out."""
    size = ctypes.sizeof(g.struct_spdk_nvme_error_information_entry)
    view = memoryview(data).cast("B")
    if len(view) % size:
        raise ValueError(f"an error log is a multiple of {size} bytes, got {len(view)}")
    entries = (ErrorLogEntry.from_bytes(view[i : i + size]) for i in range(0, len(view), size))
    return [e for e in entries if e.error_count]


def parse_active_ns_list(data: Buffer) -> list[int]:
    """The namespace IDs of an Active Namespace ID list (CNS 02h): little-endian
    32-bit IDs up to the first zero (a 4096-byte page holds at most 1024)."""
    view = memoryview(data).cast("B")
    if len(view) % 4:
        raise ValueError(f"a namespace list is a multiple of 4 bytes, got {len(view)}")
    nsids: list[int] = []
    for (nsid,) in struct.iter_unpack("<I", view):
        if nsid == 0:
            break
        nsids.append(nsid)
    return nsids
