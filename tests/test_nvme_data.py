"""NVMe identify / log page records, and status decoding against SPDK's own layout and names.

No controller is needed: records are parsed from structs built field by field through
the generated ctypes layer, and from pages built byte by byte at the offsets the NVMe
specification gives (which also guards the generated layout).
"""

from __future__ import annotations

import ctypes
import re
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spdk_io import _generated as g
from spdk_io._discover import find_spdk
from spdk_io.nvme.data import (
    AdminCommands,
    ControllerAttributes,
    ControllerData,
    ControllerType,
    CriticalWarning,
    ErrorLogEntry,
    HealthLog,
    LbaFormat,
    LogPageAttributes,
    MultiPathCapabilities,
    NamespaceData,
    NamespaceFeatures,
    NvmCommands,
    NvmeVersion,
    ProtectionCapabilities,
    ProtectionType,
    RelativePerformance,
    ReservationCapabilities,
    SglSupport,
    max_transfer_bytes,
    parse_active_ns_list,
    parse_error_log,
)
from spdk_io.nvme.status import STATUS_NAMES, NvmeStatus, StatusCodeType

# ----------------------------------------------------------------------- layout vs the spec

# (field, byte offset, size) as the NVMe base / NVM command set specifications give them
CTRLR_LAYOUT = [
    ("vid", 0, 2),
    ("ssvid", 2, 2),
    ("sn", 4, 20),
    ("mn", 24, 40),
    ("fr", 64, 8),
    ("rab", 72, 1),
    ("ieee", 73, 3),
    ("cmic", 76, 1),
    ("mdts", 77, 1),
    ("cntlid", 78, 2),
    ("ver", 80, 4),
    ("rtd3r", 84, 4),
    ("rtd3e", 88, 4),
    ("oaes", 92, 4),
    ("ctratt", 96, 4),
    ("cntrltype", 111, 1),
    ("fguid", 112, 16),
    ("crdt", 128, 6),
    ("oacs", 256, 2),
    ("acl", 258, 1),
    ("aerl", 259, 1),
    ("frmw", 260, 1),
    ("lpa", 261, 1),
    ("elpe", 262, 1),
    ("npss", 263, 1),
    ("wctemp", 266, 2),
    ("cctemp", 268, 2),
    ("tnvmcap", 280, 16),
    ("unvmcap", 296, 16),
    ("kas", 320, 2),
    ("sqes", 512, 1),
    ("cqes", 513, 1),
    ("maxcmd", 514, 2),
    ("nn", 516, 4),
    ("oncs", 520, 2),
    ("fuses", 522, 2),
    ("fna", 524, 1),
    ("vwc", 525, 1),
    ("awun", 526, 2),
    ("awupf", 528, 2),
    ("acwu", 532, 2),
    ("sgls", 536, 4),
    ("mnan", 540, 4),
    ("subnqn", 768, 256),
    ("nvmf_specific", 1792, 256),
    ("psd", 2048, 1024),
    ("vs", 3072, 1024),
]
NS_LAYOUT = [
    ("nsze", 0, 8),
    ("ncap", 8, 8),
    ("nuse", 16, 8),
    ("nsfeat", 24, 1),
    ("nlbaf", 25, 1),
    ("flbas", 26, 1),
    ("mc", 27, 1),
    ("dpc", 28, 1),
    ("dps", 29, 1),
    ("nmic", 30, 1),
    ("nsrescap", 31, 1),
    ("dlfeat", 33, 1),
    ("nawun", 34, 2),
    ("nacwu", 38, 2),
    ("noiob", 46, 2),
    ("nvmcap", 48, 16),
    ("npwg", 64, 2),
    ("nows", 72, 2),
    ("mcl", 76, 4),
    ("msrc", 80, 1),
    ("anagrpid", 92, 4),
    ("nsattr", 99, 1),
    ("nvmsetid", 100, 2),
    ("endgid", 102, 2),
    ("nguid", 104, 16),
    ("eui64", 120, 8),
    ("lbaf", 128, 256),
]
HEALTH_LAYOUT = [
    ("critical_warning", 0, 1),
    ("temperature", 1, 2),
    ("available_spare", 3, 1),
    ("available_spare_threshold", 4, 1),
    ("percentage_used", 5, 1),
    ("data_units_read", 32, 16),
    ("data_units_written", 48, 16),
    ("host_read_commands", 64, 16),
    ("host_write_commands", 80, 16),
    ("controller_busy_time", 96, 16),
    ("power_cycles", 112, 16),
    ("power_on_hours", 128, 16),
    ("unsafe_shutdowns", 144, 16),
    ("media_errors", 160, 16),
    ("num_error_info_log_entries", 176, 16),
    ("warning_temp_time", 192, 4),
    ("critical_temp_time", 196, 4),
    ("temp_sensor", 200, 16),
]
ERROR_LAYOUT = [
    ("error_count", 0, 8),
    ("sqid", 8, 2),
    ("cid", 10, 2),
    ("status", 12, 2),
    ("error_location", 14, 2),
    ("lba", 16, 8),
    ("nsid", 24, 4),
    ("vendor_specific", 28, 1),
    ("trtype", 29, 1),
    ("command_specific", 32, 8),
    ("trtype_specific", 40, 2),
]


