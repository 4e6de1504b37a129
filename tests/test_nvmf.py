"""The NVMe-oF target hosted in Python, against real SPDK and SPDK's own host tools.

SPDK's tools run as subprocesses (each its own SPDK); our loop keeps polling while
they run (:func:`tool` waits in a Python thread and awaits its end), or the target
would never answer them.
"""

from __future__ import annotations

import errno
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

import spdk_io
from spdk_io import bdev_modules as bm
from spdk_io.errors import SpdkError
from spdk_io.nvmf import Subsystem, Target, TransportId, TransportOptions, check_nqn
from tests.conftest import (
    finish_within,
    free_port,
    ran_again,
    run_py,
    spdk_tool,
    start_py,
    then_run_again,
    wait_ready,
)

Run = Callable[[Awaitable[Any]], Any]
NQN = "nqn.2016-06.io.spdk:cnode1"
HOST_A = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"
HOST_B = "nqn.2016-06.io.spdk:host-b"
T = TypeVar("T")


async def off_loop(fn: Callable[[], T]) -> T:
    """``fn()`` on a Python thread while this loop keeps serving the target."""
    result: list[T] = []
    failure: list[BaseException] = []

    def go() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=go)
    thread.start()
    while thread.is_alive():
        await spdk_io.sleep(0.002)
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


