"""Bring SPDK up in this process and tear it down again: :class:`Env` and :func:`run`.

``Env`` does what SPDK's app framework does at start, without taking over the
process: ``spdk_env_init``, the thread library, the app thread (with its
loop), a JSON config's startup methods, every registered subsystem, the RPC
state change to RUNTIME (without which runtime methods in a config are
silently skipped), and the config's runtime methods.  Leaving the ``with``
block undoes all of it in reverse order, also after an error or Ctrl-C.

Options and configs are checked before SPDK is touched.  DPDK's EAL can only
be configured once per process: a second ``Env`` reuses the first one's memory
and core options (SPDK re-initialises with NULL opts).  A failed start or
teardown leaves the process able to start again, except where SPDK itself
cannot (DPDK's EAL failed to initialise, the first subsystem init failed, a
teardown step did not finish): then every later start raises
:class:`EnvUnusableError` at once, saying why.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import threading
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar

from spdk_io import _bridge, log, trace
from spdk_io import _generated as g
from spdk_io import cores as cores_mod
from spdk_io._loader import main_interpreter
from spdk_io._validate import flag, integer, text
from spdk_io.errors import (
    CoreError,
    EnvUnusableError,
    MainInterpreterOnlyError,
    SpdkError,
    WrongThreadError,
)
from spdk_io.loop import Op, interrupts_deferred, wait_for
from spdk_io.thread import (
    SpdkThread,
    current_thread,
    release_current,
    shutdown_guests,
    stop_spawned,
)

if TYPE_CHECKING:  # typing_extensions is only needed by the type checker (Python < 3.12)
    from typing_extensions import Unpack

__all__ = ["Env", "EnvOptions", "block_on", "run"]

T = TypeVar("T")

_IOVA_MODES = ("pa", "va")

#: Least ``mem_size_mb`` that brings SPDK's subsystems up without hugepages.
#: Measured with SPDK v26.05 (every bundled module loaded, no config): 383 MiB
#: for one core, 384 for two; below it subsystem init fails, and a little below
#: SPDK crashes (a thread's message ring cannot be allocated).  Rounded up.
MIN_MEM_SIZE_MB = 400
#: Added to :data:`MIN_MEM_SIZE_MB` for each core of the mask after the first.
MEM_MB_PER_EXTRA_CORE = 2
#: Highest core number an SPDK core mask can name (``SPDK_CPUSET_SIZE``).
_MAX_CORE = 1023
#: ``struct spdk_env_opts`` fields EnvOptions sets itself (not allowed in ``extra``).
_OWN_FIELDS = frozenset(
    {
        "name",
        "core_mask",
        "shm_id",
        "no_pci",
        "no_huge",
        "main_core",
        "mem_size",
        "iova_mode",
        "hugedir",
        "opts_size",
    }
)


def _free_hugepages() -> int:
    """Hugepages this process could get: free ones plus overcommit headroom, all sizes."""
    total = 0
    try:
        for size in Path("/sys/kernel/mm/hugepages").iterdir():
            free = int((size / "free_hugepages").read_text())
            overcommit = int((size / "nr_overcommit_hugepages").read_text())
            surplus = int((size / "surplus_hugepages").read_text())
            total += free + max(0, overcommit - surplus)
    except (OSError, ValueError):
        pass
    return total


def parse_core_mask(mask: object, what: str = "core_mask") -> frozenset[int]:
    """The cores a mask names, as SPDK reads it: hex (``"0x3"``, ``"3"``) or a list
    (``"[0,2-3]"``).  ``TypeError``/``ValueError`` name ``what``."""
    mask = text(mask, what)
    cores: set[int] = set()
    if mask.startswith("["):
        body = mask[1:-1] if mask.endswith("]") else None
        try:
            for item in (body or "").split(","):
                lo, _, hi = item.strip().partition("-")
                first, last = int(lo), int(hi or lo)
                if first < 0 or last < first:
                    raise ValueError
                cores.update(range(first, last + 1))
        except ValueError:
            raise ValueError(f"{what} {mask!r} is not a core list such as '[0,2-3]'") from None
    else:
        digits = mask[2:] if mask[:2].lower() == "0x" else mask
        try:
            bits = int(digits, 16) if digits.isalnum() else -1
        except ValueError:
            bits = -1
        if bits < 0:
            raise ValueError(
                f"{what} {mask!r} is neither a hex mask such as '0x3' nor a list such as '[0,2-3]'"
            )
        cores = {i for i in range(bits.bit_length()) if bits >> i & 1}
    if not cores:
        raise ValueError(f"{what} {mask!r} selects no core")
    if max(cores) > _MAX_CORE:
        raise ValueError(f"{what} {mask!r} names core {max(cores)}; SPDK allows 0..{_MAX_CORE}")
    return frozenset(cores)


def min_mem_size_mb(cores: int) -> int:
    """The least ``mem_size_mb`` for an environment without hugepages on ``cores`` cores."""
    return MIN_MEM_SIZE_MB + MEM_MB_PER_EXTRA_CORE * max(0, cores - 1)


@dataclass(frozen=True)
class EnvOptions:
    """Options for ``spdk_env_init`` (see ``struct spdk_env_opts``), checked on creation.

    Every field is type-checked (``TypeError`` naming it) and range-checked
    (``ValueError`` naming it) here, before SPDK is touched: DPDK's EAL cannot be
    initialised again in a process once it failed, so bad options must never
    reach it.

    ``no_huge=None`` picks hugepages when the machine has free ones and plain
    memory otherwise, so one program runs in a container and on a lab server.
    ``mem_size_mb=None`` means 512 MiB without hugepages and SPDK's default
    with them.  ``extra`` sets further ``struct spdk_env_opts`` fields by name.

    ``log_to_python`` sends SPDK's log to :mod:`logging` while SPDK is up
    (:mod:`spdk_io.log`); ``False`` leaves it to SPDK (stderr).  ``tpoint_group_mask``
    (SPDK's ``-e``: ``"bdev"``, ``"0x8"``, ``"bdev,nvmf_tcp"``) records those SPDK
    tracepoints, ``trace_entries`` per core, for ``spdk_trace`` (:mod:`spdk_io.trace`).
    """

    name: str = "spdk_io"
    core_mask: str = "0x1"
    mem_size_mb: int | None = None
    shm_id: int = -1
    no_pci: bool = True
    no_huge: bool | None = None
    main_core: int = -1
    iova_mode: Literal["pa", "va"] | None = None
    hugedir: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    log_to_python: bool = True
    tpoint_group_mask: str | None = None
    trace_entries: int = trace.DEFAULT_ENTRIES

    def __post_init__(self) -> None:
        def set_(name: str, value: object) -> None:
            object.__setattr__(self, name, value)  # frozen: store the canonical value

        set_("name", text(self.name, "name", max_len=255))
        cores = parse_core_mask(self.core_mask, "core_mask")
        if self.mem_size_mb is not None:
            set_("mem_size_mb", integer(self.mem_size_mb, "mem_size_mb", lo=1, hi=2**31 - 1))
        set_("shm_id", integer(self.shm_id, "shm_id", lo=-1, hi=2**31 - 1))
        flag(self.no_pci, "no_pci")
        if self.no_huge is not None:
            flag(self.no_huge, "no_huge")
        set_("main_core", integer(self.main_core, "main_core", lo=-1, hi=_MAX_CORE))
        if self.main_core != -1 and self.main_core not in cores:
            raise ValueError(
                f"main_core {self.main_core} is not one of the cores of core_mask "
                f"{self.core_mask!r} ({sorted(cores)})"
            )
        if self.iova_mode is not None:
            text(self.iova_mode, "iova_mode")
            if self.iova_mode not in _IOVA_MODES:
                raise ValueError(f"iova_mode must be one of {_IOVA_MODES}, got {self.iova_mode!r}")
        if self.hugedir is not None:
            text(self.hugedir, "hugedir")
            if not Path(self.hugedir).is_dir():
                raise ValueError(f"hugedir {self.hugedir!r} is not a directory")
        set_("extra", _check_extra(self.extra))
        flag(self.log_to_python, "log_to_python")
        if self.tpoint_group_mask is not None:
            set_("tpoint_group_mask", trace.check_mask(self.tpoint_group_mask))
        set_("trace_entries", trace.check_entries(self.trace_entries))

    @property
    def cores(self) -> frozenset[int]:
        """The cores ``core_mask`` selects."""
        return parse_core_mask(self.core_mask)

    def resolved(self) -> EnvOptions:
        """These options with ``no_huge`` and ``mem_size_mb`` decided for this machine.

        Raises ``ValueError`` (naming the option) for a choice this machine cannot
        honour: hugepages it does not have, or too little memory without them.
        """
        free = _free_hugepages()
        if self.no_huge is False and free == 0:
            raise ValueError(
                "no_huge=False asks for hugepages, but this machine has none free "
                "(/sys/kernel/mm/hugepages); use no_huge=True or leave it None"
            )
        no_huge = self.no_huge if self.no_huge is not None else free == 0
        mem = self.mem_size_mb if self.mem_size_mb is not None else (512 if no_huge else None)
        if no_huge and mem is not None:
            least = min_mem_size_mb(len(self.cores))
            if mem < least:
                raise ValueError(
                    f"mem_size_mb={mem} is too small: without hugepages SPDK's subsystems "
                    f"need at least {least} MiB on {len(self.cores)} core(s)"
                )
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
            setattr(opts, key, value)
        return opts, keep


def _check_extra(extra: object) -> dict[str, Any]:
    """``extra`` as a dict of ``struct spdk_env_opts`` fields that take the values given."""
    if not isinstance(extra, Mapping):
        raise TypeError(
            f"extra must be a mapping of field names to values, not {type(extra).__name__}"
        )
    fields = {f[0] for f in g.struct_spdk_env_opts._fields_}
    probe = g.struct_spdk_env_opts()
    for key, value in extra.items():
        if not isinstance(key, str) or key not in fields:
            raise ValueError(f"extra: struct spdk_env_opts has no field {key!r}")
        if key in _OWN_FIELDS or key.startswith("reserved"):
            raise ValueError(f"extra: set {key!r} with its EnvOptions field, not through extra")
        try:
            setattr(probe, key, value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"extra[{key!r}]: {exc}") from None
    return dict(extra)


class EnvKwargs(TypedDict, total=False):
    """The keyword options :func:`run` and :class:`Env` accept: :class:`EnvOptions` fields."""

    name: str
    core_mask: str
    mem_size_mb: int | None
    shm_id: int
    no_pci: bool
    no_huge: bool | None
    main_core: int
    iova_mode: Literal["pa", "va"] | None
    hugedir: str | None
    extra: Mapping[str, Any]
    log_to_python: bool
    tpoint_group_mask: str | None
    trace_entries: int


def resolve_options(options: EnvOptions | None, kwargs: Mapping[str, Any], who: str) -> EnvOptions:
    """The resolved options of ``Env``/``run``/``App``: ``options`` or the keywords, not both."""
    unknown = sorted(set(kwargs) - set(EnvKwargs.__annotations__))
    if unknown:
        raise TypeError(
            f"{who} got unknown option(s) {', '.join(map(repr, unknown))}; the options are "
            f"{', '.join(EnvKwargs.__annotations__)}"
        )
    if options is not None and kwargs:
        raise TypeError(f"{who}: pass EnvOptions or keyword options, not both")
    if options is not None and not isinstance(options, EnvOptions):
        raise TypeError(f"options must be EnvOptions, not {type(options).__name__}")
    return (options or EnvOptions(**kwargs)).resolved()


#: Seconds each teardown step may take before it is abandoned.
TEARDOWN_TIMEOUT = 10.0
_log = logging.getLogger("spdk_io")


_state_lock = threading.Lock()
_framework_up = False  # set while spdk_io.app.App runs SPDK's app framework
_first_options: EnvOptions | None = None  # EAL options are fixed by the first init
_active: Env | None = None
#: Why SPDK cannot be started again in this process (None while it can).
_unusable: str | None = None
#: Whether spdk_subsystem_init ever succeeded in this process (see _init_subsystems).
_subsystems_were_up = False


def is_up() -> bool:
    """Whether SPDK's environment is initialised in this process (by an Env or an App,
    or, in a core's worker interpreter, by the main interpreter: see :func:`join`)."""
    active = _active
    return _joined or _framework_up or (active is not None and active._stage >= 1)


#: Whether this interpreter is Python's main one (fixed for its life).
_MAIN_INTERPRETER = main_interpreter()
#: Set once in a core's worker interpreter: SPDK is up, run by the main interpreter.
_joined = False


def in_main_interpreter() -> bool:
    """Whether this code runs in Python's main interpreter (not a core's worker)."""
    return _MAIN_INTERPRETER


def main_interpreter_only(what: str) -> None:
    """Raise :class:`MainInterpreterOnlyError` in a worker interpreter: ``what`` would
    make SPDK create threads or register callbacks process-wide, which SPDK then calls
    on whatever OS thread it runs, in the wrong interpreter."""
    if not _MAIN_INTERPRETER:
        raise MainInterpreterOnlyError(
            f"{what} is for the main interpreter only: SPDK would call this worker "
            "interpreter's callbacks from other OS threads; do it in the main interpreter "
            "(spdk_io.cores.run_on the main core)"
        )


def join() -> None:
    """In a core's worker interpreter: SPDK is up (the main interpreter runs it), so
    DMA buffers, bdevs and the rest work here; this interpreter never starts or stops it."""
    global _joined
    if _MAIN_INTERPRETER:
        raise RuntimeError("env.join() is for the worker interpreters of spdk_io.cores")
    _joined = True


def check_cores_supported(options: EnvOptions) -> None:
    """Raise :class:`CoreError` if ``options`` name more cores than this Python can run
    (one isolated interpreter per extra core needs Python 3.13+ with own-GIL interpreters)."""
    if len(options.cores) <= 1:
        return
    why = cores_mod.unsupported_reason()
    if why is not None:
        raise CoreError(
            f"core_mask {options.core_mask!r} selects {len(options.cores)} cores, but {why}; "
            "use one core (core_mask='0x1'), or Python 3.13+"
        )


def check_startable() -> None:
    """Raise :class:`EnvUnusableError` if an earlier failure left SPDK unable to start again."""
    if _unusable is not None:
        raise EnvUnusableError(f"SPDK cannot be started again in this process: {_unusable}")


def mark_unusable(reason: str) -> None:
    """Record that SPDK cannot be started again in this process (the first reason wins)."""
    global _unusable
    if _unusable is None:
        _unusable = reason
        _log.error("SPDK cannot be started again in this process: %s", reason)


def set_framework_up(up: bool, options: EnvOptions | None = None) -> None:
    """Mark SPDK's app framework (:class:`~spdk_io.app.App`) as running or stopped.

    ``options`` are those the framework initialised DPDK with: later Envs
    re-initialise SPDK's environment with them, as after a first Env.
    """
    global _framework_up, _first_options
    _framework_up = up
    if options is not None and _first_options is None:
        _first_options = options


def framework_running() -> bool:
    """Whether SPDK's app framework (:class:`~spdk_io.app.App`) runs in this process now."""
    return _framework_up


def env_initialised_once() -> bool:
    """Whether SPDK's environment (DPDK's EAL) was initialised in this process already."""
    return _first_options is not None


def _memory_hint() -> str:
    """What to say when SPDK ran out of memory: the option that decides how much there is."""
    first = _first_options
    if first is None or first.mem_size_mb is None:
        return "SPDK ran out of (hugepage) memory; set mem_size_mb or free hugepages"
    least = min_mem_size_mb(len(first.cores)) if first.no_huge else None
    need = f" (at least {least} MiB without hugepages)" if least else ""
    return (
        f"SPDK ran out of memory: mem_size_mb={first.mem_size_mb}{need} is too small for "
        "what this process does; the first Env of a process fixes it for every later one"
    )


class Env:
    """SPDK's environment, thread library, app thread and subsystems, as a context manager.

    ``config`` is a JSON config (a path, a ``str`` of JSON, or a dict) in the
    format of ``spdk_tgt --json``; its structure and method names are checked
    before SPDK starts.  Options are an :class:`EnvOptions` or its fields as
    keywords.  An Env can be started again after it stopped; one Env runs at a
    time in a process.

    A ``core_mask`` of more than one core starts, after everything else, a worker
    interpreter per extra core (:mod:`spdk_io.cores`, Python 3.13+; before that,
    :class:`~spdk_io.errors.CoreError` here, before SPDK is touched); stopping
    stops them first.
    """

    def __init__(
        self,
        options: EnvOptions | None = None,
        *,
        config: str | Path | Mapping[str, Any] | None = None,
        stop_on_error: bool = True,
        **kwargs: Unpack[EnvKwargs],
    ) -> None:
        self.options = resolve_options(options, kwargs, "Env")
        check_cores_supported(self.options)
        self._config = config_bytes(config)
        self._stop_on_error = flag(stop_on_error, "stop_on_error")
        self.thread: SpdkThread | None = None
        self._stage = 0
        self._owner: int | None = None  # the OS thread that started it
        self._log_token = False  # whether this Env's start installed spdk_io.log
        self._tracing = False
        self._cores: cores_mod.Cores | None = None
        #: The trace file ``spdk_trace -f`` reads (with ``tpoint_group_mask``), kept after stop.
        self.trace_file: Path | None = None

    def __repr__(self) -> str:
        return f"<Env {self.options.name} {'up' if self._stage else 'down'}>"

    # -- bring-up ------------------------------------------------------------------------

    def start(self) -> Env:
        """Bring SPDK up; on failure, tear down what came up and raise.

        Raises :class:`EnvUnusableError` at once if an earlier failure in this
        process left SPDK unable to start again.
        """
        global _active
        main_interpreter_only("Env.start")
        with _state_lock:
            if _active is not None:
                raise RuntimeError("an spdk_io Env is already running in this process")
            if _framework_up:
                raise RuntimeError("SPDK's app framework (spdk_io.App) is running in this process")
            check_startable()
            _active = self
        self._owner = threading.get_ident()
        try:
            # A Ctrl-C waits until every step is done (or failed) and recorded in _stage,
            # then is raised here and tears down what came up: nothing is left half-done.
            with interrupts_deferred():
                # SPDK's log is in Python from the first message on (env init's too).
                self._log_token = self.options.log_to_python and log.acquire()
                self._env_init()
                self._stage = 1
                o = self.options
                if o.tpoint_group_mask is not None:
                    self.trace_file = trace.start(
                        o.name, o.shm_id, o.tpoint_group_mask, o.trace_entries
                    )
                    self._tracing = True
                rc = g.spdk_thread_lib_init(_bridge.new_thread_cb, 0)
                if rc == -errno.ENOMEM:
                    raise SpdkError(-rc, "spdk_thread_lib_init", None, _memory_hint())
                SpdkError.check(rc, "spdk_thread_lib_init")
                self._stage = 2
                self.thread = SpdkThread.create("app_thread", host=True)
                self._stage = 3
                self._check_config_methods()
                self._stage = 4  # from here on, teardown runs spdk_subsystem_fini (as app.c)
                self.thread.block_on(self._init_subsystems())
                # Last: the worker interpreters of the other cores (cores_mod.run_on).
                self._cores = cores_mod.Cores(self.options, self.thread)
                self._cores.start()
        except BaseException as exc:
            _stop_while_raising(self, exc)
            raise
        return self

    def _env_init(self) -> None:
        """``spdk_env_init``: with the options the first time, with NULL (re-init) after."""
        global _first_options
        if _first_options is not None:
            SpdkError.check(g.spdk_env_init(None), "spdk_env_init", self.options.name)
            return
        _check_cores_available(self.options)
        opts, keep = self.options.to_c()
        rc = g.spdk_env_init(ctypes.byref(opts))
        del keep
        if rc != 0:
            err = SpdkError(-rc if rc < 0 else rc, "spdk_env_init", self.options.name)
            # DPDK's rte_eal_init keeps the options of a failed attempt (its argument
            # table is never reset) and merges them into the next one, and a failure
            # after its memory setup is not undone: it cannot be initialised again.
            mark_unusable(f"{err} (DPDK's EAL cannot be initialised again after a failure)")
            raise err
        _first_options = self.options

    def _check_config_methods(self) -> None:
        """Refuse a config that names a method SPDK does not have (SPDK says only ENOENT)."""
        if self._config is None or not self._stop_on_error:
            return
        for subsystem, method in _config_methods(json.loads(self._config)):
            mask = ctypes.c_uint32()
            known = g.spdk_rpc_get_method_state_mask(method.encode(), ctypes.byref(mask)) == 0
            # As SPDK does: a method of a subsystem that is not linked in is skipped.
            if not known and g.spdk_subsystem_exists(subsystem.encode()):
                raise SpdkError(
                    errno.ENOENT,
                    "spdk_subsystem_load_config",
                    None,
                    f"config method {method!r} (subsystem {subsystem!r}) does not exist",
                )

    async def _init_subsystems(self) -> None:
        global _subsystems_were_up
        # The RPC state is process-wide: a config's startup methods run only in STARTUP.
        g.spdk_rpc_set_state(g.SPDK_RPC_STARTUP)
        if self._config is not None:
            await _load_config(self._config, self._stop_on_error, "startup")
        try:
            await _rc_op(
                lambda key: g.spdk_subsystem_init(_bridge.rc_ctx_cb, key), "spdk_subsystem_init"
            )
        except SpdkError as exc:
            if not _subsystems_were_up:
                # lib/init/subsystem.c: spdk_subsystem_fini after a failed first init sets
                # g_subsystems_init_interrupted, which nothing clears; every later
                # spdk_subsystem_init then returns without calling back (a hang).
                mark_unusable(
                    f"{exc} before SPDK's subsystems ever came up in this process, and "
                    "SPDK cannot initialise them again after that"
                )
            if exc.errno == errno.ENOMEM:
                raise SpdkError(exc.errno, exc.op, None, _memory_hint()) from None
            raise
        _subsystems_were_up = True
        g.spdk_rpc_set_state(g.SPDK_RPC_RUNTIME)
        if self._config is not None:
            await _load_config(self._config, self._stop_on_error, "runtime")

    # -- teardown ------------------------------------------------------------------------

    def stop(self) -> None:
        """Tear down whatever :meth:`start` brought up, in reverse order.  Idempotent.

        Only the OS thread that started the Env may stop it: from any other,
        :class:`~spdk_io.errors.WrongThreadError` is raised and nothing changes.
        If a step fails (a subsystem that does not finish, a thread that does not
        exit), what is left is leaked rather than freed under SPDK's feet, and
        later starts raise :class:`EnvUnusableError` naming the failure.
        """
        if self._stage == 0:
            self._release()  # a start that failed before SPDK came up
            return
        if threading.get_ident() != self._owner:
            raise WrongThreadError(
                f"Env {self.options.name} was started by another OS thread; stop it there"
            )
        if self.thread is not None and self.thread.loop.running:
            raise RuntimeError(
                f"Env {self.options.name} cannot stop from inside its own loop: "
                "return from main (or leave the block_on) first"
            )
        # A Ctrl-C waits until teardown (bounded in time) has finished, then is raised.
        with interrupts_deferred():
            try:
                if self._stage >= 4 and self.thread is not None:
                    # Tasks main left running unwind now, while SPDK is still up.
                    self.thread.loop.cancel_all()
                    if self._cores is not None:
                        # Every core releases what it holds and exits before SPDK's
                        # subsystems finish (they would wait for its descriptors).
                        cores, self._cores = self._cores, None
                        cores.stop()
                    self.thread.block_on(self._teardown())
                    self._stage = 3
                if self._stage >= 3 and self.thread is not None:
                    shutdown_guests()
                    self.thread.close()
                    self._stage = 2
                if self._stage >= 2:
                    g.spdk_thread_lib_fini()
                    self._stage = 1
                if self._stage >= 1:
                    self._stage = 0  # mark down first: nothing may allocate past this point
                    if self._tracing:
                        self._tracing = False
                        trace.stop()
                    g.spdk_env_fini()
            except BaseException as exc:
                mark_unusable(f"tearing SPDK down failed: {exc}")
                raise
            finally:
                self._release()

    def _release(self) -> None:
        """Forget this Env's bring-up: it no longer holds the process."""
        global _active
        self._stage = 0
        self.thread = None
        # After SPDK's own teardown has logged: its log goes back to SPDK.
        log.release(self._log_token)
        self._log_token = False
        with _state_lock:
            if _active is self:
                _active = None

    async def _teardown(self) -> None:
        """Stop spawned threads, close what Python still holds open, then finish every
        subsystem (each step bounded in time)."""
        await stop_spawned()
        await release_current()  # hooks, then every open resource (RPC included)
        op: Op[None] = Op("spdk_subsystem_fini")
        key = _bridge.once(lambda: op.set_result(None), op)
        g.spdk_subsystem_fini(_bridge.ctx_cb, key)
        try:
            await wait_for(op, TEARDOWN_TIMEOUT)
        except TimeoutError:
            raise SpdkError(
                errno.ETIMEDOUT, "spdk_subsystem_fini", None, "a subsystem did not finish"
            ) from None
        g.spdk_rpc_set_state(g.SPDK_RPC_STARTUP)  # as a fresh process has it

    def __enter__(self) -> Env:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def block_on(self, aw: Awaitable[T]) -> T:
        """Run ``aw`` on the app thread until it finishes."""
        if self.thread is None:
            raise RuntimeError("Env is not started")
        return self.thread.block_on(aw)


def _check_cores_available(options: EnvOptions) -> None:
    """Refuse cores this process may not run on (DPDK would fail, for good)."""
    try:
        allowed = os.sched_getaffinity(0)
    except OSError:
        return
    missing = sorted(options.cores - allowed)
    if missing:
        raise ValueError(
            f"core_mask {options.core_mask!r} selects core(s) {missing}, but this process "
            f"may only run on {sorted(allowed)}"
        )


def config_bytes(config: str | Path | Mapping[str, Any] | None) -> bytes | None:
    """A JSON config (a path, JSON text or a mapping) as bytes, its structure checked.

    ``ValueError`` names what is wrong; nothing is sent to SPDK.
    """
    if config is None:
        return None
    if isinstance(config, Mapping):
        text_ = json.dumps(config)
    elif isinstance(config, Path) or (
        isinstance(config, str) and not config.lstrip().startswith("{")
    ):
        text_ = Path(config).read_text()
    elif isinstance(config, str):
        text_ = config
    else:
        raise TypeError(
            f"config must be a path, JSON text or a mapping, not {type(config).__name__}"
        )
    try:
        data = json.loads(text_)
    except ValueError as exc:
        raise ValueError(f"config is not valid JSON: {exc}") from None
    list(_config_methods(data))  # a clear error now rather than a vague one from SPDK
    return text_.encode()


def _config_methods(data: object) -> Iterator[tuple[str, str]]:
    """``(subsystem, method)`` for every entry of a config; ``ValueError`` if malformed."""
    if not isinstance(data, dict):
        raise ValueError(f"config must be a JSON object, not {type(data).__name__}")
    subsystems = data.get("subsystems", [])
    if not isinstance(subsystems, list):
        raise ValueError("config: 'subsystems' must be a list")
    for i, sub in enumerate(subsystems):
        name = sub.get("subsystem") if isinstance(sub, dict) else None
        if not isinstance(name, str):
            raise ValueError(f"config: subsystems[{i}] needs a 'subsystem' name")
        entries = sub.get("config") or []
        if not isinstance(entries, list):
            raise ValueError(f"config: subsystem {name!r}: 'config' must be a list")
        for j, entry in enumerate(entries):
            for e in entry if isinstance(entry, list) else [entry]:  # a list is a batch
                method = e.get("method") if isinstance(e, dict) else None
                if not isinstance(method, str) or not method:
                    raise ValueError(f"config: subsystem {name!r} entry {j} needs a 'method' name")
                yield name, method


async def _rc_op(start: Any, what: str) -> None:
    """Run a ``void f(..., spdk_subsystem_init_fn cb, void *arg)`` call and await ``rc``."""
    op, key = _bridge.status_op(what)
    start(key)
    await op


async def _load_config(data: bytes, stop_on_error: bool, stage: str) -> None:
    buf = ctypes.create_string_buffer(data, len(data))
    await _rc_op(
        lambda key: g.spdk_subsystem_load_config(
            buf, len(data), _bridge.rc_ctx_cb, key, stop_on_error
        ),
        f"spdk_subsystem_load_config ({stage} methods)",
    )


def run(
    main: Awaitable[T],
    *,
    config: str | Path | Mapping[str, Any] | None = None,
    **options: Unpack[EnvKwargs],
) -> T:
    """Start SPDK, run ``main`` on the app thread, tear everything down, return its result.

    ``options`` are :class:`EnvOptions` fields (``name``, ``mem_size_mb``, ...);
    anything else is a ``TypeError``.  On an exception or Ctrl-C the tasks are
    cancelled, SPDK is torn down in order, and the exception propagates (a
    teardown failure is added to it as a note).  A Ctrl-C during teardown does
    not cut it short (it is bounded in time): ``KeyboardInterrupt`` is raised after it.
    """
    try:
        env = Env(config=config, **options)
        env.start()
    except BaseException:
        if hasattr(main, "close"):
            main.close()  # never awaited: close it so Python does not warn
        raise
    try:
        result = env.block_on(main)
    except BaseException as exc:
        _stop_while_raising(env, exc)
        raise
    env.stop()
    return result


def _stop_while_raising(env: Env, exc: BaseException) -> None:
    """Tear ``env`` down while ``exc`` propagates: a teardown failure becomes a note on
    ``exc`` instead of replacing it."""
    try:
        env.stop()
    except BaseException as teardown:
        exc.add_note(f"teardown failed too: {teardown!r}")


def block_on(aw: Awaitable[T]) -> T:
    """Run ``aw`` to completion on this OS thread's SPDK thread (synchronous callers)."""
    return current_thread().block_on(aw)
