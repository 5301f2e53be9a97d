"""The ``reset_schedule`` key: a billing-day reset schedule, read with every problem placed.

It appears twice: ``gateway.reset_schedule`` is the default, and a channel's own key replaces
it, ``none`` opting the channel out. Each form is a mapping::

    {every: day, at: "06:00"}
    {every: week, weekday: mon, at: "00:00"}
    {every: month, day: 1, at: "00:00"}       # day 1..31 or last
    {every: year, month: 1, day: 1, at: "00:00"}

The calendar rules are the core's (gateway/core/schedule.py); this module turns YAML into a
``ResetSchedule`` and says what is wrong, where, with a did-you-mean for a misspelled kind or
weekday. Separate because both the gateway section and the channels read it.
"""

from __future__ import annotations

import difflib
from typing import Final, Literal

from yaml.nodes import Node, ScalarNode

from gateway.config_reader import Reader, did_you_mean, join, show
from gateway.core import ResetSchedule
from gateway.core.schedule import WEEKDAYS, parse_at

EVERY: Final = ("day", "week", "month", "year")
SCHEDULE_KEYS: Final = ("every", "at", "weekday", "day", "month")
# which keys each kind takes besides every and at
_TAKES: Final = {"day": (), "week": ("weekday",), "month": ("day",), "year": ("month", "day")}
NONE: Final = "none"  # a channel's opt-out of the gateway's default
_WEEKDAY_INDEX: Final = {name: index for index, name in enumerate(WEEKDAYS)}
_FULL_NAMES: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

type ScheduleSetting = ResetSchedule | Literal["none"]


def read_reset_schedule(reader: Reader, node: Node, path: str) -> ScheduleSetting | None:
    """A schedule, ``"none"``, or None when it is bad (the problems are reported)."""
    if isinstance(node, ScalarNode):
        if node.value == NONE:
            return NONE
        reader.problem(
            node,
            path,
            f"expected a mapping like {{every: month, day: 1, at: '00:00'}} or none, "
            f"found {show(node)}",
        )
        return None
    entries = reader.entries(node, path, SCHEDULE_KEYS)
    if entries is None:
        return None
    before = len(reader.problems)
    every_node = entries.value_node("every")
    every: str | None = None
    if every_node is None:
        entries.problem("every", "required key is missing (day, week, month or year)")
    else:
        every = _every(reader, every_node, join(path, "every"))
    at_node = entries.value_node("at")
    at: tuple[int, int, int] | None = None
    if at_node is None:
        entries.problem("at", "required key is missing: the local time, like '00:00'")
    else:
        at = _at(reader, at_node, join(path, "at"))
    if every is not None:
        for key in SCHEDULE_KEYS[2:]:
            if key in entries and key not in _TAKES[every]:
                entries.problem(key, f"every {every} takes no {key}")
            if key not in entries and key in _TAKES[every]:
                entries.problem(key, f"required key is missing for every {every}")
    weekday = entries.get("weekday", lambda n, p: _weekday(reader, n, p))
    day = entries.get("day", lambda n, p: _day(reader, n, p))
    month = entries.get("month", lambda n, p: reader.integer(n, p, low=1, high=12))
    if len(reader.problems) > before or every is None or at is None:
        return None
    try:
        return ResetSchedule(every, at, weekday, day, month)  # type: ignore[arg-type]
    except ValueError as exc:  # a combination the checks above did not foresee
        reader.problem(node, path, str(exc))
        return None


def _every(reader: Reader, node: Node, path: str) -> str | None:
    value = reader.scalar(node, path)
    if isinstance(value, str) and value in EVERY:
        return value
    text = value if isinstance(value, str) else show(node)
    hint = did_you_mean(text, EVERY) if isinstance(value, str) else ""
    reader.problem(node, path, f"{text!r} is not one of: {', '.join(EVERY)}{hint}")
    return None


def _at(reader: Reader, node: Node, path: str) -> tuple[int, int, int] | None:
    value = reader.scalar(node, path)
    if not isinstance(value, str) and isinstance(node, ScalarNode) and ":" in node.value:
        # YAML 1.1 reads an unquoted 12:30 as the base-60 number 750 (but 06:30 as text)
        reader.problem(
            node, path, f"quote the time: at: '{node.value}' (YAML reads it as a number)"
        )
        return None
    try:
        return parse_at(value)
    except ValueError as exc:
        reader.problem(node, path, str(exc))
        return None


def _weekday(reader: Reader, node: Node, path: str) -> int | None:
    value = reader.scalar(node, path)
    if isinstance(value, str) and value.lower() in _WEEKDAY_INDEX:
        return _WEEKDAY_INDEX[value.lower()]
    hint = ""
    if isinstance(value, str):
        # a typo of the whole name (mnday) is closer to monday than to mon: match both forms
        close = difflib.get_close_matches(value.lower(), [*WEEKDAYS, *_FULL_NAMES], n=1)
        hint = f" (did you mean {close[0][:3]!r}?)" if close else ""
    message = f"{show(node)} is not a weekday: mon, tue, wed, thu, fri, sat or sun{hint}"
    reader.problem(node, path, message)
    return None


def _day(reader: Reader, node: Node, path: str) -> int | Literal["last"] | None:
    value = reader.scalar(node, path)
    if value == "last":
        return "last"
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 31:
        return value
    hint = " (a day past a month's end is that month's last day)" if value in (0, 32) else ""
    reader.problem(node, path, f"day must be 1..31 or last, not {show(node)}{hint}")
    return None