@pytest.mark.parametrize(
    ("cls", "size", "layout"),
    [
        (g.struct_spdk_nvme_ctrlr_data, 4096, CTRLR_LAYOUT),
        (g.struct_spdk_nvme_ns_data, 4096, NS_LAYOUT),
        (g.struct_spdk_nvme_health_information_page, 512, HEALTH_LAYOUT),
        (g.struct_spdk_nvme_error_information_entry, 64, ERROR_LAYOUT),
    ],
    ids=["ctrlr_data", "ns_data", "health", "error_entry"],
)
def test_generated_layout_is_the_specs(
    cls: type[ctypes.Structure], size: int, layout: list[tuple[str, int, int]]
) -> None:
    assert ctypes.sizeof(cls) == size
    for name, offset, width in layout:
        f = getattr(cls, name)
        assert (f.offset, f.size) == (offset, width), name


def test_nvmf_specific_fields_are_at_the_spec_offsets() -> None:
    base = 1792  # nvmf_specific in Identify Controller
    spec = {"ioccsz": 1792, "iorcsz": 1796, "icdoff": 1800, "msdbd": 1803}
    for name, offset in spec.items():
        assert getattr(g.struct_spdk_nvme_cdata_nvmf_specific, name).offset == offset - base


# ----------------------------------------------------------------------- identify controller


def _put(page: bytearray, offset: int, value: int | bytes, size: int = 0) -> None:
    data = value if isinstance(value, bytes) else value.to_bytes(size, "little")
    page[offset : offset + len(data)] = data


def test_controller_data_from_bytes_at_spec_offsets() -> None:
    page = bytearray(4096)
    _put(page, 0, 0x8086, 2)
    _put(page, 2, 0x1AF4, 2)
    _put(page, 4, b"SN-0001             ")  # space padded, 20 bytes
    _put(page, 24, b"SPDK bdev Controller".ljust(40))
    _put(page, 64, b"26.05   ")
    _put(page, 73, bytes([0xE4, 0xD2, 0x5C]))  # OUI 5CD2E4, least significant byte first
    _put(page, 77, 5, 1)
    _put(page, 78, 7, 2)
    _put(page, 80, 0x00010400, 4)  # 1.4.0
    _put(page, 111, 1, 1)
    _put(page, 266, 343, 2)
    _put(page, 280, (1 << 64) + 5, 16)
    _put(page, 512, 0x66, 1)
    _put(page, 513, 0x44, 1)
    _put(page, 514, 128, 2)
    _put(page, 516, 32, 4)
    _put(page, 520, 0b1_0000_1101, 2)  # compare, dsm, write zeroes, copy
    _put(page, 522, 1, 2)
    _put(page, 525, 1, 1)
    _put(page, 536, 0x1, 4)
    _put(page, 768, b"nqn.2016-06.io.spdk:cnode1")
    _put(page, 1792, 4, 4)
    _put(page, 1796, 1, 4)
    cd = ControllerData.from_bytes(bytes(page))
    assert (cd.vid, cd.ssvid, cd.cntlid) == (0x8086, 0x1AF4, 7)
    assert (cd.serial, cd.model, cd.firmware) == ("SN-0001", "SPDK bdev Controller", "26.05")
    assert cd.ieee_oui == 0x5CD2E4
    assert cd.version == NvmeVersion(1, 4, 0) and str(cd.version) == "1.4.0"
    assert cd.version >= (1, 3, 0)
    assert cd.cntrltype is ControllerType.IO
    assert (cd.mdts, cd.nn, cd.maxcmd, cd.wctemp) == (5, 32, 128, 343)
    assert cd.tnvmcap == (1 << 64) + 5
    assert (cd.sqes, cd.cqes) == ((64, 64), (16, 16))
    assert cd.oncs == NvmCommands.COMPARE | NvmCommands.DATASET_MANAGEMENT | (
        NvmCommands.WRITE_ZEROES | NvmCommands.COPY
    )
    assert cd.supports_compare and cd.supports_dsm and cd.supports_write_zeroes
    assert cd.supports_copy and not cd.supports_reservations
    assert not cd.supports_write_uncorrectable and not cd.supports_verify
    assert cd.compare_and_write and cd.volatile_write_cache
    assert cd.sgl_support is SglSupport.SUPPORTED
    assert cd.subnqn == "nqn.2016-06.io.spdk:cnode1"
    assert (cd.ioccsz, cd.iorcsz) == (4, 1)
    assert cd.raw == bytes(page)
    assert "raw" not in repr(cd) and "SN-0001" in repr(cd)


