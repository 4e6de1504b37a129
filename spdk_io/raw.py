"""SPDK's C API as ctypes bindings: the generated raw layer, public and typed.

Every public function, struct, enumerator and ``#define`` of the installed SPDK
headers, generated at build time by ``tools/gen_bindings.py`` (typed stubs come
with it, so mypy checks argument and return types)::

    from spdk_io import raw
    name = raw.spdk_bdev_get_name(raw.spdk_bdev_first())

Use it for what the typed layer does not cover yet.  What it guarantees is what
C does: pointers are raw, nothing is kept alive for you, and callbacks must
outlive every call SPDK makes to them.

Calls keep the GIL (``ctypes.PyDLL``: cheaper), except the functions that can block
(sleep, spin, start or join threads, poll a device or target until it answers): they
release it during the call, and ``RELEASES_GIL`` maps each to the reason.
"""

from spdk_io._generated import *  # noqa: F403  # the raw layer is exactly the generated module
from spdk_io._generated import GENERATED_FROM_SPDK as GENERATED_FROM_SPDK
from spdk_io._generated import OMITTED as OMITTED
from spdk_io._generated import RELEASES_GIL as RELEASES_GIL
