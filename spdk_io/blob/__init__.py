"""SPDK's blobstore: blobs of clusters on a bdev, with snapshots, clones and thin
provisioning.

* :class:`Blobstore` is a blobstore loaded (or made) on a bdev.  Its metadata
  operations run on the SPDK thread that loaded it; called from any other spdk_io
  thread they are forwarded there.
* :class:`Blob` is an open blob: byte-addressed I/O (through a channel per thread that
  the blobstore obtains and releases itself), resize, sync, xattrs.
* :class:`BlobId` names a blob; it is not an ``int``.

Names load lazily: importing :class:`BlobId` does not load SPDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spdk_io._lazy import exports

_EXPORTS: dict[str, str] = {
    "BlobId": "ids",
    "Blobstore": "store",
    "BlobstoreOptions": "options",
    "Blob": "handle",
    "BlobClearMethod": "options",
    "ClearMethod": "options",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # the names __getattr__ provides, for type checkers
    from spdk_io.blob.handle import Blob as Blob
    from spdk_io.blob.ids import BlobId as BlobId
    from spdk_io.blob.options import BlobClearMethod as BlobClearMethod
    from spdk_io.blob.options import BlobstoreOptions as BlobstoreOptions
    from spdk_io.blob.options import ClearMethod as ClearMethod
    from spdk_io.blob.store import Blobstore as Blobstore