def test_controller_data_from_struct_fields() -> None:
    s = g.struct_spdk_nvme_ctrlr_data()
    s.vid, s.nn, s.mdts, s.cntlid, s.kas = 0x1B36, 1024, 7, 0xFFEF, 10
    s.ver.bits.mjr, s.ver.bits.mnr, s.ver.bits.ter = 2, 0, 1
    s.sqes.min, s.sqes.max, s.cqes.min, s.cqes.max = 6, 7, 4, 4
    s.nvmf_specific.ioccsz, s.nvmf_specific.msdbd = 260, 16
    s.crdt[0], s.crdt[2] = 10, 30
    s.unvmcap[1] = 1
    s.cntrltype = 2
    ctypes.memmove(ctypes.addressof(s) + 768, b"nqn.2014-08.org.nvmexpress.discovery", 36)
    cd = ControllerData.from_struct(s)
    assert (cd.vid, cd.nn, cd.mdts, cd.cntlid, cd.kas) == (0x1B36, 1024, 7, 0xFFEF, 10)
    assert cd.version == (2, 0, 1)
    assert (cd.sqes, cd.cqes) == ((64, 128), (16, 16))
    assert (cd.ioccsz, cd.msdbd) == (260, 16)
    assert cd.crdt == (10, 0, 30)
    assert cd.unvmcap == 1 << 64
    assert cd.cntrltype is ControllerType.DISCOVERY
    assert cd.subnqn == "nqn.2014-08.org.nvmexpress.discovery"
    assert (cd.serial, cd.sqes != (0, 0)) == ("", True)
    s.cntrltype = 9  # reserved: still a ControllerType, not an exception
    assert ControllerData.from_struct(s).cntrltype == 9
    assert ControllerData.from_struct(s).cntrltype.name == "RESERVED_9"


Setter = Callable[[Any], None]


def _bit(path: str) -> Setter:
    """A setter of one generated bit-field, ``"oncs.nvmwzsv"`` -> ``s.oncs.nvmwzsv = 1``."""
    *parents, leaf = path.split(".")

    def set_it(s: Any) -> None:
        for p in parents:
            s = getattr(s, p)
        setattr(s, leaf, 1)

    return set_it


