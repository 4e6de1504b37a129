"""Create and delete bdevs of SPDK's bdev modules, typed, over the in-process RPC.

Each ``create_*`` returns the new :class:`~spdk_io.bdev.Bdev`; each has a
matching ``delete_*``.  Arguments are checked before anything is sent, and
SPDK's refusals arrive as :class:`~spdk_io.errors.RpcError`.

* ``malloc``: RAM-backed; ``null``: discards writes, reads return garbage/zeroes;
* ``aio``: a file or block device through Linux AIO;
* ``error``: wraps a bdev (named ``EE_<base>``) and injects failures;
* ``delay``: wraps a bdev and adds latency;
* ``nvme``: the namespaces of an NVMe controller (local PCIe or NVMe-oF), attached
  with :func:`attach_nvme_controller`: one bdev per namespace (``<name>n<nsid>``).

Argument types are checked too (``TypeError`` naming the argument): a ``float``
or ``bool`` where SPDK wants an integer is refused, not sent.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from spdk_io import rpc
from spdk_io._validate import flag, integer, text
from spdk_io.bdev import Bdev
from spdk_io.errors import RpcError
from spdk_io.loop import Op, spawn
from spdk_io.nvme.transport import TransportId, transport_id

__all__ = [
    "InjectErrorType",
    "InjectIoType",
    "MultipathMode",
    "NvmeBdevController",
    "NvmePath",
    "attach_nvme_controller",
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
    "detach_nvme_controller",
    "inject_error",
    "nvme_controllers",
]

#: The I/O types ``inject_error`` can target (``clear`` cancels all injections).
InjectIoType = Literal["all", "read", "write", "unmap", "flush", "clear"]
#: What ``inject_error`` makes happen (SPDK's ``bdev_error_inject_error`` error types).
InjectErrorType = Literal["failure", "pending", "corrupt_data", "nomem", "nvme_failure"]

#: What ``attach_nvme_controller`` does when a controller of that name exists:
#: ``"multipath"`` (SPDK's default) and ``"failover"`` add this path to it,
#: ``"disable"`` refuses.
MultipathMode = Literal["disable", "failover", "multipath"]

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


# ------------------------------------------------------------------------------ NVMe


@dataclass(frozen=True)
class NvmePath:
    """One path of an NVMe bdev controller: a connected controller at ``trid``."""

    trid: TransportId
    state: str
    cntlid: int
    hostnqn: str


@dataclass(frozen=True)
class NvmeBdevController:
    """An NVMe controller bdev_nvme holds (``bdev_nvme_get_controllers``), by name, with
    its paths (more than one with multipath or failover)."""

    name: str
    paths: tuple[NvmePath, ...]


#: The NQN length limit of ``hostnqn`` (``SPDK_NVMF_NQN_MAX_LEN``).
_NQN_MAX = 223
_I32_MAX = 2**31 - 1


def _trid_params(trid: TransportId) -> dict[str, str]:
    """The transport ID as ``bdev_nvme_*_controller`` spells it (only the fields set)."""
    if trid.traddr is None:
        raise ValueError(f"transport ID {trid} has no traddr (an address or PCIe BDF)")
    params = {"trtype": trid.trtype, "traddr": trid.traddr}
    for key in ("adrfam", "trsvcid", "subnqn"):
        value = getattr(trid, key)
        if value is not None:
            params[key] = value
    if trid.priority:
        params["priority"] = str(trid.priority)
    return params


def _reconnect(loss: int | None, delay: int | None, fail: int | None) -> dict[str, int]:
    """The reconnect timeouts, checked against SPDK's rules as far as they are given
    (one left out keeps bdev_nvme's configured default, which SPDK checks)."""
    out: dict[str, int] = {}
    if loss is not None:
        out["ctrlr_loss_timeout_sec"] = integer(loss, "ctrlr_loss_timeout_sec", -1, _I32_MAX)
    if delay is not None:
        out["reconnect_delay_sec"] = integer(delay, "reconnect_delay_sec", 0, _U32)
    if fail is not None:
        out["fast_io_fail_timeout_sec"] = integer(fail, "fast_io_fail_timeout_sec", 0, _U32)
    if loss == 0 and (delay or fail):
        raise ValueError(
            "ctrlr_loss_timeout_sec=0 (never reconnect) needs reconnect_delay_sec and "
            "fast_io_fail_timeout_sec 0"
        )
    if loss is not None and loss != 0:
        if delay == 0:
            raise ValueError("reconnect_delay_sec must not be 0 when ctrlr_loss_timeout_sec is not")
        if loss > 0 and delay is not None and delay > loss:
            raise ValueError(
                f"reconnect_delay_sec {delay} is longer than ctrlr_loss_timeout_sec {loss}"
            )
        if fail:
            if delay is not None and fail < delay:
                raise ValueError(
                    f"fast_io_fail_timeout_sec {fail} is shorter than reconnect_delay_sec {delay}"
                )
            if loss > 0 and fail > loss:
                raise ValueError(
                    f"fast_io_fail_timeout_sec {fail} is longer than ctrlr_loss_timeout_sec {loss}"
                )
    return out


async def attach_nvme_controller(
    name: str,
    trid: TransportId | str,
    *,
    hostnqn: str | None = None,
    hostaddr: str | None = None,
    hostsvcid: str | None = None,
    prchk_reftag: bool | None = None,
    prchk_guard: bool | None = None,
    header_digest: bool | None = None,
    data_digest: bool | None = None,
    num_io_queues: int | None = None,
    fabrics_connect_timeout_us: int | None = None,
    ctrlr_loss_timeout_sec: int | None = None,
    reconnect_delay_sec: int | None = None,
    fast_io_fail_timeout_sec: int | None = None,
    multipath: MultipathMode | None = None,
    psk: str | None = None,
    dhchap_key: str | None = None,
    dhchap_ctrlr_key: str | None = None,
) -> list[Bdev]:
    """Attach the NVMe controller at ``trid`` as bdev controller ``name``
    (``bdev_nvme_attach_controller``); its namespaces become bdevs ``<name>n<nsid>``,
    which are returned, so everything in :mod:`spdk_io.bdev` works on them.

    ``trid`` is a :class:`~spdk_io.nvme.TransportId` or its string form.  An option
    left ``None`` keeps bdev_nvme's default.  ``ctrlr_loss_timeout_sec`` (-1: retry
    forever, 0: never reconnect), ``reconnect_delay_sec`` and
    ``fast_io_fail_timeout_sec`` govern reconnecting after the target goes away;
    ``header_digest``/``data_digest`` are NVMe/TCP digests; ``psk`` and the
    ``dhchap_*`` keys are names of keys in SPDK's keyring.

    Everything is checked before SPDK is asked.  SPDK's refusal (nothing listens
    there, unknown subsystem, host not allowed, a controller of that name exists on
    that path) raises :class:`~spdk_io.errors.RpcError` naming the method and
    ``trid``; nothing is attached then.  If the awaiting task is cancelled, a
    controller path that attaches later is detached again.

    A namespace whose UUID/NGUID equals a bdev's of this process (a loopback export
    of a local bdev without its own ``nguid``) attaches, but SPDK cannot register its
    bdev (names must be unique): it is missing from the list.
    """
    name = _name(name)
    trid = transport_id(trid)
    params: dict[str, Any] = {"name": name, **_trid_params(trid)}
    for key, value in (
        ("hostnqn", hostnqn),
        ("hostaddr", hostaddr),
        ("hostsvcid", hostsvcid),
        ("psk", psk),
        ("dhchap_key", dhchap_key),
        ("dhchap_ctrlr_key", dhchap_ctrlr_key),
    ):
        if value is not None:
            params[key] = text(value, key, max_len=_NQN_MAX if key == "hostnqn" else 255)
    for key, rpc_key, on in (
        ("prchk_reftag", "prchk_reftag", prchk_reftag),
        ("prchk_guard", "prchk_guard", prchk_guard),
        ("header_digest", "hdgst", header_digest),
        ("data_digest", "ddgst", data_digest),
    ):
        if on is not None:
            params[rpc_key] = flag(on, key)
    if num_io_queues is not None:
        params["num_io_queues"] = integer(num_io_queues, "num_io_queues", 1, 65536)
    if fabrics_connect_timeout_us is not None:
        params["fabrics_connect_timeout_us"] = integer(
            fabrics_connect_timeout_us, "fabrics_connect_timeout_us", 0, _U64
        )
    params.update(_reconnect(ctrlr_loss_timeout_sec, reconnect_delay_sec, fast_io_fail_timeout_sec))
    if multipath is not None:
        params["multipath"] = _choice(multipath, "multipath", get_args(MultipathMode))
    op: Op[Any] = rpc.call("bdev_nvme_attach_controller", params)
    try:
        names = await op
    except RpcError as exc:
        raise RpcError(
            exc.method, exc.code, f"{exc.message} (attaching {name!r} at {trid})", exc.data
        ) from None
    except BaseException:
        spawn(_undo_attach(op, {"name": name, **_trid_params(trid)}), f"undo attach {name}")
        raise
    return [Bdev.get(bdev) for bdev in names]


async def _undo_attach(op: Op[Any], path: dict[str, Any]) -> None:
    """An attach whose caller gave up: detach the path once (if) it attached."""
    try:
        await op
    except Exception:
        return  # nothing attached
    with contextlib.suppress(RpcError, ConnectionError):  # gone already: nothing to undo
        await rpc.call("bdev_nvme_detach_controller", path)


async def detach_nvme_controller(name: str, trid: TransportId | str | None = None) -> None:
    """Detach bdev controller ``name`` and delete its bdevs (``bdev_nvme_detach_controller``);
    with ``trid``, only that path (the controller goes with its last path).

    Returns once SPDK has deleted them; descriptors still open on them see a
    hot-remove.  An unknown name raises :class:`~spdk_io.errors.RpcError` (``ENODEV``).
    """
    params: dict[str, Any] = {"name": _name(name)}
    if trid is not None:
        params.update(_trid_params(transport_id(trid)))
    await rpc.call("bdev_nvme_detach_controller", params)


async def nvme_controllers(name: str | None = None) -> list[NvmeBdevController]:
    """The NVMe controllers bdev_nvme holds (``bdev_nvme_get_controllers``), or just
    ``name`` (an unknown name raises :class:`~spdk_io.errors.RpcError`)."""
    params = {"name": _name(name)} if name is not None else None
    result = await rpc.call("bdev_nvme_get_controllers", params)
    return [NvmeBdevController(c["name"], tuple(_path(p) for p in c["ctrlrs"])) for c in result]


def _path(info: Mapping[str, Any]) -> NvmePath:
    t = info["trid"]
    return NvmePath(
        trid=TransportId(
            t["trtype"],
            t.get("traddr") or None,
            t.get("adrfam") or None,
            t.get("trsvcid") or None,
            t.get("subnqn") or None,
        ),
        state=str(info.get("state", "")),
        cntlid=int(info.get("cntlid", 0)),
        hostnqn=str(info.get("host", {}).get("nqn", "")),
    )
