"""NVMe completion status: decoded fields, the spec's names, and an errno for each.

Pure Python (no SPDK; ctypes only to tell a pointer from a struct), so it is
importable and testable anywhere.

* :class:`NvmeStatus` is the decoded 16-bit status field of a completion queue
  entry (bit 0 phase tag, bits 8:1 status code, 11:9 status code type, 13:12
  command retry delay, 14 more, 15 do not retry).
* Names are the NVMe base and command set specifications' wording
  ("Invalid Field in Command", "LBA Out of Range"); every status code SPDK's
  ``nvme_spec.h`` defines has one, and any other code gets a fallback name
  ("Unknown (0xAB)", or "Vendor Specific (0xC5)" in the vendor range), never an error.
* :func:`status_errno` maps a status to the errno :class:`~spdk_io.errors.NvmeError`
  carries.
"""

from __future__ import annotations

import ctypes
import enum
import errno as _errno
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from spdk_io import _generated as g

__all__ = [
    "COMMAND_SPECIFIC_STATUS",
    "GENERIC_STATUS",
    "MEDIA_ERROR_STATUS",
    "PATH_STATUS",
    "STATUS_NAMES",
    "STATUS_SC_SCT_MASK",
    "NvmeStatus",
    "StatusCodeType",
    "sc_name",
    "sct_name",
    "status_errno",
]


class StatusCodeType(enum.IntEnum):
    """The status code type (SCT) of a completion: which table its status code is in."""

    GENERIC = 0
    COMMAND_SPECIFIC = 1
    MEDIA_ERROR = 2
    PATH = 3
    VENDOR_SPECIFIC = 7

    @property
    def label(self) -> str:
        """The spec's name for the type ("Media and Data Integrity")."""
        return _SCT_LABELS[self]


_SCT_LABELS: Final[dict[int, str]] = {
    0: "Generic",
    1: "Command Specific",
    2: "Media and Data Integrity",
    3: "Path Related",
    7: "Vendor Specific",
}

#: Generic Command Status (SCT 0h): base spec, then the NVM and Key Value command sets (80h-).
GENERIC_STATUS: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x00: "Successful Completion",
        0x01: "Invalid Command Opcode",
        0x02: "Invalid Field in Command",
        0x03: "Command ID Conflict",
        0x04: "Data Transfer Error",
        0x05: "Commands Aborted due to Power Loss Notification",
        0x06: "Internal Error",
        0x07: "Command Abort Requested",
        0x08: "Command Aborted due to SQ Deletion",
        0x09: "Command Aborted due to Failed Fused Command",
        0x0A: "Command Aborted due to Missing Fused Command",
        0x0B: "Invalid Namespace or Format",
        0x0C: "Command Sequence Error",
        0x0D: "Invalid SGL Segment Descriptor",
        0x0E: "Invalid Number of SGL Descriptors",
        0x0F: "Data SGL Length Invalid",
        0x10: "Metadata SGL Length Invalid",
        0x11: "SGL Descriptor Type Invalid",
        0x12: "Invalid Use of Controller Memory Buffer",
        0x13: "PRP Offset Invalid",
        0x14: "Atomic Write Unit Exceeded",
        0x15: "Operation Denied",
        0x16: "SGL Offset Invalid",
        0x18: "Host Identifier Inconsistent Format",
        0x19: "Keep Alive Timer Expired",
        0x1A: "Keep Alive Timeout Invalid",
        0x1B: "Command Aborted due to Preempt and Abort",
        0x1C: "Sanitize Failed",
        0x1D: "Sanitize In Progress",
        0x1E: "SGL Data Block Granularity Invalid",
        0x1F: "Command Not Supported for Queue in CMB",
        0x20: "Namespace is Write Protected",
        0x21: "Command Interrupted",
        0x22: "Transient Transport Error",
        0x23: "Command Prohibited by Command and Feature Lockdown",
        0x24: "Admin Command Media Not Ready",
        0x29: "FDP Disabled",
        0x2A: "Invalid Placement Handle List",
        0x80: "LBA Out of Range",
        0x81: "Capacity Exceeded",
        0x82: "Namespace Not Ready",
        0x83: "Reservation Conflict",
        0x84: "Format In Progress",
        0x85: "Invalid Value Size",
        0x86: "Invalid Key Size",
        0x87: "KV Key Does Not Exist",
        0x88: "Unrecovered Error",
        0x89: "Key Exists",
    }
)

