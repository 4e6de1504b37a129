"""SPDK tracepoints from EnvOptions, read by SPDK's own spdk_trace tool."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spdk_io import trace
from spdk_io.env import EnvOptions
from tests.conftest import run_py

SPDK_TRACE = Path("/usr/local/bin/spdk_trace")
needs_tool = pytest.mark.skipif(
    not SPDK_TRACE.exists(), reason="SPDK's spdk_trace is not installed"
)


@pytest.fixture
def trace_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A process name of this test's own; its trace files are removed afterwards."""
    name = f"spdkio_tr{os.getpid()}_{request.node.name[-12:].strip('_[]')}"
    name = re.sub(r"\W", "_", name)
    try:
        yield name
    finally:
        for leftover in Path("/dev/shm").glob(f"{name}_trace.*"):
            leftover.unlink()


def spdk_trace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SPDK_TRACE), *args], capture_output=True, text=True, timeout=60, check=False
    )


def io_counts(output: str, bdev: str) -> tuple[int, int]:
    """How many BDEV_IO_START and BDEV_IO_DONE events spdk_trace shows for ``bdev``."""
    lines = [line for line in output.splitlines() if f"bdev_{bdev} " in line]
    return (
        sum(" BDEV_IO_START " in line for line in lines),
        sum(" BDEV_IO_DONE " in line for line in lines),
    )


_IO = """
import json, os, subprocess, sys
import spdk_io
from spdk_io import bdev_modules as bm
from spdk_io.bdev import BdevDesc
from spdk_io.dma import DmaBuf

N = 25

async def io():
    await bm.create_malloc("TraceM0", num_blocks=64, block_size=4096)
    with BdevDesc.open("TraceM0", write=True) as desc, DmaBuf.alloc(4096) as buf:
        for i in range(N):
            await desc.write(buf, offset=i * 4096)
            await desc.read(buf, offset=i * 4096)
    await bm.delete_malloc("TraceM0")
"""