# Each flag's bit, as SPDK's bit-field of the same meaning sets it.
CTRLR_FLAGS: list[tuple[str, str, Any]] = [
    ("cmic.mports", "cmic", MultiPathCapabilities.MULTI_PORT),
    ("cmic.mctrs", "cmic", MultiPathCapabilities.MULTI_CONTROLLER),
    ("cmic.ft", "cmic", MultiPathCapabilities.SRIOV),
    ("cmic.anars", "cmic", MultiPathCapabilities.ANA_REPORTING),
    ("ctratt.bits.host_id_exhid_supported", "ctratt", ControllerAttributes.HOST_ID_128BIT),
    ("ctratt.bits.tbkas", "ctratt", ControllerAttributes.TRAFFIC_BASED_KEEP_ALIVE),
    ("ctratt.bits.uuid_list", "ctratt", ControllerAttributes.UUID_LIST),
    ("ctratt.bits.mds", "ctratt", ControllerAttributes.MULTI_DOMAIN_SUBSYSTEM),
    ("ctratt.bits.elbas", "ctratt", ControllerAttributes.EXTENDED_LBA_FORMATS),
    ("ctratt.bits.mem", "ctratt", ControllerAttributes.MDTS_EXCLUDES_METADATA),
    ("ctratt.fdps", "ctratt", ControllerAttributes.FLEXIBLE_DATA_PLACEMENT),
    ("oacs.ssrs", "oacs", AdminCommands.SECURITY_SEND_RECEIVE),
    ("oacs.fnvms", "oacs", AdminCommands.FORMAT_NVM),
    ("oacs.fwds", "oacs", AdminCommands.FIRMWARE),
    ("oacs.nms", "oacs", AdminCommands.NAMESPACE_MANAGEMENT),
    ("oacs.dsts", "oacs", AdminCommands.DEVICE_SELF_TEST),
    ("oacs.dirs", "oacs", AdminCommands.DIRECTIVES),
    ("oacs.nsrs", "oacs", AdminCommands.NVME_MI),
    ("oacs.vms", "oacs", AdminCommands.VIRTUALIZATION_MANAGEMENT),
    ("oacs.dbcs", "oacs", AdminCommands.DOORBELL_BUFFER_CONFIG),
    ("oacs.glss", "oacs", AdminCommands.GET_LBA_STATUS),
    ("oacs.cfls", "oacs", AdminCommands.COMMAND_FEATURE_LOCKDOWN),
    ("oacs.hmlms", "oacs", AdminCommands.HOST_MANAGED_LIVE_MIGRATION),
    ("lpa.smarts", "lpa", LogPageAttributes.SMART_PER_NAMESPACE),
    ("lpa.cses", "lpa", LogPageAttributes.COMMANDS_EFFECTS),
    ("lpa.lpeds", "lpa", LogPageAttributes.EXTENDED_DATA),
    ("lpa.ts", "lpa", LogPageAttributes.TELEMETRY),
    ("lpa.pes", "lpa", LogPageAttributes.PERSISTENT_EVENT),
    ("lpa.mlps", "lpa", LogPageAttributes.SUPPORTED_LOG_PAGES),
    ("lpa.da4s", "lpa", LogPageAttributes.TELEMETRY_DATA_AREA_4),
    ("oncs.nvmcmps", "oncs", NvmCommands.COMPARE),
    ("oncs.nvmwusv", "oncs", NvmCommands.WRITE_UNCORRECTABLE),
    ("oncs.nvmdsmsv", "oncs", NvmCommands.DATASET_MANAGEMENT),
    ("oncs.nvmwzsv", "oncs", NvmCommands.WRITE_ZEROES),
    ("oncs.ssfs", "oncs", NvmCommands.SAVE_SELECT),
    ("oncs.reservs", "oncs", NvmCommands.RESERVATIONS),
    ("oncs.tss", "oncs", NvmCommands.TIMESTAMP),
    ("oncs.nvmvfys", "oncs", NvmCommands.VERIFY),
    ("oncs.nvmcpys", "oncs", NvmCommands.COPY),
]


@pytest.mark.parametrize(("path", "attr", "flag"), CTRLR_FLAGS, ids=[p for p, _, _ in CTRLR_FLAGS])
def test_controller_flags_match_spdk_bitfields(path: str, attr: str, flag: Any) -> None:
    s = g.struct_spdk_nvme_ctrlr_data()
    _bit(path)(s)
    cd = ControllerData.from_struct(s)
    assert getattr(cd, attr) == flag
    others = {a for _, a, _ in CTRLR_FLAGS} - {attr}
    assert not any(getattr(cd, a) for a in others)


def test_every_flag_member_is_checked_against_spdk() -> None:
    checked = {f for _, _, f in CTRLR_FLAGS} | {f for _, _, f in NS_FLAGS}
    for cls in (MultiPathCapabilities, AdminCommands, LogPageAttributes, NvmCommands):
        assert set(cls) <= checked, cls
    for cls2 in (NamespaceFeatures, ProtectionCapabilities, ReservationCapabilities):
        assert set(cls2) <= checked, cls2


def test_controller_single_bit_fields_match_spdk_bitfields() -> None:
    s = g.struct_spdk_nvme_ctrlr_data()
    s.vwc.present = 1
    s.fuses.fcws = 1
    s.sgls.supported = 2
    cd = ControllerData.from_struct(s)
    assert cd.volatile_write_cache and cd.compare_and_write
    assert cd.sgl_support is SglSupport.SUPPORTED_DWORD_ALIGNED
    assert ControllerData.from_struct(g.struct_spdk_nvme_ctrlr_data()).sgl_support is (
        SglSupport.NOT_SUPPORTED
    )


