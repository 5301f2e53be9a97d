"""Instants and durations: the one place time values are parsed and printed.

The core never reads a clock. Time enters as text (a CSV row, a config value) or as a number
handed in by the shell, and is held as whole microseconds:

- an *instant* is microseconds since 1970-01-01T00:00:00Z (``Instant``);
- a *span* is a non-negative length of time in microseconds (``Span``).

Integers, not floats, because the demand rules compare instants with boundaries exactly: a pulse
at 00:09:59.999 is in one interval and a pulse at 00:10:00 is in the next
(docs/reference/demand-rules.md), and a float would blur that edge a few days after 1970.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

type Instant = int
type Span = int

MICROS_PER_SECOND = 1_000_000

_UNIT_MICROS = {
    "ms": 1_000,
    "s": MICROS_PER_SECOND,
    "min": 60 * MICROS_PER_SECOND,
    "h": 3600 * MICROS_PER_SECOND,
    "d": 86400 * MICROS_PER_SECOND,
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|min|h|d)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)


class TimeSyntaxError(ValueError):
    """A duration or an instant that cannot be read; the message says what was expected."""


def parse_duration(text: str) -> Span:
    """Read a duration such as ``500ms``, ``10s``, ``5min``, ``1h`` or ``1d`` as microseconds.

    A bare number is refused on purpose: ``15`` could mean seconds or minutes, and a demand
    window off by a factor of 60 is a billing error, so the unit must be written.
    """
    if not isinstance(text, str):
        raise TimeSyntaxError(
            f"a duration is text with a unit, like '15min' or '10s', not {text!r}"
        )
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise TimeSyntaxError(
            f"cannot read duration {text!r}: write a number and one of ms, s, min, h, d "
            "(like '500ms', '10s', '15min', '1h')"
        )
    number, unit = match.groups()
    try:
        micros = Decimal(number) * _UNIT_MICROS[unit]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise TimeSyntaxError(f"cannot read duration {text!r}") from exc
    if micros != micros.to_integral_value():
        raise TimeSyntaxError(f"duration {text!r} is finer than a microsecond")
    return int(micros)


def format_duration(span: Span) -> str:
    """The shortest exact text for a span, in the units ``parse_duration`` reads."""
    for unit in ("d", "h", "min", "s", "ms"):
        size = _UNIT_MICROS[unit]
        if span and span % size == 0:
            return f"{span // size}{unit}"
    if span == 0:
        return "0s"
    return f"{Decimal(span) / 1000}ms"


def parse_instant(text: str) -> Instant:
    """Read an ISO 8601 date-time with ``Z`` or an offset, as microseconds since the epoch.

    A time without a zone is refused: a meter log read in the wrong zone moves every pulse by
    hours, and the zone of a bare time cannot be known.
    """
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise TimeSyntaxError(
            f"cannot read time {text!r}: expected ISO 8601 like 2026-01-05T00:10:00Z"
        ) from None
    if moment.tzinfo is None:
        raise TimeSyntaxError(f"time {text!r} has no zone: add Z or an offset like +01:00")
    return (moment - _EPOCH) // _ONE_MICROSECOND


def format_instant(instant: Instant) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``, the replay output format (whole seconds, UTC)."""
    return (_EPOCH + timedelta(microseconds=instant)).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_boundary_after(instant: Instant, slide: Span) -> Instant:
    """The first slide boundary strictly after ``instant``.

    Boundaries are the whole multiples of the slide since 1970-01-01T00:00:00Z
    (docs/reference/demand-rules.md).
    """
    return (instant // slide + 1) * slide
