"""rpc.serve() explains a path it cannot use; killed processes leave no socket directory behind."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from spdk_io import rpc
from tests.conftest import run_py

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


@pytest.mark.skipif(os.geteuid() == 0, reason="root may use any socket")
def test_serve_on_a_socket_we_may_not_use_is_a_permission_error(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "locked.sock"
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))
    other.listen()
    path.chmod(0)

    async def main() -> None:
        with pytest.raises(PermissionError, match="may not use"):
            rpc.serve(path)

    try:
        run(main())
    finally:
        other.close()


def test_serve_on_a_stale_socket_says_so(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens

    async def main() -> None:
        with pytest.raises(FileExistsError, match="nobody is listening"):
            rpc.serve(path)

    run(main())


# --- leftovers of killed processes -------------------------------------------------------


def test_a_killed_process_leaves_no_private_socket_dir_behind(tmp_path: Path) -> None:
    env = {"TMPDIR": str(tmp_path)}
    killed = run_py(
        """
        import os, signal
        import spdk_io
        from spdk_io import rpc

        async def main() -> None:
            await rpc.call("spdk_get_version")
            print(os.getpid(), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        spdk_io.run(main(), name="rpc_killed")
        """,
        env=env,
    )
    assert killed.returncode == -9, killed.stderr
    dead = int(killed.stdout.split()[0])
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith("spdk_io-rpc-")]
    assert left, "the killed process should have left its directory (else this tests nothing)"
    # Look-alikes of the dead process that are not what spdk_io makes are never touched:
    for big in ("99999999999999999999", "9999999999"):  # pids that cannot exist
        (tmp_path / f"spdk_io-rpc-{big}-bigpid").mkdir(mode=0o700)
    wide = tmp_path / f"spdk_io-rpc-{dead}-wide"  # not mode 0700
    wide.mkdir(mode=0o755)
    wide.chmod(0o755)
    full = tmp_path / f"spdk_io-rpc-{dead}-full"  # holds something else
    full.mkdir(mode=0o700)
    (full / "precious").write_text("keep me")
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (target / "rpc.sock.lock").write_text("")
    (tmp_path / f"spdk_io-rpc-{dead}-link").symlink_to(target)
    clean = run_py(
        """
        import spdk_io
        from spdk_io import rpc

        async def main() -> None:
            await rpc.call("spdk_get_version")

        spdk_io.run(main(), name="rpc_after_kill")
        """,
        env=env,
    )
    assert clean.returncode == 0, clean.stderr
    remaining = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("spdk_io-rpc-"))
    expected = [f"spdk_io-rpc-{dead}-{s}" for s in ("full", "link", "wide")]
    expected += [f"spdk_io-rpc-{big}-bigpid" for big in ("99999999999999999999", "9999999999")]
    assert remaining == sorted(expected)
    assert (full / "precious").read_text() == "keep me"
    assert (target / "rpc.sock.lock").exists()


def test_reap_keeps_the_directory_of_a_live_server(run: Run, tmp_path: Path) -> None:
    """A dead pid is not enough: a live server's lock (another pid namespace) keeps it."""
    looks_dead = tmp_path / "spdk_io-rpc-999999999-live"
    looks_dead.mkdir(mode=0o700)

    async def main() -> list[str]:
        with rpc.serve(looks_dead / "rpc.sock"):
            return rpc.reap_stale_dirs(str(tmp_path))

    assert run(main()) == []
    assert looks_dead.exists()
    assert rpc.reap_stale_dirs(str(tmp_path)) == [str(looks_dead)]  # closed: now it goes
    assert not looks_dead.exists()