def test_max_transfer_bytes() -> None:
    assert max_transfer_bytes(5, 4096) == 128 * 1024
    assert max_transfer_bytes(1, 8192) == 16384
    assert max_transfer_bytes(0, 4096) is None  # no limit reported
    with pytest.raises(ValueError, match="power of two"):
        max_transfer_bytes(5, 6144)
    with pytest.raises(ValueError, match="mpsmin_bytes must be >= 4096"):
        max_transfer_bytes(5, 512)
    with pytest.raises(TypeError, match="mdts"):
        max_transfer_bytes(True, 4096)


# ----------------------------------------------------------------------- identify namespace


def test_namespace_data_from_bytes_at_spec_offsets() -> None:
    page = bytearray(4096)
    _put(page, 0, 1 << 20, 8)
    _put(page, 8, 1 << 19, 8)
    _put(page, 16, 12345, 8)
    _put(page, 24, 0b1, 1)  # thin provisioned
    _put(page, 25, 2, 1)  # three formats
    _put(page, 26, 0b0001_0010, 1)  # format 2, metadata at the end of each block
    _put(page, 28, 0b0_1011, 1)  # DPC: type 1, type 2, PI first
    _put(page, 29, 0b1001, 1)  # DPS: type 1, PI first
    _put(page, 30, 1, 1)  # shared
    _put(page, 46, 256, 2)
    _put(page, 48, (1 << 64) | 1, 16)
    _put(page, 99, 1, 1)  # write protected
    _put(page, 104, bytes(range(16)))
    _put(page, 120, bytes.fromhex("0011223344556677"))
    _put(page, 128, 9 << 16, 4)  # 512 + 0
    _put(page, 132, 9 << 16 | 8 | 1 << 24, 4)  # 512 + 8, better
    _put(page, 136, 12 << 16 | 64 | 2 << 24, 4)  # 4096 + 64, good
    ns = NamespaceData.from_bytes(bytes(page))
    assert (ns.nsze, ns.ncap, ns.nuse, ns.nlbaf) == (1 << 20, 1 << 19, 12345, 2)
    assert ns.nsfeat == NamespaceFeatures.THIN_PROVISIONING and ns.thin_provisioned
    assert ns.lba_formats == (
        LbaFormat(0, 9, RelativePerformance.BEST),
        LbaFormat(8, 9, RelativePerformance.BETTER),
        LbaFormat(64, 12, RelativePerformance.GOOD),
    )
    assert ns.lba_format_index == 2 and ns.lba_format is ns.lba_formats[2]
    assert (ns.block_size, ns.metadata_size, ns.extended_lba) == (4096, 64, True)
    assert ns.dpc == ProtectionCapabilities.TYPE1 | ProtectionCapabilities.TYPE2 | (
        ProtectionCapabilities.PI_FIRST
    )
    assert ns.protection_type is ProtectionType.TYPE1 and ns.pi_first
    assert ns.shared and ns.write_protected
    assert (ns.noiob, ns.nvmcap) == (256, (1 << 64) | 1)
    assert ns.nguid == bytes(range(16)) and ns.nguid.hex() == "000102030405060708090a0b0c0d0e0f"
    assert ns.eui64 == bytes.fromhex("0011223344556677")  # the identifier's bytes, as stored
    assert ns.raw == bytes(page)


def test_namespace_format_index_uses_the_high_bits() -> None:
    s = g.struct_spdk_nvme_ns_data()
    s.nlbaf = 19
    s.flbas.format, s.flbas.msb_format = 2, 1  # format 18
    s.lbaf[18].lbads, s.lbaf[18].ms = 12, 16
    s.dps.pit = 3
    s.nsze, s.npwg, s.nows, s.mcl, s.anagrpid = 99, 7, 8, 1 << 20, 3
    ns = NamespaceData.from_struct(s)
    assert ns.lba_format_index == 18 and len(ns.lba_formats) == 20
    assert (ns.block_size, ns.metadata_size, ns.extended_lba) == (4096, 16, False)
    assert ns.protection_type is ProtectionType.TYPE3 and not ns.pi_first
    assert (ns.nsze, ns.npwg, ns.nows, ns.mcl, ns.anagrpid) == (99, 7, 8, 1 << 20, 3)
    assert LbaFormat(0, 0, RelativePerformance.BEST).data_size == 0  # an unused format


