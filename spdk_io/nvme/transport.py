"""NVMe transport IDs: where a controller is (a PCIe address, or a fabric address and NQN).

:class:`TransportId` is a frozen value: it parses SPDK's string form
(``"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn..."``), prints it
back (``str(TransportId.parse(s))`` parses to an equal value), compares by value and
converts to and from SPDK's ``struct spdk_nvme_transport_id``.

Parsing is pure Python and stricter than SPDK's own parser, which logs and ignores
unknown keys and bad priorities: here a malformed string raises ``ValueError`` naming
what is wrong.  Keys are case-insensitive; ``key:value`` and ``key=value`` both work.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass, field, replace
from typing import Any, Final

__all__ = ["ADRFAMS", "TRANSPORTS", "TransportId", "transport_id"]

#: SPDK's built-in transport types, as SPDK spells them (``trstring``); others are
#: custom transports a plugin registers.  Only TCP is testable on these machines.
TRANSPORTS: Final = ("PCIE", "RDMA", "TCP", "FC", "VFIOUSER")
#: Address families, canonical spelling first (input is case-insensitive).
ADRFAMS: Final = ("IPv4", "IPv6", "IB", "FC", "INTRA_HOST")
_ADRFAM_BY_KEY: Final = {a.upper(): a for a in ADRFAMS}
_ADRFAM_NUMBER: Final = {"IPv4": 1, "IPv6": 2, "IB": 3, "FC": 4, "INTRA_HOST": 254}

# Field sizes of struct spdk_nvme_transport_id, without the terminating NUL.
_MAX_TRSTRING: Final = 32
_MAX_TRADDR: Final = 256
_MAX_TRSVCID: Final = 32
_MAX_SUBNQN: Final = 223

_KEYS: Final = ("trtype", "adrfam", "traddr", "trsvcid", "subnqn", "priority")
_TRTYPE_RE: Final = re.compile(r"[A-Za-z0-9_.-]+\Z")
_PAIR_RE: Final = re.compile(r"([A-Za-z_]+)[:=](.*)\Z", re.S)


def _text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} must be printable text without spaces")
    if len(value.encode()) > limit:
        raise ValueError(f"{what} {value!r} is longer than {limit} bytes")
    return value


@dataclass(frozen=True)
class TransportId:
    """Where an NVMe controller is.  Construct it with :meth:`parse`, :meth:`tcp`,
    :meth:`rdma` or :meth:`pcie`; every field is checked when it is made.

    ``trtype`` is upper-case (``"TCP"``); ``adrfam`` is canonical (``"IPv4"``) or
    ``None`` (unspecified, as for PCIe); empty fields are ``None``.
    """

    trtype: str
    traddr: str | None = None
    adrfam: str | None = None
    trsvcid: str | None = None
    subnqn: str | None = None
    priority: int = field(default=0)

    def __post_init__(self) -> None:
        trtype = _text(self.trtype, "trtype", _MAX_TRSTRING)
        if not _TRTYPE_RE.match(trtype):
            raise ValueError(f"trtype {trtype!r} is not a transport type name")
        object.__setattr__(self, "trtype", trtype.upper())
        if self.adrfam is not None:
            adrfam = _text(self.adrfam, "adrfam", 16)
            canonical = _ADRFAM_BY_KEY.get(adrfam.upper())
            if canonical is None:
                raise ValueError(f"adrfam {adrfam!r} is not one of {', '.join(ADRFAMS)}")
            object.__setattr__(self, "adrfam", canonical)
        for name, limit in (
            ("traddr", _MAX_TRADDR),
            ("trsvcid", _MAX_TRSVCID),
            ("subnqn", _MAX_SUBNQN),
        ):
            value = getattr(self, name)
            if value is not None:
                _text(value, name, limit)
                if not value:
                    object.__setattr__(self, name, None)
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise TypeError(f"priority must be an int, not {type(self.priority).__name__}")
        if not -(2**31) <= self.priority < 2**31:
            raise ValueError(f"priority {self.priority} does not fit a C int")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def parse(cls, text: str) -> TransportId:
        """Parse SPDK's form: whitespace-separated ``key:value`` pairs, ``trtype`` required."""
        if not isinstance(text, str):
            raise TypeError(f"a transport ID is a str, not {type(text).__name__}")
        fields: dict[str, str] = {}
        for token in text.split():
            m = _PAIR_RE.match(token)
            if m is None:
                raise ValueError(f"transport ID {text!r}: {token!r} is not key:value")
            key, value = m.group(1).lower(), m.group(2)
            if key == "hostnqn":
                raise ValueError(
                    f"transport ID {text!r}: hostnqn is not part of a transport ID; "
                    "pass it as ControllerOptions(hostnqn=...)"
                )
            if key not in _KEYS:
                raise ValueError(
                    f"transport ID {text!r}: unknown key {key!r} (known: {', '.join(_KEYS)})"
                )
            if not value:
                raise ValueError(f"transport ID {text!r}: {key} has no value")
            if key in fields:
                raise ValueError(f"transport ID {text!r}: {key} is given twice")
            fields[key] = value
        if "trtype" not in fields:
            raise ValueError(f"transport ID {text!r} has no trtype")
        priority = 0
        if "priority" in fields:
            try:
                priority = int(fields.pop("priority"), 10)
            except ValueError:
                raise ValueError(f"transport ID {text!r}: priority is not an integer") from None
        return cls(priority=priority, **fields)

    @classmethod
    def tcp(
        cls, traddr: str, trsvcid: int | str, subnqn: str | None = None, adrfam: str = "IPv4"
    ) -> TransportId:
        """An NVMe/TCP address (``trsvcid`` is the port)."""
        return cls("TCP", traddr, adrfam, _port(trsvcid), subnqn)

    @classmethod
    def rdma(
        cls, traddr: str, trsvcid: int | str, subnqn: str | None = None, adrfam: str = "IPv4"
    ) -> TransportId:
        """An NVMe/RDMA address (not testable on these machines: no RDMA NICs)."""
        return cls("RDMA", traddr, adrfam, _port(trsvcid), subnqn)

    @classmethod
    def pcie(cls, traddr: str) -> TransportId:
        """A local PCIe controller by its BDF (``"0000:04:00.0"``)."""
        return cls("PCIE", traddr)

    def with_subnqn(self, subnqn: str | None) -> TransportId:
        """This address, for another subsystem NQN."""
        return replace(self, subnqn=subnqn)

    # ------------------------------------------------------------------ text form
    def __str__(self) -> str:
        parts = [f"trtype:{self.trtype}"]
        for key in ("adrfam", "traddr", "trsvcid", "subnqn"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}:{value}")
        if self.priority:
            parts.append(f"priority:{self.priority}")
        return " ".join(parts)

    # ------------------------------------------------------------------ C struct
    def to_c(self) -> Any:
        """A new ``struct spdk_nvme_transport_id`` holding this ID."""
        from spdk_io import _generated as g

        t = g.struct_spdk_nvme_transport_id()
        rc = g.spdk_nvme_transport_id_populate_trstring(ctypes.byref(t), self.trtype.encode())
        if rc != 0:
            raise ValueError(f"SPDK refuses trtype {self.trtype!r} ({rc})")
        trtype = ctypes.c_int(0)
        rc = g.spdk_nvme_transport_id_parse_trtype(
            ctypes.cast(ctypes.byref(trtype), ctypes.POINTER(g.enum_spdk_nvme_transport_type)),
            self.trtype.encode(),
        )
        if rc != 0:
            raise ValueError(f"SPDK refuses trtype {self.trtype!r} ({rc})")
        t.trtype = trtype.value
        t.adrfam = _ADRFAM_NUMBER[self.adrfam] if self.adrfam is not None else 0
        t.traddr = (self.traddr or "").encode()
        t.trsvcid = (self.trsvcid or "").encode()
        t.subnqn = (self.subnqn or "").encode()
        t.priority = self.priority
        return t

    @classmethod
    def from_c(cls, t: Any) -> TransportId:
        """The value of a ``struct spdk_nvme_transport_id`` (or a pointer to one)."""
        if hasattr(t, "contents"):
            t = t.contents
        adrfam = {v: k for k, v in _ADRFAM_NUMBER.items()}.get(int(t.adrfam))
        return cls(
            t.trstring.decode() or "PCIE",
            t.traddr.decode() or None,
            adrfam,
            t.trsvcid.decode() or None,
            t.subnqn.decode() or None,
            int(t.priority),
        )


def _port(value: int | str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"trsvcid must be a port number or str, not {type(value).__name__}")
    if isinstance(value, int) and not 0 < value < 65536:
        raise ValueError(f"port {value} is out of range 1..65535")
    return str(value)


def transport_id(value: TransportId | str) -> TransportId:
    """``value`` as a :class:`TransportId` (a string is parsed)."""
    if isinstance(value, TransportId):
        return value
    if isinstance(value, str):
        return TransportId.parse(value)
    raise TypeError(f"a transport ID is a TransportId or str, not {type(value).__name__}")
