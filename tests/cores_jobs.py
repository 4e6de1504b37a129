"""Functions tests/test_cores.py places on cores by name (each core's interpreter imports them)."""

from __future__ import annotations

import os
import threading

from spdk_io import cores


def where() -> tuple[int, int, list[int]]:
    """The core this runs on, as spdk_io and the OS see it."""
    return cores.current(), threading.get_ident(), sorted(os.sched_getaffinity(0))
