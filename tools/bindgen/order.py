"""Order: typedef aliases and record layouts in an order where every use is defined.

Takes the model's records and typedefs; gives ``[("typedef" | "layout", name), ...]``
for :class:`~bindgen.model.Bindings.statements`.  Guarantees: an alias comes after
the aliases it names; a layout comes after the aliases its fields name and after the
layout of every record it embeds by value (pointers need only the class, which
exists from the start); ties are broken by (typedefs first, name), so the order is
the same on every run.  A cycle raises :class:`~bindgen.model.GenerationError`.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable

from .model import CType, GenerationError, Record, Typedef


def order_statements(
    records: dict[str, Record], typedefs: dict[str, Typedef]
) -> list[tuple[str, str]]:
    """Typedef aliases and record layouts in an order where every use is defined.

    A layout needs the aliases it names and every record it embeds by value complete;
    an alias needs the aliases it names (and complete records for arrays of records).
    Ties are broken by (typedefs first, name) so the order is deterministic.
    """
    deps: dict[tuple[str, str], set[tuple[str, str]]] = {}
    laid_out = {name for name, r in records.items() if r.fields}

    def requirements(ctypes_used: Iterable[CType]) -> set[tuple[str, str]]:
        req: set[tuple[str, str]] = set()
        for ct in ctypes_used:
            req |= {("typedef", n) for n in ct.name_deps if n in typedefs}
            req |= {("layout", n) for n in ct.value_deps if n in laid_out}
        return req

    for name, td in typedefs.items():
        used = (
            td.ctype
            if td.ctype.kind != "record"
            else dataclasses.replace(td.ctype, value_deps=frozenset())
        )
        deps[("typedef", name)] = requirements([used]) - {("typedef", name)}
    for name in laid_out:
        fields = records[name].fields or []
        deps[("layout", name)] = requirements(f.ctype for f in fields) - {("layout", name)}
    return _toposort(deps)


def _toposort(deps: dict[tuple[str, str], set[tuple[str, str]]]) -> list[tuple[str, str]]:
    waiting = {node: set(req) for node, req in deps.items()}
    users: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for node, req in waiting.items():
        for r in req:
            users.setdefault(r, []).append(node)
    ready = [(0 if n[0] == "typedef" else 1, n[1], n) for n, req in waiting.items() if not req]
    heapq.heapify(ready)
    order: list[tuple[str, str]] = []
    while ready:
        _, _, node = heapq.heappop(ready)
        order.append(node)
        for user in users.get(node, []):
            waiting[user].discard(node)
            if not waiting[user]:
                heapq.heappush(ready, (0 if user[0] == "typedef" else 1, user[1], user))
    if len(order) != len(deps):
        stuck = sorted(n[1] for n in deps if n not in set(order))[:10]
        raise GenerationError(f"circular type dependencies among: {', '.join(stuck)}")
    return order
