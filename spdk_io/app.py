"""SPDK's application framework (``spdk_app_start``) with a coroutine as the application.

:class:`App` hands the process to SPDK's reactors, as ``spdk_tgt`` does: SPDK
parses the JSON config, starts the RPC server on ``rpc_addr``, runs one
reactor per core of ``reactor_mask`` and handles SIGINT/SIGTERM.  spdk_io's
loop is hosted by a poller on the app thread, so the coroutine and its tasks
run there exactly as under :func:`spdk_io.run`.  When the coroutine finishes,
what it left open is closed and the framework stops.

Use :class:`~spdk_io.env.Env` / :func:`~spdk_io.run` to keep control of the
process instead.  The framework initialises DPDK, so an App cannot share a
process with an Env, and SPDK supports one App per process.
"""

from __future__ import annotations

import ctypes
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from spdk_io import _bridge, env, log, trace
from spdk_io import _generated as g
from spdk_io._validate import text
from spdk_io.errors import Cancelled, SpdkError
from spdk_io.loop import Task
from spdk_io.rpc import MAX_SOCKET_PATH
from spdk_io.thread import Poller, SpdkThread, release_current

if TYPE_CHECKING:  # typing_extensions is only needed by the type checker (Python < 3.12)
    from typing_extensions import Unpack

__all__ = ["App"]

T = TypeVar("T")

@dataclass
class _State:
    thread: SpdkThread | None = None
    task: Task[Any] | None = None
    stopping: bool = False
    crash: BaseException | None = None


class App:
    """``spdk_app_start`` with the options of an Env, a JSON config and an RPC address."""

    _started = False

    def __init__(
        self,
        options: env.EnvOptions | None = None,
        *,
        config: str | Path | Mapping[str, Any] | None = None,
        rpc_addr: str | None = None,
        **kwargs: Unpack[env.EnvKwargs],
    ) -> None:
        """The same options as :class:`~spdk_io.env.Env` (an ``EnvOptions`` or its fields
        as keywords; ``core_mask`` is the reactor mask), the same ``config`` (a path, JSON
        text or a dict), and ``rpc_addr``, the unix socket SPDK serves JSON-RPC on.
        Every option is checked now (``TypeError``/``ValueError`` naming it)."""
        self.options = env.resolve_options(options, kwargs, "App")
        if self.options.extra:  # spdk_app_opts is not spdk_env_opts: nothing to apply them to
            raise TypeError("extra: App takes no raw spdk_env_opts fields (Env does)")
        self.config = env.config_bytes(config)
        if rpc_addr is not None:
            text(rpc_addr, "rpc_addr", max_len=MAX_SOCKET_PATH)
        self.rpc_addr = rpc_addr
        #: The trace file ``spdk_trace -f`` reads (with ``tpoint_group_mask``).
        self.trace_file = (
            None
            if self.options.tpoint_group_mask is None
            else trace.shm_path(self.options.name, self.options.shm_id)
        )

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Start the framework, run ``main`` on the app thread, stop; return its result."""
        try:
            env.main_interpreter_only("App.run")
            env.check_startable()
            if App._started or env.is_up():
                raise RuntimeError("SPDK supports one App per process, and not alongside an Env")
            if env.env_initialised_once():
                raise RuntimeError(
                    "an App needs a process where no Env ran before: spdk_app_start "
                    "initialises DPDK itself, which can happen once per process"
                )
        except BaseException:
            main.close()  # never awaited
            raise
        App._started = True
        state = _State()
        keep: list[Any] = []

        def b(text: str | None) -> bytes | None:
            if text is None:
                return None
            keep.append(text.encode())
            return keep[-1]  # type: ignore[no-any-return]

        o = self.options
        opts = g.struct_spdk_app_opts()
        g.spdk_app_opts_init(ctypes.byref(opts), ctypes.sizeof(opts))
        opts.name = b(o.name)
        opts.reactor_mask = b(o.core_mask)
        opts.shm_id = o.shm_id
        opts.no_huge = bool(o.no_huge)
        opts.no_pci = o.no_pci
        if o.mem_size_mb is not None:
            opts.mem_size = o.mem_size_mb
        opts.rpc_addr = b(self.rpc_addr)
        opts.main_core = o.main_core
        opts.iova_mode = b(o.iova_mode)
        opts.hugedir = b(o.hugedir)
        if self.config is not None:
            data = ctypes.create_string_buffer(self.config, len(self.config))
            keep.append(data)
            opts.json_data = ctypes.addressof(data)
            opts.json_data_size = len(self.config)
        for name, value in trace.app_opts_fields(o.tpoint_group_mask, o.trace_entries).items():
            setattr(opts, name, value)
        opts.shutdown_cb = _bridge.void_cb
        # SPDK's log is in Python from the first message on; spdk_app_fini closes it.
        log_token = o.log_to_python and log.acquire()
        if log.installed():
            opts.log = log.callback
            # At most WARN here: spdk_app_start sleeps 10 s when a print level above it
            # meets a terminal on stderr; _on_start applies the logging level after.
            opts.print_level = min(log.sync_level(), int(g.SPDK_LOG_WARN))
        _bridge.shutdown_hook = lambda: _shutdown(state)

        key = _bridge.once(lambda: _on_start(state, main, o))
        try:
            rc = g.spdk_app_start(ctypes.byref(opts), _bridge.ctx_cb, key)
        finally:
            _bridge.forget(key)
            _bridge.shutdown_hook = _bridge.no_hook
            if state.thread is not None:
                state.thread.forget()
            env.set_framework_up(False)
            g.spdk_app_fini()
            log.release(log_token, closed_by_spdk=True)
        if state.crash is not None:
            raise state.crash
        if state.task is None:
            main.close()
            raise SpdkError(-rc if rc < 0 else (rc or 5), "spdk_app_start", o.name)
        return state.task.result()  # type: ignore[no-any-return]


def _on_start(state: _State, main: Coroutine[Any, Any, Any], options: env.EnvOptions) -> None:
    """Runs on the app thread once the framework is up: host the loop in a poller."""
    env.set_framework_up(True, options)
    log.sync_level()  # spdk_app_start set SPDK's level to its own default
    thread = SpdkThread.wrap_current("app_thread")
    state.thread = thread
    loop = thread.loop
    task = loop.spawn(main, name="main")
    task.mark_observed()
    state.task = task

    def drive() -> bool:
        ran = loop.drive_once()
        if state.crash is None:
            state.crash = loop.take_crash()
            if state.crash is not None:
                task.cancel()
        if task.done() and not state.stopping:
            state.stopping = True
            finisher = loop.spawn(_finish(state, poller), name="app-teardown")
            finisher.mark_observed()
        return ran > 0

    poller = Poller(drive, name="spdk_io_loop")


async def _finish(state: _State, poller: Poller) -> None:
    """Close what the application left open, then stop the framework."""
    await release_current()  # hooks, then every open resource (RPC included)
    poller.unregister()
    failed = state.crash is not None or (state.task is not None and state.task.failed())
    g.spdk_app_stop(-1 if failed else 0)


def _shutdown(state: _State) -> None:
    """SIGINT/SIGTERM (through SPDK): cancel the application; teardown follows."""
    if state.task is not None and not state.task.done():
        state.task.cancel(Cancelled("SPDK application shutdown requested"))
    elif state.task is None:
        g.spdk_app_stop(0)
