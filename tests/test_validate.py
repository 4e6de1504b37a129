"""The shared argument checks (SPDK-free)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spdk_io._validate import FOREVER, MAX_TIMER_SECONDS, duration, flag, integer, text

pytestmark = pytest.mark.spdk_free  # runs where SPDK is not installed

@given(st.integers())
def test_integer_accepts_ints(n: int) -> None:
    assert integer(n, "x") == n


@pytest.mark.parametrize("bad", [1.0, True, False, "1", None, b"1", 1j])
def test_integer_refuses_non_ints_naming_the_argument(bad: object) -> None:
    with pytest.raises(TypeError, match="offset_blocks"):
        integer(bad, "offset_blocks")


def test_integer_bounds() -> None:
    assert integer(0, "n", lo=0, hi=0) == 0
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        integer(0, "n", lo=1)
    with pytest.raises(ValueError, match="n must be <= 3, got 4"):
        integer(4, "n", hi=3)


def test_flag() -> None:
    assert flag(True, "write") is True
    assert flag(False, "write") is False
    for bad in ("no", 1, 0, None):
        with pytest.raises(TypeError, match="write must be True or False"):
            flag(bad, "write")


@given(st.floats(min_value=0, max_value=MAX_TIMER_SECONDS))
def test_duration_keeps_finite_seconds(s: float) -> None:
    assert duration(s, "t") == s


@pytest.mark.parametrize("huge", [math.inf, 1e300, 2**70, 10**400, MAX_TIMER_SECONDS * 2])
def test_duration_beyond_any_timer_is_forever(huge: float) -> None:
    assert duration(huge, "t") == FOREVER


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, -math.inf])
def test_duration_refuses_bad_values(bad: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        duration(bad, "timeout")


@pytest.mark.parametrize("bad", ["1", None, True])
def test_duration_refuses_bad_types(bad: object) -> None:
    with pytest.raises(TypeError, match="timeout"):
        duration(bad, "timeout")


def test_text() -> None:
    assert text("abc", "name") == "abc"
    assert text("", "name", empty=True) == ""
    with pytest.raises(ValueError, match="name must not be empty"):
        text("", "name")
    with pytest.raises(ValueError, match="NUL"):
        text("a\0b", "name")
    with pytest.raises(TypeError, match="name must be a str, not int"):
        text(123, "name")
    with pytest.raises(ValueError, match="longer than 3 bytes"):
        text("abcd", "name", max_len=3)
