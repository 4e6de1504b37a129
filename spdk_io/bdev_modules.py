"""Create and delete bdevs of SPDK's bdev modules, typed, over the in-process RPC.

Each ``create_*`` returns the new :class:`~spdk_io.bdev.Bdev`; each has a
matching ``delete_*``.  Arguments are checked before anything is sent, and
SPDK's refusals arrive as :class:`~spdk_io.errors.RpcError`.

* ``malloc``: RAM-backed; ``null``: discards writes, reads return garbage/zeroes;
* ``aio``: a file or block device through Linux AIO;
* ``error``: wraps a bdev (named ``EE_<base>``) and injects failures;
* ``delay``: wraps a bdev and adds latency.

Argument types are checked too (``TypeError`` naming the argument): a ``float``
or ``bool`` where SPDK wants an integer is refused, not sent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

from spdk_io import rpc
from spdk_io._validate import integer, text
from spdk_io.bdev import Bdev

__all__ = [
    "InjectErrorType",
    "InjectIoType",
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

#: The I/O types ``inject_error`` can target (``clear`` cancels all injections).
InjectIoType = Literal["all", "read", "write", "unmap", "flush", "clear"]
#: What ``inject_error`` makes happen (SPDK's ``bdev_error_inject_error`` error types).
InjectErrorType = Literal["failure", "pending", "corrupt_data", "nomem", "nvme_failure"]

_U32 = 2**32 - 1
_U64 = 2**64 - 1

_BLOCK_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


def _name(name: object, what: str = "name") -> str:
    return text(name, what, max_len=255)


def _block_size(block_size: object) -> int:
    bs = integer(block_size, "block_size")
    if bs not in _BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {_BLOCK_SIZES}, got {bs}")
    return bs


def _geometry(num_blocks: object, block_size: object) -> dict[str, int]:
    return {
        "num_blocks": integer(num_blocks, "num_blocks", lo=1, hi=_U64),
        "block_size": _block_size(block_size),
    }


def _choice(value: object, what: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}: expected one of {', '.join(choices)}")
    return value


async def create_malloc(name: str, num_blocks: int, block_size: int = 4096, **extra: Any) -> Bdev:
    """A RAM-backed bdev of ``num_blocks`` blocks (``bdev_malloc_create``)."""
    params = {"name": _name(name), **_geometry(num_blocks, block_size), **extra}
    return Bdev.get(await rpc.call("bdev_malloc_create", params))


async def delete_malloc(name: str) -> None:
    await rpc.call("bdev_malloc_delete", {"name": _name(name)})


async def create_null(name: str, num_blocks: int, block_size: int = 4096, **extra: Any) -> Bdev:
    """A bdev that completes every I/O without storing data (``bdev_null_create``).

    Reads return zeroes; it has no native compare, so SPDK emulates compare with
    a read: a zero buffer compares equal, anything else miscompares.
    """
    params = {"name": _name(name), **_geometry(num_blocks, block_size), **extra}
    return Bdev.get(await rpc.call("bdev_null_create", params))


async def delete_null(name: str) -> None:
    await rpc.call("bdev_null_delete", {"name": _name(name)})


async def create_aio(name: str, filename: str | Path, block_size: int | None = None) -> Bdev:
    """A bdev over a file or block device through Linux AIO (``bdev_aio_create``)."""
    params: dict[str, Any] = {"name": _name(name)}
    if block_size is not None:
        params["block_size"] = _block_size(block_size)
    if not isinstance(filename, str | os.PathLike):
        raise TypeError(f"filename must be a str or a path, not {type(filename).__name__}")
    path = Path(filename)
    if not path.exists():
        raise FileNotFoundError(f"aio bdev backing file {path} does not exist")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"aio bdev backing file {path} is not readable")
    params["filename"] = str(path.resolve())
    return Bdev.get(await rpc.call("bdev_aio_create", params))


async def delete_aio(name: str) -> None:
    await rpc.call("bdev_aio_delete", {"name": _name(name)})


async def create_error(base_bdev: str) -> Bdev:
    """An error-injection bdev over ``base_bdev``, named ``EE_<base_bdev>``."""
    await rpc.call("bdev_error_create", {"base_name": _name(base_bdev, "base_bdev")})
    return Bdev.get(f"EE_{base_bdev}")


async def delete_error(name: str) -> None:
    await rpc.call("bdev_error_delete", {"name": _name(name)})


async def inject_error(
    name: str,
    io_type: InjectIoType = "all",
    error_type: InjectErrorType = "failure",
    num: int = 1,
    *,
    corrupt_offset: int = 0,
    corrupt_value: int | None = None,
    nvme_sct: int | None = None,
    nvme_sc: int | None = None,
) -> None:
    """Make the next ``num`` I/Os of ``io_type`` on error bdev ``name`` misbehave.

    ``io_type`` ``"clear"`` cancels every injection.  ``error_type``:

    * ``"failure"``: the I/O fails; ``"nomem"``: it completes with NOMEM (SPDK
      retries it); ``"pending"``: it never completes until the bdev is reset;
    * ``"corrupt_data"``: byte ``corrupt_offset`` of the I/O's data is XORed with
      ``corrupt_value`` (1..255, required): a read returns corrupted data; a
      write stores it corrupted, and SPDK corrupts the caller's write buffer in
      place to do so;
    * ``"nvme_failure"``: the I/O fails with NVMe status ``nvme_sct``/``nvme_sc``
      (required, not both 0).

    ``corrupt_*`` and ``nvme_*`` are refused (``ValueError``) with other error types.
    """
    params: dict[str, Any] = {
        "name": _name(name),
        "io_type": _choice(io_type, "io_type", get_args(InjectIoType)),
        "error_type": _choice(error_type, "error_type", get_args(InjectErrorType)),
        "num": integer(num, "num", lo=0, hi=_U32),
    }
    offset = integer(corrupt_offset, "corrupt_offset", lo=0, hi=_U64)
    if error_type == "corrupt_data":
        if corrupt_value is None:
            raise ValueError("corrupt_data needs corrupt_value (1..255, XORed into the data)")
        params["corrupt_offset"] = offset
        params["corrupt_value"] = integer(corrupt_value, "corrupt_value", lo=1, hi=255)
    elif offset or corrupt_value is not None:
        raise ValueError(
            f"corrupt_offset and corrupt_value apply to corrupt_data, not {error_type}"
        )
    if error_type == "nvme_failure":
        if nvme_sct is None or nvme_sc is None:
            raise ValueError(
                "nvme_failure needs nvme_sct and nvme_sc (the NVMe status to fail with)"
            )
        params["nvme_sct"] = integer(nvme_sct, "nvme_sct", lo=0, hi=7)
        params["nvme_sc"] = integer(nvme_sc, "nvme_sc", lo=0, hi=255)
        if not params["nvme_sct"] and not params["nvme_sc"]:
            raise ValueError("nvme_sct and nvme_sc are both 0 (success): nothing would fail")
    elif nvme_sct is not None or nvme_sc is not None:
        raise ValueError(f"nvme_sct and nvme_sc apply to nvme_failure, not {error_type}")
    await rpc.call("bdev_error_inject_error", params)


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
    checked = {key: integer(value, f"{key} (µs)", lo=0, hi=_U64) for key, value in lat.items()}
    params = {"name": _name(name), "base_bdev_name": _name(base_bdev, "base_bdev"), **checked}
    return Bdev.get(await rpc.call("bdev_delay_create", params))


async def delete_delay(name: str) -> None:
    await rpc.call("bdev_delay_delete", {"name": _name(name)})