#: Command Specific Status (SCT 1h): base spec, then the NVM (80h-) and Zoned (B8h-) sets.
#: (Fabrics commands such as Connect reuse 80h- with other meanings; those are not here.)
COMMAND_SPECIFIC_STATUS: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x00: "Completion Queue Invalid",
        0x01: "Invalid Queue Identifier",
        0x02: "Invalid Queue Size",
        0x03: "Abort Command Limit Exceeded",
        0x05: "Asynchronous Event Request Limit Exceeded",
        0x06: "Invalid Firmware Slot",
        0x07: "Invalid Firmware Image",
        0x08: "Invalid Interrupt Vector",
        0x09: "Invalid Log Page",
        0x0A: "Invalid Format",
        0x0B: "Firmware Activation Requires Conventional Reset",
        0x0C: "Invalid Queue Deletion",
        0x0D: "Feature Identifier Not Saveable",
        0x0E: "Feature Not Changeable",
        0x0F: "Feature Not Namespace Specific",
        0x10: "Firmware Activation Requires NVM Subsystem Reset",
        0x11: "Firmware Activation Requires Controller Level Reset",
        0x12: "Firmware Activation Requires Maximum Time Violation",
        0x13: "Firmware Activation Prohibited",
        0x14: "Overlapping Range",
        0x15: "Namespace Insufficient Capacity",
        0x16: "Namespace Identifier Unavailable",
        0x18: "Namespace Already Attached",
        0x19: "Namespace Is Private",
        0x1A: "Namespace Not Attached",
        0x1B: "Thin Provisioning Not Supported",
        0x1C: "Controller List Invalid",
        0x1D: "Device Self-test In Progress",
        0x1E: "Boot Partition Write Prohibited",
        0x1F: "Invalid Controller Identifier",
        0x20: "Invalid Secondary Controller State",
        0x21: "Invalid Number of Controller Resources",
        0x22: "Invalid Resource Identifier",
        0x23: "Sanitize Prohibited While Persistent Memory Region is Enabled",
        0x24: "ANA Group Identifier Invalid",
        0x25: "ANA Attach Failed",
        0x26: "Insufficient Capacity",
        0x27: "Namespace Attachment Limit Exceeded",
        0x28: "Prohibition of Command Execution Not Supported",
        0x29: "I/O Command Set Not Supported",
        0x2A: "I/O Command Set Not Enabled",
        0x2B: "I/O Command Set Combination Rejected",
        0x2C: "Invalid I/O Command Set",
        0x2D: "Identifier Unavailable",
        0x7F: "Stream Resource Allocation Failed",
        0x80: "Conflicting Attributes",
        0x81: "Invalid Protection Information",
        0x82: "Attempted Write to Read Only Range",
        0x83: "Command Size Limit Exceeded",
        0xB8: "Zone Boundary Error",
        0xB9: "Zone Is Full",
        0xBA: "Zone Is Read Only",
        0xBB: "Zone Is Offline",
        0xBC: "Zone Invalid Write",
        0xBD: "Too Many Active Zones",
        0xBE: "Too Many Open Zones",
        0xBF: "Invalid Zone State Transition",
    }
)

#: Media and Data Integrity Errors (SCT 2h).
MEDIA_ERROR_STATUS: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x80: "Write Fault",
        0x81: "Unrecovered Read Error",
        0x82: "End-to-end Guard Check Error",
        0x83: "End-to-end Application Tag Check Error",
        0x84: "End-to-end Reference Tag Check Error",
        0x85: "Compare Failure",
        0x86: "Access Denied",
        0x87: "Deallocated or Unwritten Logical Block",
        0x88: "End-to-End Storage Tag Check Error",
    }
)

#: Path Related Status (SCT 3h).
PATH_STATUS: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x00: "Internal Path Error",
        0x01: "Asymmetric Access Persistent Loss",
        0x02: "Asymmetric Access Inaccessible",
        0x03: "Asymmetric Access Transition",
        0x60: "Controller Pathing Error",
        0x70: "Host Pathing Error",
        0x71: "Command Aborted By Host",
    }
)

#: The name tables by status code type (vendor-specific codes have none).
STATUS_NAMES: Final[Mapping[int, Mapping[int, str]]] = MappingProxyType(
    {
        StatusCodeType.GENERIC: GENERIC_STATUS,
        StatusCodeType.COMMAND_SPECIFIC: COMMAND_SPECIFIC_STATUS,
        StatusCodeType.MEDIA_ERROR: MEDIA_ERROR_STATUS,
        StatusCodeType.PATH: PATH_STATUS,
    }
)

#: The SCT and SC bits of a status word: ``word & STATUS_SC_SCT_MASK == 0`` is success
#: (what ``spdk_nvme_cpl_is_success`` checks), the cheapest test on a completion path.
STATUS_SC_SCT_MASK: Final = 0x0FFE


def sct_name(sct: int) -> str:
    """The name of status code type ``sct`` ("Generic"); "Reserved (5)" for 4-6."""
    return _SCT_LABELS.get(sct) or f"Reserved ({sct})"