async def tool(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one of SPDK's tools (its own SPDK, no hugepages) against the target."""
    return await off_loop(lambda: spdk_tool(name, *args, timeout=timeout))


def spdk_rpc(*args: str) -> subprocess.CompletedProcess[str]:
    """SPDK's rpc.py (the ``spdk`` package's ``spdk-rpc``, installed with the test extra)."""
    exe = Path(sys.executable).parent / "spdk-rpc"
    argv = [str(exe) if exe.exists() else "spdk-rpc", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def trid(port: int, subnqn: str = NQN, hostnqn: str | None = None) -> str:
    text = str(TransportId.tcp("127.0.0.1", port, subnqn))
    return f"{text} hostnqn:{hostnqn}" if hostnqn else text


@asynccontextmanager
async def exported(
    tgt_name: str, bdev: str, *, allow_any_host: bool = True, **sub_kwargs: Any
) -> AsyncIterator[tuple[Target, Subsystem, int]]:
    """A target with TCP, one started subsystem exporting a fresh malloc bdev, a port."""
    await bm.create_malloc(bdev, 4096, 4096)
    try:
        async with await Target.create(tgt_name) as target:
            await target.add_transport("TCP")
            sub = await target.create_subsystem(
                NQN,
                serial="PYSN0001",
                model="spdk_io test",
                allow_any_host=allow_any_host,
                **sub_kwargs,
            )
            await sub.add_namespace(bdev)
            port = free_port()
            await sub.add_listener(TransportId.tcp("127.0.0.1", port))
            await sub.start()
            yield target, sub, port
    finally:
        await bm.delete_malloc(bdev)


def state(sub: Subsystem) -> str:
    """The state now (a function, so the type checker does not narrow it across awaits)."""
    return sub.state


async def targets() -> list[str]:
    names: list[str] = await spdk_io.rpc.call("nvmf_get_targets")
    return names


# -- lifecycle --------------------------------------------------------------------------


def test_target_lifecycle_and_teardown_order(run: Run) -> None:
    async def main() -> None:
        await bm.create_malloc("Life0", 256, 4096)
        target = await Target.create(
            "py_life",
        )
        assert "py_life" in await targets()
        await target.add_transport("TCP", TransportOptions(max_queue_depth=64, io_unit_size=8192))
        assert target.transports == ["TCP"]
        active = await target.create_subsystem(NQN, allow_any_host=True)
        await active.add_namespace("Life0")
        await active.add_listener(TransportId.tcp("127.0.0.1", free_port()))
        await active.start()
        idle = await target.create_subsystem("nqn.2016-06.io.spdk:cnode2")
        assert target.subsystems == [active, idle] and active.state == "active"
        # A synchronous close cannot stop an active subsystem: it refuses, changing nothing.
        with pytest.raises(BlockingIOError):
            target.close()
        assert not target.closed and not idle.closed and "py_life" in await targets()
        events: list[str] = []
        active.when_destroyed(lambda: events.append("active"))
        idle.when_destroyed(lambda: events.append("idle"))
        target.when_destroyed(lambda: events.append("target"))
        await target.destroy()
        # Subsystems (newest first) are freed before the target is.
        assert events == ["idle", "active", "target"]
        assert target.closed and active.closed and idle.closed and active.state == "inactive"
        assert target.destroyed and active.destroyed and idle.destroyed
        assert "py_life" not in await targets()
        await target.destroy()  # idempotent
        await bm.delete_malloc("Life0")  # the namespace let go of it

    run(main())


def test_idle_target_closes_synchronously(run: Run) -> None:
    async def main() -> None:
        with await Target.create("py_sync") as target:
            await target.add_transport("TCP")
            await target.create_subsystem(NQN)
        assert target.closed
        await target.aclose()  # waits for what SPDK finishes on the loop
        assert target.destroyed
        assert "py_sync" not in await targets()

    run(main())


def test_env_stop_tears_a_leftover_target_down() -> None:
    """A target left running (subsystem active, a host's listener) is torn down by the
    app thread's release at Env stop, and SPDK comes up again afterwards."""
    code = then_run_again(
        """
        import spdk_io
        from spdk_io import bdev_modules as bm
        from spdk_io.nvmf import Target, TransportId
        from tests.conftest import free_port

        async def main() -> None:
            await bm.create_malloc("M0", 256, 4096)
            target = await Target.create("leftover")
            await target.add_transport("TCP")
            sub = await target.create_subsystem("nqn.2016-06.io.spdk:cnode1")
            await sub.add_namespace("M0")
            await sub.add_listener(TransportId.tcp("127.0.0.1", free_port()))
            await sub.start()
            print("left", sub.state, flush=True)

        spdk_io.run(main())
        """
    )
    proc = run_py(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "left active" in proc.stdout and ran_again(proc.stdout), proc.stdout


# -- hosts and I/O with SPDK's tools -------------------------------------------------


def test_identify_shows_serial_model_and_namespace(run: Run) -> None:
    async def main() -> None:
        async with exported("py_ident", "Ident0") as (_, sub, port):
            assert sub.serial == "PYSN0001" and sub.model == "spdk_io test"
            out = await tool("spdk_nvme_identify", "-r", trid(port))
            assert out.returncode == 0, out.stderr[-2000:]
            assert re.search(r"Serial Number:\s+PYSN0001", out.stdout)
            assert re.search(r"Model Number:\s+spdk_io test", out.stdout)
            assert re.search(r"Namespace ID:1\b", out.stdout)
            assert "Namespace ID:2" not in out.stdout

    run(main())


def test_hosts_are_denied_unless_allowed(run: Run) -> None:
    """spdk_nvme_identify connects with a random host NQN (it ignores ``hostnqn``):
    denied by default.  spdk_nvme_perf connects with the ``hostnqn`` it is given."""

    async def main() -> None:
        async with exported("py_hosts", "Hosts0", allow_any_host=False) as (_, sub, port):
            assert not sub.allow_any_host and sub.hosts == []
            denied = await tool("spdk_nvme_identify", "-r", trid(port))
            assert denied.returncode != 0, denied.stdout[-2000:]
            assert await perf_iops(port, HOST_A) is None
            await sub.add_host(HOST_A)
            assert sub.hosts == [HOST_A] and sub.host_allowed(HOST_A)
            assert not sub.host_allowed(HOST_B)
            assert (await perf_iops(port, HOST_A) or 0) > 0
            assert await perf_iops(port, HOST_B) is None
            with pytest.raises(ValueError, match="already allowed"):
                await sub.add_host(HOST_A)
            await sub.remove_host(HOST_A)
            assert await perf_iops(port, HOST_A) is None
            with pytest.raises(LookupError):
                await sub.remove_host(HOST_A)
            sub.set_allow_any_host(True)
            allowed = await tool("spdk_nvme_identify", "-r", trid(port))
            assert allowed.returncode == 0, allowed.stderr[-2000:]

    run(main())


async def perf_iops(
    port: int, hostnqn: str | None = None, *args: str, seconds: int = 1
) -> float | None:
    """spdk_nvme_perf's total IOPS against the target, or None if it found no controller
    (perf exits 0 then too)."""
    out = await tool(
        "spdk_nvme_perf",
        "-q",
        "8",
        "-o",
        "4096",
        "-w",
        "randread",
        "-t",
        str(seconds),
        *args,
        "-r",
        trid(port, hostnqn=hostnqn),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    total = re.search(r"^Total\s*:\s*([\d.]+)", out.stdout, re.M)
    if total is None:
        assert "No valid NVMe controllers found" in out.stdout + out.stderr, out.stdout
        return None
    return float(total.group(1))


def test_perf_against_the_python_target(run: Run) -> None:
    async def main() -> None:
        async with exported("py_perf", "Perf0") as (_, _sub, port):
            out = await tool(
                "spdk_nvme_perf",
                "-q",
                "32",
                "-o",
                "4096",
                "-w",
                "randread",
                "-t",
                "2",
                "-r",
                trid(port),
            )
            assert out.returncode == 0, out.stderr[-2000:]
            total = re.search(r"^Total\s*:\s*([\d.]+)\s+([\d.]+)", out.stdout, re.M)
            assert total is not None, out.stdout[-2000:]
            assert float(total.group(1)) > 0
            # perf always logs one "CQ transport error" as it disconnects its queue (it does
            # against nvmf_tgt too); any other error line is a failure.
            errors = [
                line
                for line in (out.stdout + out.stderr).splitlines()
                if "error" in line.lower() and "DISCONNECTED] CQ transport error" not in line
            ]
            assert errors == [], errors

    run(main())


def test_discovery_subsystem_lists_the_target(run: Run) -> None:
    async def main() -> None:
        async with exported("py_disc", "Disc0") as (target, _sub, port):
            disc = await target.add_discovery_subsystem()
            assert disc.is_discovery and disc.state == "active"
            await disc.add_listener(TransportId.tcp("127.0.0.1", port))
            out = await tool("spdk_nvme_identify", "-r", str(TransportId.tcp("127.0.0.1", port)))
            assert out.returncode == 0, out.stderr[-2000:]
            assert NQN in out.stdout  # the discovery log names our subsystem

    run(main())


# -- changes on a running subsystem ------------------------------------------------------


def test_changes_pause_and_resume_an_active_subsystem(run: Run) -> None:
    async def main() -> None:
        await bm.create_malloc("Chg1", 64, 4096)
        await bm.create_malloc("Chg2", 64, 4096)
        await bm.create_malloc("Chg3", 64, 4096)
        try:
            async with exported("py_chg", "Chg0") as (_, sub, port):
                # Three at once on an active subsystem: they take turns, each pausing it.
                got = await spdk_io.gather(
                    sub.add_namespace("Chg1"),
                    sub.add_namespace("Chg2", nsid=7),
                    sub.add_namespace("Chg3", uuid="12345678-1234-5678-1234-567812345678"),
                )
                assert sorted(got) == [2, 3, 7] and sub.state == "active"
                by_id = {ns.nsid: ns for ns in sub.namespaces}
                assert by_id[7].bdev_name == "Chg2"
                assert str(by_id[got[2]].uuid) == "12345678-1234-5678-1234-567812345678"
                await sub.remove_namespace(7)
                assert 7 not in [ns.nsid for ns in sub.namespaces] and sub.state == "active"
                await sub.pause()
                assert state(sub) == "paused"
                await sub.add_namespace("Chg2")  # paused stays paused
                assert state(sub) == "paused"
                await sub.resume()
                second = free_port()
                await sub.add_listener(f"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{second}")
                assert len(sub.listeners) == 2 and sub.state == "active"
                out = await tool("spdk_nvme_identify", "-r", trid(second))
                assert out.returncode == 0 and "Namespace ID:4" in out.stdout, out.stderr[-2000:]
                await sub.remove_listener(TransportId.tcp("127.0.0.1", second))
                assert [t.trsvcid for t in sub.listeners] == [str(port)]
                await sub.stop()
                assert state(sub) == "inactive"
                await sub.remove_namespace(got[0])  # inactive: no pause needed
                assert await sub.add_namespace("Chg1", nsid=9) == 9
        finally:
            for name in ("Chg1", "Chg2", "Chg3"):
                await bm.delete_malloc(name)

    run(main())


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nqn",
    [
        "",
        "nqn",
        "iqn.2016-06.io.spdk:cnode1",
        "nqn.16-06.io.spdk:cnode1",
        "nqn.2016-06.1io.spdk:cnode1",
        "nqn.2016-06.io-.spdk:x",
        "nqn.2014-08.org.nvmexpress:uuid:not-a-uuid",
        "nqn.2016-06.io.spdk:" + "x" * 300,
    ],
)
def test_malformed_nqns_are_refused(nqn: str) -> None:
    with pytest.raises(ValueError):
        check_nqn(nqn)


def test_wellformed_nqns_pass() -> None:
    for nqn in (NQN, HOST_A, "nqn.2014-08.org.nvmexpress.discovery", "nqn.2016-06.io.spdk"):
        assert check_nqn(nqn) == nqn
    with pytest.raises(TypeError):
        check_nqn(b"nqn.2016-06.io.spdk:x")


def test_bad_input_is_refused_before_any_change(run: Run) -> None:
    async def subsystems() -> Any:
        return await spdk_io.rpc.call("nvmf_get_subsystems", {"tgt_name": "py_bad"})

    async def main() -> None:
        async with exported("py_bad", "Bad0") as (target, sub, port):
            before = await subsystems()
            with pytest.raises(ValueError, match="not an NVMe Qualified Name"):
                await target.create_subsystem("not-an-nqn-at-all")
            with pytest.raises(ValueError, match="already"):
                await target.create_subsystem(NQN)
            with pytest.raises(ValueError, match="serial"):
                await target.create_subsystem("nqn.2016-06.io.spdk:x", serial="é")
            with pytest.raises(ValueError, match="namespace ID 1 is already in use"):
                await sub.add_namespace("Bad0", nsid=1)
            with pytest.raises(LookupError, match="NoSuchBdev"):
                await sub.add_namespace("NoSuchBdev")
            with pytest.raises(ValueError):
                await sub.add_namespace("Bad0", nsid=33)  # past max_namespaces (32)
            with pytest.raises(ValueError, match="already listens"):
                await sub.add_listener(TransportId.tcp("127.0.0.1", port))
            with pytest.raises(ValueError, match="already listens"):
                target.listen(TransportId.tcp("127.0.0.1", port))
            with pytest.raises(ValueError, match="transport ID"):
                await sub.add_listener("trtype:TCP bogus:1")
            with pytest.raises(ValueError, match="hostnqn"):
                await sub.add_host("host-a")
            with pytest.raises(ValueError, match="unknown NVMe-oF transport type"):
                await target.add_transport("NOSUCH")
            with pytest.raises(ValueError, match="already"):
                await target.add_transport("TCP")
            with pytest.raises(ValueError, match="exists already"):
                await Target.create("py_bad")
            with pytest.raises(TypeError):
                TransportOptions(max_queue_depth=True)
            with pytest.raises(ValueError):
                TransportOptions(io_unit_size=1000)
            assert await subsystems() == before and sub.state == "active"
            assert target.transports == ["TCP"]
            await sub.aclose()
            assert sub.closed and target.subsystems == []
            with pytest.raises(SpdkError) as info:
                await sub.add_namespace("Bad0")
            assert info.value.errno == errno.ENODEV
        # Use after destroy: every entry point refuses with ENODEV.
        for attempt in (
            lambda: target.add_transport("TCP"),
            lambda: target.create_subsystem("nqn.2016-06.io.spdk:late"),
            lambda: sub.start(),
        ):
            with pytest.raises(SpdkError) as info:
                await attempt()
            assert info.value.errno == errno.ENODEV
        with pytest.raises(SpdkError):
            target.listen(TransportId.tcp("127.0.0.1", free_port()))
        with pytest.raises(SpdkError):
            _ = sub.namespaces

    run(main())


# -- RPC ---------------------------------------------------------------------------------


def test_rpc_sees_and_spdk_rpc_py_manages_the_python_target(run: Run, tmp_path: Path) -> None:
    async def main() -> None:
        await bm.create_malloc("Rpc1", 64, 4096)
        async with exported("py_rpc", "Rpc0", allow_any_host=False, hosts=[HOST_A]) as (
            _target,
            sub,
            port,
        ):
            [info] = await spdk_io.rpc.call("nvmf_get_subsystems", {"tgt_name": "py_rpc"})
            assert info["nqn"] == NQN and info["serial_number"] == "PYSN0001"
            assert info["hosts"] == [{"nqn": HOST_A}] and not info["allow_any_host"]
            assert [ns["bdev_name"] for ns in info["namespaces"]] == ["Rpc0"]
            assert info["listen_addresses"][0]["trsvcid"] == str(port)
            sock = str(tmp_path / "rpc.sock")
            with spdk_io.rpc.serve(sock):
                got = await off_loop(
                    lambda: spdk_rpc("-s", sock, "nvmf_get_subsystems", "-t", "py_rpc")
                )
                assert got.returncode == 0, got.stderr
                assert json.loads(got.stdout)[0]["serial_number"] == "PYSN0001"
                added = await off_loop(
                    lambda: spdk_rpc(
                        "-s", sock, "nvmf_subsystem_add_ns", "-t", "py_rpc", NQN, "Rpc1"
                    )
                )
                assert added.returncode == 0, added.stderr
                host = await off_loop(
                    lambda: spdk_rpc(
                        "-s", sock, "nvmf_subsystem_add_host", "-t", "py_rpc", NQN, HOST_B
                    )
                )
                assert host.returncode == 0, host.stderr
            # What rpc.py changed is what the Python objects report.
            assert [ns.bdev_name for ns in sub.namespaces] == ["Rpc0", "Rpc1"]
            assert sorted(sub.hosts) == sorted([HOST_A, HOST_B]) and sub.state == "active"
            assert (await perf_iops(port, HOST_B) or 0) > 0  # the host rpc.py allowed
        await bm.delete_malloc("Rpc1")

    run(main())


# -- the serve CLI -------------------------------------------------------------------------


def test_serve_cli_serves_a_json_config_until_sigint(tmp_path: Path) -> None:
    port = free_port()
    config = {
        "subsystems": [
            {
                "subsystem": "bdev",
                "config": [
                    {
                        "method": "bdev_malloc_create",
                        "params": {"name": "Malloc0", "num_blocks": 4096, "block_size": 4096},
                    }
                ],
            },
            {
                "subsystem": "nvmf",
                "config": [
                    {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
                    {
                        "method": "nvmf_create_subsystem",
                        "params": {
                            "nqn": NQN,
                            "serial_number": "SERVE0001",
                            "allow_any_host": True,
                        },
                    },
                    {
                        "method": "nvmf_subsystem_add_ns",
                        "params": {"nqn": NQN, "namespace": {"bdev_name": "Malloc0"}},
                    },
                    {
                        "method": "nvmf_subsystem_add_listener",
                        "params": {
                            "nqn": NQN,
                            "listen_address": {
                                "trtype": "TCP",
                                "adrfam": "IPv4",
                                "traddr": "127.0.0.1",
                                "trsvcid": str(port),
                            },
                        },
                    },
                ],
            },
        ]
    }
    path = tmp_path / "nvmf.json"
    path.write_text(json.dumps(config))
    sock = str(tmp_path / "serve.sock")
    proc = start_py(
        args=["-m", "spdk_io", "serve", "--json-config", str(path), "--rpc-socket", sock]
    )
    try:
        wait_ready(proc)
        out = spdk_tool("spdk_nvme_identify", "-r", trid(port))  # served by another process
        assert out.returncode == 0, out.stderr[-2000:]
        assert re.search(r"Serial Number:\s+SERVE0001", out.stdout)
        got = spdk_rpc("-s", sock, "nvmf_get_subsystems")
        assert got.returncode == 0 and NQN in got.stdout, got.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _, err, _ = finish_within(proc, 30)
    assert proc.returncode == 0, err[-3000:]
    assert "serve: stopped" in err


def test_serve_cli_refuses_a_missing_config() -> None:
    proc = run_py(args=["-m", "spdk_io", "serve", "--json-config", "/nonexistent.json"])
    assert proc.returncode == 2 and "serve:" in proc.stderr
    proc = run_py(args=["-m", "spdk_io", "serve"])
    assert proc.returncode == 2 and "--json-config" in proc.stderr
