"""An NVMe-oF subsystem of a :class:`~spdk_io.nvmf.Target`: namespaces, hosts, listeners.

Made by :meth:`Target.create_subsystem <spdk_io.nvmf.Target.create_subsystem>`; a child
resource of its target (it closes before the target).  Its state is ``"inactive"``
when made, ``"active"`` after :meth:`Subsystem.start`, ``"paused"`` after
:meth:`Subsystem.pause`.  Changes SPDK allows only on a paused or inactive subsystem
(namespaces, listeners) pause and resume an active one around the change.  State
changes and such changes are serialised per subsystem, so concurrent callers take turns.

Hosts are denied unless listed (:meth:`Subsystem.add_host`) or ``allow_any_host``.
"""

from __future__ import annotations

import ctypes
import errno
import uuid as _uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from spdk_io import _bridge
from spdk_io import _generated as g
from spdk_io._validate import flag, integer, text
from spdk_io.bdev import Bdev
from spdk_io.completion import Ending
from spdk_io.errors import SpdkError
from spdk_io.loop import Op
from spdk_io.nvme.transport import TransportId, transport_id
from spdk_io.nvmf.options import check_nqn
from spdk_io.resource import Resource

if TYPE_CHECKING:
    from spdk_io.nvmf.target import Target

__all__ = ["Namespace", "Subsystem", "SubsystemState"]

SubsystemState = Literal["inactive", "active", "paused"]
_U32 = 2**32 - 1


@dataclass(frozen=True)
class Namespace:
    """A namespace of a subsystem, as SPDK reports it."""

    nsid: int
    bdev_name: str
    uuid: _uuid.UUID | None


class _Turns:
    """One holder at a time, in arrival order (the subsystem's changes take turns)."""

    def __init__(self) -> None:
        self._held = False
        self._waiting: deque[Op[None]] = deque()

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        if self._held:
            op: Op[None] = Op("subsystem change: waiting for the one before")
            self._waiting.append(op)
            try:
                await op  # handed over by the holder: _held stays True
            except BaseException:
                if op.done():  # handed to us just as we were cancelled: pass it on
                    self._next()
                else:
                    self._waiting.remove(op)
                raise
        else:
            self._held = True
        try:
            yield
        finally:
            self._next()

    def _next(self) -> None:
        while self._waiting:
            op = self._waiting.popleft()
            if not op.done():
                op.set_result(None)
                return
        self._held = False