def sc_name(sct: int, sc: int) -> str:
    """The spec's name of status code ``sc`` of type ``sct``; never raises.

    Codes with no name are "Vendor Specific (0xC5)" in each type's vendor range
    (C0h-FFh, and all of SCT 7h) and "Unknown (0xAB)" elsewhere.
    """
    name = STATUS_NAMES.get(sct, _NO_NAMES).get(sc)
    if name is not None:
        return name
    if sct == StatusCodeType.VENDOR_SPECIFIC or sc >= 0xC0:
        return f"Vendor Specific (0x{sc:02X})"
    return f"Unknown (0x{sc:02X})"


_NO_NAMES: Final[Mapping[int, str]] = MappingProxyType({})

_E = _errno
#: errno per (sct, sc); everything else (media errors, internal errors, vendor codes) is EIO.
_ERRNO: Final[dict[tuple[int, int], int]] = {
    # generic: the command as sent is wrong
    **dict.fromkeys(
        [
            (0, 0x01),  # Invalid Command Opcode
            (0, 0x02),  # Invalid Field in Command
            (0, 0x0B),  # Invalid Namespace or Format
            (0, 0x0C),  # Command Sequence Error
            (0, 0x0D),
            (0, 0x0E),
            (0, 0x0F),
            (0, 0x10),
            (0, 0x11),
            (0, 0x12),
            (0, 0x13),
            (0, 0x14),  # Atomic Write Unit Exceeded
            (0, 0x16),
            (0, 0x18),
            (0, 0x1A),
            (0, 0x1E),
            (0, 0x2A),
            (0, 0x80),  # LBA Out of Range
            (0, 0x85),
            (0, 0x86),
        ],
        _E.EINVAL,
    ),
    # aborted: the queue or controller went away, or the host asked for it
    (0, 0x05): _E.ECONNABORTED,  # Power Loss Notification
    (0, 0x07): _E.ECONNABORTED,  # Command Abort Requested
    (0, 0x08): _E.ECONNABORTED,  # SQ Deletion
    (0, 0x09): _E.ECONNABORTED,
    (0, 0x0A): _E.ECONNABORTED,
    (0, 0x1B): _E.ECONNABORTED,  # Preempt and Abort
    (3, 0x71): _E.ECONNABORTED,  # Command Aborted By Host
    # refused
    (0, 0x15): _E.EPERM,  # Operation Denied
    (0, 0x23): _E.EPERM,  # Prohibited by Lockdown
    (0, 0x20): _E.EROFS,  # Namespace is Write Protected
    (1, 0x82): _E.EROFS,  # Attempted Write to Read Only Range
    (1, 0xBA): _E.EROFS,  # Zone Is Read Only
    (2, 0x86): _E.EACCES,  # Access Denied
    (0, 0x83): _E.EACCES,  # Reservation Conflict
    # not supported
    (0, 0x1F): _E.EOPNOTSUPP,
    (0, 0x29): _E.EOPNOTSUPP,  # FDP Disabled
    (1, 0x1B): _E.EOPNOTSUPP,
    (1, 0x28): _E.EOPNOTSUPP,
    (1, 0x29): _E.EOPNOTSUPP,
    (1, 0x2A): _E.EOPNOTSUPP,
    # out of space
    (0, 0x81): _E.ENOSPC,  # Capacity Exceeded
    (1, 0x15): _E.ENOSPC,
    (1, 0x26): _E.ENOSPC,
    (1, 0xB9): _E.ENOSPC,  # Zone Is Full
    # busy or not ready yet: worth retrying later (unless do-not-retry is set)
    (0, 0x1D): _E.EBUSY,  # Sanitize In Progress
    (0, 0x24): _E.EBUSY,
    (0, 0x82): _E.EBUSY,  # Namespace Not Ready
    (0, 0x84): _E.EBUSY,  # Format In Progress
    (1, 0x1D): _E.EBUSY,  # Device Self-test In Progress
    (1, 0x03): _E.EBUSY,
    (1, 0x05): _E.EBUSY,
    (1, 0xBD): _E.EBUSY,
    (1, 0xBE): _E.EBUSY,
    (0, 0x21): _E.EAGAIN,  # Command Interrupted
    (3, 0x03): _E.EAGAIN,  # Asymmetric Access Transition
    # path
    (0, 0x22): _E.ECONNRESET,  # Transient Transport Error
    (3, 0x00): _E.ENXIO,
    (3, 0x01): _E.ENXIO,
    (3, 0x02): _E.ENXIO,
    (3, 0x60): _E.ENXIO,
    (3, 0x70): _E.ENXIO,
    (0, 0x19): _E.ETIMEDOUT,  # Keep Alive Timer Expired
    # data did not match: end-to-end protection checks and compare
    (1, 0x81): _E.EINVAL,  # Invalid Protection Information (the command's PI fields)
    (1, 0x80): _E.EINVAL,  # Conflicting Attributes
    (2, 0x82): _E.EBADMSG,
    (2, 0x83): _E.EBADMSG,
    (2, 0x84): _E.EBADMSG,
    (2, 0x85): _E.EBADMSG,  # Compare Failure
    (2, 0x88): _E.EBADMSG,
    (0, 0x87): _E.ENOENT,  # KV Key Does Not Exist
    (0, 0x89): _E.EEXIST,  # Key Exists
}


