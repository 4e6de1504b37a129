"""DmaBuf and DmaBufList against real SPDK memory: allocation, access, sub-buffers, lifetime.

Whether memory really went back to SPDK is read from DPDK's heap statistics
(``rte_malloc_get_socket_stats``), so "allocates nothing" and "frees on the last
reference" are observed, not assumed.
"""

from __future__ import annotations

import array
import copy
import ctypes
import gc
import pickle
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from spdk_io import _generated as g
from spdk_io.dma import MAX_ALIGN, MAX_SIZE, NUMA_ID_ANY, DmaBuf, DmaBufList, iovecs
from tests.conftest import run_py

pytestmark = pytest.mark.usefixtures("env")


class _SocketStats(ctypes.Structure):  # struct rte_malloc_socket_stats (rte_malloc.h)
    _fields_ = (
        ("heap_totalsz_bytes", ctypes.c_size_t),
        ("heap_freesz_bytes", ctypes.c_size_t),
        ("greatest_free_size", ctypes.c_size_t),
        ("free_count", ctypes.c_uint),
        ("alloc_count", ctypes.c_uint),
        ("heap_allocsz_bytes", ctypes.c_size_t),
    )


_dpdk = ctypes.CDLL(None)
_dpdk.rte_socket_count.restype = ctypes.c_uint
_dpdk.rte_socket_id_by_idx.restype = ctypes.c_int
_dpdk.rte_socket_id_by_idx.argtypes = [ctypes.c_uint]
_dpdk.rte_malloc_get_socket_stats.argtypes = [ctypes.c_int, ctypes.POINTER(_SocketStats)]


def heap_allocs() -> int:
    """Blocks currently allocated from DPDK's heap, over all NUMA sockets."""
    total = 0
    for i in range(_dpdk.rte_socket_count()):
        stats = _SocketStats()
        if (
            _dpdk.rte_malloc_get_socket_stats(_dpdk.rte_socket_id_by_idx(i), ctypes.byref(stats))
            == 0
        ):
            total += stats.alloc_count
    return total


@pytest.fixture(autouse=True)
def no_leak(env: Any) -> Iterator[None]:
    """Every test gives back every block it allocated."""
    gc.collect()
    before = heap_allocs()
    yield
    gc.collect()
    assert heap_allocs() == before, "the test leaked SPDK memory"


# --------------------------------------------------------------------------- allocation


@pytest.mark.parametrize(
    ("size", "align"),
    [
        (1, 1),
        (100, 64),
        (4095, 512),
        (4096, 4096),
        (12345, 4096),
        (1 << 20, 1 << 16),
        (8192, 1 << 21),
    ],
)
def test_alloc_is_zeroed_and_aligned(size: int, align: int) -> None:
    before = heap_allocs()
    buf = DmaBuf.alloc(size, align)
    assert heap_allocs() == before + 1
    assert len(buf) == buf.size == size
    assert buf.align == max(align, 64)
    assert buf.addr % buf.align == 0
    assert bytes(buf) == bytes(size)
    assert buf.parent is None and not buf.closed and buf.pins == 0 and buf.exports == 0
    buf.free()
    assert heap_allocs() == before
    assert buf.closed


def test_alloc_without_zeroing_is_usable() -> None:
    with DmaBuf.alloc(4096, zero=False) as buf:
        buf[:] = bytes(range(256)) * 16
        assert buf.tobytes() == bytes(range(256)) * 16
    assert buf.closed


@pytest.mark.parametrize("numa_id", [NUMA_ID_ANY, 0, 7])
def test_alloc_on_a_numa_node(numa_id: int) -> None:
    # a node that does not exist falls back to any node (SPDK does not enforce NUMA here)
    with DmaBuf.alloc(4096, numa_id=numa_id) as buf:
        assert buf.addr % 4096 == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "exc"),
    [
        ((0,), {}, ValueError),
        ((-1,), {}, ValueError),
        ((MAX_SIZE + 1,), {}, ValueError),
        ((1.5,), {}, TypeError),
        (("4096",), {}, TypeError),
        ((True,), {}, TypeError),
        ((None,), {}, TypeError),
        ((4096, 0), {}, ValueError),
        ((4096, 3), {}, ValueError),
        ((4096, 4097), {}, ValueError),
        ((4096, -4096), {}, ValueError),
        ((4096, MAX_ALIGN * 2), {}, ValueError),
        ((4096, 4096.0), {}, TypeError),
        ((4096,), {"numa_id": -2}, ValueError),
        ((4096,), {"numa_id": 2**31}, ValueError),
        ((4096,), {"numa_id": "0"}, TypeError),
        ((4096,), {"zero": "no"}, TypeError),  # a non-empty str is truthy: refuse, not zero
        ((4096,), {"zero": 0}, TypeError),
        ((4096,), {"zero": None}, TypeError),
    ],
)
def test_bad_arguments_raise_and_allocate_nothing(
    args: tuple[Any, ...], kwargs: dict[str, Any], exc: type[Exception]
) -> None:
    before = heap_allocs()
    with pytest.raises(exc):
        DmaBuf.alloc(*args, **kwargs)
    assert heap_allocs() == before