@needs_tool
def test_spdk_trace_reads_the_bdev_io_of_a_python_process(trace_name: str) -> None:
    proc = run_py(
        _IO
        + f"""
from spdk_io.env import Env
with Env(name={trace_name!r}, mem_size_mb=512, tpoint_group_mask="bdev") as env:
    env.block_on(io())
    live = subprocess.run(["{SPDK_TRACE}", "-s", {trace_name!r}, "-p", str(os.getpid())],
                          capture_output=True, text=True)
    print(json.dumps({{"file": str(env.trace_file), "rc": live.returncode,
                       "out": live.stdout, "err": live.stderr[-2000:]}}))
"""
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got: dict[str, Any] = __import__("json").loads(proc.stdout.splitlines()[-1])
    # While the process ran, by name and pid as SPDK's applications print it:
    assert got["rc"] == 0, got["err"]
    starts, dones = io_counts(got["out"], "TraceM0")
    assert starts == dones >= 50, got["out"][-3000:]  # 25 writes + 25 reads (+ examine reads)
    # After it ended, from the file it left behind (SPDK keeps a trace that has entries):
    assert got["file"] == f"/dev/shm/{trace_name}_trace.pid" + got["file"].rsplit("pid", 1)[1]
    assert Path(got["file"]).exists()
    offline = spdk_trace("-f", got["file"])
    assert offline.returncode == 0, offline.stderr
    assert io_counts(offline.stdout, "TraceM0") == (starts, dones)


@needs_tool
def test_an_app_traces_too(trace_name: str) -> None:
    proc = run_py(
        _IO
        + f"""
app = spdk_io.App(name={trace_name!r}, tpoint_group_mask="bdev:BDEV_IO_START+BDEV_IO_DONE")
app.run(io())
print(app.trace_file)
"""
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    file = proc.stdout.split()[-1]
    assert file.startswith(f"/dev/shm/{trace_name}_trace.pid") and Path(file).exists()
    offline = spdk_trace("-f", file)
    assert offline.returncode == 0, offline.stderr
    starts, dones = io_counts(offline.stdout, "TraceM0")
    assert starts == dones >= 50, offline.stdout[-3000:]


def test_no_mask_means_no_tracing(trace_name: str) -> None:
    proc = run_py(
        _IO
        + f"""
from spdk_io.env import Env
with Env(name={trace_name!r}, mem_size_mb=512) as env:
    env.block_on(io())
    print(env.trace_file, list(__import__("pathlib").Path("/dev/shm").glob({trace_name!r} + "*")))
"""
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["None", "[]"]


def test_an_empty_mask_sets_up_tracing_for_spdks_rpc_to_enable(trace_name: str) -> None:
    proc = run_py(
        f"""
import spdk_io

async def main():
    before = (await spdk_io.rpc.call("trace_get_tpoint_group_mask"))["tpoint_group_mask"]
    await spdk_io.rpc.call("trace_enable_tpoint_group", {{"name": "bdev"}})
    after = await spdk_io.rpc.call("trace_get_tpoint_group_mask")
    return before, after["tpoint_group_mask"], after["bdev"]["enabled"]

print(*spdk_io.run(main(), name={trace_name!r}, mem_size_mb=512, tpoint_group_mask="0x0"))
"""
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    bdev = 1 << trace.groups()["bdev"]
    assert proc.stdout.split() == ["0x0", hex(bdev), "True"], proc.stdout


def test_an_unknown_tracepoint_is_refused_at_start_and_leaves_nothing(trace_name: str) -> None:
    proc = run_py(
        f"""
import pathlib
import spdk_io
from spdk_io.env import Env
try:
    Env(name={trace_name!r}, mem_size_mb=512, tpoint_group_mask="bdev:NO_SUCH_TPOINT").start()
except ValueError as exc:
    print("refused:", exc)
print("left:", list(pathlib.Path("/dev/shm").glob({trace_name!r} + "*")))

async def version():
    return (await spdk_io.rpc.call("spdk_get_version"))["version"]

print("then:", spdk_io.run(version(), name={trace_name!r}))
"""
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("refused: ") and "NO_SUCH_TPOINT" in lines[0], proc.stdout
    assert lines[1] == "left: []", proc.stdout
    assert lines[-1].startswith("then: SPDK v26.05"), proc.stdout  # and SPDK starts again


@pytest.mark.parametrize(
    "mask",
    [
        "bdev",
        "0x8",
        "8",
        "0x0",
        "bdev,nvmf_tcp",
        "all",
        "bdev:BDEV_IO_START+BDEV_IO_DONE",
        "bdev:0x3",
    ],
)
def test_masks_spdk_accepts(mask: str) -> None:
    assert trace.check_mask(mask) == mask
    assert EnvOptions(tpoint_group_mask=mask).tpoint_group_mask == mask


@pytest.mark.parametrize(
    ("mask", "error"),
    [
        ("", "must not be empty"),
        ("no_such_group", "no tracepoint group 'no_such_group'; SPDK has .*bdev"),
        ("bdev,,nvmf_tcp", "empty group"),
        ("bdev:", "tracepoints, as a hex mask or names"),
        ("bdev:A+", "tracepoints, as a hex mask or names"),
        ("bdev:A:B", "tracepoints, as a hex mask or names"),
        ("0x18:0x1", "must name one group"),
        ("all:BDEV_IO_START", "must name one group"),
        ("0x" + "f" * 17, "wider than 64 bits"),
        (" bdev", "no tracepoint group"),
    ],
)
def test_masks_spdk_refuses_are_a_value_error_naming_the_option(mask: str, error: str) -> None:
    with pytest.raises(ValueError, match=error) as info:
        EnvOptions(tpoint_group_mask=mask)
    assert "tpoint_group_mask" in str(info.value)


def test_option_types_and_entries() -> None:
    with pytest.raises(TypeError, match="tpoint_group_mask"):
        EnvOptions(tpoint_group_mask=8)  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(ValueError, match="power of 2"):
        EnvOptions(tpoint_group_mask="bdev", trace_entries=1000)
    with pytest.raises(TypeError, match="trace_entries"):
        EnvOptions(trace_entries=True)
    with pytest.raises(TypeError, match="log_to_python"):
        EnvOptions(log_to_python=1)  # type: ignore[arg-type]  # the point of the test
    assert EnvOptions(trace_entries=4096).trace_entries == 4096


def test_groups_and_shared_memory_names() -> None:
    groups = trace.groups()
    assert "bdev" in groups and all(0 <= i < 20 for i in groups.values())
    assert trace.shm_name("tgt", -1, 1234) == "/tgt_trace.pid1234"
    assert trace.shm_name("tgt", 7) == "/tgt_trace.7"
    assert trace.shm_path("tgt", 7) == Path("/dev/shm/tgt_trace.7")
    assert trace.shm_name("tgt") == f"/tgt_trace.pid{os.getpid()}"
    assert len(trace.shm_name("n" * 100, 1).encode()) == 63  # SPDK's char[64]
