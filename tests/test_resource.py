"""The one lifecycle base (spdk_io.resource), SPDK-free, with a stand-in owner.

tests/test_thread_exit.py checks a real SPDK thread's registry closing what was left open."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from spdk_io.errors import WrongThreadError
from spdk_io.resource import Resource

pytestmark = pytest.mark.spdk_free


class FakeOwner:
    """What Resource needs of an SPDK thread, without SPDK."""

    def __init__(self) -> None:
        self.name = "fake"
        self.ident = threading.get_ident()
        self.open: list[Resource] = []

    def check_owner(self) -> None:
        if threading.get_ident() != self.ident:
            raise WrongThreadError("wrong thread")

    def register(self, resource: Resource) -> None:
        self.open.append(resource)

    def unregister(self, resource: Resource) -> None:
        self.open.remove(resource)


class Thing(Resource):
    def __init__(
        self, log: list[str], name: str, owner: Any, parent: Resource | None = None
    ) -> None:
        self.log = log
        self.name = name
        self.busy = False
        super().__init__(owner, parent)

    def _refusal(self) -> BaseException | None:
        return BlockingIOError(f"{self.name} busy") if self.busy else None

    def _release(self) -> None:
        self.log.append(self.name)


def test_close_is_idempotent_and_releases_once() -> None:
    owner, log = FakeOwner(), list[str]()
    t = Thing(log, "a", owner)
    assert owner.open == [t]
    t.close()
    t.close()
    assert log == ["a"] and t.closed and owner.open == []


def test_context_manager_closes() -> None:
    log: list[str] = []
    with Thing(log, "a", FakeOwner()) as t:
        assert not t.closed
    assert t.closed and log == ["a"]


def test_children_close_first_newest_first() -> None:
    owner, log = FakeOwner(), list[str]()
    parent = Thing(log, "parent", owner)
    Thing(log, "c1", owner, parent)
    c2 = Thing(log, "c2", owner, parent)
    Thing(log, "grandchild", owner, c2)
    parent.close()
    assert log == ["grandchild", "c2", "c1", "parent"]
    assert owner.open == []


def test_a_busy_child_refuses_the_parent_and_nothing_changes() -> None:
    owner, log = FakeOwner(), list[str]()
    parent = Thing(log, "parent", owner)
    child = Thing(log, "child", owner, parent)
    child.busy = True
    with pytest.raises(BlockingIOError, match="child busy"):
        parent.close()
    assert log == [] and not parent.closed and not child.closed and len(owner.open) == 2
    child.busy = False
    parent.close()
    assert log == ["child", "parent"]


def test_close_from_another_os_thread_refuses_and_changes_nothing() -> None:
    owner, log = FakeOwner(), list[str]()
    t = Thing(log, "a", owner)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            t.close()
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=other)
    th.start()
    th.join()
    assert len(errors) == 1 and isinstance(errors[0], WrongThreadError)
    assert not t.closed and log == []


def test_a_resource_without_owner_closes_from_any_thread() -> None:
    log: list[str] = []
    t = Thing(log, "a", None)
    th = threading.Thread(target=t.close)
    th.start()
    th.join()
    assert t.closed and log == ["a"]


def test_a_child_must_share_its_parents_owner() -> None:
    log: list[str] = []
    parent = Thing(log, "parent", FakeOwner())
    with pytest.raises(ValueError, match="owner of its parent"):
        Thing(log, "child", FakeOwner(), parent)


def test_abandon_forgets_without_releasing() -> None:
    owner, log = FakeOwner(), list[str]()
    parent = Thing(log, "parent", owner)
    Thing(log, "child", owner, parent)
    parent.abandon()
    assert log == [] and owner.open == [] and parent.closed


def test_a_failing_release_still_marks_closed_and_unregisters() -> None:
    owner = FakeOwner()

    class Bad(Resource):
        def _release(self) -> None:
            raise OSError("SPDK said no")

    b = Bad(owner)
    with pytest.raises(OSError, match="SPDK said no"):
        b.close()
    assert b.closed and owner.open == []
    b.close()  # idempotent: nothing is released twice
