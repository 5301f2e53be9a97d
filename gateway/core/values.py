"""The plain values of the demand rules: a channel's rules, what it shows at a boundary, its
reset totals and outcomes, billing periods, and its whole state as saved across a restart.

Separate from ``gateway.core.demand`` (the ``Channel`` state machine that produces them) so that
readers of the values (the store, the API, the audit) see them without the machinery, and so
each module stays small. Everything here is importable from ``gateway.core.demand`` too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import tzinfo
from typing import NamedTuple

from gateway.core.schedule import ResetSchedule, next_after
from gateway.core.timeline import MICROS_PER_SECOND, Instant, Span
from gateway.core.units import Unit

NEVER: Instant = 2**63 - 1  # later than any instant (and fits SQLite): nothing is due


class DemandError(ValueError):
    """An event the rules cannot take (out of order, a bad count); nothing was changed."""


@dataclass(frozen=True, slots=True)
class ChannelRules:
    """A channel's demand settings, checked once so the engine never meets a bad one.

    ``terms`` makes the channel virtual: (term channel id, +1 to add it or -1 to subtract it),
    in order. A term's factor is its own channel's scale_factor with that sign, resolved by the
    Engine; a virtual channel's own ``scale_factor`` is not used (1.0 by convention).
    """

    unit: Unit
    scale_factor: float
    window: Span
    slide: Span
    initial_reading: float = 0.0
    reset_lockout: Span = 0
    reset_schedule: ResetSchedule | None = None
    timezone: tzinfo | None = None  # the wall clock the schedule is read on; None = UTC
    terms: tuple[tuple[str, int], ...] = ()  # () for a physical channel

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise DemandError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every rule these settings break, as messages (empty when they are sound)."""
        found = []
        if not (math.isfinite(self.scale_factor) and self.scale_factor > 0):
            found.append(f"scale_factor must be a positive number, not {self.scale_factor!r}")
        if self.slide < MICROS_PER_SECOND or self.slide % MICROS_PER_SECOND:
            found.append("demand_slide must be a whole number of seconds, at least 1s")
        elif self.window <= 0 or self.window % self.slide:
            found.append("demand_window must be a positive whole multiple of demand_slide")
        if not math.isfinite(self.initial_reading):
            found.append(f"initial_reading must be a finite number, not {self.initial_reading!r}")
        if self.reset_lockout < 0:
            found.append("reset_lockout must not be negative")
        ids = [term[0] for term in self.terms]
        if any(not (isinstance(term_id, str) and term_id) for term_id in ids):
            found.append("a virtual channel's terms must be channel ids")
        elif len(set(ids)) != len(ids):
            found.append("a virtual channel names each term once")
        if any(sign not in (1, -1) for _, sign in self.terms):
            found.append("a term is added (+1) or subtracted (-1)")
        return found

    @property
    def is_virtual(self) -> bool:
        return bool(self.terms)

    @property
    def slides_per_window(self) -> int:
        return self.window // self.slide


@dataclass(frozen=True, slots=True)
class Reading:
    """What a channel shows at a boundary: one row of replay output."""

    time: Instant
    pulses_total: int | None  # None for a virtual channel: its terms' pulses are not one count
    consumption: float
    demand: float | None  # None: not available (first window, outage, scale change)
    peak_demand: float
    previous_peak_demand: float
    cumulative_demand: float
    reset_count: int


class Totals(NamedTuple):
    """The reset-controlled measures, as kept in the reset audit before and after a reset.

    This and the other reset values are NamedTuples, built in C: a start-up after a year
    down builds a few million of them."""

    peak_demand: float
    previous_peak_demand: float
    cumulative_demand: float
    reset_count: int


class Period(NamedTuple):
    """A closed billing period: from one accepted reset (or the channel's creation) to the next.

    ``peak_demand`` is the peak the closing reset moved to previous peak and ``peak_time`` the
    boundary that set it; both None when the period had no valid demand above zero.
    """

    start: Instant
    end: Instant
    consumption: float
    peak_demand: float | None
    peak_time: Instant | None


