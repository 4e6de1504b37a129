"""An NVMe-oF target hosted in this process: transports, listeners, subsystems.

:class:`Target` is a target of its own (``spdk_nvmf_tgt_create`` under its name), next
to the default one SPDK's nvmf subsystem makes; SPDK's RPC methods reach it with
``"tgt_name": target.name``.  It lives on the SPDK thread that created it and makes
one poll group there, so the connections it accepts are served by that thread's loop.

Teardown (``await target.destroy()``, ``aclose()``, or the thread's release at Env
stop) goes in SPDK's order: every subsystem is stopped (hosts disconnected), then
destroyed; then the poll group is destroyed on its thread; then the target (with its
transports and listeners).  A synchronous ``close()`` does the same once no subsystem
is active (it refuses with ``BlockingIOError`` otherwise): it starts SPDK's
asynchronous steps and returns; :attr:`Target.destroyed` tells when they are done.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
from collections.abc import Callable
from typing import Any, Self

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io._validate import flag, integer, text
from spdk_io.completion import Ending
from spdk_io.env import main_interpreter_only
from spdk_io.errors import SpdkError
from spdk_io.loop import Op
from spdk_io.nvme.transport import TransportId
from spdk_io.nvmf.options import (
    DISCOVERY_NQN,
    MAX_TARGET_NAME,
    TargetOptions,
    TransportOptions,
    check_model,
    check_nqn,
    check_serial,
)
from spdk_io.nvmf.subsystem import Subsystem, listen_address
from spdk_io.resource import Resource
from spdk_io.thread import SpdkThread, current_thread

__all__ = ["Target"]

_log = logging.getLogger("spdk_io")
_U32 = 2**32 - 1
#: Namespaces a subsystem takes unless told otherwise (as SPDK's nvmf_create_subsystem).
DEFAULT_MAX_NAMESPACES = 32


class Target(Resource):
    """An NVMe-oF target with one poll group on its SPDK thread (see the module docstring).

    Make one with ``await Target.create(name)``.  Every method refuses, with
    :class:`~spdk_io.errors.SpdkError` (``ENODEV``), once it is destroyed, and with
    :class:`~spdk_io.errors.WrongThreadError` from another OS thread.
    """

    def __init__(self, ptr: Any, name: str, options: TargetOptions, thread: SpdkThread) -> None:
        self._ptr = ptr  # struct spdk_nvmf_tgt *; None once destroy has started
        self.name = name
        self.options = options
        self.thread = thread
        self._listening: list[TransportId] = []  # addresses the target listens on
        # One poll group per SPDK thread that serves the target: (thread, group pointer).
        self._poll_groups: list[tuple[SpdkThread, Any]] = []
        # Subsystems made here and not yet freed by SPDK (the target is destroyed after).
        self._made: list[Subsystem] = []
        # Finished once SPDK has destroyed the target (``spdk_nvmf_tgt_destroy`` is async).
        self._ending = Ending(f"destroy target {name}")
        super().__init__(thread)

    @classmethod
    async def create(cls, name: str, options: TargetOptions | None = None) -> Target:
        """Create the target ``name`` and its poll group on the current SPDK thread.

        ``ValueError`` for a bad or taken name, before anything is made.
        """
        main_interpreter_only("nvmf.Target.create")
        name = text(name, "name", max_len=MAX_TARGET_NAME)
        options = options if options is not None else TargetOptions()
        if not isinstance(options, TargetOptions):
            raise TypeError(f"options must be TargetOptions, not {type(options).__name__}")
        thread = current_thread()
        if g.spdk_nvmf_get_tgt(name.encode()):
            raise ValueError(f"an NVMe-oF target named {name!r} exists already")
        opts = options.to_c(name)
        ptr = g.spdk_nvmf_tgt_create(ctypes.byref(opts))
        if not ptr:
            raise SpdkError(errno.ENOMEM, "spdk_nvmf_tgt_create", name, "see SPDK's log")
        target = cls(ptr, name, options, thread)
        try:
            target._add_poll_group(thread)
        except BaseException:
            await target.aclose()
            raise
        return target

    def __repr__(self) -> str:
        return f"<Target {self.name}{' destroyed' if self.closed else ''}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def destroyed(self) -> bool:
        """Whether SPDK has destroyed the target (it may take a while after ``close()``)."""
        return self._ending.done()

    def when_destroyed(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` once SPDK has destroyed the target (now, if it has)."""
        self._ending.then(fn)

    def _live(self, what: str) -> Any:
        if self.closed or self._ptr is None:
            raise SpdkError(errno.ENODEV, what, self.name, "the target was destroyed")
        self.thread.check_owner()
        return self._ptr

    @property
    def ptr(self) -> Any:
        """The raw ``struct spdk_nvmf_tgt *`` (for the generated layer)."""
        return self._live("ptr")

    def _add_poll_group(self, thread: SpdkThread) -> None:
        group = g.spdk_nvmf_poll_group_create(self._live("spdk_nvmf_poll_group_create"))
        if not group:
            raise SpdkError(errno.ENOMEM, "spdk_nvmf_poll_group_create", self.name)
        self._poll_groups.append((thread, group))

    # -- transports ----------------------------------------------------------------------

    @property
    def transports(self) -> list[str]:
        """The transport types the target has (``"TCP"``, ...)."""
        ptr = self._live("transports")
        out = []
        transport = g.spdk_nvmf_transport_get_first(ptr)
        while transport:
            out.append((g.spdk_nvmf_get_transport_name(transport) or b"").decode())
            transport = g.spdk_nvmf_transport_get_next(transport)
        return out

    async def add_transport(self, trtype: str, options: TransportOptions | None = None) -> None:
        """Create a transport (``"TCP"``, ``"RDMA"``, ...) and add it to the target and
        its poll groups.  ``ValueError`` for a type SPDK does not have or that the target
        has already, before anything is made."""
        trtype = text(trtype, "trtype", max_len=31).upper()
        options = options if options is not None else TransportOptions()
        if not isinstance(options, TransportOptions):
            raise TypeError(f"options must be TransportOptions, not {type(options).__name__}")
        ptr = self._live("spdk_nvmf_transport_create_async")
        opts = options.to_c(trtype)  # ValueError for an unknown type
        if g.spdk_nvmf_tgt_get_transport(ptr, trtype.encode()):
            raise ValueError(f"target {self.name} has a {trtype} transport already")
        created: Op[Any] = Op("spdk_nvmf_transport_create_async")
        created.keep = opts
        key = _bridge.once(created.set_result, created)
        rc = g.spdk_nvmf_transport_create_async(
            trtype.encode(), ctypes.byref(opts), _bridge.transport_created_cb, key
        )
        if rc != 0:
            _bridge.forget(key)
            raise SpdkError(-rc, "spdk_nvmf_transport_create_async", trtype)
        transport = await created
        if not transport:
            raise SpdkError(
                errno.EINVAL, "spdk_nvmf_transport_create_async", trtype, "see SPDK's log"
            )
        if self.closed:  # destroyed while the transport was made: give it back
            g.spdk_nvmf_transport_destroy(transport, None, None)
            raise SpdkError(
                errno.ENODEV, "spdk_nvmf_tgt_add_transport", self.name, "the target was destroyed"
            )
        added, key = _bridge.status_op("spdk_nvmf_tgt_add_transport", f"{self.name} {trtype}")
        g.spdk_nvmf_tgt_add_transport(self._ptr, transport, _bridge.ctx_status_cb, key)
        await added

    # -- listeners -----------------------------------------------------------------------

    @property
    def listening(self) -> list[TransportId]:
        """The addresses the target accepts connections on (made through this object)."""
        self._live("listening")
        return list(self._listening)

    def listen(self, address: TransportId | str, *, secure_channel: bool = False) -> TransportId:
        """Start accepting connections at ``address`` (``spdk_nvmf_tgt_listen_ext``);
        subsystems then take connections there once they have it as a listener.

        ``ValueError`` if the target listens there already; ``SpdkError`` if SPDK
        refuses (no transport of that type, address in use).
        """
        trid = listen_address(address)
        flag(secure_channel, "secure_channel")
        ptr = self._live("spdk_nvmf_tgt_listen_ext")
        if trid in self._listening:
            raise ValueError(f"target {self.name} already listens on {trid}")
        opts = g.struct_spdk_nvmf_listen_opts()
        g.spdk_nvmf_listen_opts_init(ctypes.byref(opts), ctypes.sizeof(opts))
        opts.secure_channel = secure_channel
        rc = g.spdk_nvmf_tgt_listen_ext(ptr, ctypes.byref(trid.to_c()), ctypes.byref(opts))
        SpdkError.check(rc, "spdk_nvmf_tgt_listen_ext", str(trid))
        self._listening.append(trid)
        return trid

    def ensure_listening(self, address: TransportId | str) -> TransportId:
        """:meth:`listen` at ``address`` unless the target listens there already."""
        trid = listen_address(address)
        if trid in self.listening:
            return trid
        return self.listen(trid)

    def stop_listening(self, address: TransportId | str) -> None:
        """Stop accepting connections at ``address`` (``spdk_nvmf_tgt_stop_listen``);
        ``LookupError`` if the target does not listen there."""
        trid = listen_address(address)
        ptr = self._live("spdk_nvmf_tgt_stop_listen")
        if trid not in self._listening:
            raise LookupError(f"target {self.name} does not listen on {trid}")
        rc = g.spdk_nvmf_tgt_stop_listen(ptr, ctypes.byref(trid.to_c()))
        SpdkError.check(rc, "spdk_nvmf_tgt_stop_listen", str(trid))
        self._listening.remove(trid)

    # -- subsystems ----------------------------------------------------------------------

    @property
    def subsystems(self) -> list[Subsystem]:
        """The subsystems made through this object that are not destroyed, oldest first."""
        self._live("subsystems")
        return [s for s in self._subsystems() if not s.closed]

    def _subsystems(self) -> list[Subsystem]:
        return [s for s in self._made if not s.closed]

    def subsystem(self, nqn: str) -> Subsystem:
        """The subsystem ``nqn`` made through this object; ``LookupError`` if none."""
        for sub in self.subsystems:
            if sub.nqn == nqn:
                return sub
        raise LookupError(f"target {self.name} has no subsystem {nqn!r} (made here)")

    async def create_subsystem(
        self,
        nqn: str,
        *,
        serial: str | None = None,
        model: str | None = None,
        allow_any_host: bool = False,
        max_namespaces: int = DEFAULT_MAX_NAMESPACES,
        hosts: tuple[str, ...] | list[str] = (),
    ) -> Subsystem:
        """Create an NVMe subsystem, inactive (:meth:`Subsystem.start` it).

        Hosts are denied unless ``allow_any_host`` or listed in ``hosts``.  Every
        argument is checked first: a malformed NQN or a taken one is a ``ValueError``
        and nothing is made.
        """
        nqn = check_nqn(nqn)
        if nqn == DISCOVERY_NQN:
            raise ValueError("use add_discovery_subsystem() for the discovery subsystem")
        opts = g.struct_spdk_nvmf_subsystem_opts()
        g.spdk_nvmf_subsystem_opts_init(
            g.SPDK_NVMF_SUBTYPE_NVME, ctypes.byref(opts), ctypes.sizeof(opts)
        )
        opts.max_namespaces = integer(max_namespaces, "max_namespaces", lo=0, hi=_U32)
        if serial is not None:
            opts.sn = check_serial(serial).encode()
        if model is not None:
            opts.mn = check_model(model).encode()
        flag(allow_any_host, "allow_any_host")
        host_nqns = [check_nqn(h, "hosts[]") for h in hosts]
        if len(set(host_nqns)) != len(host_nqns):
            raise ValueError(f"hosts lists a host twice: {host_nqns}")
        return self._make_subsystem(nqn, g.SPDK_NVMF_SUBTYPE_NVME, opts, allow_any_host, host_nqns)

    async def add_discovery_subsystem(self, *, allow_any_host: bool = True) -> Subsystem:
        """Create and start the discovery subsystem (``nqn.2014-08.org.nvmexpress.discovery``),
        which lists the target's listeners to hosts (filtered by
        :attr:`TargetOptions.discovery_filter`).  Listen on an address and add it as a
        listener (``sub.add_listener``) for hosts to reach it."""
        flag(allow_any_host, "allow_any_host")
        opts = g.struct_spdk_nvmf_subsystem_opts()
        g.spdk_nvmf_subsystem_opts_init(
            g.SPDK_NVMF_SUBTYPE_DISCOVERY_CURRENT, ctypes.byref(opts), ctypes.sizeof(opts)
        )
        opts.max_namespaces = 0
        sub = self._make_subsystem(
            DISCOVERY_NQN, g.SPDK_NVMF_SUBTYPE_DISCOVERY_CURRENT, opts, allow_any_host, []
        )
        await sub.start()
        return sub

    def _make_subsystem(
        self, nqn: str, subtype: int, opts: Any, allow_any_host: bool, hosts: list[str]
    ) -> Subsystem:
        ptr = self._live("spdk_nvmf_subsystem_create_ext")
        if g.spdk_nvmf_tgt_find_subsystem(ptr, nqn.encode()):
            raise ValueError(f"target {self.name} has a subsystem {nqn!r} already")
        sub_ptr = g.spdk_nvmf_subsystem_create_ext(ptr, nqn.encode(), subtype, ctypes.byref(opts))
        if not sub_ptr:
            raise SpdkError(errno.EINVAL, "spdk_nvmf_subsystem_create_ext", nqn, "see SPDK's log")
        sub = Subsystem(self, sub_ptr, nqn, discovery=subtype != g.SPDK_NVMF_SUBTYPE_NVME)
        self._made.append(sub)
        try:
            SpdkError.check(
                g.spdk_nvmf_subsystem_set_allow_any_host(sub_ptr, allow_any_host),
                "spdk_nvmf_subsystem_set_allow_any_host",
                nqn,
            )
            for host in hosts:
                rc = g.spdk_nvmf_subsystem_add_host(sub_ptr, host.encode(), None)
                SpdkError.check(rc, "spdk_nvmf_subsystem_add_host", host)
        except BaseException:
            sub.close()
            raise
        return sub

    # -- teardown ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop and destroy every subsystem, then the poll groups, then the target; wait
        until SPDK has finished (see the module docstring)."""
        if not self.closed:
            self.thread.check_owner()
            for sub in reversed(self._subsystems()):
                try:
                    await sub.aclose()
                except SpdkError as exc:
                    _log.warning("target %s: closing %r failed: %s", self.name, sub, exc)
            await self._stop_foreign_subsystems()
            if not self.closed:
                self.close()
        await self._ending.wait()

    async def destroy(self) -> None:
        """The same as :meth:`aclose`."""
        await self.aclose()

    async def _stop_foreign_subsystems(self) -> None:
        """Stop subsystems made on this target behind Python's back (over RPC): SPDK
        destroys only inactive ones with the target."""
        if self._ptr is None:
            return
        ours = {s.address for s in self._made}
        sub = g.spdk_nvmf_subsystem_get_first(self._ptr)
        foreign = []
        while sub:
            if ctypes.addressof(sub.contents) not in ours:
                foreign.append(sub)
            sub = g.spdk_nvmf_subsystem_get_next(sub)
        for ptr in foreign:
            with contextlib.suppress(SpdkError):  # inactive already: nothing to do
                await _stop_subsystem(ptr, self.name)

    def _release(self) -> None:
        """After its subsystems are freed: destroy the poll groups (on their threads),
        then the target; SPDK does each asynchronously, :attr:`destroyed` tells the end."""
        ptr, self._ptr = self._ptr, None
        groups, self._poll_groups = self._poll_groups, []
        subsystems, self._made = self._made, []
        name, ending = self.name, self._ending

        def target_done(_op: object, status: int) -> None:
            ending.finish(SpdkError(abs(status), "spdk_nvmf_tgt_destroy", name) if status else None)

        def destroy_target() -> None:
            key = _bridge.once(target_done)
            g.spdk_nvmf_tgt_destroy(ptr, _bridge.ctx_status_cb, key)

        def group_done(_op: object, status: int) -> None:
            if status:
                _log.warning("target %s: destroying a poll group failed: %d", name, status)
            after_groups()

        def destroy_groups() -> None:
            # Every poll group so far is on the target's own thread (this one).
            for _thread, group in groups:
                key = _bridge.once(group_done)
                g.spdk_nvmf_poll_group_destroy(group, _bridge.ctx_status_cb, key)

        after_groups = _countdown(len(groups), destroy_target)
        after_subsystems = _countdown(len(subsystems), destroy_groups)
        for sub in subsystems:
            sub.when_destroyed(after_subsystems)


async def _stop_subsystem(ptr: Any, target: str) -> None:
    def start(key: int) -> int:
        return int(g.spdk_nvmf_subsystem_stop(ptr, _bridge.subsystem_state_cb, key))

    await _bridge.submit("spdk_nvmf_subsystem_stop", target, start)


def _countdown(n: int, then: Callable[[], None]) -> Callable[[], None]:
    """A function that runs ``then()`` on its ``n``-th call (``then()`` now if ``n`` is 0)."""
    left = [n]

    def tick() -> None:
        left[0] -= 1
        if left[0] == 0:
            then()

    if n == 0:
        then()
    return tick
