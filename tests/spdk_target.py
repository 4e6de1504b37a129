"""SPDK's own ``nvmf_tgt`` in a subprocess, configured with SPDK's ``rpc.py`` (the
``spdk-rpc`` command of the PyPI package ``spdk``): an NVMe-oF target nobody here wrote,
for the initiator's cross-checks and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from spdk_io.nvme.transport import TransportId

#: SPDK's rpc.py, as the ``spdk`` package installs it next to this Python.
RPC_PY = str(Path(sys.executable).parent / "spdk-rpc")


class NvmfTgt:
    """``nvmf_tgt --no-huge`` on ``core_mask``, with a TCP transport; stopped on exit.

    ``export()`` adds a bdev as a namespace of a new subsystem listening on 127.0.0.1
    and returns its transport ID.
    """

    def __init__(self, core_mask: str = "0x2", mem_mb: int = 1024) -> None:
        self.core_mask = core_mask
        self.mem_mb = mem_mb
        self._dir = tempfile.mkdtemp(prefix="spdk_io_tgt_")
        self.sock = os.path.join(self._dir, "rpc.sock")
        self.proc: subprocess.Popen[str] | None = None
        self.log = os.path.join(self._dir, "nvmf_tgt.log")

    def __enter__(self) -> NvmfTgt:
        binary = shutil.which("nvmf_tgt")
        if binary is None:
            raise FileNotFoundError("SPDK's nvmf_tgt is not installed (../shared/spdk/install)")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "-m",
                    self.core_mask,
                    "--no-huge",
                    "-s",
                    str(self.mem_mb),
                    "-r",
                    self.sock,
                    "--disable-cpumask-locks",  # parallel test runs may share a core
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise RuntimeError(f"nvmf_tgt did not start: {output}")
            time.sleep(0.05)
        self.rpc("framework_wait_init")
        self.rpc("nvmf_create_transport", "-t", "TCP")
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def output(self) -> str:
        """What nvmf_tgt printed so far."""
        try:
            return Path(self.log).read_text(errors="replace")
        except OSError:
            return ""

    def rpc(self, *args: str) -> str:
        """Run ``rpc.py -s SOCK args...``; its stdout.  Raises with its stderr on failure."""
        r = subprocess.run(
            [RPC_PY, "-s", self.sock, "-t", "30", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"rpc.py {' '.join(args)} failed: {r.stderr.strip()}")
        return r.stdout

    def export(
        self,
        nqn: str,
        port: int,
        *,
        kind: str = "malloc",
        size_mb: int = 64,
        block_size: int = 512,
        allow_any_host: bool = True,
        serial: str = "SPDKTGT0001",
    ) -> TransportId:
        """A ``kind`` ("malloc" or "null") bdev as namespace 1 of subsystem ``nqn``."""
        bdev = f"{kind}_{port}"
        if kind == "malloc":
            self.rpc("bdev_malloc_create", "-b", bdev, str(size_mb), str(block_size))
        else:
            self.rpc("bdev_null_create", bdev, str(size_mb), str(block_size))
        flags = ["-a"] if allow_any_host else []
        self.rpc("nvmf_create_subsystem", nqn, "-s", serial, *flags)
        self.rpc("nvmf_subsystem_add_ns", nqn, bdev)
        self.rpc(
            "nvmf_subsystem_add_listener",
            nqn,
            "-t",
            "tcp",
            "-f",
            "ipv4",
            "-a",
            "127.0.0.1",
            "-s",
            str(port),
        )
        return TransportId.tcp("127.0.0.1", port, nqn)

    def kill(self) -> None:
        """Kill it at once (SIGKILL): the target disappears under its initiators."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._remove_trace()

    def _remove_trace(self) -> None:
        """nvmf_tgt's trace file in /dev/shm, which SPDK keeps when it recorded anything or
        was killed: 3.4 MB of memory per run otherwise."""
        if self.proc is not None and self.proc.poll() is not None:
            Path(f"/dev/shm/nvmf_trace.pid{self.proc.pid}").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._remove_trace()
        shutil.rmtree(self._dir, ignore_errors=True)
