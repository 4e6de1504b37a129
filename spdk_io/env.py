"""Bring SPDK up in this process and tear it down again: :class:`Env` and :func:`run`.

``Env`` does what SPDK's app framework does at start, without taking over the
process: ``spdk_env_init``, the thread library, the app thread (with its
loop), a JSON config's startup methods, every registered subsystem, the RPC
state change to RUNTIME (without which runtime methods in a config are
silently skipped), and the config's runtime methods.  Leaving the ``with``
block undoes all of it in reverse order, also after an error or Ctrl-C.

DPDK's EAL can only be configured once per process: a second ``Env`` reuses
the first one's memory and core options (SPDK re-initialises with NULL opts).
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io.errors import SpdkError
from spdk_io.loop import Op, interrupts_deferred, wait_for
from spdk_io.thread import SpdkThread, shutdown_guests

__all__ = ["Env", "EnvOptions", "block_on", "run"]

T = TypeVar("T")

_IOVA_MODES = (None, "pa", "va")


def _free_hugepages() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("HugePages_Free:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass(frozen=True)
class EnvOptions:
    """Options for ``spdk_env_init`` (see ``struct spdk_env_opts``).

    ``no_huge=None`` picks hugepages when the machine has free ones and plain
    memory otherwise, so one program runs in a container and on a lab server.
    ``mem_size_mb=None`` means 512 MiB without hugepages and SPDK's default
    with them.
    """

    name: str = "spdk_io"
    core_mask: str = "0x1"
    mem_size_mb: int | None = None
    shm_id: int = -1
    no_pci: bool = True
    no_huge: bool | None = None
    main_core: int = -1
    iova_mode: str | None = None
    hugedir: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "\0" in self.name:
            raise ValueError(f"invalid env name {self.name!r}")
        if self.mem_size_mb is not None and self.mem_size_mb <= 0:
            raise ValueError(f"mem_size_mb must be positive, got {self.mem_size_mb}")
        if self.iova_mode not in _IOVA_MODES:
            raise ValueError(f"iova_mode must be one of {_IOVA_MODES}, got {self.iova_mode!r}")
        try:
            if int(self.core_mask, 0) <= 0:
                raise ValueError
        except ValueError:
            if not (self.core_mask.startswith("[") and self.core_mask.endswith("]")):
                raise ValueError(f"invalid core mask {self.core_mask!r}") from None

    def resolved(self) -> EnvOptions:
        """These options with ``no_huge`` and ``mem_size_mb`` decided for this machine."""
        no_huge = self.no_huge if self.no_huge is not None else _free_hugepages() == 0
        mem = self.mem_size_mb if self.mem_size_mb is not None else (512 if no_huge else None)
        return replace(self, no_huge=no_huge, mem_size_mb=mem)

    def to_c(self) -> tuple[g.struct_spdk_env_opts, list[bytes]]:
        """The C struct, plus the byte strings it points into (keep them alive)."""
        opts = g.struct_spdk_env_opts()
        opts.opts_size = ctypes.sizeof(opts)
        g.spdk_env_opts_init(ctypes.byref(opts))
        keep = [self.name.encode(), self.core_mask.encode()]
        opts.name, opts.core_mask = keep[0], keep[1]
        opts.shm_id = self.shm_id
        opts.no_pci = self.no_pci
        opts.no_huge = bool(self.no_huge)
        opts.main_core = self.main_core
        if self.mem_size_mb is not None:
            opts.mem_size = self.mem_size_mb
        if self.iova_mode is not None:
            keep.append(self.iova_mode.encode())
            opts.iova_mode = keep[-1]
        if self.hugedir is not None:
            keep.append(self.hugedir.encode())
            opts.hugedir = keep[-1]
        for key, value in self.extra.items():
            if not hasattr(opts, key):
                raise ValueError(f"struct spdk_env_opts has no field {key!r}")
            setattr(opts, key, value)
        return opts, keep


#: Seconds each teardown step may take before it is abandoned.
TEARDOWN_TIMEOUT = 10.0
_log = logging.getLogger("spdk_io")
_teardown_hooks: list[Callable[[], Awaitable[None]]] = []


def on_teardown(hook: Callable[[], Awaitable[None]]) -> None:
    """Run ``hook()`` on the app thread when an Env stops, before subsystems finish.

    Modules that hand out SPDK resources (descriptors, channels) register one
    to release what the user left open, so teardown never waits forever.
    """
    if hook not in _teardown_hooks:
        _teardown_hooks.append(hook)


async def release_leftovers() -> None:
    """Run the teardown hooks (each bounded in time), then close every RPC server.

    Both :class:`Env` and :class:`~spdk_io.app.App` call this before SPDK's
    subsystems finish.
    """
    from spdk_io import rpc

    for hook in list(_teardown_hooks):
        try:
            await wait_for(hook(), TEARDOWN_TIMEOUT)
        except Exception as exc:  # teardown goes on; the hook's failure is reported
            _log.warning("teardown hook %s failed: %s", getattr(hook, "__qualname__", hook), exc)
    rpc._shutdown()


_state_lock = threading.Lock()
_framework_up = False  # set while spdk_io.app.App runs SPDK's app framework


def is_up() -> bool:
    """Whether SPDK's environment is initialised in this process (by an Env or an App)."""
    active = _active
    return _framework_up or (active is not None and active._stage >= 1)


