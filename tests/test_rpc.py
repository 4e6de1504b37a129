"""In-process JSON-RPC against SPDK's real method table, and serving SPDK's own rpc.py."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import spdk_io
from spdk_io import rpc
from spdk_io.errors import RpcError

Run = Callable[[Awaitable[Any]], Any]


def test_rpc_creates_lists_and_deletes_a_malloc_bdev(run: Run) -> None:
    async def main() -> tuple[str, list[Any], list[Any]]:
        name = await rpc.call(
            "bdev_malloc_create", {"name": "RpcMalloc0", "num_blocks": 256, "block_size": 512}
        )
        bdevs = await rpc.call("bdev_get_bdevs", {"name": "RpcMalloc0"})
        await rpc.call("bdev_malloc_delete", {"name": "RpcMalloc0"})
        with pytest.raises(RpcError):
            await rpc.call("bdev_get_bdevs", {"name": "RpcMalloc0"})
        return name, bdevs, await rpc.call("bdev_get_bdevs")

    name, bdevs, after = run(main())
    assert name == "RpcMalloc0"
    assert bdevs[0]["num_blocks"] == 256 and bdevs[0]["block_size"] == 512
    assert all(b["name"] != "RpcMalloc0" for b in after)


def test_rpc_errors_carry_spdk_code_and_message(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(RpcError) as info:
            await rpc.call("no_such_method")
        assert info.value.code == -32601
        assert "no_such_method" in info.value.message or "not found" in info.value.message.lower()
        with pytest.raises(RpcError) as info:
            await rpc.call("bdev_malloc_create", {"num_blocks": "many"})
        assert info.value.code == -32603  # SPDK's answer to params it cannot decode
        assert "decode" in info.value.message
        assert "[-32603]" in str(info.value)
        with pytest.raises(RpcError) as info:
            await rpc.call("bdev_malloc_delete", {"name": "NoSuchBdev"})
        assert info.value.errno == 19 and info.value.errno_name == "ENODEV"

    run(main())


def test_rpc_rejects_bad_arguments_before_sending(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            rpc.call("")
        with pytest.raises(TypeError):
            rpc.call("bdev_get_bdevs", "nope")  # type: ignore[arg-type]  # the point of the test
        with pytest.raises(TypeError):
            rpc.call("bdev_get_bdevs", {"name": object()})
        assert await rpc.call("spdk_get_version") is not None  # still healthy

    run(main())


def test_concurrent_rpcs(run: Run) -> None:
    async def main() -> list[Any]:
        return await spdk_io.gather(*(rpc.call("spdk_get_version") for _ in range(8)))

    results = run(main())
    assert len(results) == 8 and all("version" in r for r in results)


def test_large_rpc_response(run: Run) -> None:
    async def main() -> int:
        names = [f"RpcBig{i}" for i in range(40)]
        for n in names:
            await rpc.call("bdev_null_create", {"name": n, "num_blocks": 1024, "block_size": 512})
        try:
            return len(await rpc.call("bdev_get_bdevs"))
        finally:
            for n in names:
                await rpc.call("bdev_null_delete", {"name": n})

    assert run(main()) >= 40


@pytest.mark.skipif(
    shutil.which("spdk-rpc") is None, reason="SPDK's rpc.py client is not installed"
)
def test_spdk_rpc_py_manages_this_process(run: Run) -> None:
    tmp = tempfile.mkdtemp()
    path = Path(tmp) / "spdk.sock"

    async def main() -> tuple[int, str, int]:
        with rpc.serve(path) as server:
            mode = stat.S_IMODE(os.stat(server.path).st_mode)
            proc = subprocess.Popen(
                ["spdk-rpc", "-s", str(path), "-t", "20", "spdk_get_version"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            while proc.poll() is None:
                await spdk_io.sleep(0.01)
            assert proc.stdout is not None
            return proc.returncode, proc.stdout.read(), mode

    try:
        rc, out, mode = run(main())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert rc == 0, out
    assert '"version"' in out
    assert mode == 0o600
    assert not path.exists()


def test_serve_refuses_existing_path(run: Run, tmp_path: Path) -> None:
    taken = tmp_path / "taken.sock"
    taken.write_text("")

    async def main() -> None:
        with pytest.raises(FileExistsError):
            rpc.serve(taken)

    run(main())