NS_FLAGS: list[tuple[str, str, Any]] = [
    ("nsfeat.thin_prov", "nsfeat", NamespaceFeatures.THIN_PROVISIONING),
    ("nsfeat.ns_atomic_write_unit", "nsfeat", NamespaceFeatures.ATOMIC_WRITE_FIELDS),
    ("nsfeat.dealloc_or_unwritten_error", "nsfeat", NamespaceFeatures.DEALLOCATED_ERROR),
    ("nsfeat.guid_never_reused", "nsfeat", NamespaceFeatures.GUID_NEVER_REUSED),
    ("nsfeat.optperf", "nsfeat", NamespaceFeatures.OPTIMAL_PERFORMANCE_FIELDS),
    ("dpc.pit1", "dpc", ProtectionCapabilities.TYPE1),
    ("dpc.pit2", "dpc", ProtectionCapabilities.TYPE2),
    ("dpc.pit3", "dpc", ProtectionCapabilities.TYPE3),
    ("dpc.md_start", "dpc", ProtectionCapabilities.PI_FIRST),
    ("dpc.md_end", "dpc", ProtectionCapabilities.PI_LAST),
    ("nsrescap.rescap.ptpls", "rescap", ReservationCapabilities.PERSIST_THROUGH_POWER_LOSS),
    ("nsrescap.rescap.wes", "rescap", ReservationCapabilities.WRITE_EXCLUSIVE),
    ("nsrescap.rescap.eas", "rescap", ReservationCapabilities.EXCLUSIVE_ACCESS),
    ("nsrescap.rescap.weros", "rescap", ReservationCapabilities.WRITE_EXCLUSIVE_REGISTRANTS_ONLY),
    ("nsrescap.rescap.earos", "rescap", ReservationCapabilities.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY),
    ("nsrescap.rescap.wears", "rescap", ReservationCapabilities.WRITE_EXCLUSIVE_ALL_REGISTRANTS),
    ("nsrescap.rescap.eaars", "rescap", ReservationCapabilities.EXCLUSIVE_ACCESS_ALL_REGISTRANTS),
    ("nsrescap.rescap.ieks", "rescap", ReservationCapabilities.IGNORE_EXISTING_KEY),
]


@pytest.mark.parametrize(("path", "attr", "flag"), NS_FLAGS, ids=[p for p, _, _ in NS_FLAGS])
def test_namespace_flags_match_spdk_bitfields(path: str, attr: str, flag: Any) -> None:
    s = g.struct_spdk_nvme_ns_data()
    _bit(path)(s)
    ns = NamespaceData.from_struct(s)
    assert getattr(ns, attr) == flag
    others = {a for _, a, _ in NS_FLAGS} - {attr}
    assert not any(getattr(ns, a) for a in others)


# ----------------------------------------------------------------------- log pages


def test_health_log_from_bytes_at_spec_offsets() -> None:
    page = bytearray(512)
    _put(page, 0, 0b10_0110, 1)  # temperature, reliability, PMR read-only
    _put(page, 1, 310, 2)
    _put(page, 3, 100, 1)
    _put(page, 4, 10, 1)
    _put(page, 5, 255, 1)
    big = (3 << 64) | 7
    for i, offset in enumerate(range(32, 192, 16)):
        _put(page, offset, big + i, 16)
    _put(page, 192, 11, 4)
    _put(page, 196, 12, 4)
    _put(page, 200, 300, 2)
    _put(page, 214, 320, 2)
    h = HealthLog.from_bytes(bytes(page))
    assert h.critical_warning == (
        CriticalWarning.TEMPERATURE
        | CriticalWarning.DEVICE_RELIABILITY
        | (CriticalWarning.PMR_READ_ONLY)
    )
    assert (h.temperature, h.temperature_celsius) == (310, 37)
    assert (h.available_spare, h.available_spare_threshold, h.percentage_used) == (100, 10, 255)
    counters = [
        h.data_units_read,
        h.data_units_written,
        h.host_read_commands,
        h.host_write_commands,
        h.controller_busy_time,
        h.power_cycles,
        h.power_on_hours,
        h.unsafe_shutdowns,
        h.media_errors,
        h.num_error_info_log_entries,
    ]
    assert counters == [big + i for i in range(10)]
    assert h.bytes_read == (big + 0) * 512_000 and h.bytes_written == (big + 1) * 512_000
    assert (h.warning_temp_time, h.critical_temp_time) == (11, 12)
    assert h.temp_sensors == (300, 0, 0, 0, 0, 0, 0, 320)
    assert not HealthLog.from_bytes(bytes(512)).critical_warning  # healthy: an empty set


