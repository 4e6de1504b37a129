"""DmaBuf as a PEP 688 buffer (Python 3.12+): ``memoryview(buf)``, ``readinto``, ``recv_into``,
``hashlib``, and exact export counting.

On 3.11 a ``DmaBuf`` is not a buffer (``view()`` is the way in); these tests are skipped
there, except the ones that pin down what 3.11 keeps doing.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import inspect
import pickle
import socket
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spdk_io.dma import DmaBuf, DmaBufList
from tests.conftest import run_py
from tests.test_dma import heap_allocs

pytestmark = pytest.mark.usefixtures("env")

py312 = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="PEP 688 (__buffer__) needs Python 3.12+"
)


@pytest.fixture(autouse=True)
def no_leak(env: Any) -> Iterator[None]:
    """Every test gives back every block it allocated."""
    gc.collect()
    before = heap_allocs()
    yield
    gc.collect()
    assert heap_allocs() == before, "the test leaked SPDK memory"


def _any(buf: DmaBuf) -> Any:
    """``buf`` typed for APIs that take a buffer (mypy checks as 3.11, where it is not one)."""
    return buf


# --------------------------------------------------------------------------- consumers


@py312
def test_memoryview_reads_and_writes_the_dma_memory() -> None:
    with DmaBuf.alloc(64) as buf:
        with memoryview(_any(buf)) as mv:
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
            assert ctypes.addressof(ctypes.c_char.from_buffer(mv)) == buf.addr  # zero-copy
        assert buf.exports == 0


@py312
def test_readinto_from_a_real_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 20  # 5120 bytes
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with DmaBuf.alloc(4096) as buf:
        with path.open("rb", buffering=0) as f:
            assert f.readinto(_any(buf)) == 4096
            assert bytes(buf) == data[:4096]
            assert f.readinto(_any(buf)) == 1024  # short read: the rest is untouched
            assert bytes(buf) == data[4096:] + data[1024:4096]
        with path.open("rb") as f:  # buffered reader too
            assert f.readinto(_any(buf.slice(100, 200))) == 100
        assert buf[100:200] == data[:100]
        assert buf.exports == 0
        with path.open("wb") as f:  # and the other way: write(buf) without a copy
            assert f.write(_any(buf)) == 4096
        assert path.read_bytes() == bytes(buf)
        assert buf.exports == 0


@py312
def test_recv_into_over_a_socketpair() -> None:
    a, b = socket.socketpair()
    with a, b, DmaBuf.alloc(4096) as buf:
        a.sendall(b"hello, dma")
        n = b.recv_into(_any(buf))
        assert buf[:n] == b"hello, dma"[:n] and n > 0
        buf[:] = bytes(4096)
        buf[0:4] = b"ping"
        a.sendall(memoryview(_any(buf))[:4])
        assert b.recv(4) == b"ping"
        a.send(_any(buf.slice(0, 4)))
        assert b.recv(4) == b"ping"
        assert buf.exports == 0


@py312
def test_hashlib_and_bytes_and_bytearray() -> None:
    with DmaBuf.alloc(1000) as buf:
        buf[:] = bytes(range(200)) * 5
        assert hashlib.sha256(_any(buf)).hexdigest() == hashlib.sha256(bytes(buf)).hexdigest()
        h = hashlib.sha256()
        h.update(_any(buf))
        assert h.digest() == hashlib.sha256(bytes(range(200)) * 5).digest()
        assert bytes(buf) == bytearray(_any(buf)) == bytes(range(200)) * 5
        assert b"".join([_any(buf)]) == bytes(buf)
        assert buf.exports == 0


# --------------------------------------------------------------------------- exact counting


@py312
def test_free_refused_exactly_while_a_memoryview_lives() -> None:
    before = heap_allocs()
    buf = DmaBuf.alloc(4096)
    buf[0:2] = b"ok"
    mv = memoryview(_any(buf))
    assert buf.exports == 1
    with pytest.raises(BufferError, match="exported"):
        buf.free()
    with pytest.raises(BufferError), buf:
        pass
    assert not buf.closed and buf[0:2] == b"ok" and bytes(mv[0:2]) == b"ok"
    mv.release()
    assert buf.exports == 0
    buf.free()
    assert buf.closed and heap_allocs() == before


@py312
def test_derived_slices_and_casts_keep_the_export_until_the_last_one_goes() -> None:
    with DmaBuf.alloc(64) as buf:
        mv = memoryview(_any(buf))
        words = mv.cast("I")
        part = words[2:4]
        raw = part.cast("B")
        mv.release()
        words.release()
        assert buf.exports == 1  # one export: every derived view shares it
        with pytest.raises(BufferError):
            buf.free()
        part.release()
        with pytest.raises(BufferError):
            buf.free()
        raw[0] = 7
        assert buf[8] == 7
        raw.release()
        assert buf.exports == 0

        outer = memoryview(memoryview(_any(buf))[8:16])  # a view of a view
        assert buf.exports == 1
        del outer  # dropped, not released: the same
        assert buf.exports == 0


@py312
def test_numpy_and_ctypes_exports_are_counted_exactly() -> None:
    np = pytest.importorskip("numpy")
    with DmaBuf.alloc(64) as buf:
        arr = np.frombuffer(_any(buf), np.uint32)
        assert arr.flags.writeable and arr.ctypes.data == buf.addr
        derived = arr[1:3].view(np.uint8)
        del arr
        assert buf.exports == 1
        with pytest.raises(BufferError):
            buf.free()
        del derived
        assert buf.exports == 0

        c = (ctypes.c_ubyte * 8).from_buffer(_any(buf), 8)
        assert buf.exports == 1
        c[0] = 9
        assert buf[8] == 9
        with pytest.raises(BufferError):
            buf.free()
        del c
        assert buf.exports == 0


@py312
def test_every_kind_of_export_counts_one() -> None:
    np = pytest.importorskip("numpy")
    with DmaBuf.alloc(4096) as buf:
        things: list[Any] = [
            memoryview(_any(buf)),
            buf.view(),
            buf.numpy(np.uint16),
            np.frombuffer(_any(buf), np.uint8),
            buf.slice(0, 8),
            DmaBufList([buf]),
        ]
        assert buf.exports == len(things)
        while things:
            obj = things.pop()
            if hasattr(obj, "release"):
                obj.release()
            del obj
            assert buf.exports == len(things)
        # a slice's own exports keep the slice's export of its parent alive
        s = buf.slice(16, 32)
        with memoryview(_any(s)) as mv:
            with pytest.raises(BufferError):
                s.free()
            assert (buf.exports, s.exports) == (1, 1)
            mv[0] = 5
        assert buf[16] == 5
        s.free()
        assert buf.exports == 0


@py312
def test_a_held_view_can_never_reach_freed_memory() -> None:
    before = heap_allocs()
    buf = DmaBuf.alloc(4096)
    buf[0:5] = b"still"
    mv = memoryview(_any(buf))
    del buf  # the export keeps the buffer, hence the memory
    gc.collect()
    assert heap_allocs() == before + 1 and bytes(mv[0:5]) == b"still"
    mv.release()
    gc.collect()
    assert heap_allocs() == before

    buf = DmaBuf.alloc(64)
    buf.free()
    attempts: list[Callable[[], object]] = [
        lambda: memoryview(_any(buf)),
        lambda: hashlib.sha256(_any(buf)),
        lambda: bytearray(_any(buf)),
        lambda: (ctypes.c_ubyte * 1).from_buffer(_any(buf)),
        lambda: _any(buf).__buffer__(0),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match="freed"):
            attempt()
    with socket.socket() as sk, pytest.raises(TypeError, match="read-write bytes-like"):
        sk.recv_into(_any(buf))  # "w*" argument parsing turns any buffer error into this
    assert buf.exports == 0


@py312
def test_pins_still_refuse_free_with_or_without_views() -> None:
    with DmaBuf.alloc(4096) as buf:
        buf.pin()
        with memoryview(_any(buf)) as mv:
            with pytest.raises(BufferError, match="in flight"):
                buf.free()
            mv[0] = 1
        with pytest.raises(BufferError, match="in flight"):
            buf.free()
        assert buf.exports == 0 and buf[0] == 1
        buf.unpin()


@py312
def test_direct_protocol_calls_check_their_arguments() -> None:
    with DmaBuf.alloc(16) as buf:
        raw: Any = buf
        for bad in ["1", 1.0, None, True]:
            with pytest.raises(TypeError, match="flags"):
                raw.__buffer__(bad)
        with pytest.raises(ValueError, match="flags"):
            raw.__buffer__(-1)
        assert buf.exports == 0
        for not_a_view in [None, b"x", bytearray(16), 0]:
            with pytest.raises(TypeError, match="view"):
                raw.__release_buffer__(not_a_view)
        mv = raw.__buffer__(inspect.BufferFlags.WRITABLE)  # type: ignore[attr-defined, unused-ignore]  # 3.12+
        assert isinstance(mv, memoryview) and not mv.readonly and mv.nbytes == 16
        assert buf.exports == 1
        with pytest.raises(ValueError, match="not exported by"):
            raw.__release_buffer__(memoryview(bytearray(16)))  # not ours: nothing changes
        with DmaBuf.alloc(16) as other:
            other_mv = memoryview(_any(other))
            with pytest.raises(ValueError, match="not exported by"):
                raw.__release_buffer__(other_mv)
            other_mv.release()
        assert buf.exports == 1
        held = pickle.PickleBuffer(mv)  # holds a buffer of mv: it cannot be released yet
        with pytest.raises(BufferError):
            raw.__release_buffer__(mv)
        assert buf.exports == 1 and held.raw()[0] == 0
        held.release()
        raw.__release_buffer__(mv)
        assert buf.exports == 0 and mv.__repr__().startswith("<released")
        with pytest.raises(ValueError, match="not exported by"):
            raw.__release_buffer__(mv)  # twice: refused
        assert buf.exports == 0


@py312
def test_views_derived_from_a_direct_export_still_keep_the_memory() -> None:
    # Direct __buffer__ calls are outside CPython's tracking: a view derived from the
    # returned memoryview is not counted once that one is handed back, but it still
    # holds the memory, so free() succeeds yet nothing is freed under it.
    before = heap_allocs()
    buf = DmaBuf.alloc(64)
    raw: Any = buf
    mv = raw.__buffer__(0)
    inner = mv[8:16]
    raw.__release_buffer__(mv)
    assert buf.exports == 0
    buf.free()
    inner[0] = 1  # still mapped: the memory goes back only with the last view
    assert heap_allocs() == before + 1 and inner[0] == 1
    inner.release()
    assert heap_allocs() == before


@py312
def test_a_failed_free_never_shows_the_buffer_as_freed_to_another_thread() -> None:
    # exports are only made under the lock on 3.12+, so free() can decide before it
    # touches anything: a concurrent reader never sees a transient "freed"
    with DmaBuf.alloc(64) as buf:
        mv = memoryview(_any(buf))
        stop = threading.Event()
        seen: list[BaseException] = []

        def reader() -> None:
            while not stop.is_set():
                try:
                    buf.addr  # noqa: B018
                    buf[0]
                except BaseException as exc:  # reported below
                    seen.append(exc)
                    return

        t = threading.Thread(target=reader)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible
        t.start()
        try:
            for _ in range(20000):
                with pytest.raises(BufferError):
                    buf.free()
        finally:
            stop.set()
            t.join(10)
            sys.setswitchinterval(interval)
        mv.release()
        assert not seen, seen[:1]


@py312
def test_a_pinned_slice_dropped_by_its_owner_releases_its_parent_on_unpin() -> None:
    buf = DmaBuf.alloc(4096)
    s = buf.slice(0, 64)
    s.pin()
    ref = weakref.ref(s)
    del s
    gc.collect()
    assert buf.exports == 1
    again = ref()
    assert again is not None
    again.unpin()
    del again
    gc.collect()
    assert ref() is None and buf.exports == 0
    buf.free()


@py312
def test_exports_from_many_threads_are_counted_exactly() -> None:
    with DmaBuf.alloc(4096) as buf:
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(300):
                    with memoryview(_any(buf)) as mv:
                        mv[0] = 1
                    hashlib.sha256(_any(buf))
                    s = buf.slice(0, 16)
                    s.free()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors and buf.exports == 0


@py312
def test_a_collected_cycle_releasing_an_export_inside_the_lock_does_not_deadlock() -> None:
    # The cyclic GC runs at the first eval-breaker check after an allocation, which can
    # be inside DmaBuf's critical sections (``with _lock:`` itself allocates).  If it
    # collects a cycle holding a view of a DmaBuf, that buffer's __release_buffer__
    # runs right there, on the thread that already holds the lock.
    proc = run_py(
        timeout=40,
        code="""
        import gc
        from spdk_io.env import Env
        from spdk_io.dma import DmaBuf

        class Cycle:
            pass

        def cycle_holding_a_view(buf):
            c = Cycle()
            c.self = c
            c.mv = memoryview(buf)

        with Env(name="dma_gc_lock", mem_size_mb=512):
            a = DmaBuf.alloc(64)
            b = DmaBuf.alloc(64)
            ops = [
                lambda: (b.pin(), b.unpin()),
                lambda: memoryview(b).release(),
                lambda: b.slice(0, 8).free(),
                lambda: b[0:4],
                b.free,
            ]
            for op in ops:
                gc.collect()
                gc.disable()
                cycle_holding_a_view(a)
                gc.set_threshold(1)  # the next allocation schedules a collection
                gc.enable()
                op()
                gc.disable()
                gc.set_threshold(700)
                gc.enable()
                gc.collect()
                assert a.exports == 0, a.exports
            assert b.closed
            a.free()
        print("ok")
        """,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


# --------------------------------------------------------------------------- Python 3.11


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.11 behaviour")
def test_on_311_a_dmabuf_is_not_a_buffer_and_view_is_the_way_in() -> None:
    with DmaBuf.alloc(64) as buf:
        with pytest.raises(TypeError):
            memoryview(_any(buf))
        with buf.view() as mv:
            mv[0] = 3
            assert buf.exports == 1
        assert buf[0] == 3 and buf.exports == 0
