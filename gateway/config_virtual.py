"""A channel's ``virtual:`` key: the physical channels whose coincident demand it computes.

    - id: site_total
      unit: kWh
      virtual: {add: [feeder_a, feeder_b], subtract: [pv_export]}
      demand_window: 15min
      demand_slide: 5min

A virtual channel has no ``source`` and no ``scale_factor``: each term counts with its own.
What can be checked in one channel is checked where it is read (``read_virtual``); what needs
the others (a term that does not exist, is virtual itself, has another unit, or is the channel
itself) once every channel is read (``check_terms``), each problem at the term's own place,
with a did-you-mean for a misspelt id. Separate because it is the one key that ties channels
together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from yaml.nodes import Node

from gateway.config_reader import Entries, Reader, did_you_mean, join

if TYPE_CHECKING:
    from gateway.config_channels import _Draft

VIRTUAL_KEYS = ("add", "subtract")


@dataclass(frozen=True, slots=True)
class VirtualTerms:
    """The terms as written: (channel id, +1 or -1) with the node each came from."""

    terms: tuple[tuple[str, int], ...]
    nodes: tuple[tuple[Node, str], ...]  # (node, key path) of each term, for problems


def read_virtual(entries: Entries) -> VirtualTerms | None:
    """The channel's ``virtual:`` mapping, or None when the channel is physical (problems are
    reported on the reader; a term given twice is reported and kept once)."""
    node = entries.value_node("virtual")
    if node is None:
        return None
    reader = entries.reader
    path = join(entries.path, "virtual")
    inner = reader.entries(node, path, VIRTUAL_KEYS)
    if inner is None:
        return VirtualTerms((), ())
    before = len(reader.problems)
    terms: list[tuple[str, int]] = []
    nodes: list[tuple[Node, str]] = []
    first: dict[str, str] = {}
    for key, sign in (("add", 1), ("subtract", -1)):
        list_node = inner.value_node(key)
        if list_node is None:
            continue
        items = reader.sequence(list_node, join(path, key), "channel ids")
        for index, item in enumerate(items or []):
            where = f"{join(path, key)}[{index}]"
            term = reader.text(item, where)
            if term is None:
                continue
            if term in first:
                reader.problem(item, where, f"{term!r} is already a term ({first[term]})")
                continue
            first[term] = where
            terms.append((term, sign))
            nodes.append((item, where))
    if not terms and len(reader.problems) == before:
        reader.problem(node, path, "a virtual channel needs at least one term to add or subtract")
    # kept even with problems (the channel is not built then): the cross-checks still look at
    # every term, so one `check` names every mistake
    return VirtualTerms(tuple(terms), tuple(nodes))


def check_terms(reader: Reader, drafts: Sequence[_Draft]) -> None:
    """Each term is another channel of this file, physical, with the virtual channel's unit;
    a virtual channel with a bad term is not built. Checked for every channel that names
    terms, even one with other mistakes, so that one ``check`` shows them all."""
    by_id = {draft.id: draft for draft in drafts if draft.id is not None}
    for draft in drafts:
        virtual = draft.virtual
        if virtual is None:
            continue
        before = len(reader.problems)
        for (term, _), (node, where) in zip(virtual.terms, virtual.nodes, strict=True):
            other = by_id.get(term)
            if term == draft.id:
                reader.problem(node, where, "a virtual channel cannot be a term of itself")
            elif other is None:
                hint = did_you_mean(term, [k for k in by_id if k != draft.id])
                reader.problem(node, where, f"no channel {term!r}{hint}")
            elif other.virtual is not None:
                reader.problem(
                    node,
                    where,
                    f"{term!r} is a virtual channel: terms are physical channels (no nesting)",
                )
            elif None not in (other.unit, draft.unit) and other.unit != draft.unit:
                assert other.unit is not None and draft.unit is not None
                reader.problem(
                    node,
                    where,
                    f"{term!r} counts {other.unit.name}, this channel {draft.unit.name}:"
                    " terms have the virtual channel's unit",
                )
        if len(reader.problems) > before:
            draft.config = None