# Command-specific codes named "Invalid ..." / "... Invalid" are malformed commands too.
for _sc, _name in COMMAND_SPECIFIC_STATUS.items():
    if _name.startswith("Invalid") or _name.endswith("Invalid"):
        _ERRNO.setdefault((StatusCodeType.COMMAND_SPECIFIC, _sc), _E.EINVAL)


def status_errno(sct: int, sc: int) -> int:
    """The errno for a failed status: ``EINVAL`` for a malformed command,
    ``ECONNABORTED`` for an aborted one, ``ENXIO`` for a lost path, ``ENOSPC``,
    ``EACCES``, ``EROFS``, ``EBUSY``, ... and ``EIO`` for everything else."""
    return _ERRNO.get((sct, sc), _E.EIO)


@dataclass(frozen=True, slots=True)
class NvmeStatus:
    """The status field of an NVMe completion, decoded.

    ``sct``/``sc`` are the status code type and status code, ``dnr`` says the
    command would fail again if retried, ``more`` that the Error Information log
    has more, ``crd`` which Command Retry Delay (0-3) applies, ``phase`` the phase
    tag.  Equal statuses compare equal; decoding the same word twice returns the
    same object.
    """

    sct: int
    sc: int
    dnr: bool = False
    more: bool = False
    crd: int = 0
    phase: bool = False

    @classmethod
    def from_word(cls, word: int) -> NvmeStatus:
        """Decode the 16-bit status field (completion dword 3 bits 31:16)."""
        status = _DECODED.get(word)
        if status is None:
            status = _decode(word)
        return status

    @classmethod
    def from_cpl(
        cls, cpl: g.struct_spdk_nvme_cpl | ctypes._Pointer[g.struct_spdk_nvme_cpl]
    ) -> NvmeStatus:
        """Decode the status of a completion (``struct spdk_nvme_cpl`` or a pointer to one).

        Reads the status word once; a word seen before is a dict lookup, so this is
        cheap enough for every completion.
        """
        if isinstance(cpl, ctypes._Pointer):  # what a completion callback receives
            word: int = cpl[0].status_raw
        else:
            word = cpl.status_raw
        status = _DECODED.get(word)
        if status is None:
            status = _decode(word)
        return status

    @property
    def word(self) -> int:
        """The 16-bit status field these fields encode (``from_word(s.word) == s``)."""
        return (
            self.phase
            | self.sc << 1
            | self.sct << 9
            | self.crd << 12
            | self.more << 14
            | self.dnr << 15
        )

    @property
    def is_success(self) -> bool:
        """Whether the command succeeded (generic type, "Successful Completion")."""
        return self.sct == 0 and self.sc == 0

    @property
    def sct_name(self) -> str:
        """The status code type's name ("Generic")."""
        return sct_name(self.sct)

    @property
    def sc_name(self) -> str:
        """The status code's name ("LBA Out of Range")."""
        return sc_name(self.sct, self.sc)

    @property
    def name(self) -> str:
        """Type and code: "Generic / LBA Out of Range"."""
        return f"{sct_name(self.sct)} / {sc_name(self.sct, self.sc)}"

    @property
    def errno(self) -> int:
        """The errno that stands for this status (see :func:`status_errno`)."""
        return status_errno(self.sct, self.sc)

    def __str__(self) -> str:
        return f"{self.name} (sct 0x{self.sct:X}, sc 0x{self.sc:02X})"


#: Every status word decoded so far (at most 65536, in practice a handful).
_DECODED: dict[int, NvmeStatus] = {}


def _decode(word: int) -> NvmeStatus:
    if not 0 <= word <= 0xFFFF:
        raise ValueError(f"an NVMe status word is 16 bits, got {word:#x}")
    status = NvmeStatus(
        sct=(word >> 9) & 0x7,
        sc=(word >> 1) & 0xFF,
        dnr=bool(word & 0x8000),
        more=bool(word & 0x4000),
        crd=(word >> 12) & 0x3,
        phase=bool(word & 0x1),
    )
    _DECODED[word] = status
    return status
