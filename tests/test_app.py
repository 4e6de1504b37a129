"""spdk_io.App: SPDK's app framework hosting the loop (each test in a fresh process)."""

from __future__ import annotations

from pathlib import Path

import pytest

import spdk_io
from tests.conftest import run_py

CONFIG = """{"subsystems": [{"subsystem": "bdev", "config": [{"method": "bdev_malloc_create",
  "params": {"name": "AppMalloc", "num_blocks": 64, "block_size": 4096}}]}]}"""


def test_app_runs_main_with_config_file_and_rpc_server(tmp_path: Path) -> None:
    cfg = tmp_path / "app.json"
    cfg.write_text(CONFIG)
    sock = tmp_path / "app.sock"
    proc = run_py(
        f"""
        import json, socket
        import spdk_io
        from spdk_io.bdev import BdevDesc
        from spdk_io.dma import DmaBuf

        async def main() -> tuple[int, int, str]:
            with BdevDesc.open("AppMalloc", write=True) as d:
                buf = DmaBuf.alloc(4096)
                buf.fill(7)
                await d.write(buf, 0)
                buf.fill(0)
                await d.read(buf, 0)
            # A JSON-RPC client of our own on the framework's socket (SPDK serves it).
            client = socket.socket(socket.AF_UNIX)
            client.connect("{sock}")
            client.setblocking(False)
            request = {{"jsonrpc": "2.0", "id": 1, "method": "bdev_get_bdevs",
                       "params": {{"name": "AppMalloc"}}}}
            client.sendall(json.dumps(request).encode())
            reply = b""
            while True:
                await spdk_io.sleep(0.005)
                try:
                    reply += client.recv(65536)
                    answer = json.loads(reply)
                    break
                except (BlockingIOError, ValueError):
                    continue  # nothing yet, or not the whole answer yet
            client.close()
            return d.num_blocks, buf[0], json.dumps(answer["result"])

        app = spdk_io.App(name="apptest", config="{cfg}", rpc_addr="{sock}")
        blocks, byte, listing = app.run(main())
        print("blocks", blocks, "byte", byte, "rpc sees it", '"AppMalloc"' in listing)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "blocks 64 byte 7 rpc sees it True" in proc.stdout


def test_app_propagates_errors_and_refuses_a_second_start() -> None:
    proc = run_py(
        f"""
        import spdk_io

        async def bad() -> None:
            await spdk_io.sleep(0.01)
            raise KeyError("in app")

        try:
            spdk_io.App(name="apptest", config={CONFIG!r}).run(bad())
        except KeyError as exc:
            print("caught", exc)

        async def ok() -> None:
            pass

        try:
            spdk_io.App(name="again").run(ok())
        except RuntimeError as exc:
            print("refused:", exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "caught 'in app'" in proc.stdout
    assert "refused: SPDK supports one App per process" in proc.stdout


def test_app_sigint_cancels_main_and_stops() -> None:
    proc = run_py(
        """
        import os, signal
        import spdk_io

        async def main() -> str:
            try:
                await spdk_io.sleep(0.05)
                os.kill(os.getpid(), signal.SIGINT)
                await spdk_io.sleep(30)
                return "not cancelled"
            except spdk_io.Cancelled:
                print("main cancelled", flush=True)
                raise

        try:
            spdk_io.App(name="sigint").run(main())
        except spdk_io.Cancelled:
            print("App.run raised Cancelled")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "main cancelled" in proc.stdout and "App.run raised Cancelled" in proc.stdout


@pytest.mark.parametrize(
    ("field", "value", "exc"),
    [
        ("name", 123, TypeError),
        ("core_mask", 1, TypeError),
        ("core_mask", "0x0", ValueError),
        ("mem_size_mb", "512", TypeError),
        ("mem_size_mb", 64, ValueError),
        ("no_huge", "no", TypeError),
        ("shm_id", 1.5, TypeError),
        ("rpc_addr", 5, TypeError),
        ("rpc_addr", "/tmp/" + "x" * 200, ValueError),
        ("config", 5, TypeError),
    ],
)
def test_app_option_of_the_wrong_type_or_range_names_it(
    field: str, value: object, exc: type[Exception]
) -> None:
    kwargs: dict[str, object] = {"no_huge": True, field: value}
    with pytest.raises(exc, match=rf"^{field}\b"):
        spdk_io.App(**kwargs)  # type: ignore[arg-type]  # the point of the test


def test_app_refuses_after_spdk_became_unusable() -> None:
    proc = run_py(
        """
        import spdk_io
        from spdk_io.errors import EnvUnusableError
        from spdk_io.errors import SpdkError

        bad = {"subsystems": [{"subsystem": "iobuf", "config": [
            {"method": "iobuf_set_options", "params": {"small_pool_count": 4000000}}]}]}

        async def main() -> None:
            pass

        try:
            spdk_io.run(main(), config=bad)
        except SpdkError as exc:
            print("first:", exc.op, flush=True)
        try:
            spdk_io.App(name="after").run(main())
        except EnvUnusableError as exc:
            print("App refused:", exc, flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "App refused: " in proc.stdout, proc.stdout


def test_env_after_app_in_one_process() -> None:
    proc = run_py(
        """
        import spdk_io

        async def version() -> str:
            return (await spdk_io.rpc.call("spdk_get_version"))["version"]

        print("app:", spdk_io.App(name="first").run(version()), flush=True)
        for i in range(2):
            print("env:", spdk_io.run(version()), flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("env: SPDK v26.05") == 2, proc.stdout + proc.stderr


def test_app_after_env_is_refused_before_spdk_is_touched() -> None:
    proc = run_py(
        """
        import spdk_io

        async def version() -> str:
            return (await spdk_io.rpc.call("spdk_get_version"))["version"]

        print("env:", spdk_io.run(version()), flush=True)
        try:
            spdk_io.App(name="after").run(version())
        except RuntimeError as exc:
            print("App refused:", exc, flush=True)
        print("env again:", spdk_io.run(version()), flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "App refused: an App needs a process where no Env ran" in proc.stdout
    assert "env again: SPDK v26.05" in proc.stdout


def test_spawning_a_thread_under_the_framework_is_refused_clearly() -> None:
    """The framework's reactors poll every SPDK thread it sees: a thread of our own would
    be polled by two OS threads at once (a crash at exit), so spawn refuses."""
    proc = run_py(
        """
        import spdk_io
        from spdk_io import SpdkThread

        def work() -> int:
            return 1

        async def main() -> str:
            try:
                SpdkThread.spawn(work, name="under-app")
            except RuntimeError as exc:
                return f"refused: {exc}"
            return "spawned"

        print(spdk_io.App(name="spawn_under_app").run(main()))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "App" in proc.stdout, proc.stdout