_first_options: EnvOptions | None = None  # EAL options are fixed by the first init
_active: Env | None = None


class Env:
    """SPDK's environment, thread library, app thread and subsystems, as a context manager.

    ``config`` is a JSON config (a path, a ``str`` of JSON, or a dict) in the
    format of ``spdk_tgt --json``.
    """

    def __init__(
        self,
        options: EnvOptions | None = None,
        *,
        config: str | Path | Mapping[str, Any] | None = None,
        stop_on_error: bool = True,
        **kwargs: Any,
    ) -> None:
        if options is not None and kwargs:
            raise TypeError("pass EnvOptions or keyword options, not both")
        self.options = (options or EnvOptions(**kwargs)).resolved()
        self._config = _config_bytes(config)
        self._stop_on_error = stop_on_error
        self.thread: SpdkThread | None = None
        self._stage = 0

    def __repr__(self) -> str:
        return f"<Env {self.options.name} {'up' if self._stage else 'down'}>"

    # -- bring-up ------------------------------------------------------------------------

    def start(self) -> Env:
        global _first_options, _active
        with _state_lock:
            if _active is not None:
                raise RuntimeError("an spdk_io Env is already running in this process")
            _active = self
        try:
            if _first_options is None:
                opts, keep = self.options.to_c()
                rc = g.spdk_env_init(ctypes.byref(opts))
                del keep
                if rc == 0:
                    _first_options = self.options
            else:
                rc = g.spdk_env_init(None)  # re-init: EAL keeps the first options
            SpdkError.check(rc, "spdk_env_init", self.options.name)
            self._stage = 1
            SpdkError.check(
                g.spdk_thread_lib_init(_bridge.new_thread_cb, 0), "spdk_thread_lib_init"
            )
            self._stage = 2
            self.thread = SpdkThread.create("app_thread", host=True)
            self._stage = 3
            self._stage = 4  # from here on, teardown runs spdk_subsystem_fini (as app.c does)
            self.thread.block_on(self._init_subsystems())
        except BaseException:
            self.stop()
            raise
        return self

    async def _init_subsystems(self) -> None:
        if self._config is not None:
            await _load_config(self._config, self._stop_on_error, "startup")
        await _rc_op(
            lambda key: g.spdk_subsystem_init(_bridge.rc_ctx_cb, key), "spdk_subsystem_init"
        )
        g.spdk_rpc_set_state(g.SPDK_RPC_RUNTIME)
        if self._config is not None:
            await _load_config(self._config, self._stop_on_error, "runtime")

    # -- teardown ------------------------------------------------------------------------

    def stop(self) -> None:
        """Tear down whatever :meth:`start` brought up, in reverse order.  Idempotent."""
        global _active
        try:
            if self._stage >= 4 and self.thread is not None:
                self.thread.block_on(self._teardown())
            if self._stage >= 3 and self.thread is not None:
                shutdown_guests()
                self.thread.close()
            if self._stage >= 2:
                g.spdk_thread_lib_fini()
            if self._stage >= 1:
                self._stage = 0  # mark down first: nothing may allocate past this point
                g.spdk_env_fini()
        finally:
            self._stage = 0
            self.thread = None
            with _state_lock:
                if _active is self:
                    _active = None

    async def _teardown(self) -> None:
        """Close what Python still holds open, then finish every subsystem (bounded in time)."""
        await release_leftovers()
        op: Op[None] = Op("spdk_subsystem_fini")
        key = _bridge.once(lambda: op.set_result(None), op)
        g.spdk_subsystem_fini(_bridge.ctx_cb, key)
        try:
            await wait_for(op, TEARDOWN_TIMEOUT)
        except TimeoutError:
            raise SpdkError(
                errno.ETIMEDOUT, "spdk_subsystem_fini", None, "a subsystem did not finish"
            ) from None

    def __enter__(self) -> Env:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def block_on(self, aw: Awaitable[T]) -> T:
        """Run ``aw`` on the app thread until it finishes."""
        if self.thread is None:
            raise RuntimeError("Env is not started")
        return self.thread.block_on(aw)