def test_allocation_failure_is_a_memory_error_naming_the_size() -> None:
    before = heap_allocs()
    size = 1 << 39  # 512 GiB: more than the env has
    with pytest.raises(MemoryError, match=str(size)):
        DmaBuf.alloc(size)
    assert heap_allocs() == before


def test_dmabuf_cannot_be_constructed_pickled_or_copied() -> None:
    with pytest.raises(TypeError):
        DmaBuf()
    with DmaBuf.alloc(64) as buf:
        with pytest.raises(TypeError):
            pickle.dumps(buf)
        with pytest.raises(TypeError):
            copy.copy(buf)
        with pytest.raises(TypeError):
            copy.deepcopy(buf)
        assert buf.exports == 0


# --------------------------------------------------------------------------- access


def test_item_and_slice_access() -> None:
    with DmaBuf.alloc(16) as buf:
        buf[0] = 255
        buf[-1] = 7
        buf[2:6] = b"abcd"
        buf[8:16:2] = bytearray(b"WXYZ")
        assert buf[0] == 255 and buf[-1] == 7 and buf[15] == 7
        assert buf[2:6] == b"abcd"
        assert buf[8:16:2] == b"WXYZ"
        assert buf[::-1] == bytes(buf)[::-1]
        assert list(buf) == list(bytes(buf))
        assert bytes(buf) == buf.tobytes()


@pytest.mark.parametrize(
    ("key", "value", "exc"),
    [
        (16, 1, IndexError),
        (-17, 1, IndexError),
        (0, 256, ValueError),
        (0, -1, ValueError),
        (0, b"x", TypeError),
        (0, True, TypeError),
        (slice(0, 4), b"abc", ValueError),
        (slice(0, 4), b"abcde", ValueError),
        (slice(0, 4), "abcd", TypeError),
        (slice(0, 4), 1234, TypeError),
        (slice(0, 8, 2), b"abcdefgh", ValueError),
        ("0", 1, TypeError),
    ],
)
def test_bad_writes_raise_and_change_nothing(key: Any, value: Any, exc: type[Exception]) -> None:
    with DmaBuf.alloc(16) as buf:
        buf[:] = bytes(range(16))
        with pytest.raises(exc):
            buf[key] = value
        assert bytes(buf) == bytes(range(16))
        assert buf.exports == 0


def test_writes_accept_any_contiguous_buffer() -> None:
    with DmaBuf.alloc(16) as buf, DmaBuf.alloc(4) as other:
        words = array.array("I", [0x04030201, 0x08070605])
        buf[0:8] = words  # cast to bytes, not rejected for its item format
        assert buf[0:8] == bytes(range(1, 9))
        other[:] = b"wxyz"
        buf[8:12] = other  # a DmaBuf is a source too
        buf[12:16] = memoryview(b"..abab..")[2:6]
        assert buf[8:16] == b"wxyzabab"
        buf[0:4] = memoryview(bytearray(b"a.b.c.d."))[::2]  # strided bytes are fine
        assert buf[0:4] == b"abcd"
        with pytest.raises(TypeError):
            buf[0:8] = memoryview(array.array("I", [1, 2, 3]))[::2]  # strided words: refused
        assert buf[0:4] == b"abcd"
        assert other.exports == 0 and buf.exports == 0


def test_view_is_a_writable_zero_copy_memoryview() -> None:
    with DmaBuf.alloc(64) as buf:
        with buf.view() as mv:
            assert (mv.format, mv.itemsize, mv.ndim, mv.nbytes, mv.readonly) == (
                "B",
                1,
                1,
                64,
                False,
            )
            mv[0:3] = b"abc"
            assert buf[0:3] == b"abc"
            buf[10] = 42
            assert mv[10] == 42
            assert ctypes.addressof(ctypes.c_char.from_buffer(mv)) == buf.addr
            assert buf.exports == 1
        assert buf.exports == 0


