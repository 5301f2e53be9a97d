"""The config's ``channels:`` list: each channel's rules, input and BACnet objects, checked.

Each channel is read into a ``_Draft`` that keeps the places the cross-checks point at: one
EnergyCAP ImportID per unit, BACnet instance ranges that do not overlap each other or
reset_all. A channel's ``source:`` point is read by ``gateway.config_sources``. Separate from
the loader (``gateway.config``) and the other sections (``gateway.config_sections``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import tzinfo
from functools import partial

from yaml.nodes import Node

from gateway.bacnet.points import RESET_ALL_INSTANCE
from gateway.config_reader import Entries, Reader, boolean, did_you_mean, join
from gateway.config_schedule import NONE, ScheduleSetting, read_reset_schedule
from gateway.config_settings import (
    CHANNEL_KEYS,
    DEFAULT_INTERVAL,
    MAX_INSTANCE,
    OBJECTS_PER_CHANNEL,
    ChannelConfig,
)
from gateway.config_source_types import PointConfig
from gateway.config_sources import read_point
from gateway.config_virtual import VirtualTerms, read_virtual
from gateway.core import UNITS, ChannelRules, ResetSchedule, Span, Unit, format_duration
from gateway.core.timeline import MICROS_PER_SECOND

CHANNEL_ID = re.compile(r"[a-z0-9_]+")
# The ImportID is a column of the EnergyCAP files (comma- and whitespace-separated).
IMPORT_ID = re.compile(r"[^\s,\"']+")


@dataclass(slots=True)
class _Draft:
    """A channel as read, with the places cross-checks point at (config None if broken)."""

    path: str
    node: Node
    entries: Entries
    base: int | None  # resolved, None if it was bad
    config: ChannelConfig | None = None
    # the channel's own reset_schedule (None: not given, the gateway's default applies)
    schedule: ScheduleSetting | None = None
    virtual: VirtualTerms | None = None  # what its virtual: key names, checked across channels
    id: str | None = None  # as read (None if bad), for the cross-checks
    unit: Unit | None = None

    @property
    def point(self) -> tuple[str, Node, PointConfig] | None:
        """The channel's input with its place, when the whole channel is sound."""
        point_node = self.entries.value_node("source")
        if self.config is None or self.config.source is None or point_node is None:
            return None
        return join(self.path, "source"), point_node, self.config.source


def _channels(reader: Reader, node: Node, types: dict[str, str | None] | None) -> list[_Draft]:
    """The ``channels:`` list; ``types`` (source id -> type) is None for replay."""
    items = reader.sequence(node, "channels", "channels")
    if items is None:
        return []
    if not items:
        reader.problem(node, "channels", "at least one channel is needed")
    drafts: list[_Draft] = []
    first_line: dict[str, int] = {}
    for index, item in enumerate(items):
        entries = reader.entries(item, f"channels[{index}]", CHANNEL_KEYS)
        if entries is None:
            continue
        before = len(reader.problems)
        channel_id = entries.get("id", reader.text, required=True)
        if channel_id is not None and not CHANNEL_ID.fullmatch(channel_id):
            entries.problem("id", f"{channel_id!r}: use lower-case letters, digits and _ only")
            channel_id = None
        if channel_id in first_line:
            first = first_line[channel_id]
            entries.problem("id", f"duplicate channel id {channel_id!r} (first on line {first})")
        elif channel_id is not None:
            first_line[channel_id] = entries.key_line("id")
        draft = _channel(entries, index, channel_id, types)
        if len(reader.problems) > before:
            draft.config = None
        drafts.append(draft)
    return drafts


def _channel(
    entries: Entries, index: int, channel_id: str | None, types: dict[str, str | None] | None
) -> _Draft:
    reader = entries.reader
    import_id = entries.get("import_id", partial(_import_id, reader), channel_id)
    unit = entries.get("unit", partial(_unit, reader), required=True)
    virtual = read_virtual(entries)
    if virtual is None:
        scale = entries.get("scale_factor", partial(reader.number, above=0), required=True)
    else:  # its terms count, each with its own scale factor and source
        scale = 1.0
        for key in ("scale_factor", "source"):
            if key in entries:
                entries.problem(
                    key, f"a virtual channel has no {key}: its terms count, with their own"
                )
    window = entries.get("demand_window", reader.duration, required=True)
    slide = entries.get("demand_slide", reader.duration, required=True)
    if slide is not None and (slide < MICROS_PER_SECOND or slide % MICROS_PER_SECOND):
        entries.problem("demand_slide", "must be a whole number of seconds, at least 1s")
        slide = None
    if window is not None and slide is not None and (window <= 0 or window % slide):
        message = f"must be a positive whole multiple of demand_slide ({format_duration(slide)})"
        entries.problem("demand_window", message)
        window = None
    initial = entries.get("initial_reading", reader.number, 0.0)
    lockout = entries.get("reset_lockout", reader.duration, 0)
    interval = entries.get("interval", reader.duration, _default_interval(slide))
    if interval is not None and slide is not None and (interval <= 0 or interval % slide):
        message = f"must be a positive whole multiple of demand_slide ({format_duration(slide)})"
        entries.problem("interval", message)
        interval = None
    cov = entries.get("cov_increment", partial(reader.number, at_least=0), 0.0)
    trend_log = entries.get("trend_log", partial(boolean, reader), True)
    read_base = partial(reader.integer, low=0, high=MAX_INSTANCE - OBJECTS_PER_CHANNEL)
    base = entries.get("bacnet_instance_base", read_base, 100 * (index + 1))
    schedule: ScheduleSetting | None = entries.get(
        "reset_schedule", partial(read_reset_schedule, reader)
    )
    draft = _Draft(
        entries.path,
        entries.node,
        entries,
        base,
        schedule=schedule,
        virtual=virtual,
        id=channel_id,
        unit=unit,
    )

    point: PointConfig | None = None
    if types is not None and virtual is None:  # run: a physical channel counts a source's pulses
        point_node = entries.value_node("source")
        if point_node is None:
            entries.problem("source", "required key is missing")
            return draft
        point = read_point(reader, point_node, join(entries.path, "source"), types)
    if channel_id is None or import_id is None or unit is None or scale is None:
        return draft
    if window is None or slide is None or initial is None or lockout is None:
        return draft
    needs_point = types is not None and virtual is None
    if interval is None or cov is None or base is None or (needs_point and point is None):
        return draft
    if virtual is not None and not virtual.terms:
        return draft
    if trend_log is None:
        return draft
    terms = () if virtual is None else virtual.terms
    rules = ChannelRules(unit, scale, window, slide, initial, lockout, terms=terms)  # checked
    draft.config = ChannelConfig(
        channel_id, import_id, rules, point, cov, base, interval, trend_log=trend_log
    )
    return draft


