"""Create and delete bdevs of SPDK's bdev modules, typed, over the in-process RPC.

Each ``create_*`` returns the new :class:`~spdk_io.bdev.Bdev`; each has a
matching ``delete_*``.  Arguments are checked before anything is sent, and
SPDK's refusals arrive as :class:`~spdk_io.errors.RpcError`.

* ``malloc``: RAM-backed; ``null``: discards writes, reads return garbage/zeroes;
* ``aio``: a file or block device through Linux AIO;
* ``error``: wraps a bdev (named ``EE_<base>``) and injects failures;
* ``delay``: wraps a bdev and adds latency.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spdk_io import rpc
from spdk_io.bdev import Bdev

__all__ = [
    "create_aio",
    "create_delay",
    "create_error",
    "create_malloc",
    "create_null",
    "delete_aio",
    "delete_delay",
    "delete_error",
    "delete_malloc",
    "delete_null",
    "inject_error",
]

_BLOCK_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


def _name(name: str) -> str:
    if not isinstance(name, str) or not name or "\0" in name or len(name) > 255:
        raise ValueError(f"invalid bdev name {name!r}")
    return name


def _geometry(num_blocks: int, block_size: int) -> None:
    if not isinstance(num_blocks, int) or num_blocks <= 0:
        raise ValueError(f"num_blocks must be a positive int, got {num_blocks!r}")
    if block_size not in _BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {_BLOCK_SIZES}, got {block_size!r}")


async def create_malloc(name: str, num_blocks: int, block_size: int = 4096, **extra: Any) -> Bdev:
    """A RAM-backed bdev of ``num_blocks`` blocks (``bdev_malloc_create``)."""
    _geometry(num_blocks, block_size)
    params = {"name": _name(name), "num_blocks": num_blocks, "block_size": block_size, **extra}
    return Bdev.get(await rpc.call("bdev_malloc_create", params))


async def delete_malloc(name: str) -> None:
    await rpc.call("bdev_malloc_delete", {"name": _name(name)})


async def create_null(name: str, num_blocks: int, block_size: int = 4096, **extra: Any) -> Bdev:
    """A bdev that completes every I/O without storing data (``bdev_null_create``)."""
    _geometry(num_blocks, block_size)
    params = {"name": _name(name), "num_blocks": num_blocks, "block_size": block_size, **extra}
    return Bdev.get(await rpc.call("bdev_null_create", params))


async def delete_null(name: str) -> None:
    await rpc.call("bdev_null_delete", {"name": _name(name)})


async def create_aio(name: str, filename: str | Path, block_size: int | None = None) -> Bdev:
    """A bdev over a file or block device through Linux AIO (``bdev_aio_create``)."""
    path = Path(filename)
    if not path.exists():
        raise FileNotFoundError(f"aio bdev backing file {path} does not exist")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"aio bdev backing file {path} is not readable")
    params: dict[str, Any] = {"name": _name(name), "filename": str(path.resolve())}
    if block_size is not None:
        if block_size not in _BLOCK_SIZES:
            raise ValueError(f"block_size must be one of {_BLOCK_SIZES}, got {block_size!r}")
        params["block_size"] = block_size
    return Bdev.get(await rpc.call("bdev_aio_create", params))


async def delete_aio(name: str) -> None:
    await rpc.call("bdev_aio_delete", {"name": _name(name)})


async def create_error(base_bdev: str) -> Bdev:
    """An error-injection bdev over ``base_bdev``, named ``EE_<base_bdev>``."""
    await rpc.call("bdev_error_create", {"base_name": _name(base_bdev)})
    return Bdev.get(f"EE_{base_bdev}")


async def delete_error(name: str) -> None:
    await rpc.call("bdev_error_delete", {"name": _name(name)})


async def inject_error(
    name: str, io_type: str = "all", error_type: str = "failure", num: int = 1
) -> None:
    """Make the next ``num`` I/Os of ``io_type`` on error bdev ``name`` fail.

    ``io_type``: ``all``, ``read``, ``write``, ``unmap``, ``flush``, ``clear``;
    ``error_type``: ``failure``, ``pending``, ``corrupt_data``, ``nomem``.
    """
    if io_type not in ("all", "read", "write", "unmap", "flush", "clear"):
        raise ValueError(f"unknown io_type {io_type!r}")
    if error_type not in ("failure", "pending", "corrupt_data", "nomem"):
        raise ValueError(f"unknown error_type {error_type!r}")
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    await rpc.call(
        "bdev_error_inject_error",
        {"name": _name(name), "io_type": io_type, "error_type": error_type, "num": num},
    )


async def create_delay(
    name: str,
    base_bdev: str,
    avg_read_latency_us: int = 0,
    p99_read_latency_us: int | None = None,
    avg_write_latency_us: int = 0,
    p99_write_latency_us: int | None = None,
) -> Bdev:
    """A bdev over ``base_bdev`` that delays every I/O (``bdev_delay_create``)."""
    lat = {
        "avg_read_latency": avg_read_latency_us,
        "p99_read_latency": avg_read_latency_us
        if p99_read_latency_us is None
        else p99_read_latency_us,
        "avg_write_latency": avg_write_latency_us,
        "p99_write_latency": avg_write_latency_us
        if p99_write_latency_us is None
        else p99_write_latency_us,
    }
    for key, value in lat.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be a non-negative int (µs), got {value!r}")
    params = {"name": _name(name), "base_bdev_name": _name(base_bdev), **lat}
    return Bdev.get(await rpc.call("bdev_delay_create", params))


async def delete_delay(name: str) -> None:
    await rpc.call("bdev_delay_delete", {"name": _name(name)})