class Subsystem(Resource):
    """An NVMe-oF subsystem (``struct spdk_nvmf_subsystem``) owned by a target.

    Made by :meth:`Target.create_subsystem`; closed (stopped, then destroyed) with its
    target, or by itself with ``await sub.aclose()``.  A closed subsystem raises
    :class:`~spdk_io.errors.SpdkError` (``ENODEV``) on every use.
    """

    def __init__(self, target: Target, ptr: Any, nqn: str, discovery: bool = False) -> None:
        self._ptr = ptr  # struct spdk_nvmf_subsystem *; None once destroyed
        self.target = target
        self.nqn = nqn
        self.is_discovery = discovery
        #: Python's record of SPDK's state (SPDK has no getter for it); changed only
        #: when SPDK reports a state change done.
        self._state: SubsystemState = "inactive"
        self._turns = _Turns()
        # Finished once SPDK has freed the subsystem (at once, or later when SPDK
        # destroys it asynchronously).
        self._ending = Ending(f"destroy subsystem {nqn}")
        #: The address of the C subsystem (stays the same after it is freed).
        self.address: int = ctypes.cast(ptr, ctypes.c_void_p).value or 0
        super().__init__(target.thread, target)

    def __repr__(self) -> str:
        state = "destroyed" if self.closed else self._state
        return f"<Subsystem {self.nqn} {state}>"

    # -- reading -------------------------------------------------------------------------

    def _live(self, what: str) -> Any:
        if self.closed or self._ptr is None:
            raise SpdkError(errno.ENODEV, what, self.nqn, "the subsystem was destroyed")
        self.target.thread.check_owner()
        return self._ptr

    @property
    def state(self) -> SubsystemState:
        """``"inactive"``, ``"active"`` or ``"paused"`` (as changed through this object)."""
        return self._state

    @property
    def serial(self) -> str:
        return (g.spdk_nvmf_subsystem_get_sn(self._live("serial")) or b"").decode()

    @property
    def model(self) -> str:
        return (g.spdk_nvmf_subsystem_get_mn(self._live("model")) or b"").decode()

    @property
    def allow_any_host(self) -> bool:
        return bool(g.spdk_nvmf_subsystem_get_allow_any_host(self._live("allow_any_host")))

    @property
    def max_namespaces(self) -> int:
        """The most namespaces (and the highest NSID) it takes; 0: no limit."""
        return int(g.spdk_nvmf_subsystem_get_max_namespaces(self._live("max_namespaces")))

    @property
    def namespaces(self) -> list[Namespace]:
        """Its namespaces, in NSID order, as SPDK has them now."""
        ptr = self._live("namespaces")
        out = []
        ns = g.spdk_nvmf_subsystem_get_first_ns(ptr)
        while ns:
            out.append(_namespace(ns))
            ns = g.spdk_nvmf_subsystem_get_next_ns(ptr, ns)
        return out

    @property
    def hosts(self) -> list[str]:
        """The host NQNs allowed to connect (all hosts if :attr:`allow_any_host`)."""
        ptr = self._live("hosts")
        out = []
        host = g.spdk_nvmf_subsystem_get_first_host(ptr)
        while host:
            out.append((g.spdk_nvmf_host_get_nqn(host) or b"").decode())
            host = g.spdk_nvmf_subsystem_get_next_host(ptr, host)
        return out

    @property
    def listeners(self) -> list[TransportId]:
        """The addresses it accepts connections on."""
        ptr = self._live("listeners")
        out = []
        listener = g.spdk_nvmf_subsystem_get_first_listener(ptr)
        while listener:
            out.append(TransportId.from_c(g.spdk_nvmf_subsystem_listener_get_trid(listener)))
            listener = g.spdk_nvmf_subsystem_get_next_listener(ptr, listener)
        return out

    def host_allowed(self, hostnqn: str) -> bool:
        """Whether a host with this NQN may connect now."""
        nqn = check_nqn(hostnqn, "hostnqn")
        return bool(g.spdk_nvmf_subsystem_host_allowed(self._live("host_allowed"), nqn.encode()))

    # -- state ---------------------------------------------------------------------------

    async def _change(
        self,
        what: str,
        want: SubsystemState,
        start: Callable[[Any, Any, int], int],
    ) -> None:
        ptr = self._live(what)
        await _bridge.submit(
            what, self.nqn, lambda key: start(ptr, _bridge.subsystem_state_cb, key)
        )
        self._state = want

    async def start(self) -> None:
        """Inactive -> active: hosts may connect.  Active already: nothing to do."""
        async with self._turns():
            if self._state == "inactive":
                await self._change(
                    "spdk_nvmf_subsystem_start", "active", g.spdk_nvmf_subsystem_start
                )
            elif self._state == "paused":
                raise SpdkError(
                    errno.EINVAL, "spdk_nvmf_subsystem_start", self.nqn, "it is paused: resume it"
                )

    async def stop(self) -> None:
        """Active or paused -> inactive: connected hosts are disconnected."""
        async with self._turns():
            await self._stop()

    async def _stop(self) -> None:
        if self._state != "inactive":
            await self._change("spdk_nvmf_subsystem_stop", "inactive", g.spdk_nvmf_subsystem_stop)

    async def pause(self, nsid: int = 0) -> None:
        """Active -> paused: admin queues freeze; I/O to namespace ``nsid`` (0: none)
        is queued until :meth:`resume`."""
        nsid = integer(nsid, "nsid", lo=0, hi=_U32)
        async with self._turns():
            await self._pause(nsid)

    async def _pause(self, nsid: int) -> None:
        if self._state != "active":
            raise SpdkError(
                errno.EINVAL, "spdk_nvmf_subsystem_pause", self.nqn, f"it is {self._state}"
            )
        await self._change(
            "spdk_nvmf_subsystem_pause",
            "paused",
            lambda ptr, cb, key: g.spdk_nvmf_subsystem_pause(ptr, nsid, cb, key),
        )

    async def resume(self) -> None:
        """Paused -> active."""
        async with self._turns():
            await self._resume()

    async def _resume(self) -> None:
        if self._state != "paused":
            raise SpdkError(
                errno.EINVAL, "spdk_nvmf_subsystem_resume", self.nqn, f"it is {self._state}"
            )
        await self._change("spdk_nvmf_subsystem_resume", "active", g.spdk_nvmf_subsystem_resume)

    @asynccontextmanager
    async def _quiesced(self, nsid: int = 0) -> AsyncIterator[None]:
        """Hold the turn with the subsystem paused (if it was active) or inactive."""
        async with self._turns():
            was_active = self._state == "active"
            if was_active:
                await self._pause(nsid)
            try:
                yield
            finally:
                if was_active and not self.closed:
                    await self._resume()

    # -- hosts ---------------------------------------------------------------------------

    async def add_host(self, hostnqn: str) -> None:
        """Allow the host ``hostnqn`` to connect.  ``ValueError`` if it is allowed already."""
        nqn = check_nqn(hostnqn, "hostnqn")
        ptr = self._live("spdk_nvmf_subsystem_add_host")
        if nqn in self.hosts:
            raise ValueError(f"host {nqn!r} is already allowed on {self.nqn}")
        rc = g.spdk_nvmf_subsystem_add_host(ptr, nqn.encode(), None)
        SpdkError.check(rc, "spdk_nvmf_subsystem_add_host", nqn)

    async def remove_host(self, hostnqn: str) -> None:
        """Deny the host from now on (connections it has stay).  ``LookupError`` if it
        was not allowed."""
        nqn = check_nqn(hostnqn, "hostnqn")
        ptr = self._live("spdk_nvmf_subsystem_remove_host")
        if nqn not in self.hosts:
            raise LookupError(f"host {nqn!r} is not allowed on {self.nqn}")
        rc = g.spdk_nvmf_subsystem_remove_host(ptr, nqn.encode())
        SpdkError.check(rc, "spdk_nvmf_subsystem_remove_host", nqn)

    def set_allow_any_host(self, allow: bool) -> None:
        """Let every host connect (``True``), or only the listed ones (``False``)."""
        rc = g.spdk_nvmf_subsystem_set_allow_any_host(
            self._live("spdk_nvmf_subsystem_set_allow_any_host"), flag(allow, "allow")
        )
        SpdkError.check(rc, "spdk_nvmf_subsystem_set_allow_any_host", self.nqn)

    # -- namespaces ----------------------------------------------------------------------

    async def add_namespace(
        self, bdev_name: str, nsid: int | None = None, uuid: _uuid.UUID | str | None = None
    ) -> int:
        """Export bdev ``bdev_name`` as a namespace; return its NSID (the lowest free one
        unless ``nsid`` is given).

        ``LookupError`` if there is no such bdev, ``ValueError`` for an NSID in use or
        past :attr:`max_namespaces`, both before anything changes.
        """
        name = text(bdev_name, "bdev_name")
        ptr = self._live("spdk_nvmf_subsystem_add_ns_ext")
        Bdev.get(name)  # LookupError naming it
        opts = g.struct_spdk_nvmf_ns_opts()
        g.spdk_nvmf_ns_opts_get_defaults(ctypes.byref(opts), ctypes.sizeof(opts))
        if nsid is not None:
            limit = self.max_namespaces or _U32 - 1
            nsid = integer(nsid, "nsid", lo=1, hi=limit)
            if any(ns.nsid == nsid for ns in self.namespaces):
                raise ValueError(f"namespace ID {nsid} is already in use on {self.nqn}")
            opts.nsid = nsid
        elif self.max_namespaces and len(self.namespaces) >= self.max_namespaces:
            raise ValueError(f"{self.nqn} has all its {self.max_namespaces} namespaces")
        if uuid is not None:
            if isinstance(uuid, str):
                uuid = _uuid.UUID(uuid)
            elif not isinstance(uuid, _uuid.UUID):
                raise TypeError(f"uuid must be a uuid.UUID or str, not {type(uuid).__name__}")
            ctypes.memmove(ctypes.addressof(opts.uuid), uuid.bytes, 16)
        async with self._quiesced():
            got = g.spdk_nvmf_subsystem_add_ns_ext(
                ptr, name.encode(), ctypes.byref(opts), ctypes.sizeof(opts), None
            )
        if got == 0:
            raise SpdkError(errno.EINVAL, "spdk_nvmf_subsystem_add_ns_ext", name, "see SPDK's log")
        return int(got)

    async def remove_namespace(self, nsid: int) -> None:
        """Remove namespace ``nsid`` (its I/O is paused around it).  ``LookupError`` if
        there is none."""
        nsid = integer(nsid, "nsid", lo=1, hi=_U32)
        ptr = self._live("spdk_nvmf_subsystem_remove_ns")
        if not g.spdk_nvmf_subsystem_get_ns(ptr, nsid):
            raise LookupError(f"{self.nqn} has no namespace {nsid}")
        async with self._quiesced(nsid):
            rc = g.spdk_nvmf_subsystem_remove_ns(ptr, nsid)
        if rc != 0:
            raise SpdkError(errno.EINVAL, "spdk_nvmf_subsystem_remove_ns", nsid)

    # -- listeners -----------------------------------------------------------------------

    async def add_listener(self, address: TransportId | str) -> TransportId:
        """Accept connections at ``address`` (the target starts listening there if it
        does not yet).  ``ValueError`` if the subsystem has that listener already."""
        trid = listen_address(address)
        self._live("spdk_nvmf_subsystem_add_listener")
        if trid in self.listeners:
            raise ValueError(f"{self.nqn} already listens on {trid}")
        self.target.ensure_listening(trid)
        c_trid = trid.to_c()
        async with self._quiesced():
            ptr = self._live("spdk_nvmf_subsystem_add_listener")
            await _bridge.submit(
                "spdk_nvmf_subsystem_add_listener",
                f"{self.nqn} {trid}",
                lambda key: g.spdk_nvmf_subsystem_add_listener(
                    ptr, ctypes.byref(c_trid), _bridge.ctx_status_cb, key
                ),
            )
        return trid

    async def remove_listener(self, address: TransportId | str) -> None:
        """Stop accepting connections at ``address`` (the target keeps listening there).
        ``LookupError`` if the subsystem has no such listener."""
        trid = listen_address(address)
        self._live("spdk_nvmf_subsystem_remove_listener")
        if trid not in self.listeners:
            raise LookupError(f"{self.nqn} does not listen on {trid}")
        c_trid = trid.to_c()
        async with self._quiesced():
            rc = g.spdk_nvmf_subsystem_remove_listener(
                self._live("spdk_nvmf_subsystem_remove_listener"), ctypes.byref(c_trid)
            )
        SpdkError.check(rc, "spdk_nvmf_subsystem_remove_listener", f"{self.nqn} {trid}")

    # -- teardown ------------------------------------------------------------------------

    def _refusal(self) -> BaseException | None:
        if self._state != "inactive":
            return BlockingIOError(
                errno.EBUSY,
                f"subsystem {self.nqn} is {self._state}: stop it first, or await aclose()",
            )
        return None

    @property
    def destroyed(self) -> bool:
        """Whether SPDK has freed the subsystem (it may take a while after ``close()``)."""
        return self._ending.done()

    def when_destroyed(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` once SPDK has freed the subsystem (now, if it has)."""
        self._ending.then(fn)

    def _release(self) -> None:
        """``spdk_nvmf_subsystem_destroy``: now, or later (:attr:`destroyed` says when)."""
        ptr, self._ptr = self._ptr, None
        ending = self._ending
        key = _bridge.once(ending.finish)
        rc = g.spdk_nvmf_subsystem_destroy(ptr, _bridge.ctx_cb, key)
        if rc == -errno.EINPROGRESS:
            return
        _bridge.forget(key)
        err = None if rc == 0 else SpdkError(-rc, "spdk_nvmf_subsystem_destroy", self.nqn)
        ending.finish(err)
        if err is not None:
            raise err

    async def aclose(self) -> None:
        """Stop it (disconnecting its hosts) and destroy it; waits until SPDK freed it."""
        if not self.closed:
            async with self._turns():
                if not self.closed:
                    await self._stop()
                    self.close()
        await self._ending.wait()

    async def destroy(self) -> None:
        """The same as :meth:`aclose`."""
        await self.aclose()


def _namespace(ns: Any) -> Namespace:
    nsid = int(g.spdk_nvmf_ns_get_id(ns))
    bdev = g.spdk_nvmf_ns_get_bdev(ns)
    name = (g.spdk_bdev_get_name(bdev) or b"").decode() if bdev else ""
    opts = g.struct_spdk_nvmf_ns_opts()
    g.spdk_nvmf_ns_get_opts(ns, ctypes.byref(opts), ctypes.sizeof(opts))
    raw = bytes(opts.uuid.u.raw)
    return Namespace(nsid, name, _uuid.UUID(bytes=raw) if any(raw) else None)


def listen_address(address: TransportId | str) -> TransportId:
    """A listen address: a transport ID without a subsystem NQN (one it has is dropped)."""
    trid = transport_id(address)
    if trid.traddr is None:
        raise ValueError(f"listen address {trid} has no traddr")
    return trid.with_subnqn(None)