def _default_interval(slide: Span | None) -> Span:
    """15 minutes, or the shortest span that is a multiple of both 15 minutes and the slide.

    Interval records must hold whole slides (docs/reference/export-formats.md); a 10-minute
    slide gets 30 minutes rather than an error for a key the file never set, and intervals stay
    on quarter hours.
    """
    return DEFAULT_INTERVAL if not slide else math.lcm(DEFAULT_INTERVAL, slide)


def _unit(reader: Reader, node: Node, path: str) -> Unit | None:
    name = reader.text(node, path)
    if name is None:
        return None
    unit = UNITS.get(name)
    if unit is None:
        hint = did_you_mean(name, tuple(UNITS))
        reader.problem(node, path, f"unknown unit {name!r}{hint}; allowed: {', '.join(UNITS)}")
    return unit


def _import_id(reader: Reader, node: Node, path: str) -> str | None:
    value = reader.text(node, path)
    if value is not None and not IMPORT_ID.fullmatch(value):
        message = f"{value!r}: no spaces, commas or quotes (it is a column of the export files)"
        reader.problem(node, path, message)
        return None
    return value


def _check_import_ids(reader: Reader, drafts: list[_Draft]) -> None:
    """One EnergyCAP ImportID per unit: two such channels would write the same export rows."""
    seen: dict[tuple[str, str], _Draft] = {}
    for draft in drafts:
        if draft.config is None:
            continue
        key = (draft.config.import_id, draft.config.rules.unit.name)
        if key not in seen:
            seen[key] = draft
            continue
        first = seen[key]
        where = "import_id" if "import_id" in draft.entries else "id"
        reader.problem(
            draft.entries.value_node(where) or draft.node,
            join(draft.path, "import_id"),
            f"import_id {key[0]!r} with unit {key[1]} is already used by {first.path} "
            f"(line {first.node.start_mark.line + 1}): their export rows would collide",
        )


def _check_bacnet_instances(reader: Reader, drafts: list[_Draft]) -> None:
    """Channel objects must not share an instance with another channel's or with reset_all."""
    placed: list[tuple[_Draft, int]] = []
    for draft in drafts:
        if draft.base is None:
            continue
        if draft.base + 1 == RESET_ALL_INSTANCE:
            message = f"binary-value {RESET_ALL_INSTANCE} is reset_all: use a base of 1 or more"
            draft.entries.problem("bacnet_instance_base", message)
            continue
        for other, other_base in placed:
            if abs(draft.base - other_base) >= OBJECTS_PER_CHANNEL:
                continue
            # Point at an explicit base: defaults (100 apart) cannot be the mistake.
            pairs = [(draft, draft.base), (other, other_base)]
            if "bacnet_instance_base" not in draft.entries:
                pairs.reverse()
            (culprit, base), (victim, victim_base) = pairs
            culprit.entries.problem(
                "bacnet_instance_base",
                f"objects {_instances(base)} overlap {_instances(victim_base)} of {victim.path} "
                f"(line {victim.node.start_mark.line + 1}); "
                f"bases must be at least {OBJECTS_PER_CHANNEL} apart",
            )
            break
        else:
            placed.append((draft, draft.base))


def _instances(base: int) -> str:
    return f"{base + 1}..{base + OBJECTS_PER_CHANNEL}"


def apply_schedules(drafts: list[_Draft], default: ResetSchedule | None, zone: tzinfo) -> None:
    """Each sound channel's rules get its reset schedule: its own, else the gateway's default
    (``none`` opts out), read on the gateway's ``zone``."""
    for draft in drafts:
        if draft.config is None:
            continue
        own = draft.schedule
        schedule = default if own is None else None if own == NONE else own
        rules = replace(
            draft.config.rules,
            reset_schedule=schedule if isinstance(schedule, ResetSchedule) else None,
            timezone=zone if schedule is not None else None,
        )
        draft.config = replace(draft.config, rules=rules)