@pytest.mark.parametrize(
    ("bit", "flag"),
    [
        ("available_spare", CriticalWarning.AVAILABLE_SPARE),
        ("temperature", CriticalWarning.TEMPERATURE),
        ("device_reliability", CriticalWarning.DEVICE_RELIABILITY),
        ("read_only", CriticalWarning.READ_ONLY),
        ("volatile_memory_backup", CriticalWarning.VOLATILE_MEMORY_BACKUP),
    ],
)
def test_critical_warning_matches_spdk_bitfields(bit: str, flag: CriticalWarning) -> None:
    s = g.struct_spdk_nvme_health_information_page()
    setattr(s.critical_warning.bits, bit, 1)
    assert HealthLog.from_struct(s).critical_warning == flag


def _error_entry(count: int, sqid: int, cid: int, status_word: int, lba: int) -> bytes:
    entry = bytearray(64)
    _put(entry, 0, count, 8)
    _put(entry, 8, sqid, 2)
    _put(entry, 10, cid, 2)
    _put(entry, 12, status_word, 2)
    _put(entry, 14, 0x0203, 2)
    _put(entry, 16, lba, 8)
    _put(entry, 24, 1, 4)
    _put(entry, 28, 0xC0, 1)
    _put(entry, 29, 3, 1)
    _put(entry, 32, 0xDEAD, 8)
    _put(entry, 40, 0xBEEF, 2)
    return bytes(entry)


def test_error_log_entry_from_bytes_at_spec_offsets() -> None:
    word = 0x8000 | 2 << 9 | 0x81 << 1 | 1  # DNR, Unrecovered Read Error, phase
    e = ErrorLogEntry.from_bytes(_error_entry(42, 1, 77, word, 1 << 40))
    assert (e.error_count, e.sqid, e.cid, e.lba, e.nsid) == (42, 1, 77, 1 << 40, 1)
    assert e.status == NvmeStatus(2, 0x81, dnr=True, phase=True)
    assert e.status.name == "Media and Data Integrity / Unrecovered Read Error"
    assert (e.error_location, e.vendor_specific, e.trtype) == (0x0203, 0xC0, 3)
    assert (e.command_specific, e.trtype_specific) == (0xDEAD, 0xBEEF)


def test_error_log_entry_status_matches_spdk_bitfields() -> None:
    s = g.struct_spdk_nvme_error_information_entry()
    s.status.sct, s.status.sc, s.status.dnr, s.status.m = 1, 0x09, 1, 1
    assert ErrorLogEntry.from_struct(s).status == NvmeStatus(1, 0x09, dnr=True, more=True)


def test_parse_error_log() -> None:
    page = _error_entry(9, 0, 1, 0x80 << 1, 5) + bytes(64) + _error_entry(8, 0, 2, 4 << 1, 0)
    entries = parse_error_log(page)
    assert [(e.error_count, e.cid, e.status.sc) for e in entries] == [(9, 1, 0x80), (8, 2, 0x04)]
    assert parse_error_log(b"") == []
    with pytest.raises(ValueError, match="multiple of 64"):
        parse_error_log(bytes(100))


def test_parse_active_ns_list() -> None:
    assert parse_active_ns_list(struct.pack("<5I", 1, 2, 5, 0, 7) + bytes(4076)) == [1, 2, 5]
    full = struct.pack("<1024I", *range(1, 1025))
    assert parse_active_ns_list(full) == list(range(1, 1025))
    assert parse_active_ns_list(bytes(4096)) == []
    assert parse_active_ns_list(memoryview(bytearray(struct.pack("<2I", 0xFFFFFFFE, 0)))) == [
        0xFFFFFFFE
    ]
    with pytest.raises(ValueError, match="multiple of 4"):
        parse_active_ns_list(bytes(6))


@pytest.mark.parametrize(
    ("record", "size"),
    [(ControllerData, 4096), (NamespaceData, 4096), (HealthLog, 512), (ErrorLogEntry, 64)],
)
def test_from_bytes_needs_the_whole_page(record: Any, size: int) -> None:
    with pytest.raises(ValueError, match=f"needs {size} bytes, got {size - 1}"):
        record.from_bytes(bytes(size - 1))
    with pytest.raises(TypeError, match="bytes-like"):
        record.from_bytes("x" * size)
    longer = bytearray(size + 100)
    longer[0] = 1
    assert record.from_bytes(longer).raw == bytes(longer[:size])  # the rest is ignored
    words = memoryview(bytearray(size)).cast("I")  # counted in bytes, not items
    assert record.from_bytes(words).raw == bytes(size)
    with pytest.raises(ValueError, match=f"needs {size} bytes, got {size - 4}"):
        record.from_bytes(memoryview(bytearray(size - 4)).cast("I"))


