"""TransportId: parsing SPDK's string form, printing it back, equality (pure Python)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spdk_io.nvme.transport import TransportId, transport_id

pytestmark = pytest.mark.spdk_free

NQN = "nqn.2016-06.io.spdk:cnode1"
TCP = f"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:{NQN}"


def test_parse_the_usual_form() -> None:
    t = TransportId.parse(TCP)
    assert (t.trtype, t.adrfam, t.traddr, t.trsvcid, t.subnqn) == (
        "TCP",
        "IPv4",
        "127.0.0.1",
        "4420",
        NQN,
    )
    assert str(t) == TCP
    assert t == TransportId.tcp("127.0.0.1", 4420, NQN)
    assert hash(t) == hash(TransportId.tcp("127.0.0.1", "4420", NQN))


def test_keys_are_case_insensitive_and_values_canonical() -> None:
    t = TransportId.parse("TrType=tcp ADRFAM:ipv6 traddr:::1 trsvcid:4420 priority:3")
    assert (t.trtype, t.adrfam, t.traddr, t.priority) == ("TCP", "IPv6", "::1", 3)
    assert TransportId.parse(str(t)) == t


def test_constructors() -> None:
    assert str(TransportId.pcie("0000:04:00.0")) == "trtype:PCIE traddr:0000:04:00.0"
    r = TransportId.rdma("10.0.0.1", 4420, NQN)
    assert (r.trtype, r.trsvcid) == ("RDMA", "4420")
    assert TransportId.tcp("1.2.3.4", 1).with_subnqn(NQN).subnqn == NQN
    assert transport_id(TCP) == transport_id(TransportId.parse(TCP))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no trtype"),
        ("traddr:1.2.3.4", "no trtype"),
        ("trtype:TCP traddr:", "has no value"),
        ("trtype:TCP foo:bar", "unknown key"),
        ("trtype:TCP adrfam:bogus traddr:x", "adrfam"),
        ("trtype:TCP traddr:x traddr:y", "given twice"),
        ("trtype:TCP traddr:x priority:abc", "priority"),
        ("trtype:TCP,traddr:x", "transport type name"),
        ("trtype:TCP traddr:x hostnqn:nqn.a", "ControllerOptions"),
        ("trtype:TCP junk", "not key:value"),
        ("trtype:TCP traddr:" + "a" * 257, "longer than"),
        (f"trtype:TCP subnqn:{'n' * 224}", "longer than"),
    ],
)
def test_malformed_ids_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        TransportId.parse(text)


def test_wrong_types_are_refused() -> None:
    with pytest.raises(TypeError):
        TransportId.parse(b"trtype:TCP")  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(TypeError):
        TransportId.tcp("1.2.3.4", True)
    with pytest.raises(ValueError, match="out of range"):
        TransportId.tcp("1.2.3.4", 70000)
    with pytest.raises(TypeError):
        transport_id(4420)  # type: ignore[arg-type]  # the point of the test


_word = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":="),
    min_size=1,
    max_size=32,  # within every field's limit (trsvcid's 32 bytes is the shortest)
)


@given(
    trtype=st.sampled_from(["TCP", "rdma", "PCIe", "fc", "VFIOUSER"]),
    adrfam=st.none() | st.sampled_from(["ipv4", "IPv6", "ib", "FC", "intra_host"]),
    traddr=st.none() | _word,
    trsvcid=st.none() | _word,
    subnqn=st.none() | _word,
    priority=st.integers(-(2**31), 2**31 - 1),
)
def test_str_round_trips(
    trtype: str,
    adrfam: str | None,
    traddr: str | None,
    trsvcid: str | None,
    subnqn: str | None,
    priority: int,
) -> None:
    t = TransportId(trtype, traddr, adrfam, trsvcid, subnqn, priority)
    assert TransportId.parse(str(t)) == t
