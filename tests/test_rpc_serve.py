"""rpc.serve() explains a path it cannot use."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from spdk_io import rpc

Run = Callable[[Awaitable[Any]], Any]

# --- serve(): clear errors for bad paths ------------------------------------------------


def test_serve_in_a_missing_directory_names_the_directory(run: Run, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"

    async def main() -> None:
        with pytest.raises(FileNotFoundError) as info:
            rpc.serve(missing / "x.sock")
        assert str(missing) in str(info.value)
        assert "EADDRINUSE" not in str(info.value)

    run(main())


def test_serve_refuses_bad_path_types_and_values(run: Run, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")

    async def main() -> None:
        with pytest.raises(TypeError, match="path"):
            rpc.serve(3)  # type: ignore[arg-type]  # the point of the test
        with pytest.raises(TypeError, match="path"):
            rpc.serve(None)  # type: ignore[arg-type]  # the point of the test
        with pytest.raises(ValueError, match="path"):
            rpc.serve("")
        with pytest.raises(ValueError, match="NUL"):
            rpc.serve(str(tmp_path / "a\0b.sock"))
        with pytest.raises(ValueError, match="107"):
            rpc.serve(tmp_path / ("x" * 120))
        with pytest.raises(NotADirectoryError):
            rpc.serve(a_file / "x.sock")
        with pytest.raises(ValueError, match="period_us"):
            rpc.RpcServer(tmp_path / "p.sock", period_us=-1)
        with pytest.raises(TypeError, match="period_us"):
            rpc.RpcServer(tmp_path / "p.sock", period_us=1.5)  # type: ignore[arg-type]

    run(main())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_serve_in_a_read_only_directory_is_a_permission_error(run: Run, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)

    async def main() -> None:
        with pytest.raises(PermissionError, match=str(ro)):
            rpc.serve(ro / "x.sock")

    run(main())


def test_serve_on_a_live_socket_is_eaddrinuse(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "live.sock"

    async def main() -> None:
        with rpc.serve(path):
            with pytest.raises(OSError) as info:
                rpc.serve(path)
            assert info.value.errno == errno.EADDRINUSE
            assert "listening" in str(info.value)

    run(main())
    assert not path.exists()


def test_serve_on_a_stale_socket_says_so(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens

    async def main() -> None:
        with pytest.raises(FileExistsError, match="nobody is listening"):
            rpc.serve(path)

    run(main())