class ResetOutcome(NamedTuple):
    """The result of one reset attempt; a refused one changed nothing."""

    time: Instant
    accepted: bool
    reason: str  # "accepted" or "lockout"
    before: Totals
    after: Totals
    period: Period | None = None  # the billing period an accepted reset closed


class TermState(NamedTuple):
    """One more term of a virtual channel (terms 1..K-1; term 0 is in ChannelState itself),
    with the same meaning as the ChannelState fields of the same names."""

    scale_factor: float  # signed: negative for a subtracted term
    pulses_total: int
    pulses_at_base: int
    window_intervals: tuple[int, ...]
    open_interval: int
    offline_since: Instant | None


class ChannelState(NamedTuple):
    """A channel's whole state as plain values, saved and restored exactly across a restart.

    ``window_intervals`` holds the pulse counts of the last W/S closed intervals, oldest first.
    A NamedTuple rather than a frozen dataclass: every checkpoint takes one per channel on the
    event loop, and a tuple is built in C (a 19-field frozen dataclass is about 4x slower).

    The term fields (pulses_total .. open_interval, offline_since) are term 0's; for a virtual
    channel ``scale_factor`` is term 0's signed factor and ``more_terms`` holds the others.
    """

    pulses_total: int
    consumption_base: float
    pulses_at_base: int
    scale_factor: float
    window_intervals: tuple[int, ...]
    open_interval: int
    next_boundary: Instant
    valid_from: Instant
    offline_since: Instant | None
    now: Instant
    demand: float | None
    last_valid_demand: float | None
    peak_demand: float
    peak_time: Instant | None
    previous_peak_demand: float
    cumulative_demand: float
    reset_count: int
    last_reset: Instant | None
    rejected_resets: int = 0
    period_start: Instant = 0
    period_base: float = 0.0  # consumption at period_start
    previous_period: float = 0.0  # consumption of the last closed period (0 before the first)
    schedule_next: Instant = NEVER  # the next scheduled reset not yet applied
    more_terms: tuple[TermState, ...] = ()  # a virtual channel's terms 1..K-1


class _Term:
    """A virtual channel's term 1..K-1 while it runs (term 0 lives in the Channel's fields)."""

    __slots__ = (
        "factor",
        "offline_since",
        "open_interval",
        "pulses_at_base",
        "pulses_total",
        "ring",
        "window_pulses",
    )

    def __init__(self, factor: float, slides: int) -> None:
        self.factor = factor
        self.pulses_total = 0
        self.pulses_at_base = 0
        self.ring = [0] * slides
        self.window_pulses = 0
        self.open_interval = 0
        self.offline_since: Instant | None = None


def _factors(rules: ChannelRules, factors: tuple[float, ...] | None) -> tuple[float, ...]:
    """The signed factor of each term: a virtual channel's as given, a physical one's its
    scale factor."""
    if not rules.terms:
        if factors is not None and factors != (rules.scale_factor,):
            raise DemandError("a physical channel's factor is its scale_factor")
        return (rules.scale_factor,)
    if factors is None:
        raise DemandError("a virtual channel needs the signed factor of each term")
    _check_factors(factors, len(rules.terms))
    return factors


def _check_factors(factors: tuple[float, ...], terms: int) -> None:
    if len(factors) != terms:
        raise DemandError(f"expected {terms} term factors, not {len(factors)}")
    for factor in factors:
        if not (math.isfinite(factor) and factor != 0):
            raise DemandError(f"a term factor must be a non-zero number, not {factor!r}")


def _next_fire(rules: ChannelRules, t: Instant) -> Instant:
    """The channel's first scheduled reset strictly after ``t`` (NEVER without a schedule)."""
    if rules.reset_schedule is None:
        return NEVER
    return next_after(rules.reset_schedule, rules.timezone, t)
