"""The examples run as documented."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.conftest import ROOT, finish_within, free_port, spdk_tool
from tests.spdk_target import NvmfTgt


def run_example(name: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_hello_bdev() -> None:
    assert run_example("hello_bdev.py").endswith("Hello, SPDK!\n")


def test_hello_blob() -> None:
    """As SPDK's hello_blob: create, open, resize to every free cluster, sync, write,
    read back the same bytes, close, delete (the clusters are free again), unload."""
    out = run_example("hello_blob.py")
    assert "blobstore on Malloc0: io_unit_size 512, cluster_size 1048576\n" in out
    assert "blobstore has FREE clusters of 15\nresized blob now has USED clusters of 15\n" in out
    assert "read SUCCESS and data matches!\n" in out
    assert "; blobstore has FREE clusters of 15\n" in out
    assert out.endswith("unloaded the blobstore: True\n")


def test_asyncio_bdev() -> None:
    """asyncio drives block I/O through spdk_io.aio; a timeout cancels an spdk_io task,
    whose cleanup runs before asyncio sees the timeout."""
    out = run_example("asyncio_bdev.py")
    assert "created Malloc0: 1024 blocks of 4096 bytes\n" in out
    blocks = ", ".join(f"block {i}" for i in range(8))
    assert f"read back: {blocks}\n" in out
    assert "spdk_io task cancelled: cleanup ran on SPDK's thread\ntimed out in asyncio\n" in out
    assert out.endswith("asyncio ran meanwhile: True\nSPDK stopped\n")


def test_threads() -> None:
    out = run_example("threads.py")
    for i in range(3):
        assert f"worker{i}: hello worker {i} from app_thread" in out


def test_nvme_hello_world_serves_its_own_namespace() -> None:
    out = run_example("nvme_hello_world.py")
    assert "Using controller spdk_io hello (HELLO0001) with 1 namespaces." in out
    assert out.endswith("Hello world!\nDetached\n")


def test_nvme_hello_world_against_spdk_nvmf_tgt() -> None:
    with NvmfTgt() as tgt:
        trid = tgt.export("nqn.2016-06.io.spdk:hello-x", free_port(), serial="HELLOX01")
        out = run_example("nvme_hello_world.py", "-r", str(trid))
    assert f"Attached to {trid}\n" in out
    assert "(HELLOX01) with 1 namespaces." in out
    assert out.endswith("Hello world!\nDetached\n")


def test_nvmf_target() -> None:
    """The example target serves spdk_nvme_identify, then stops on Ctrl-C."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "nvmf_target.py"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving trtype:TCP"), line
        out = spdk_tool("spdk_nvme_identify", "-r", line.removeprefix("serving ").strip())
        assert out.returncode == 0, out.stderr[-2000:]
        assert "SPDK00000000000001" in out.stdout and "Namespace ID:1" in out.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        rest, err, _ = finish_within(proc, 30)
    assert proc.returncode == 0, err[-2000:]
    assert rest.strip() == "stopped"
