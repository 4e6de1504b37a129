"""NVMe status decoding, names and NvmeError (SPDK-free)."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spdk_io.errors import NvmeError, SpdkError
from spdk_io.nvme.status import (
    COMMAND_SPECIFIC_STATUS,
    GENERIC_STATUS,
    MEDIA_ERROR_STATUS,
    PATH_STATUS,
    STATUS_NAMES,
    STATUS_SC_SCT_MASK,
    NvmeStatus,
    StatusCodeType,
    sc_name,
    sct_name,
    status_errno,
)

pytestmark = pytest.mark.spdk_free  # runs where SPDK is not installed

words = st.integers(min_value=0, max_value=0xFFFF)


@given(words)
def test_from_word_decodes_each_bit_range(word: int) -> None:
    s = NvmeStatus.from_word(word)
    assert s.phase == bool(word & 1)
    assert s.sc == (word >> 1) & 0xFF
    assert s.sct == (word >> 9) & 0x7
    assert s.crd == (word >> 12) & 0x3
    assert s.more == bool(word >> 14 & 1)
    assert s.dnr == bool(word >> 15 & 1)
    assert s.word == word
    assert s.is_success == (word & STATUS_SC_SCT_MASK == 0)


@given(st.integers(0, 7), st.integers(0, 255), st.booleans(), st.booleans(), st.integers(0, 3))
def test_fields_round_trip_through_the_word(
    sct: int, sc: int, dnr: bool, more: bool, crd: int
) -> None:
    s = NvmeStatus(sct, sc, dnr=dnr, more=more, crd=crd)
    assert NvmeStatus.from_word(s.word) == s


def test_known_words() -> None:
    # LBA Out of Range with DNR set: sc 0x80 << 1, dnr bit 15
    s = NvmeStatus.from_word(0x8000 | 0x80 << 1)
    assert (s.sct, s.sc, s.dnr, s.more, s.crd) == (0, 0x80, True, False, 0)
    assert s.name == "Generic / LBA Out of Range"
    assert str(s) == "Generic / LBA Out of Range (sct 0x0, sc 0x80)"
    s = NvmeStatus.from_word(2 << 9 | 0x81 << 1 | 1)  # media, Unrecovered Read Error, phase 1
    assert s.name == "Media and Data Integrity / Unrecovered Read Error"
    assert s.phase and not s.is_success
    assert NvmeStatus.from_word(1).is_success  # the phase tag is not part of the status
    assert NvmeStatus.from_word(0x4000 | 0x3000).is_success  # nor are more / crd
    assert NvmeStatus.from_word(0x1234) is NvmeStatus.from_word(0x1234)


@pytest.mark.parametrize("bad", [-1, 0x10000])
def test_from_word_refuses_more_than_16_bits(bad: int) -> None:
    with pytest.raises(ValueError, match="16 bits"):
        NvmeStatus.from_word(bad)


def test_status_code_types() -> None:
    assert [(t.value, t.label) for t in StatusCodeType] == [
        (0, "Generic"),
        (1, "Command Specific"),
        (2, "Media and Data Integrity"),
        (3, "Path Related"),
        (7, "Vendor Specific"),
    ]
    assert sct_name(5) == "Reserved (5)"
    assert set(STATUS_NAMES) == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("sct", "sc", "name"),
    [
        (0, 0x00, "Successful Completion"),
        (0, 0x02, "Invalid Field in Command"),
        (0, 0x07, "Command Abort Requested"),
        (0, 0x80, "LBA Out of Range"),
        (0, 0x82, "Namespace Not Ready"),
        (1, 0x09, "Invalid Log Page"),
        (1, 0xB9, "Zone Is Full"),
        (2, 0x81, "Unrecovered Read Error"),
        (2, 0x85, "Compare Failure"),
        (2, 0x86, "Access Denied"),
        (3, 0x02, "Asymmetric Access Inaccessible"),
        # no name: a fallback, never an exception
        (0, 0xAB, "Unknown (0xAB)"),
        (0, 0x17, "Unknown (0x17)"),
        (2, 0xC5, "Vendor Specific (0xC5)"),
        (7, 0x01, "Vendor Specific (0x01)"),
        (5, 0x01, "Unknown (0x01)"),
    ],
)
def test_names(sct: int, sc: int, name: str) -> None:
    assert sc_name(sct, sc) == name
    assert NvmeStatus(sct, sc).sc_name == name


def test_fallback_name_in_full() -> None:
    assert NvmeStatus(0, 0xAB).name == "Generic / Unknown (0xAB)"
    assert NvmeStatus(6, 0x10).name == "Reserved (6) / Unknown (0x10)"


def test_names_are_unique_within_a_type_and_title_like() -> None:
    for table in (GENERIC_STATUS, COMMAND_SPECIFIC_STATUS, MEDIA_ERROR_STATUS, PATH_STATUS):
        assert len(set(table.values())) == len(table)
        for sc, name in table.items():
            assert 0 <= sc <= 0xFF
            assert name and name == name.strip() and name[0].isupper(), name


@pytest.mark.parametrize(
    ("sct", "sc", "err"),
    [
        (0, 0x01, errno.EINVAL),  # Invalid Command Opcode
        (0, 0x02, errno.EINVAL),  # Invalid Field in Command
        (0, 0x80, errno.EINVAL),  # LBA Out of Range
        (0, 0x81, errno.ENOSPC),  # Capacity Exceeded
        (0, 0x07, errno.ECONNABORTED),  # Command Abort Requested
        (0, 0x08, errno.ECONNABORTED),  # Aborted due to SQ Deletion
        (3, 0x71, errno.ECONNABORTED),  # Command Aborted By Host
        (3, 0x02, errno.ENXIO),  # Asymmetric Access Inaccessible
        (3, 0x03, errno.EAGAIN),  # Asymmetric Access Transition
        (2, 0x86, errno.EACCES),  # Access Denied
        (0, 0x83, errno.EACCES),  # Reservation Conflict
        (0, 0x20, errno.EROFS),  # Namespace is Write Protected
        (0, 0x82, errno.EBUSY),  # Namespace Not Ready
        (1, 0x09, errno.EINVAL),  # Invalid Log Page (a command-specific "Invalid ...")
        (1, 0x0F, errno.EIO),  # Feature Not Namespace Specific: no better errno
        (2, 0x81, errno.EIO),  # Unrecovered Read Error
        (2, 0x85, errno.EBADMSG),  # Compare Failure
        (7, 0x01, errno.EIO),  # vendor specific
        (0, 0xAB, errno.EIO),  # unknown
    ],
)
def test_errno_mapping(sct: int, sc: int, err: int) -> None:
    assert status_errno(sct, sc) == err
    assert NvmeStatus(sct, sc).errno == err


@given(st.integers(0, 7), st.integers(0, 255))
def test_every_status_has_an_errno_and_a_name(sct: int, sc: int) -> None:
    assert status_errno(sct, sc) in errno.errorcode
    assert NvmeStatus(sct, sc).name


def test_nvme_error() -> None:
    status = NvmeStatus(0, 0x80, dnr=True)
    err = NvmeError(status, "read", "nqn.2016-06.io.spdk:cnode1 ns 1")
    assert isinstance(err, SpdkError) and isinstance(err, OSError)
    where = f" [thread {err.thread}]" if err.thread else ""  # made outside any task
    assert str(err) == (
        "read(nqn.2016-06.io.spdk:cnode1 ns 1) failed: "
        "NVMe status Generic / LBA Out of Range (sct 0x0, sc 0x80)" + where
    )
    assert err.status is status
    assert (err.sct, err.sc, err.dnr) == (0, 0x80, True)
    assert (err.sct_name, err.sc_name) == ("Generic", "LBA Out of Range")
    assert err.op == "read" and err.obj == "nqn.2016-06.io.spdk:cnode1 ns 1"
    assert (err.errno, err.errno_name) == (errno.EINVAL, "EINVAL")


def test_nvme_error_without_object_and_unknown_code() -> None:
    err = NvmeError(NvmeStatus(7, 0xC1), "identify")
    where = f" [thread {err.thread}]" if err.thread else ""  # made outside any task
    assert str(err) == "identify failed: NVMe status Vendor Specific / Vendor Specific (0xC1) " + (
        "(sct 0x7, sc 0xC1)" + where
    )
    assert err.errno == errno.EIO and err.obj is None
    with pytest.raises(NvmeError) as info:
        raise NvmeError(NvmeStatus(0, 0x81), "write", "ns 1")
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value, OSError)


def test_errors_and_status_import_no_spdk_and_errors_no_ctypes() -> None:
    import ast
    from pathlib import Path

    import spdk_io.errors
    import spdk_io.nvme.status

    for mod in (spdk_io.errors, spdk_io.nvme.status):
        tree = ast.parse(Path(str(mod.__file__)).read_text())
        runtime = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name for n in runtime if isinstance(n, ast.Import) for a in n.names}
        names |= {str(n.module) for n in runtime if isinstance(n, ast.ImportFrom)}
        assert not {"spdk_io._generated", "spdk_io.raw"} & names, mod.__name__
        assert mod is spdk_io.nvme.status or "ctypes" not in names
        assert not any(n.startswith("spdk_io.") and n != "spdk_io.errors" for n in names), names
