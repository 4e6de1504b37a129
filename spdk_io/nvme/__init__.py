"""The NVMe driver, used directly: controllers over PCIe or NVMe-oF, namespaces, queue pairs.

Only NVMe/TCP is testable on the machines this project is developed on; PCIe and RDMA
go through the same API and are untested here.  Names load lazily, so importing
:class:`TransportId` does not load SPDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spdk_io._lazy import exports

_EXPORTS: dict[str, str] = {
    "TransportId": "transport",
    "Controller": "controller",
    "ControllerOptions": "options",
    "Namespace": "namespace",
    "NvmeSlot": "qpair",
    "Qpair": "qpair",
    "QpairOptions": "qpair",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # the names __getattr__ provides, for type checkers
    from spdk_io.nvme.controller import Controller as Controller
    from spdk_io.nvme.namespace import Namespace as Namespace
    from spdk_io.nvme.options import ControllerOptions as ControllerOptions
    from spdk_io.nvme.qpair import NvmeSlot as NvmeSlot
    from spdk_io.nvme.qpair import Qpair as Qpair
    from spdk_io.nvme.qpair import QpairOptions as QpairOptions
    from spdk_io.nvme.transport import TransportId as TransportId
