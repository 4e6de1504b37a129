"""NVMe namespaces: what an active namespace of a controller is (size, format,
protection, identifiers), for I/O through a :class:`~spdk_io.nvme.qpair.Qpair`."""

from __future__ import annotations

import ctypes
import uuid
from typing import TYPE_CHECKING, Any

from spdk_io import _generated as g
from spdk_io.loop import Op
from spdk_io.nvme.data import NamespaceData, ProtectionType

if TYPE_CHECKING:
    from spdk_io.nvme.controller import Controller

__all__ = ["Namespace"]


class Namespace:
    """An active namespace of a controller: what it is, for I/O through a :class:`Qpair`.

    It owns no SPDK handle; it is valid while its controller is attached (afterwards
    its properties raise ``RuntimeError``).
    """

    def __init__(self, ctrlr: Controller, nsid: int) -> None:
        self.ctrlr = ctrlr
        self.id = nsid
        ptr = g.spdk_nvme_ctrlr_get_ns(ctrlr.handle, nsid)
        if not ptr:
            raise LookupError(f"controller {ctrlr.name} has no namespace {nsid}")
        self._ptr: Any = ptr
        # Fixed for the life of the namespace (read once; the hot path uses them).
        self.sector_size = int(g.spdk_nvme_ns_get_sector_size(ptr))
        self.num_sectors = int(g.spdk_nvme_ns_get_num_sectors(ptr))

    def __repr__(self) -> str:
        return f"<Namespace {self.ctrlr.name} ns {self.id}>"

    def __str__(self) -> str:
        return f"{self.ctrlr.name} ns {self.id}"

    @property
    def handle(self) -> Any:
        """The ``struct spdk_nvme_ns *``; valid while the controller is attached."""
        self.ctrlr.check_open()
        return self._ptr

    @property
    def size(self) -> int:
        """Size in bytes."""
        return self.sector_size * self.num_sectors

    @property
    def extended_sector_size(self) -> int:
        """Sector size including interleaved metadata."""
        return int(g.spdk_nvme_ns_get_extended_sector_size(self.handle))

    @property
    def metadata_size(self) -> int:
        """Metadata bytes per sector (0: none)."""
        return int(g.spdk_nvme_ns_get_md_size(self.handle))

    @property
    def extended_lba(self) -> bool:
        """Whether metadata is interleaved with the data (extended LBAs), not separate."""
        return bool(g.spdk_nvme_ns_supports_extended_lba(self.handle))

    @property
    def protection_type(self) -> ProtectionType:
        """End-to-end protection information type (``NONE``: not protected)."""
        return ProtectionType(int(g.spdk_nvme_ns_get_pi_type(self.handle)))

    @property
    def pi_first(self) -> bool:
        """Whether protection information is the first bytes of the metadata (else the last)."""
        return self.data.pi_first

    @property
    def optimal_io_boundary(self) -> int:
        """Optimal I/O boundary in sectors (0: none reported)."""
        return int(g.spdk_nvme_ns_get_optimal_io_boundary(self.handle))

    @property
    def uuid(self) -> str | None:
        """The namespace UUID (``"1b4e28ba-2fa1-..."``), or ``None`` if it reports none."""
        u = g.spdk_nvme_ns_get_uuid(self.handle)
        if not u:
            return None
        return str(uuid.UUID(bytes=ctypes.string_at(ctypes.addressof(u.contents), 16)))

    @property
    def nguid(self) -> bytes | None:
        """The 16-byte namespace globally unique identifier, or ``None`` (all zero)."""
        nguid = self.data.nguid
        return nguid if any(nguid) else None

    @property
    def data(self) -> NamespaceData:
        """The Identify Namespace data SPDK holds (:meth:`identify` asks the controller)."""
        return NamespaceData.from_struct(g.spdk_nvme_ns_get_data(self.handle).contents)

    def identify(self) -> Op[NamespaceData]:
        """Identify Namespace, asked now (see :meth:`Controller.identify_namespace`)."""
        return self.ctrlr.identify_namespace(self.id)
