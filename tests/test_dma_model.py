"""A model of DmaBuf: random sequences of operations checked against a ``bytearray``.

One allocation per example; sub-buffers (slices of slices), memoryviews, numpy
views, DmaBufLists, pins, frees and dropped references are created and destroyed at
random; on Python 3.12+ also buffer-protocol exports (``memoryview(buf)``,
``np.frombuffer(buf)``, ``ctypes`` ``from_buffer(buf)``) and consumers (``hashlib``,
``bytearray``, ``readinto``).  After every step the real buffers must agree with the
model byte for byte, report the export and pin counts the model predicts (exactly, on
3.12+), and hold exactly as much SPDK memory as the model says is reachable.  Every
misuse (out of range, bad value, free with exports or pins, use after free) must raise
the predicted exception and change nothing.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from spdk_io.dma import DmaBuf, DmaBufList
from tests.test_dma import heap_allocs

try:
    import numpy as np
except ImportError:  # numpy is optional: the model then uses memoryviews only
    np = None  # type: ignore[assignment]

T = TypeVar("T")

VIEW_KINDS = ["memoryview", "numpy"] if np is not None else ["memoryview"]
PEP688 = sys.version_info >= (3, 12)  # a DmaBuf is itself a buffer
if PEP688:
    VIEW_KINDS += ["buffer", "ctypes"] + (["frombuffer"] if np is not None else [])


@dataclass(eq=False)
class Node:
    """A DmaBuf (the allocation or a slice) as the model sees it."""

    buf: DmaBuf | None  # None once the test dropped its reference
    start: int  # absolute offsets into the allocation
    stop: int
    parent: Node | None
    mem: bytearray  # the model of the whole allocation (shared by its slices)
    base: int  # the allocation's address
    freed: bool = False
    pins: int = 0

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(eq=False)
class View:
    node: Node
    obj: Any  # memoryview, numpy.ndarray or ctypes array
    start: int
    stop: int


@dataclass(eq=False)
class Lst:
    obj: DmaBufList
    nodes: list[Node] = field(default_factory=list)


def _outcome(expected: type[BaseException] | None, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; it must raise ``expected`` (or succeed when it is None)."""
    rule_name = sys._getframe(1).f_code.co_name
    event(f"{rule_name}: {'ok' if expected is None else expected.__name__}")
    try:
        result = fn()
    except BaseException as exc:
        if expected is None or not isinstance(exc, expected):
            raise AssertionError(f"expected {expected}, got {exc!r}") from exc
        return None  # the traceback (and anything it holds) dies here
    assert expected is None, f"expected {expected.__name__}, nothing was raised"
    return result


def _pick(data: st.DataObject, items: list[T]) -> T:
    # draw an index, not the object: hypothesis may keep what it draws, and a kept
    # reference to a buffer or view would change the lifetimes under test
    return items[data.draw(st.integers(0, len(items) - 1))]


def _slice_len(size: int, key: slice) -> int:
    return len(range(size)[key])


class DmaModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.base_allocs = heap_allocs()
        self.nodes: list[Node] = []
        self.views: list[View] = []
        self.lists: list[Lst] = []

    # -- model helpers ---------------------------------------------------------------

    def exports(self, node: Node) -> int:
        return (
            sum(v.node is node for v in self.views)
            + sum(n is node for lst in self.lists for n in lst.nodes)
            + sum(c.parent is node and self.array_alive(c) for c in self.nodes)
        )

    def array_alive(self, node: Node) -> bool:
        if node.freed:
            return False
        return node.buf is not None or node.pins > 0 or self.exports(node) > 0

    def held(self) -> list[Node]:
        """Nodes the test still references (freed ones too: for use-after-free)."""
        return [n for n in self.nodes if n.buf is not None]

    def snapshot(self, node: Node) -> bytes:
        return bytes(node.mem[node.start : node.stop])

    def pick(self, data: st.DataObject, among: list[Node] | None = None) -> Node:
        return _pick(data, self.held() if among is None else among)

    def source(self, data: st.DataObject, length: int) -> tuple[Any, bytes | None, bool]:
        """A bytes-like value or a held DmaBuf: (value, its bytes, is it a freed DmaBuf)."""
        if data.draw(st.booleans()):
            node = self.pick(data)
            assert node.buf is not None
            return node.buf, None if node.freed else self.snapshot(node), node.freed
        n = data.draw(st.sampled_from([length, length, max(length - 1, 0), length + 1]))
        raw = data.draw(st.binary(min_size=n, max_size=n))
        return data.draw(st.sampled_from([bytes, bytearray, memoryview]))(raw), raw, False

    def write(self, node: Node, offset: int, data: bytes) -> None:
        pos = node.start + offset
        node.mem[pos : pos + len(data)] = data

    # -- allocation ------------------------------------------------------------------

    def _alloc(self, size: int, align: int) -> None:
        buf = DmaBuf.alloc(size, align)
        self.nodes.append(Node(buf, 0, size, None, bytearray(size), buf.addr))

    @initialize(size=st.integers(1, 48), align=st.sampled_from([64, 512, 4096]))
    def alloc(self, size: int, align: int) -> None:
        self._alloc(size, align)

    @precondition(lambda self: len(self.held()) < 4)
    @rule(size=st.integers(1, 48), align=st.sampled_from([64, 512, 4096]))
    def alloc_another(self, size: int, align: int) -> None:
        self._alloc(size, align)

    # -- writes ----------------------------------------------------------------------

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def set_item(self, data: st.DataObject) -> None:
        node = self.pick(data)
        i = data.draw(st.integers(-node.size - 2, node.size + 1), label="index")
        value = data.draw(st.integers(-1, 256), label="value")
        expected: type[Exception] | None = None
        if node.freed:
            expected = ValueError
        elif not -node.size <= i < node.size:
            expected = IndexError
        elif not 0 <= value <= 255:
            expected = ValueError
        assert node.buf is not None
        buf = node.buf
        _outcome(expected, lambda: buf.__setitem__(i, value))
        if expected is None:
            node.mem[node.start + i % node.size] = value

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def set_slice(self, data: st.DataObject) -> None:
        node = self.pick(data)
        bound = st.none() | st.integers(-node.size - 2, node.size + 2)
        key = slice(
            data.draw(bound, label="start"),
            data.draw(bound, label="stop"),
            data.draw(st.none() | st.sampled_from([1, 2, 3, -1, -2]), label="step"),
        )
        n = _slice_len(node.size, key)
        value, raw, value_freed = self.source(data, n)
        expected = ValueError if node.freed or value_freed or raw is None or len(raw) != n else None
        assert node.buf is not None
        buf = node.buf
        _outcome(expected, lambda: buf.__setitem__(key, value))
        if expected is None:
            assert raw is not None
            for k, j in enumerate(range(node.size)[key]):
                node.mem[node.start + j] = raw[k]

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def fill(self, data: st.DataObject) -> None:
        node = self.pick(data)
        byte = data.draw(st.integers(-1, 256), label="byte")
        start = data.draw(st.integers(-1, node.size + 1), label="start")
        end = data.draw(st.none() | st.integers(-1, node.size + 1), label="end")
        stop = node.size if end is None else end
        ok = not node.freed and 0 <= byte <= 255 and 0 <= start <= stop <= node.size
        assert node.buf is not None
        buf = node.buf
        _outcome(None if ok else ValueError, lambda: buf.fill(byte, start, end))
        if ok:
            self.write(node, start, bytes([byte]) * (stop - start))

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def copy_from(self, data: st.DataObject) -> None:
        node = self.pick(data)
        value, raw, value_freed = self.source(data, data.draw(st.integers(0, node.size)))
        offset = data.draw(st.integers(-1, node.size + 1), label="offset")
        ok = (
            not node.freed
            and not value_freed
            and raw is not None
            and offset >= 0
            and offset + len(raw) <= node.size
        )
        assert node.buf is not None
        buf = node.buf
        got = _outcome(None if ok else ValueError, lambda: buf.copy_from(value, offset))
        if ok:
            assert raw is not None and got == len(raw)
            self.write(node, offset, raw)

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def copy_to(self, data: st.DataObject) -> None:
        node = self.pick(data)
        offset = data.draw(st.integers(-1, node.size + 1), label="offset")
        dst_node: Node | None = None
        if data.draw(st.booleans()):
            dst_node = self.pick(data)
            assert dst_node.buf is not None
            dst: Any = dst_node.buf
        else:
            dst = bytearray(data.draw(st.integers(0, node.size + 2), label="dst size"))
        ok = not node.freed and (dst_node is None or not dst_node.freed)
        ok = ok and 0 <= offset <= node.size
        assert node.buf is not None
        buf = node.buf
        got = _outcome(None if ok else ValueError, lambda: buf.copy_to(dst, offset))
        if ok:
            n = min(len(dst), node.size - offset)
            assert got == n
            chunk = self.snapshot(node)[offset : offset + n]
            if dst_node is None:
                assert dst[:n] == chunk
            else:
                self.write(dst_node, 0, chunk)

    # -- exports ---------------------------------------------------------------------

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def make_slice(self, data: st.DataObject) -> None:
        node = self.pick(data)
        start = data.draw(st.integers(-1, node.size + 1), label="start")
        stop = data.draw(st.integers(-1, node.size + 1), label="stop")
        ok = not node.freed and 0 <= start < stop <= node.size
        assert node.buf is not None
        buf = node.buf
        sub = _outcome(None if ok else ValueError, lambda: buf.slice(start, stop))
        if ok:
            assert sub.parent is buf and sub.addr == node.base + node.start + start
            self.nodes.append(
                Node(sub, node.start + start, node.start + stop, node, node.mem, node.base)
            )

    @precondition(lambda self: self.held())
    @rule(data=st.data(), kind=st.sampled_from(VIEW_KINDS))
    def make_view(self, data: st.DataObject, kind: str) -> None:
        node = self.pick(data)
        a = data.draw(st.integers(0, node.size), label="a")
        b = data.draw(st.integers(a, node.size), label="b")
        assert node.buf is not None
        buf = node.buf
        raw: Any = buf  # a buffer on 3.12+ (mypy checks as 3.11)
        make: dict[str, Callable[[], Any]] = {
            "memoryview": lambda: buf.view()[a:b],
            "numpy": lambda: buf.numpy()[a:b],
            "buffer": lambda: memoryview(raw)[a:b],
            "frombuffer": lambda: np.frombuffer(raw, np.uint8)[a:b],
            "ctypes": lambda: (ctypes.c_ubyte * (b - a)).from_buffer(raw, a),
        }
        obj = _outcome(ValueError if node.freed else None, make[kind])
        if not node.freed:
            self.views.append(View(node, obj, node.start + a, node.start + b))

    @precondition(lambda self: any(v.stop > v.start for v in self.views))
    @rule(data=st.data())
    def write_through_view(self, data: st.DataObject) -> None:
        view = _pick(data, [v for v in self.views if v.stop > v.start])
        i = data.draw(st.integers(0, view.stop - view.start - 1), label="i")
        value = data.draw(st.integers(0, 255), label="value")
        view.obj[i] = value
        view.node.mem[view.start + i] = value

    @precondition(lambda self: self.views)
    @rule(data=st.data())
    def release_view(self, data: st.DataObject) -> None:
        view = _pick(data, self.views)
        self.views.remove(view)
        if isinstance(view.obj, memoryview):
            view.obj.release()
        view.obj = None  # a numpy view or ctypes array is released by dropping it

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def make_list(self, data: st.DataObject) -> None:
        members = [self.pick(data) for _ in range(data.draw(st.integers(1, 3)))]
        bufs = [n.buf for n in members if n.buf is not None]
        freed = any(n.freed for n in members)
        lst = _outcome(ValueError if freed else None, lambda: DmaBufList(bufs))
        if not freed:
            assert [(e.iov_base, e.iov_len) for e in lst.iov] == [
                (n.base + n.start, n.size) for n in members
            ]
            assert lst.nbytes == sum(n.size for n in members)
            self.lists.append(Lst(lst, members))

    @precondition(lambda self: self.lists)
    @rule(data=st.data())
    def release_list(self, data: st.DataObject) -> None:
        lst = _pick(data, self.lists)
        self.lists.remove(lst)
        lst.obj.release()
        del lst.obj

    @precondition(lambda self: PEP688 and self.held())
    @rule(data=st.data(), how=st.sampled_from(["sha256", "bytearray", "readinto"]))
    def consume(self, data: st.DataObject, how: str) -> None:
        """Hand the DmaBuf itself to code that takes any buffer (3.12+)."""
        node = self.pick(data)
        assert node.buf is not None
        raw: Any = node.buf
        if how == "sha256":
            digest = _outcome(ValueError if node.freed else None, lambda: hashlib.sha256(raw))
            if not node.freed:
                assert digest.digest() == hashlib.sha256(self.snapshot(node)).digest()
        elif how == "bytearray":
            copy = _outcome(ValueError if node.freed else None, lambda: bytearray(raw))
            if not node.freed:
                assert copy == self.snapshot(node)
        else:
            src = data.draw(st.binary(max_size=node.size + 2), label="file")
            # readinto's argument parsing reports a freed buffer as a TypeError
            got = _outcome(TypeError if node.freed else None, lambda: io.BytesIO(src).readinto(raw))
            if not node.freed:
                assert got == min(len(src), node.size)
                self.write(node, 0, src[: node.size])

    # -- pins, frees, dropped references ---------------------------------------------

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def pin(self, data: st.DataObject) -> None:
        node = self.pick(data)
        assert node.buf is not None
        _outcome(ValueError if node.freed else None, node.buf.pin)
        if not node.freed:
            node.pins += 1

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def unpin(self, data: st.DataObject) -> None:
        node = self.pick(data)
        assert node.buf is not None
        _outcome(RuntimeError if node.pins == 0 else None, node.buf.unpin)
        node.pins = max(node.pins - 1, 0)

    @precondition(lambda self: self.held())
    @rule(data=st.data(), how=st.sampled_from(["free", "close", "with"]))
    def free(self, data: st.DataObject, how: str) -> None:
        node = self.pick(data)
        busy = not node.freed and (node.pins > 0 or self.exports(node) > 0)
        assert node.buf is not None
        buf = node.buf

        def go() -> None:
            if how == "with":
                with buf:
                    pass
            else:
                getattr(buf, how)()

        _outcome(BufferError if busy else None, go)
        if not busy:
            node.freed = True

    @precondition(lambda self: any(n.pins == 0 for n in self.held()))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        node = self.pick(data, [n for n in self.held() if n.pins == 0])
        node.buf = None  # views, lists and slices may still keep its memory reachable

    # -- checks ----------------------------------------------------------------------

    @invariant()
    def buffers_agree_with_the_model(self) -> None:
        for node in self.held():
            assert node.buf is not None
            buf = node.buf
            assert (len(buf), buf.closed, buf.pins) == (node.size, node.freed, node.pins)
            if node.freed:
                _outcome(ValueError, buf.tobytes)
                assert buf.exports == 0
            else:
                assert bytes(buf) == self.snapshot(node)
                assert buf.addr == node.base + node.start
                assert buf.exports == self.exports(node)
        for view in self.views:
            assert bytes(view.obj) == bytes(view.node.mem[view.start : view.stop])

    @invariant()
    def memory_is_held_exactly_while_reachable(self) -> None:
        # slices keep their allocation alive through its export count
        alive = sum(self.array_alive(n) for n in self.nodes if n.parent is None)
        assert heap_allocs() == self.base_allocs + alive

    def teardown(self) -> None:
        while self.lists:
            self.lists.pop().obj.release()  # and drop it: it references its buffers
        while self.views:
            obj = self.views.pop().obj
            if isinstance(obj, memoryview):
                obj.release()
            del obj
        for node in reversed(self.nodes):  # children were appended after their parents
            while node.buf is not None and node.pins:
                node.buf.unpin()
                node.pins -= 1
            if node.buf is not None:
                node.buf.free()
        self.nodes.clear()
        assert heap_allocs() == self.base_allocs, "an example leaked SPDK memory"


def test_dmabuf_against_a_bytearray_model(env: Any) -> None:
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        DmaModel,
        settings=settings(
            max_examples=150,
            stateful_step_count=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