def _config_bytes(config: str | Path | Mapping[str, Any] | None) -> bytes | None:
    if config is None:
        return None
    if isinstance(config, Mapping):
        return json.dumps(config).encode()
    if isinstance(config, Path) or (
        isinstance(config, str) and not config.lstrip().startswith("{")
    ):
        text = Path(config).read_text()
    else:
        text = config
    json.loads(text)  # a clear error now rather than a vague one from SPDK
    return text.encode()


async def _rc_op(start: Any, what: str) -> None:
    """Run a ``void f(..., spdk_subsystem_init_fn cb, void *arg)`` call and await ``rc``."""
    op: Op[int] = Op(what)
    key = _bridge.once(op.set_result, op)
    start(key)
    rc = await op
    if rc != 0:
        raise SpdkError(-rc if rc < 0 else rc, what)


async def _load_config(data: bytes, stop_on_error: bool, stage: str) -> None:
    buf = ctypes.create_string_buffer(data, len(data))
    await _rc_op(
        lambda key: g.spdk_subsystem_load_config(
            buf, len(data), _bridge.rc_ctx_cb, key, stop_on_error
        ),
        f"spdk_subsystem_load_config ({stage} methods)",
    )


def run(
    main: Awaitable[T], *, config: str | Path | Mapping[str, Any] | None = None, **options: Any
) -> T:
    """Start SPDK, run ``main`` on the app thread, tear everything down, return its result.

    ``options`` are :class:`EnvOptions` fields (``name``, ``mem_size_mb``, ...).
    On an exception or Ctrl-C the tasks are cancelled, SPDK is torn down in
    order, and the exception propagates.  A Ctrl-C during teardown does not cut
    it short (it is bounded in time): ``KeyboardInterrupt`` is raised after it.
    """
    env = Env(config=config, **options)
    try:
        env.start()
    except BaseException:
        if hasattr(main, "close"):
            main.close()  # never awaited: close it so Python does not warn
        raise
    try:
        return env.block_on(main)
    finally:
        with interrupts_deferred():  # a 2nd Ctrl-C lets teardown finish, then raises
            env.stop()


def block_on(aw: Awaitable[T]) -> T:
    """Run ``aw`` to completion on this OS thread's SPDK thread (synchronous callers)."""
    from spdk_io.thread import current_thread

    return current_thread().block_on(aw)
