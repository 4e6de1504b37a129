"""One lifecycle for every Python object that owns an SPDK handle.

Descriptors, I/O channels, I/O slots, pollers, RPC servers and DMA buffers are all
:class:`Resource` subclasses.  A subclass supplies :meth:`Resource._release` (give the
handle back to SPDK) and, if it can be busy, :meth:`Resource._refusal` (why it cannot
close now).  The base guarantees, for every one of them:

* ``close()`` is idempotent, is what leaving a ``with`` block calls, and runs
  ``_release()`` exactly once.
* Children close before their parent (an I/O slot before its descriptor, a
  channel before its descriptor): ``Resource(parent=...)`` makes one a child.
* ``close()`` refuses, changing nothing, from an OS thread other than the owner's
  (:class:`~spdk_io.errors.WrongThreadError`) and while it or any child is busy
  (the exception ``_refusal`` returns: ``BlockingIOError`` for I/O in flight).
  ``await aclose()`` waits for the busy ones instead.
* Every open resource of an SPDK thread is in that thread's registry, in order of
  creation; when the thread releases what it holds (a spawned thread's end, Env
  and App teardown) the ones still open are closed with ``aclose()``, newest first.

A resource with no owner (DMA memory is process-wide) is in no registry and may be
closed from any OS thread.
"""

from __future__ import annotations

from typing import Protocol, Self

from spdk_io.loop import sleep

__all__ = ["Owner", "Resource"]

#: How often ``aclose()`` looks again whether a busy resource has become idle, in seconds.
ACLOSE_POLL = 0.001


class Owner(Protocol):
    """What a resource needs of the SPDK thread that owns it (an :class:`SpdkThread`)."""

    name: str

    def check_owner(self) -> None:
        """Raise :class:`~spdk_io.errors.WrongThreadError` unless on the owning OS thread."""

    def register(self, resource: Resource) -> None:
        """Add ``resource`` to the thread's registry (it is open)."""

    def unregister(self, resource: Resource) -> None:
        """Remove ``resource`` from the registry (it is closed)."""


class Resource:
    """Base of every object that owns an SPDK handle (see the module docstring).

    Subclasses call ``super().__init__(owner, parent)`` once their handle exists,
    so a failed constructor registers nothing.
    """

    def __init__(self, owner: Owner | None, parent: Resource | None = None) -> None:
        self._owner = owner  # the SPDK thread that may close it (None: any OS thread)
        self._parent = parent
        self._children: list[Resource] = []  # open children, oldest first
        #: Whether the handle is given back (False -> True once; read it, never set it).
        self.closed = False
        if parent is not None:
            if parent._owner is not owner:
                raise ValueError(f"{self!r} must have the owner of its parent {parent!r}")
            parent._children.append(self)
        if owner is not None:
            owner.register(self)

    @property
    def parent(self) -> Resource | None:
        return self._parent

    def _release(self) -> None:
        """Give the handle back to SPDK.  Called once, on the owner's OS thread."""
        raise NotImplementedError

    def _refusal(self) -> BaseException | None:
        """Why this resource cannot close now (I/O in flight), or ``None`` if it can."""
        return None

    def _blocker(self) -> BaseException | None:
        """The first refusal in this resource's tree, children first."""
        for child in self._children:
            err = child._blocker()
            if err is not None:
                return err
        return self._refusal()

    def close(self) -> None:
        """Close the children, then this resource; idempotent.

        Raises :class:`~spdk_io.errors.WrongThreadError` off the owner's OS thread
        and the refusal of a busy resource (``BlockingIOError`` for I/O in flight);
        either way nothing is closed.
        """
        if self.closed:
            return
        if self._owner is not None:
            self._owner.check_owner()
        err = self._blocker()
        if err is not None:
            raise err
        self._close_tree()

    def _close_tree(self) -> None:
        for child in reversed(list(self._children)):
            child._close_tree()
        self.closed = True
        try:
            self._release()
        finally:
            self._unlink()

    def _unlink(self) -> None:
        """Leave the parent's children and the owner's registry (the resource is closed)."""
        if self._parent is not None and self in self._parent._children:
            self._parent._children.remove(self)
        if self._owner is not None:
            self._owner.unregister(self)

    def abandon(self) -> None:
        """Mark this resource and its children closed without giving anything back:
        SPDK has freed the handles already (their thread was destroyed by its owner).
        Python-side registrations are dropped (:meth:`_abandoned`)."""
        for child in reversed(list(self._children)):
            child.abandon()
        if self.closed:
            return
        self.closed = True
        self._abandoned()
        self._unlink()

    def _abandoned(self) -> None:
        """Drop Python-side state (callback keys) of a resource SPDK freed by itself."""

    async def aclose(self) -> None:
        """Wait until nothing in this resource's tree is busy, then close it.

        Subclasses may hurry the wait (abort I/O a device holds); callers bound it
        in time (``spdk_io.wait_for``).
        """
        while not self.closed and self._blocker() is not None:
            await sleep(ACLOSE_POLL)
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
