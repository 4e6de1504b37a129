"""TransportId against SPDK's own parser and struct (SPDK tier)."""

from __future__ import annotations

import ctypes

import pytest

from spdk_io import _generated as g
from spdk_io.nvme.transport import TransportId


@pytest.mark.parametrize(
    "text",
    [
        "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:c1",
        "trtype:PCIE traddr:0000:04:00.0",
        "trtype:RDMA adrfam:IPv6 traddr:fe80::1 trsvcid:4421 priority:7",
    ],
)
def test_to_c_matches_spdks_parser(text: str) -> None:
    ours = TransportId.parse(text).to_c()
    theirs = g.struct_spdk_nvme_transport_id()
    assert g.spdk_nvme_transport_id_parse(ctypes.byref(theirs), text.encode()) == 0
    assert bytes(ours) == bytes(theirs)
    assert g.spdk_nvme_transport_id_compare(ctypes.byref(ours), ctypes.byref(theirs)) == 0
    assert TransportId.from_c(theirs) == TransportId.parse(text)
    assert TransportId.from_c(ctypes.pointer(theirs)) == TransportId.parse(text)
