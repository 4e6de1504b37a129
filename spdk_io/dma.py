"""DMA-capable buffers: :class:`DmaBuf`, and :class:`DmaBufList` for vectored I/O.

Devices read and write I/O buffers directly, so SPDK wants them in its own pinned
memory (``spdk_zmalloc(..., SPDK_MALLOC_DMA)``), not in Python objects.  A
``DmaBuf`` is such a buffer, usable from Python without copies::

    async def main(desc: spdk_io.bdev.BdevDesc) -> None:
        with DmaBuf.alloc(4096) as buf:        # zeroed, 4 KiB aligned; freed at the end
            buf[0:5] = b"hello"
            await desc.write(buf)              # pinned by the bdev layer until SPDK is done
            with buf.view() as mv: ...         # zero-copy memoryview
            words = buf.numpy("uint32")        # zero-copy ndarray (numpy is optional)
            del words                          # ... gone before the buffer is freed

On Python 3.12+ a ``DmaBuf`` is itself a buffer (PEP 688: ``__buffer__`` /
``__release_buffer__``): ``memoryview(buf)``, ``f.readinto(buf)``, ``f.write(buf)``,
``sock.recv_into(buf)``, ``hashlib.sha256(buf)``, ``bytearray(buf)``,
``np.frombuffer(buf)`` and ``ctypes`` ``from_buffer(buf)`` work without copies.  On
3.11 use :meth:`~DmaBuf.view`.

An :class:`~spdk_io.env.Env` must be running to allocate.  ``spdk_zmalloc`` /
``spdk_malloc`` with ``SPDK_MALLOC_DMA`` are used rather than the ``spdk_dma_*``
family: those are legacy wrappers over the same ``rte_malloc_socket`` call (adding
the no-op ``SPDK_MALLOC_SHARE``) and the NUMA node needs the ``_socket`` variants.

What it guarantees (the same contract as ``mmap.close``, plus in-flight I/O):

* **Memory is never freed while anything can still reach it.**  The memory belongs to
  one private ctypes array per allocation; every export (a :meth:`~DmaBuf.view`
  memoryview and its slices/casts, a :meth:`~DmaBuf.numpy` array and its views, a
  :meth:`~DmaBuf.slice` sub-buffer, a :class:`DmaBufList`) holds a reference to it.
  SPDK's memory is released by a ``weakref.finalize`` on that array, i.e. only when the
  last of them is gone, so dropping a ``DmaBuf`` while a view is alive is safe.
* **Explicit** :meth:`~DmaBuf.free` (``close()``, leaving a ``with`` block) **raises**
  ``BufferError`` **and changes nothing** while exports are alive or I/O is in flight
  (:meth:`~DmaBuf.pin`).  On Python 3.12+ exports are counted exactly: every export
  (``memoryview(buf)``, :meth:`~DmaBuf.view`, :meth:`~DmaBuf.numpy`,
  :meth:`~DmaBuf.slice`, :class:`DmaBufList`, any C consumer) goes through
  ``__buffer__`` and ends in ``__release_buffer__``, which CPython calls when the last
  view derived from it is released.  On 3.11 it counts exports with
  ``sys.getrefcount`` on the private array, calibrated at import time against a fresh
  array held the same way.
* **Use after free raises** ``ValueError("... is freed")``; a second ``free()`` is a
  no-op (like ``file.close``).  Nothing here can make Python touch freed memory.
* **A pinned buffer cannot be garbage-collected**: pins put it in a module-level
  table until the last ``unpin``.
* **No crash after teardown**: SPDK memory is only freed while an
  :class:`~spdk_io.env.Env` is up.  A buffer dropped after ``Env`` exit is queued and
  freed at the next :meth:`DmaBuf.alloc` (DPDK's heap outlives ``spdk_env_fini``; a
  later ``Env`` in the same process sees the same heap), or leaked at process exit.

Threads: DMA memory is process-wide.  Any OS thread may read, write and free a
buffer (``spdk_free`` is ``rte_free``, which takes the heap lock); pin/unpin/free
(and, on 3.12+, exporting and releasing) are serialised by a lock.  Data access does
not take the lock for the copy itself, but it holds an export (3.11: a reference to
the array) while it copies, so a concurrent ``free()`` fails with ``BufferError``
rather than freeing memory under it.

Limits:

* On 3.11 a ``DmaBuf`` is not a buffer (3.11 has no pure-Python buffer protocol):
  pass ``buf.view()`` where a bytes-like object is wanted.  Its export count is
  CPython reference counting, so every error is on the safe side (refusing to
  free), never a free under a live export.  But anything that holds the array
  counts: a view kept alive only by an uncollected reference cycle, an exception
  traceback or a debugger's frame counts until it is gone.
* On both versions a view that is not released counts until it is (or until it is
  garbage-collected, for one in a reference cycle).  Release views explicitly
  (``with memoryview(buf) as mv:``, ``with buf.view() as mv:``) where it matters.
  On 3.12+ calling ``buf.__buffer__()`` directly exports until the matching
  ``buf.__release_buffer__(mv)``; ``__release_buffer__`` refuses (``ValueError``)
  a view this buffer did not export.  Views derived from such a directly obtained
  ``mv`` are not counted once it is handed back (``memoryview(buf)`` has no such
  gap), but they still hold the memory: it is never freed under them.
* Functions that parse a writable-buffer argument (``sock.recv_into``) turn the
  ``ValueError`` of a freed buffer into their own ``TypeError``.
* :attr:`DmaBuf.addr` is a raw address: memory reached through it (``ctypes``
  casts, ``iovecs``, SPDK calls) is not tracked.  Pin the buffer (:meth:`DmaBuf.pin`),
  or keep a view or a :class:`DmaBufList`, for as long as such a pointer is in use.
* On 3.11 a ``free()`` racing data access from another thread may make that access
  raise ``ValueError`` even if the ``free()`` then fails with ``BufferError``.
* ``ctypes`` keeps one array type per distinct buffer size for the life of the
  process.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

from spdk_io import _generated as g
from spdk_io import env as _env
from spdk_io._validate import flag, integer

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "MAX_ALIGN",
    "MAX_SIZE",
    "NUMA_ID_ANY",
    "DmaBuf",
    "DmaBufList",
    "dmabuf",
    "dmabufs",
    "iovecs",
    "pin_all",
]

#: Allocate on any NUMA node (``SPDK_ENV_NUMA_ID_ANY``).
NUMA_ID_ANY: int = g.SPDK_ENV_NUMA_ID_ANY
#: Largest allocation accepted (1 TiB): anything bigger is a bug, not a request.
MAX_SIZE = 1 << 40
#: Largest alignment accepted (1 GiB, the largest hugepage size).
MAX_ALIGN = 1 << 30
#: SPDK aligns every allocation to at least a cache line (``RTE_CACHE_LINE_SIZE``).
_MIN_ALIGN = 64


def _refs(obj: object) -> int:
    return sys.getrefcount(obj)


def _calibrate() -> int:
    probe = (ctypes.c_ubyte * 1)()
    return _refs(probe)  # the count of an array that exactly one local names


#: ``_refs(arr)`` for an array that only the caller's local variable references.
_UNEXPORTED = _calibrate()

# Pin counts, exports (3.12+) and free() are changed under it.  Re-entrant: the cyclic
# GC may run inside a critical section and release a view of a DmaBuf there, which
# calls that buffer's __release_buffer__ on the thread that holds the lock.
_lock = threading.RLock()
_in_flight: dict[int, DmaBuf] = {}  # pinned buffers: strong references, so no GC
_deferred: list[int] = []  # addresses whose free waits for an Env to be up


def _release(addr: int) -> None:
    """Give one allocation back to SPDK (the array's finalizer)."""
    if _env.is_up():
        g.spdk_free(addr)
    else:
        _deferred.append(addr)  # no env: freeing now could touch torn-down state


def _drain_deferred() -> None:
    while _deferred:
        try:
            addr = _deferred.pop()
        except IndexError:  # another thread took the last one
            return
        g.spdk_free(addr)


def _bytes_view(obj: object) -> memoryview:
    """A flat unsigned-byte memoryview of a bytes-like object or a DmaBuf."""
    if isinstance(obj, DmaBuf):
        return obj._open()
    mv = memoryview(obj)  # type: ignore[arg-type]  # TypeError for non-buffers
    if mv.format == "B" and mv.ndim == 1:
        return mv
    try:
        return mv.cast("B")  # TypeError unless C-contiguous
    finally:
        mv.release()


class DmaBuf:
    """DMA-capable memory from SPDK's allocator, or a sub-buffer of it (:meth:`slice`).

    Create with :meth:`alloc`.  Behaves like a fixed-size ``bytearray``: ``len()``,
    ``buf[i]``, ``buf[a:b]`` (copies out as ``bytes``), ``buf[a:b] = data``,
    ``bytes(buf)``.  Zero-copy access: :meth:`view`, :meth:`numpy`, :meth:`slice`, and
    on Python 3.12+ the buffer protocol itself (``memoryview(buf)``, ``readinto(buf)``).
    ``size``, ``len()``, ``align``, ``closed`` and ``repr`` stay valid after free;
    everything that touches the memory or its address raises ``ValueError``.
    """

    __slots__ = (
        "__weakref__",
        "_addr",
        "_align",
        "_array",
        "_out",
        "_parent",
        "_pins",
        "_size",
        "_start",
    )

    _array: ctypes.Array[ctypes.c_ubyte] | None
    _addr: int
    _size: int
    _align: int
    _parent: DmaBuf | None
    _start: int
    _pins: int
    _out: dict[int, memoryview]  # 3.12+: the live exports, by id (exact counting)

    def __init__(self) -> None:
        raise TypeError("use DmaBuf.alloc() (or buf.slice()) to get a DmaBuf")

    @classmethod
    def _make(
        cls, array: ctypes.Array[ctypes.c_ubyte], align: int, parent: DmaBuf | None, start: int
    ) -> DmaBuf:
        self = cls.__new__(cls)
        self._array = array
        self._addr = ctypes.addressof(array)
        self._size = len(array)
        self._align = align
        self._parent = parent
        self._start = start
        self._pins = 0
        self._out = {}
        return self

    # -- allocation ----------------------------------------------------------------------

    @classmethod
    def alloc(
        cls, size: int, align: int = 4096, *, zero: bool = True, numa_id: int = NUMA_ID_ANY
    ) -> DmaBuf:
        """Allocate ``size`` bytes of DMA-capable memory aligned to ``align``.

        ``zero=False`` (a ``bool``) skips clearing the memory.  ``numa_id`` prefers a
        NUMA node (SPDK falls back to any node unless the env enforces NUMA).  Raises
        ``TypeError``/``ValueError`` for bad arguments (nothing is allocated),
        ``RuntimeError`` if no :class:`~spdk_io.env.Env` is running, and
        ``MemoryError`` if SPDK's heap cannot satisfy the request.
        """
        size = integer(size, "size")
        align = integer(align, "align")
        zero = flag(zero, "zero")
        numa_id = integer(numa_id, "numa_id")
        if not 0 < size <= MAX_SIZE:
            raise ValueError(f"size must be in 1..{MAX_SIZE}, got {size}")
        if not 0 < align <= MAX_ALIGN or align & (align - 1):
            raise ValueError(f"align must be a power of two up to {MAX_ALIGN}, got {align}")
        if not -1 <= numa_id < 2**31:
            raise ValueError(f"numa_id must be a node number or NUMA_ID_ANY (-1), got {numa_id}")
        if not _env.is_up():
            raise RuntimeError(
                "no SPDK environment is running: allocate DMA buffers inside "
                "`with spdk_io.Env(...)` (or spdk_io.run)"
            )
        _drain_deferred()
        malloc = g.spdk_zmalloc if zero else g.spdk_malloc
        addr = malloc(size, align, None, numa_id, g.SPDK_MALLOC_DMA)
        if not addr:
            raise MemoryError(
                f"SPDK cannot allocate {size} bytes of DMA memory (align {align}, numa_id "
                f"{numa_id}): the env's memory (mem_size_mb) is exhausted or too fragmented"
            )
        try:
            array = (ctypes.c_ubyte * size).from_address(addr)
            fin = weakref.finalize(array, _release, addr)
        except BaseException:
            g.spdk_free(addr)
            raise
        fin.atexit = False  # at interpreter exit SPDK may be gone: leak instead
        return cls._make(array, max(align, _MIN_ALIGN), None, 0)

    # -- metadata ------------------------------------------------------------------------

    @property
    def addr(self) -> int:
        """The buffer's virtual address (for SPDK calls)."""
        self._live()
        return self._addr

    @property
    def size(self) -> int:
        return self._size

    @property
    def align(self) -> int:
        """The alignment ``addr`` is guaranteed to have (SPDK gives at least 64)."""
        return self._align

    @property
    def parent(self) -> DmaBuf | None:
        """The buffer this one is a :meth:`slice` of (``None`` for an allocation)."""
        return self._parent

    @property
    def closed(self) -> bool:
        return self._array is None

    @property
    def pins(self) -> int:
        """I/O operations in flight on this buffer (see :meth:`pin`)."""
        return self._pins

    @property
    def exports(self) -> int:
        """Live views, numpy arrays, slices and lists that keep this memory reachable.

        Exact on 3.12+ (live ``__buffer__`` exports); a reference count on 3.11.
        """
        if sys.version_info >= (3, 12):
            return len(self._out)
        arr = self._array
        if arr is None:
            return 0
        return _refs(arr) - _UNEXPORTED - 1  # minus self._array

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        if self._array is None:
            return f"<DmaBuf freed, {self._size} bytes>"
        where = f" slice [{self._start}:{self._start + self._size}]" if self._parent else ""
        return f"<DmaBuf {self._size} bytes at {self._addr:#x}{where}>"

    def __reduce__(self) -> Any:
        raise TypeError("a DmaBuf cannot be pickled or copied; use bytes(buf) or DmaBuf.alloc")

    # -- access --------------------------------------------------------------------------

    def _live(self) -> ctypes.Array[ctypes.c_ubyte]:
        arr = self._array
        if arr is None:
            raise ValueError(f"this DmaBuf ({self._size} bytes) is freed")
        return arr

    def _open(self) -> memoryview:
        if sys.version_info >= (3, 12):
            return memoryview(self)  # an export like any other: counted exactly
        return memoryview(self._live()).cast("B")

    if sys.version_info >= (3, 12):

        def __buffer__(self, flags: int) -> memoryview:
            """PEP 688: a writable, flat unsigned-byte ``memoryview`` of the memory.

            Counted in :attr:`exports` until :meth:`__release_buffer__` gets it back
            (CPython does that when the last view derived from it is released), so
            ``free()`` refuses exactly while one is alive.  ``ValueError`` once freed.
            """
            integer(flags, "flags", lo=0)  # any request is met: the view is writable, 1-D
            with _lock:
                mv = memoryview(self._live()).cast("B")
                self._out[id(mv)] = mv
            return mv

        def __release_buffer__(self, view: memoryview) -> None:
            """PEP 688: the export :meth:`__buffer__` returned as ``view`` is over.

            ``TypeError``/``ValueError`` (changing nothing) for anything but a view this
            buffer exported and has not had back.
            """
            if not isinstance(view, memoryview):
                raise TypeError(f"view must be a memoryview, not {type(view).__name__}")
            with _lock:
                if self._out.get(id(view)) is not view:
                    raise ValueError(f"{view!r} is not exported by {self!r} (or released)")
                view.release()  # BufferError if views of it remain: nothing changed
                del self._out[id(view)]

    def view(self) -> memoryview:
        """A writable, zero-copy ``memoryview`` (format ``B``) of the whole buffer.

        While it (or any slice/cast of it) is alive, ``free()`` raises ``BufferError``;
        release it with ``mv.release()`` or ``with buf.view() as mv:``.  On 3.12+ this
        is ``memoryview(buf)``.
        """
        return self._open()

    def numpy(self, dtype: npt.DTypeLike = "uint8") -> np.ndarray[Any, np.dtype[Any]]:
        """A writable, zero-copy ``numpy.ndarray`` of the buffer (needs numpy).

        Tracked like :meth:`view`: ``free()`` fails while the array (or any array
        derived from it without a copy) is alive.
        """
        import numpy as np  # optional dependency: imported only when used

        mv = self._open()
        try:
            return np.frombuffer(mv, dtype=dtype)
        except BaseException:
            mv.release()
            raise

    def tobytes(self) -> bytes:
        with self._open() as mv:
            return mv.tobytes()

    def __bytes__(self) -> bytes:
        return self.tobytes()

    def __iter__(self) -> Iterator[int]:
        """Iterate over the byte values of a snapshot (``bytes(buf)``)."""
        return iter(self.tobytes())

    @overload
    def __getitem__(self, key: int) -> int: ...
    @overload
    def __getitem__(self, key: slice) -> bytes: ...
    def __getitem__(self, key: int | slice) -> int | bytes:
        with self._open() as mv:
            if isinstance(key, slice):
                return mv[key].tobytes()
            value: int = mv[key]
            return value

    @overload
    def __setitem__(self, key: int, value: int) -> None: ...
    @overload
    def __setitem__(self, key: slice, value: object) -> None: ...
    def __setitem__(self, key: int | slice, value: object) -> None:
        """``buf[i] = 0..255``; ``buf[a:b] = data`` with ``len(data) == len(range)``."""
        with self._open() as mv:
            if isinstance(key, slice):
                with _bytes_view(value) as src:
                    mv[key] = src
            else:
                mv[key] = integer(value, "a byte")

    def _bounds(self, start: object, end: object) -> tuple[int, int]:
        lo = integer(start, "start")
        hi = self._size if end is None else integer(end, "end")
        if not 0 <= lo <= hi <= self._size:
            raise ValueError(f"range [{lo}:{hi}] is outside the {self._size}-byte buffer")
        return lo, hi

    def fill(self, byte: int = 0, start: int = 0, end: int | None = None) -> None:
        """Set bytes ``start..end`` (default: all) to ``byte``."""
        with self._open():  # holds the memory while memset runs
            value = integer(byte, "byte")
            if not 0 <= value <= 255:
                raise ValueError(f"byte must be in 0..255, got {value}")
            lo, hi = self._bounds(start, end)
            ctypes.memset(self._addr + lo, value, hi - lo)

    def copy_from(self, src: object, offset: int = 0) -> int:
        """Copy all of ``src`` (bytes-like or DmaBuf) to ``offset``; return its length.

        Raises ``ValueError`` (copying nothing) if it does not fit.
        """
        with self._open() as mv, _bytes_view(src) as data:
            lo, hi = self._bounds(offset, integer(offset, "offset") + data.nbytes)
            mv[lo:hi] = data
            return hi - lo

    def copy_to(self, dst: object, offset: int = 0) -> int:
        """Copy from ``offset`` into the writable buffer ``dst``, as much as fits.

        Returns the number of bytes copied, like ``readinto``.
        """
        with self._open() as mv, _bytes_view(dst) as out:
            if out.readonly:
                raise TypeError("copy_to needs a writable buffer")
            lo, _ = self._bounds(offset, None)
            n = min(out.nbytes, self._size - lo)
            out[:n] = mv[lo : lo + n]
            return n

    # -- sub-buffers ---------------------------------------------------------------------

    def slice(self, start: int, stop: int | None = None) -> DmaBuf:
        """A ``DmaBuf`` for bytes ``start..stop`` that shares this memory (zero-copy).

        It keeps this buffer alive and counts as an export: this buffer cannot be
        freed until the slice is freed (or dropped).  Freeing a slice frees no memory.
        """
        lo, hi = self._bounds(start, stop)
        if lo == hi:
            raise ValueError(f"empty slice [{lo}:{hi}]")
        if sys.version_info >= (3, 12):
            sub = (ctypes.c_ubyte * (hi - lo)).from_buffer(self, lo)  # one counted export
        else:
            sub = (ctypes.c_ubyte * (hi - lo)).from_buffer(self._live(), lo)
        align = self._align if lo == 0 else min(self._align, lo & -lo)
        return DmaBuf._make(sub, align, self, self._start + lo)

    # -- lifetime ------------------------------------------------------------------------

    def free(self) -> None:
        """Give the memory back to SPDK now (for a slice: let go of the parent).

        Raises ``BufferError`` and changes nothing while I/O is in flight or views,
        numpy arrays, slices or lists of this buffer are alive.  A no-op if already freed.
        """
        with _lock:
            arr = self._array
            if arr is None:
                return
            if self._pins:
                del arr
                raise BufferError(
                    f"cannot free {self!r}: pinned {self._pins} time(s) by I/O in flight "
                    "or an open IoSlot (await the I/O, close the slot)"
                )
            if sys.version_info >= (3, 12):
                # Exact, and exports are only made under the lock: decide before
                # touching anything, so a refused free() is invisible to other threads.
                extra = len(self._out)
            else:
                self._array = None  # from here a concurrent reader sees "freed"
                extra = _refs(arr) - _UNEXPORTED
            if extra:
                self._array = arr
                del arr  # an exception's traceback must not keep the array referenced
                raise BufferError(
                    f"cannot free {self!r}: {extra} exported view(s), array(s) or slice(s) "
                    "still alive (release them first)"
                )
            self._array = None  # from here a concurrent reader sees "freed", not the memory
            parent, self._parent = self._parent, None
        # Outside the lock: dropping the last reference runs the finalizer (root), or
        # releases the parent's export (slice; on 3.12+ its __release_buffer__).
        del arr, parent

    close = free

    def __enter__(self) -> DmaBuf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()

    # -- in-flight protocol (the bdev layer, and anyone handing addr to C) ---------------

    def pin(self) -> None:
        """Mark an I/O in flight: until the matching :meth:`unpin`, ``free()`` raises
        and GC cannot reclaim the buffer.  ``ValueError`` if it is already freed."""
        with _lock:
            self._live()
            self._pins += 1
            if self._pins == 1:
                _in_flight[id(self)] = self

    def unpin(self) -> None:
        """The I/O that :meth:`pin` marked has completed (``RuntimeError`` if none was)."""
        with _lock:
            if self._pins <= 0:
                raise RuntimeError(f"{self!r}: unpin() without a matching pin()")
            self._pins -= 1
            if self._pins == 0:
                del _in_flight[id(self)]


def dmabuf(buf: object, what: str = "buf") -> DmaBuf:
    """``buf`` if it is a live :class:`DmaBuf`: ``TypeError`` for anything else (bytes
    and bytearrays are not DMA-safe), ``ValueError`` once it is freed.  The check every
    I/O entry point makes before anything is pinned or submitted."""
    if not isinstance(buf, DmaBuf):
        raise TypeError(f"{what} must be a DmaBuf (DMA-safe memory), not {type(buf).__name__}")
    buf.addr  # noqa: B018  # raises ValueError if the buffer is freed
    return buf


def dmabufs(bufs: object, what: str = "bufs") -> tuple[DmaBuf, ...]:
    """The buffers of a vectored I/O: a non-empty sequence of live DmaBufs (one DmaBuf,
    or bytes, is a ``TypeError``, not a sequence of one)."""
    if isinstance(bufs, DmaBuf | str | bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be a sequence of DmaBuf, not {type(bufs).__name__}")
    try:
        items: tuple[object, ...] = tuple(bufs)  # type: ignore[arg-type]  # TypeError is the check
    except TypeError:
        raise TypeError(f"{what} must be a sequence of DmaBuf, not {type(bufs).__name__}") from None
    if not items:
        raise ValueError("vectored I/O needs at least one buffer")
    return tuple(dmabuf(b, f"every item of {what}") for b in items)


def pin_all(bufs: Iterable[DmaBuf]) -> list[DmaBuf]:
    """Pin every buffer, or none: if one cannot be pinned, those already pinned are
    unpinned and the error is raised.  The pinned buffers, for unpinning later."""
    pinned: list[DmaBuf] = []
    try:
        for b in bufs:
            b.pin()
            pinned.append(b)
    except BaseException:
        for b in pinned:
            b.unpin()
        raise
    return pinned


def iovecs(bufs: Iterable[DmaBuf]) -> ctypes.Array[g.struct_iovec]:
    """A ``struct iovec`` array for ``bufs`` (addresses and lengths, in order).

    The array holds raw addresses: keep the buffers pinned (or exported, as
    :class:`DmaBufList` does) for as long as SPDK may use it.
    """
    items = list(bufs)
    iov = (g.struct_iovec * len(items))()
    for entry, buf in zip(iov, items, strict=True):
        if not isinstance(buf, DmaBuf):
            raise TypeError(f"iovecs needs DmaBuf items, got {type(buf).__name__}")
        entry.iov_base = buf.addr
        entry.iov_len = len(buf)
    return iov


class DmaBufList(Sequence[DmaBuf]):
    """Buffers for vectored I/O (``readv``/``writev``) and their ``struct iovec`` array.

    The list holds a view of every buffer, so none of them can be freed while the
    list is alive; :meth:`release` (or leaving a ``with`` block) lets go of them.
    """

    __slots__ = ("_bufs", "_iov", "_nbytes", "_views")

    def __init__(self, bufs: Iterable[DmaBuf]) -> None:
        items = tuple(bufs)
        if not items:
            raise ValueError("a DmaBufList needs at least one buffer")
        for b in items:
            if not isinstance(b, DmaBuf):
                raise TypeError(f"DmaBufList items must be DmaBuf, got {type(b).__name__}")
        views: list[memoryview] = []
        try:
            for b in items:
                views.append(b.view())
            iov = iovecs(items)
        except BaseException:
            for v in views:
                v.release()
            views.clear()
            raise
        self._bufs = items
        self._views = views
        self._iov: ctypes.Array[g.struct_iovec] | None = iov
        self._nbytes = sum(len(b) for b in items)

    @property
    def iov(self) -> ctypes.Array[g.struct_iovec]:
        """The ``struct iovec`` array (pass with :attr:`iovcnt`)."""
        if self._iov is None:
            raise ValueError("the DmaBufList is released")
        return self._iov

    @property
    def iovcnt(self) -> int:
        return len(self._bufs)

    @property
    def nbytes(self) -> int:
        """Total length of all buffers."""
        return self._nbytes

    def __len__(self) -> int:
        return len(self._bufs)

    @overload
    def __getitem__(self, index: int) -> DmaBuf: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[DmaBuf]: ...
    def __getitem__(self, index: int | slice) -> DmaBuf | Sequence[DmaBuf]:
        return self._bufs[index]

    def __iter__(self) -> Iterator[DmaBuf]:
        return iter(self._bufs)

    def __repr__(self) -> str:
        state = "" if self._iov is not None else " released"
        return f"<DmaBufList {len(self._bufs)} buffers, {self._nbytes} bytes{state}>"

    def release(self) -> None:
        """Let go of the buffers' views (they can be freed again).  Idempotent."""
        self._iov = None
        while self._views:
            self._views.pop().release()

    close = release

    def __enter__(self) -> DmaBufList:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def pin(self) -> None:
        """Pin every buffer (all or none) for an I/O in flight."""
        for i, b in enumerate(self._bufs):
            try:
                b.pin()
            except BaseException:
                for done in self._bufs[:i]:
                    done.unpin()
                raise

    def unpin(self) -> None:
        """Unpin every buffer: the I/O :meth:`pin` marked has completed."""
        for b in self._bufs:
            b.unpin()
