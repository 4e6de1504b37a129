"""``python -m spdk_io perf -r TRID``: the perf tool driving NVMe queue pairs directly, as
spdk_nvme_perf does, against SPDK's own nvmf_tgt (a subprocess on core 1)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from spdk_io.nvme import TransportId
from tests.conftest import free_port, run_py
from tests.spdk_target import NvmfTgt


def perf(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_py(args=["-m", "spdk_io", "perf", *args], timeout=timeout)


@pytest.fixture(scope="module")
def tgt() -> Iterator[NvmfTgt]:
    with NvmfTgt(core_mask="0x2", mem_mb=512) as t:
        yield t


@pytest.fixture(scope="module")
def trid(tgt: NvmfTgt) -> TransportId:
    """A null namespace of 512-byte blocks."""
    return tgt.export("nqn.2016-06.io.spdk:perf1", free_port(), kind="null", size_mb=64)


@pytest.fixture(scope="module")
def trid_4k(tgt: NvmfTgt) -> TransportId:
    """A malloc namespace of 4 KiB blocks."""
    return tgt.export(
        "nqn.2016-06.io.spdk:perf2", free_port(), size_mb=16, block_size=4096, serial="PERF2"
    )


@pytest.mark.parametrize(
    "args",
    [("-q", "8", "-w", "randread"), ("-q", "4", "-w", "rw", "-M", "70", "-o", "8192")],
    ids=["randread", "rw"],
)
def test_perf_on_an_nvme_target_reports_json(trid: TransportId, args: tuple[str, ...]) -> None:
    proc = perf("-r", str(trid), *args, "-t", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bdev"] == f"{trid.subnqn} ns 1"
    assert result["ios"] > 0 and result["iops"] > 0 and result["io_errors"] == 0
    assert 0 < result["p50_lat_us"] <= result["p99_lat_us"] <= result["max_lat_us"]
    assert result["queue_depth"] == int(args[1])


def test_perf_writes_to_an_nvme_target_in_human_form(trid_4k: TransportId) -> None:
    proc = perf("-r", str(trid_4k), "-q", "2", "-w", "randwrite", "-t", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert "ns 1 randwrite qd=2" in proc.stdout and "errors 0" in proc.stdout


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (("-r", "trtype:TCP traddr"), "-r"),
        (("-r", "trtype:TCP bogus:1"), "-r"),
        (("-r", "{trid}", "--bdev", "null"), "-r"),
        (("-r", "{trid}", "-o", "1048576", "-q", "1"), "-o"),  # more than one command moves
        (("-r", "{trid_4k}", "-o", "1536"), "-o"),  # not a multiple of 4 KiB
        (("-r", "{nobody}"), "ECONNREFUSED"),
    ],
    ids=["malformed", "unknown key", "with --bdev", "too large", "not blocks", "nobody"],
)
def test_perf_bad_nvme_arguments_are_one_line_and_exit_2(
    trid: TransportId, trid_4k: TransportId, args: tuple[str, ...], word: str
) -> None:
    nobody = TransportId.tcp("127.0.0.1", free_port(), "nqn.2016-06.io.spdk:nobody")
    names = {"trid": str(trid), "trid_4k": str(trid_4k), "nobody": str(nobody)}
    proc = perf("-t", "0.3", *(a.format(**names) for a in args), timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and lines, proc.stderr
    assert lines[-1].startswith("perf: ") and word in lines[-1], proc.stderr
    assert proc.stdout == ""
