"""Argument checks shared by every public entry point.

Each function returns the value in its canonical type or raises an exception
that names the argument: ``TypeError`` for the wrong type, ``ValueError`` for a
value out of range.  Entry points call them *before* any side effect (pinning a
buffer, registering a callback, calling SPDK), so bad input changes nothing.

``bool`` is an ``int`` subclass in Python; every integer check here refuses it,
and :func:`flag` accepts only ``bool``, so ``write="no"`` or ``offset=True``
never slip through.
"""

from __future__ import annotations

import math
import operator

__all__ = ["FOREVER", "MAX_TIMER_SECONDS", "duration", "flag", "integer", "text"]

#: A duration that never ends (``sleep(FOREVER)`` waits until cancelled).
FOREVER = math.inf
#: Longer durations than this are treated as :data:`FOREVER`: SPDK converts a
#: poller period to TSC ticks in 64 bits, which overflows beyond a few centuries.
MAX_TIMER_SECONDS = 1e9


def integer(value: object, what: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an ``int`` (anything with ``__index__``, never ``bool`` or ``float``).

    ``lo``/``hi`` are inclusive bounds.
    """
    if type(value) is int:  # the common case, on I/O paths: no conversion
        n = value
    elif isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not bool")
    else:
        try:
            n = operator.index(value)  # type: ignore[arg-type]  # TypeError is the check
        except TypeError:
            raise TypeError(f"{what} must be an int, not {type(value).__name__}") from None
    if lo is not None and n < lo:
        raise ValueError(f"{what} must be >= {lo}, got {n}")
    if hi is not None and n > hi:
        raise ValueError(f"{what} must be <= {hi}, got {n}")
    return n


def flag(value: object, what: str) -> bool:
    """``value`` if it is a ``bool``; anything else (``"no"``, ``1``) is a ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, not {type(value).__name__}")
    return value


def duration(value: object, what: str) -> float:
    """Seconds as a non-negative ``float``; ``inf`` (or anything past
    :data:`MAX_TIMER_SECONDS`) is :data:`FOREVER`.  NaN and negatives are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float: longer than anything
        return FOREVER
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a non-negative number of seconds, got {value!r}")
    return FOREVER if seconds > MAX_TIMER_SECONDS else seconds


def text(value: object, what: str, *, empty: bool = False, max_len: int | None = None) -> str:
    """A ``str`` with no NUL (C strings end there); empty only if ``empty``."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise ValueError(f"{what} must not contain NUL characters: {value!r}")
    if not value and not empty:
        raise ValueError(f"{what} must not be empty")
    if max_len is not None and len(value.encode()) > max_len:
        raise ValueError(f"{what} is longer than {max_len} bytes: {value[:40]!r}...")
    return value
