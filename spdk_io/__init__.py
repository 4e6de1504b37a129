"""spdk_io: typed, pure-Python bindings for SPDK.

Two layers:

* :mod:`spdk_io.raw` - the raw ctypes layer, generated at build time from
  the installed SPDK headers (every public function, struct and constant);
* the typed layer users touch - :mod:`spdk_io.env`, :mod:`spdk_io.thread`,
  :mod:`spdk_io.loop`, :mod:`spdk_io.rpc`, :mod:`spdk_io.dma`,
  :mod:`spdk_io.bdev`, ...

Names are loaded on first use, so ``import spdk_io`` is cheap: SPDK's
libraries are loaded when something that needs them is touched.

    import spdk_io

    async def main() -> None:
        await spdk_io.rpc.call("bdev_malloc_create",
                               {"name": "Malloc0", "num_blocks": 1024, "block_size": 4096})

    spdk_io.run(main(), name="demo")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # env
    "Env": "env",
    "EnvOptions": "env",
    "run": "env",
    "block_on": "env",
    # app
    "App": "app",
    # loop
    "Op": "loop",
    "Task": "loop",
    "spawn": "loop",
    "sleep": "loop",
    "timeout": "loop",
    "wait_for": "loop",
    "gather": "loop",
    "current_task": "loop",
    "debug": "loop",
    # thread
    "SpdkThread": "thread",
    "ThreadHandle": "thread",
    "JoinHandle": "thread",
    "Poller": "thread",
    "current_thread": "thread",
    # block I/O and DMA memory
    "DmaBuf": "dma",
    "Bdev": "bdev",
    "BdevDesc": "bdev",
    "IoSlot": "bdev",
    "IoStream": "bdev",
    "StreamSlot": "bdev",
    # errors
    "SpdkError": "errors",
    "RpcError": "errors",
    "NvmeError": "errors",
    "BdevRemovedError": "errors",
    "BlobNotFoundError": "errors",
    "WrongThreadError": "errors",
    "CallbackError": "errors",
    "Cancelled": "errors",
    "CoreError": "errors",
    "MainInterpreterOnlyError": "errors",
    "ThreadExitedError": "errors",
    "EnvUnusableError": "errors",
    "SpdkNotFoundError": "errors",
    "InvalidStateError": "errors",
    "SpdkVersionError": "errors",
}
_SUBMODULES = {
    "aio",
    "app",
    "env",
    "loop",
    "thread",
    "errors",
    "rpc",
    "dma",
    "bdev",
    "bdev_modules",
    "blob",
    "completion",
    "cores",
    "nvme",
    "perf",
    "log",
    "lowlevel",
    "nvmf",
    "raw",
    "stats",
    "trace",
}

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"spdk_io.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"spdk_io.{name}")
    raise AttributeError(f"module 'spdk_io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # the names __getattr__ provides, for type checkers (explicit re-exports)
    from spdk_io import aio as aio
    from spdk_io import app as app
    from spdk_io import bdev as bdev
    from spdk_io import bdev_modules as bdev_modules
    from spdk_io import blob as blob
    from spdk_io import completion as completion
    from spdk_io import cores as cores
    from spdk_io import dma as dma
    from spdk_io import env as env
    from spdk_io import errors as errors
    from spdk_io import log as log
    from spdk_io import loop as loop
    from spdk_io import lowlevel as lowlevel
    from spdk_io import nvme as nvme
    from spdk_io import nvmf as nvmf
    from spdk_io import perf as perf
    from spdk_io import raw as raw
    from spdk_io import rpc as rpc
    from spdk_io import stats as stats
    from spdk_io import thread as thread
    from spdk_io import trace as trace
    from spdk_io.app import App as App
    from spdk_io.bdev import Bdev as Bdev
    from spdk_io.bdev import BdevDesc as BdevDesc
    from spdk_io.bdev import IoSlot as IoSlot
    from spdk_io.bdev import IoStream as IoStream
    from spdk_io.bdev import StreamSlot as StreamSlot
    from spdk_io.dma import DmaBuf as DmaBuf
    from spdk_io.env import Env as Env
    from spdk_io.env import EnvOptions as EnvOptions
    from spdk_io.env import block_on as block_on
    from spdk_io.env import run as run
    from spdk_io.errors import BdevRemovedError as BdevRemovedError
    from spdk_io.errors import BlobNotFoundError as BlobNotFoundError
    from spdk_io.errors import CallbackError as CallbackError
    from spdk_io.errors import Cancelled as Cancelled
    from spdk_io.errors import CoreError as CoreError
    from spdk_io.errors import EnvUnusableError as EnvUnusableError
    from spdk_io.errors import InvalidStateError as InvalidStateError
    from spdk_io.errors import MainInterpreterOnlyError as MainInterpreterOnlyError
    from spdk_io.errors import NvmeError as NvmeError
    from spdk_io.errors import RpcError as RpcError
    from spdk_io.errors import SpdkError as SpdkError
    from spdk_io.errors import SpdkNotFoundError as SpdkNotFoundError
    from spdk_io.errors import SpdkVersionError as SpdkVersionError
    from spdk_io.errors import ThreadExitedError as ThreadExitedError
    from spdk_io.errors import WrongThreadError as WrongThreadError
    from spdk_io.loop import Op as Op
    from spdk_io.loop import Task as Task
    from spdk_io.loop import current_task as current_task
    from spdk_io.loop import debug as debug
    from spdk_io.loop import gather as gather
    from spdk_io.loop import sleep as sleep
    from spdk_io.loop import spawn as spawn
    from spdk_io.loop import timeout as timeout
    from spdk_io.loop import wait_for as wait_for
    from spdk_io.thread import JoinHandle as JoinHandle
    from spdk_io.thread import Poller as Poller
    from spdk_io.thread import SpdkThread as SpdkThread
    from spdk_io.thread import ThreadHandle as ThreadHandle
    from spdk_io.thread import current_thread as current_thread