def test_records_are_frozen_and_hold_no_struct() -> None:
    s = g.struct_spdk_nvme_ctrlr_data()
    s.nn = 3
    cd = ControllerData.from_struct(s)
    s.nn = 4
    assert cd.nn == 3 and cd == ControllerData.from_bytes(cd.raw)
    with pytest.raises(AttributeError):
        cd.nn = 5  # type: ignore[misc]  # the point: frozen


# ----------------------------------------------------------------------- status vs SPDK


@given(st.integers(0, 0xFFFF))
def test_from_cpl_agrees_with_spdk_bitfields(word: int) -> None:
    cpl = g.struct_spdk_nvme_cpl()
    cpl.status_raw = word
    s = NvmeStatus.from_cpl(cpl)
    b = cpl.status
    assert (s.phase, s.sc, s.sct, s.crd, s.more, s.dnr) == (
        bool(b.p),
        b.sc,
        b.sct,
        b.crd,
        bool(b.m),
        bool(b.dnr),
    )
    assert NvmeStatus.from_cpl(ctypes.pointer(cpl)) is s
    assert s.is_success == (b.sct == 0 and b.sc == 0)  # spdk_nvme_cpl_is_success (inline)


def test_from_cpl_reads_a_completion_spdk_built() -> None:
    cpl = g.struct_spdk_nvme_cpl()
    cpl.status.sct = g.SPDK_NVME_SCT_GENERIC
    cpl.status.sc = g.SPDK_NVME_SC_LBA_OUT_OF_RANGE
    cpl.status.dnr = 1
    s = NvmeStatus.from_cpl(cpl)
    assert s.name == "Generic / LBA Out of Range" and s.dnr


_SC_ENUMS = {
    "spdk_nvme_generic_command_status_code": StatusCodeType.GENERIC,
    "spdk_nvme_command_specific_status_code": StatusCodeType.COMMAND_SPECIFIC,
    "spdk_nvme_media_error_status_code": StatusCodeType.MEDIA_ERROR,
    "spdk_nvme_path_status_code": StatusCodeType.PATH,
}


def _header_status_codes() -> dict[StatusCodeType, dict[str, int]]:
    """Each SC enum of ``nvme_spec.h``: constant name -> value (from the generated layer)."""
    text = (find_spdk().headers / "nvme_spec.h").read_text()
    found: dict[StatusCodeType, dict[str, int]] = {}
    for enum_name, sct in _SC_ENUMS.items():
        body = re.search(rf"enum {enum_name}\s*\{{(.*?)\}};", text, re.S)
        assert body, enum_name
        names = re.findall(r"^\s*(SPDK_NVME_SC_\w+)\s*=", body.group(1), re.M)
        found[sct] = {n: getattr(g, n) for n in names}
    return found


def test_every_status_code_spdk_defines_has_its_name() -> None:
    codes = _header_status_codes()
    assert sum(map(len, codes.values())) > 120  # the four enums were found and read
    for sct, constants in codes.items():
        missing = {n: hex(v) for n, v in constants.items() if v not in STATUS_NAMES[sct]}
        assert not missing, f"{sct.name}: no name for {missing}"
    assert codes[StatusCodeType.GENERIC]["SPDK_NVME_SC_LBA_OUT_OF_RANGE"] == 0x80


def test_every_status_spdk_names_has_ours() -> None:
    """Where spdk_nvme_cpl_get_status_string knows a code, we name it too (besides the
    Open-Channel SSD extension's media codes, which only such drives report)."""
    ocssd = {v for k, v in vars(g).items() if k.startswith("SPDK_OCSSD_SC_")}
    assert ocssd
    status = g.struct_spdk_nvme_status()
    for sct in StatusCodeType:
        status.sct, status.sc = sct, 0xFF  # unnamed everywhere: SPDK's fallback
        fallback = g.spdk_nvme_cpl_get_status_string(ctypes.byref(status))
        known = 0
        for sc in range(256):
            status.sc = sc
            spdk = g.spdk_nvme_cpl_get_status_string(ctypes.byref(status))
            if spdk == fallback or (sct == StatusCodeType.MEDIA_ERROR and sc in ocssd):
                continue
            known += 1
            assert sc in STATUS_NAMES[sct], (sct.name, hex(sc), spdk)
        assert known or sct == StatusCodeType.VENDOR_SPECIFIC
