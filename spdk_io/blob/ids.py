"""Blob ids: a distinct type, with a stable text form.  Pure Python: importing it loads
nothing of SPDK."""

from __future__ import annotations

import functools
import re
from typing import Any, Final

from spdk_io._validate import integer

__all__ = ["BlobId"]

_U64: Final = 2**64 - 1
_TEXT = re.compile(r"0x[0-9a-f]{1,16}")


@functools.total_ordering
class BlobId:
    """The id of a blob: a distinct type, not an ``int`` (so a type checker refuses an
    int where a blob id belongs).

    Hashable and ordered; ``str()`` is SPDK's spelling (``0x100000000``), and
    :meth:`parse` reads it back.  ``int(blob_id)`` is the raw ``spdk_blob_id``.
    """

    __slots__ = ("_value",)
    _value: int  # 0 <= _value < 2**64 - 1 (SPDK_BLOBID_INVALID is never an id)

    def __init__(self, value: int) -> None:
        n = integer(value, "blob id", lo=0, hi=_U64 - 1)
        object.__setattr__(self, "_value", n)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("BlobId is immutable")

    @classmethod
    def parse(cls, value: str) -> BlobId:
        """The id whose ``str()`` is ``value`` (``"0x…"``, lower-case hex)."""
        if not isinstance(value, str) or not _TEXT.fullmatch(value):
            raise ValueError(f"not a blob id: {value!r} (expected 0x followed by hex digits)")
        return cls(int(value, 16))

    def __int__(self) -> int:
        return self._value

    def __str__(self) -> str:
        return f"{self._value:#x}"

    def __repr__(self) -> str:
        return f"BlobId({self._value:#x})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlobId) and other._value == self._value

    def __lt__(self, other: BlobId) -> bool:
        if not isinstance(other, BlobId):
            return NotImplemented
        return self._value < other._value

    def __hash__(self) -> int:
        return hash((BlobId, self._value))

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (BlobId, (self._value,))


def blob_id(value: object, what: str = "blob_id") -> BlobId:
    """``value`` if it is a :class:`BlobId`; ``TypeError`` for anything else (an int too)."""
    if not isinstance(value, BlobId):
        raise TypeError(f"{what} must be a BlobId, not {type(value).__name__}")
    return value