def test_fill() -> None:
    with DmaBuf.alloc(32) as buf:
        buf.fill(0xAB)
        assert bytes(buf) == b"\xab" * 32
        buf.fill(1, 4, 8)
        buf.fill(2, 30)
        buf.fill(3, 5, 5)  # empty range: nothing
        assert bytes(buf) == b"\xab" * 4 + b"\x01" * 4 + b"\xab" * 22 + b"\x02" * 2
        for args in [(256,), (-1,), (0, -1), (0, 0, 33), (0, 8, 4), (0, 33)]:
            with pytest.raises(ValueError):
                buf.fill(*args)
        with pytest.raises(TypeError):
            buf.fill(b"x")  # type: ignore[arg-type]
        assert bytes(buf) == b"\xab" * 4 + b"\x01" * 4 + b"\xab" * 22 + b"\x02" * 2
        assert buf.exports == 0


def test_copy_from_and_copy_to() -> None:
    with DmaBuf.alloc(16) as buf:
        assert buf.copy_from(b"hello") == 5
        assert buf.copy_from(bytearray(b"world"), 11) == 5
        assert buf[0:5] == b"hello" and buf[11:16] == b"world"
        with pytest.raises(ValueError):
            buf.copy_from(b"toolong", 10)  # does not fit: nothing copied
        with pytest.raises(ValueError):
            buf.copy_from(b"x", -1)
        assert buf[10:16] == b"\x00world"

        out = bytearray(8)
        assert buf.copy_to(out) == 8 and out == buf[0:8]
        assert buf.copy_to(out, 11) == 5 and out[:5] == b"world"
        assert buf.copy_to(out, 16) == 0
        with pytest.raises(ValueError):
            buf.copy_to(out, 17)
        with pytest.raises(TypeError):
            buf.copy_to(b"read-only")
        with DmaBuf.alloc(4) as small:
            assert buf.copy_to(small, 11) == 4 and bytes(small) == b"worl"
            assert small.copy_to(buf) == 4 and buf[0:4] == b"worl"
        # overlapping copy inside one allocation behaves like memmove
        with buf.slice(0, 8) as head:
            buf.copy_from(head, 2)
        assert buf[0:10] == b"woworlo\x00\x00\x00"
        assert buf.exports == 0


# --------------------------------------------------------------------------- sub-buffers


def test_slices_share_memory() -> None:
    with DmaBuf.alloc(8192, 4096) as buf:
        s = buf.slice(4096, 8192)
        assert (s.addr, len(s), s.align, s.parent) == (buf.addr + 4096, 4096, 4096, buf)
        s[0:4] = b"tail"
        assert buf[4096:4100] == b"tail"
        t = s.slice(1, 3)
        assert (t.addr, len(t), t.align, t.parent) == (buf.addr + 4097, 2, 1, s)
        buf[4097] = ord("X")
        assert t[0:2] == b"Xi"
        assert buf.slice(100).size == 8092
        assert "slice [4097:4099]" in repr(t)
        for args in [(0, 0), (10, 5), (-1, 4), (0, 8193), (8192,)]:
            with pytest.raises(ValueError):
                buf.slice(*args)
        t.free()
        s.free()


def test_slice_keeps_its_parent_alive_and_blocks_free() -> None:
    before = heap_allocs()
    buf = DmaBuf.alloc(4096)
    s = buf.slice(0, 100)
    with pytest.raises(BufferError, match="exported"):
        buf.free()
    assert not buf.closed and buf.exports == 1
    s.free()
    s.free()  # harmless
    assert s.closed and s.parent is None and buf.exports == 0
    with pytest.raises(ValueError, match="freed"):
        s[0]
    s2 = buf.slice(0, 100)
    del s2  # dropping a slice lets go of the parent too
    buf.free()
    assert heap_allocs() == before

    # the parent's own object may go: the slice still owns a reachable allocation
    buf = DmaBuf.alloc(4096)
    s = buf.slice(10, 20)
    parent = weakref.ref(buf)
    del buf
    assert parent() is s.parent and heap_allocs() == before + 1
    s[0:3] = b"abc"
    assert s[0:3] == b"abc"
    del s
    assert heap_allocs() == before


def test_numpy_view_is_zero_copy_and_tracked() -> None:
    np = pytest.importorskip("numpy")
    with DmaBuf.alloc(64) as buf:
        words = buf.numpy(np.uint32)
        assert words.shape == (16,) and words.flags.writeable
        assert words.ctypes.data == buf.addr
        words[0] = 0xDEADBEEF
        assert buf[0:4] == (0xDEADBEEF).to_bytes(4, "little")
        buf[4:8] = (7).to_bytes(4, "little")
        assert int(words[1]) == 7
        derived = words[2:4].view(np.uint8)
        del words
        with pytest.raises(BufferError):
            buf.free()
        del derived
        assert buf.exports == 0
        assert buf.numpy().dtype == np.uint8
        assert buf.numpy(np.float64).shape == (8,)
        with DmaBuf.alloc(10) as odd:
            with pytest.raises(ValueError):
                odd.numpy(np.uint32)  # 10 is not a multiple of 4
            assert odd.exports == 0
        assert buf.exports == 0


