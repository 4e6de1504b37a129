"""The options of the blobstore API: layout, clear methods, xattr checks.

Nothing here keeps state; every check raises before anything is made.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from spdk_io import _generated as g
from spdk_io._validate import integer, text

__all__ = [
    "BlobClearMethod",
    "BlobstoreOptions",
    "ClearMethod",
    "xattr_items",
    "xattr_name",
    "xattr_value",
]

#: How ``Blobstore.init`` clears the data clusters (``spdk_bs_opts.clear_method``; SPDK
#: uses it at init only: a freed cluster is cleared with its blob's method).
ClearMethod = Literal["unmap", "write_zeroes", "none"]
#: How a blob clears the clusters it frees (``spdk_blob_opts.clear_method``, stored in
#: the blob); ``"default"`` unmaps them, whatever the blobstore's ``clear_method``.
BlobClearMethod = Literal["default", "none", "unmap", "write_zeroes"]

_BS_CLEAR: Final = {
    "unmap": g.BS_CLEAR_WITH_UNMAP,
    "write_zeroes": g.BS_CLEAR_WITH_WRITE_ZEROES,
    "none": g.BS_CLEAR_WITH_NONE,
}
BLOB_CLEAR: Final = {
    "default": g.BLOB_CLEAR_WITH_DEFAULT,
    "none": g.BLOB_CLEAR_WITH_NONE,
    "unmap": g.BLOB_CLEAR_WITH_UNMAP,
    "write_zeroes": g.BLOB_CLEAR_WITH_WRITE_ZEROES,
}
#: SPDK's metadata page size: the smallest cluster, and the unit of cluster sizes.
PAGE_SIZE: Final = 4096
#: ``spdk_bs_type.bstype`` holds this many bytes and a NUL.
MAX_BSTYPE: Final = 15
#: An xattr value's length is a ``uint16_t`` in SPDK.
MAX_XATTR_VALUE: Final = 65535
#: An xattr's descriptor (a 9-byte header, its name and value) must fit in the
#: descriptor area of one metadata page (``SPDK_BS_MAX_DESC_SIZE``).
XATTR_HEADER: Final = 9
MAX_DESC_SIZE: Final = 4072
_U32: Final = 2**32 - 1


@dataclass(frozen=True)
class BlobstoreOptions:
    """How :meth:`Blobstore.init` lays a blobstore out (``load`` reads the layout from
    the bdev and checks only ``bstype``).  Checked when made; SPDK's defaults where a
    field is ``None``."""

    #: Bytes per cluster: a multiple of 4096 (SPDK's default is 1 MiB).
    cluster_size: int = 1024 * 1024
    #: Metadata pages to reserve (default: one per cluster).
    num_md_pages: int | None = None
    #: Concurrent metadata operations and I/Os per channel SPDK allocates for.
    max_md_ops: int | None = None
    max_channel_ops: int | None = None
    #: How init clears the data clusters (not how freed ones are: see BlobClearMethod).
    clear_method: ClearMethod = "unmap"
    #: A type tag stored in the super block (at most 15 bytes); ``load`` refuses a
    #: blobstore with another non-empty tag.
    bstype: str = ""

    def __post_init__(self) -> None:
        size = integer(self.cluster_size, "cluster_size", lo=PAGE_SIZE, hi=_U32)
        if size % PAGE_SIZE:
            raise ValueError(f"cluster_size {size} must be a multiple of {PAGE_SIZE}")
        for name in ("num_md_pages", "max_md_ops", "max_channel_ops"):
            value = getattr(self, name)
            if value is not None:
                integer(value, name, lo=1, hi=_U32)
        if self.clear_method not in _BS_CLEAR:
            raise ValueError(
                f"clear_method must be one of {', '.join(get_args(ClearMethod))}, "
                f"not {self.clear_method!r}"
            )
        text(self.bstype, "bstype", empty=True, max_len=MAX_BSTYPE)

    def to_c(self) -> g.struct_spdk_bs_opts:
        """SPDK's defaults (``spdk_bs_opts_init``) with these fields set."""
        opts = g.struct_spdk_bs_opts()
        g.spdk_bs_opts_init(ctypes.byref(opts), ctypes.sizeof(opts))
        opts.cluster_sz = self.cluster_size
        if self.num_md_pages is not None:
            opts.num_md_pages = self.num_md_pages
        if self.max_md_ops is not None:
            opts.max_md_ops = self.max_md_ops
        if self.max_channel_ops is not None:
            opts.max_channel_ops = self.max_channel_ops
        opts.clear_method = _BS_CLEAR[self.clear_method]
        opts.bstype.bstype = self.bstype.encode()
        return opts


def xattr_name(name: object) -> bytes:
    """An xattr name as SPDK takes it: a non-empty ``str`` with no NUL, UTF-8."""
    return text(name, "xattr name").encode()


def xattr_value(value: object) -> bytes:
    """An xattr value: ``bytes``-like, or a ``str`` (stored UTF-8); at most 65,535 bytes."""
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    else:
        raise TypeError(f"an xattr value must be bytes or str, not {type(value).__name__}")
    if len(data) > MAX_XATTR_VALUE:
        raise ValueError(f"an xattr value holds at most {MAX_XATTR_VALUE} bytes, got {len(data)}")
    return data


def xattr_items(xattrs: Mapping[str, bytes | str] | None) -> dict[bytes, bytes]:
    """Checked initial xattrs (name -> value) of a blob, snapshot or clone.

    Refused with ``ValueError``, before SPDK is called: an empty value, and an xattr
    that does not fit in one metadata page.  SPDK fails the whole creation for either
    (``EINVAL``, ``ENOMEM``), and SPDK 26.05 crashes on a clone whose creation fails
    (``bs_clone_newblob_create_cpl`` ignores the error and opens blob id 0).
    ``Blob.set_xattr`` takes an empty value.
    """
    if xattrs is None:
        return {}
    if not isinstance(xattrs, Mapping):
        raise TypeError(f"xattrs must be a mapping of str to bytes, not {type(xattrs).__name__}")
    items = {xattr_name(k): xattr_value(v) for k, v in xattrs.items()}
    for name, value in items.items():
        # SPDK refuses these with a bare EINVAL or ENOMEM from the create call.
        if not value:
            raise ValueError(
                f"initial xattr {name.decode()!r} has an empty value, which SPDK refuses "
                "at creation (set it with Blob.set_xattr afterwards)"
            )
        if XATTR_HEADER + len(name) + len(value) > MAX_DESC_SIZE:
            raise ValueError(
                f"initial xattr {name.decode()!r} of {len(value)} bytes does not fit in one "
                f"metadata page ({MAX_DESC_SIZE - XATTR_HEADER} bytes for its name and value)"
            )
    return items