def test_numpy_is_imported_lazily() -> None:
    proc = run_py(
        """
        import sys
        import spdk_io.dma
        print("numpy" in sys.modules)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# --------------------------------------------------------------------------- lifetime


def test_free_with_live_view_raises_then_succeeds() -> None:
    before = heap_allocs()
    buf = DmaBuf.alloc(4096)
    buf[0:2] = b"ok"
    mv = buf.view()
    part = mv[10:20].cast("c")  # derived views count: they share the export
    mv.release()
    with pytest.raises(BufferError, match="exported"):
        buf.free()
    with pytest.raises(BufferError):
        buf.close()
    with pytest.raises(BufferError), buf:
        pass
    assert not buf.closed and buf[0:2] == b"ok" and heap_allocs() == before + 1
    part.release()
    buf.free()
    assert buf.closed and heap_allocs() == before


def test_free_while_pinned_raises() -> None:
    buf = DmaBuf.alloc(4096)
    buf.pin()
    buf.pin()
    assert buf.pins == 2
    with pytest.raises(BufferError, match="in flight"):
        buf.free()
    buf.unpin()
    with pytest.raises(BufferError, match="in flight"):
        buf.free()
    assert buf[0] == 0  # still usable
    buf.unpin()
    with pytest.raises(RuntimeError):
        buf.unpin()
    buf.free()
    with pytest.raises(ValueError, match="freed"):
        buf.pin()


def test_pinned_buffer_survives_garbage_collection() -> None:
    before = heap_allocs()
    buf = DmaBuf.alloc(4096)
    buf[0:4] = b"live"
    buf.pin()
    ref = weakref.ref(buf)
    del buf
    gc.collect()
    again = ref()
    assert again is not None and heap_allocs() == before + 1
    assert again[0:4] == b"live"
    again.unpin()
    del again
    gc.collect()
    assert ref() is None and heap_allocs() == before


def test_use_after_free_raises_value_error() -> None:
    buf = DmaBuf.alloc(4096)
    buf.free()
    buf.free()  # double free: a no-op
    buf.close()
    attempts: list[Any] = [
        lambda: buf.addr,
        lambda: buf[0],
        lambda: buf[0:1],
        lambda: buf.__setitem__(0, 1),
        lambda: buf.__setitem__(slice(0, 1), b"x"),
        lambda: bytes(buf),
        buf.tobytes,
        buf.view,
        lambda: list(buf),
        lambda: buf.fill(0),
        lambda: buf.copy_from(b"x"),
        lambda: buf.copy_to(bytearray(1)),
        lambda: buf.slice(0, 1),
        buf.pin,
        lambda: iovecs([buf]),
        lambda: DmaBufList([buf]),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match="freed"):
            attempt()
    assert (len(buf), buf.size, buf.closed, buf.exports, buf.pins) == (4096, 4096, True, 0, 0)
    assert "freed" in repr(buf)


def test_dropping_the_last_reference_frees() -> None:
    before = heap_allocs()
    buf = DmaBuf.alloc(4096)
    del buf
    assert heap_allocs() == before

    buf = DmaBuf.alloc(4096)
    buf[0:5] = b"still"
    mv = buf.view()
    del buf  # the view keeps the memory: no use-after-free through mv
    gc.collect()
    assert heap_allocs() == before + 1 and mv[0:5].tobytes() == b"still"
    mv.release()
    assert heap_allocs() == before


def test_exports_counts_every_kind_of_export() -> None:
    np = pytest.importorskip("numpy")
    with DmaBuf.alloc(4096) as buf:
        things: list[Any] = [buf.view(), buf.numpy(np.uint16), buf.slice(0, 8), DmaBufList([buf])]
        assert buf.exports == 4
        things.pop().release()
        assert buf.exports == 3
        things.clear()
        assert buf.exports == 0


# --------------------------------------------------------------------------- vectored I/O


def test_iovecs_and_dmabuflist() -> None:
    with DmaBuf.alloc(4096) as a, DmaBuf.alloc(512, 512) as b:
        parts = [a, b, a.slice(100, 300)]
        iov = iovecs(parts)
        assert isinstance(iov[0], g.struct_iovec) and len(iov) == 3
        assert [(e.iov_base, e.iov_len) for e in iov] == [(p.addr, len(p)) for p in parts]

        with DmaBufList(parts) as lst:
            assert (len(lst), lst.iovcnt, lst.nbytes) == (3, 3, 4096 + 512 + 200)
            assert list(lst) == parts and lst[1] is b and list(lst[1:]) == parts[1:]
            assert [(e.iov_base, e.iov_len) for e in lst.iov] == [(p.addr, len(p)) for p in parts]
            assert ctypes.cast(lst.iov, ctypes.POINTER(g.struct_iovec))[2].iov_len == 200
            with pytest.raises(BufferError):
                b.free()  # the list exports every buffer
            lst.pin()
            assert (a.pins, b.pins, parts[2].pins) == (1, 1, 1)
            lst.unpin()
        assert "released" in repr(lst)
        with pytest.raises(ValueError):
            lst.iov  # noqa: B018
        lst.release()  # idempotent
        assert b.exports == 0
        parts[2].free()
        assert a.exports == 0
        del parts, lst


def test_dmabuflist_rejects_bad_items_without_keeping_exports() -> None:
    with DmaBuf.alloc(64) as a:
        dead = DmaBuf.alloc(64)
        dead.free()
        with pytest.raises(ValueError):
            DmaBufList([])
        with pytest.raises(TypeError):
            DmaBufList([a, b"bytes"])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            iovecs([a, bytearray(4)])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="freed"):
            DmaBufList([a, dead])
        assert a.exports == 0
        # a list whose later buffer was freed (after release) pins all or nothing
        s = a.slice(0, 8)
        lst = DmaBufList([a, s])
        lst.release()
        s.free()
        with pytest.raises(ValueError, match="freed"):
            lst.pin()
        assert a.pins == 0 and a.exports == 0


# --------------------------------------------------------------------------- threads and env


def test_alloc_and_free_from_another_os_thread() -> None:
    before = heap_allocs()
    bufs = [DmaBuf.alloc(4096) for _ in range(4)]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for b in bufs:
                b[0:3] = b"thr"
                b.free()
            bufs.append(DmaBuf.alloc(4096))  # a plain OS thread may allocate too
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert not errors and len(bufs) == 5 and all(b.closed for b in bufs[:4])
    assert bufs[4][0:3] == bytes(3) and heap_allocs() == before + 1
    bufs[4].free()
    assert heap_allocs() == before


def _race_free_against_writer() -> None:
    buf = DmaBuf.alloc(1 << 16)
    stop = threading.Event()
    seen: list[BaseException] = []

    def writer() -> None:
        data = bytes(range(256)) * 256
        while not stop.is_set():
            try:
                buf[:] = data
                buf.fill(1)
                buf.tobytes()
            except ValueError:
                return  # freed under us: refused cleanly
            except BaseException as exc:
                seen.append(exc)
                return

    t = threading.Thread(target=writer)
    t.start()
    while True:
        try:
            buf.free()
            break
        except BufferError:
            pass  # the writer was holding the memory: try again
    stop.set()
    t.join(10)
    assert not seen and buf.closed


def test_concurrent_access_and_free_never_touch_freed_memory() -> None:
    for _ in range(20):
        _race_free_against_writer()


def test_alloc_without_env_is_a_runtime_error() -> None:
    proc = run_py(
        """
        from spdk_io.dma import DmaBuf
        try:
            DmaBuf.alloc(4096)
        except RuntimeError as exc:
            print("RuntimeError", exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("RuntimeError no SPDK environment is running")


def test_buffers_outlive_the_env_and_are_freed_by_the_next_one() -> None:
    proc = run_py(
        timeout=40,
        code="""
        import gc
        from spdk_io import dma
        from spdk_io.env import Env
        from spdk_io.dma import DmaBuf

        with Env(name="dma_outlive", mem_size_mb=512):
            kept = DmaBuf.alloc(4096)
            kept[0:5] = b"hello"
            dropped = DmaBuf.alloc(4096)
            pinned = DmaBuf.alloc(4096)
            pinned.pin()
        assert kept[0:5] == b"hello"          # the memory is still mapped
        kept.free()                           # no env: the free is queued, nothing crashes
        del dropped
        gc.collect()
        assert len(dma._deferred) == 2, dma._deferred
        try:
            DmaBuf.alloc(64)
        except RuntimeError:
            pass
        with Env(name="dma_outlive"):
            fresh = DmaBuf.alloc(64)          # drains the queue
            assert dma._deferred == []
            pinned[0:3] = b"abc"              # an older generation's buffer still works
            assert pinned[0:3] == b"abc"
            pinned.unpin()
            pinned.free()
            fresh.free()
        print("ok")
        """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
