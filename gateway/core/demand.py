"""The demand rules of one channel: the Cimetrics B6070 behaviour, made exact.

Theory of operation (docs/reference/demand-rules.md)
----------------------------------------------------
A channel counts pulses. Time is cut at *slide boundaries*, the whole multiples of the slide S
since 1970-01-01T00:00:00Z; each *interval* [b-S, b) is half-open, so a pulse at exactly b
belongs to the next interval. The last W/S closed intervals form the *window* [b-W, b).

At each boundary b, with P = pulses in [b-W, b)::

    demand(b) = P * scale_factor * units_Scale / W_seconds

demand(b) is *valid* only when the whole window was observed: it starts at or after the moment
counting began, and no outage touches it. ``valid_from`` is the earliest instant a valid window
may start; it moves forward when counting starts, when an outage ends (the catch-up pulses that
arrive then have no time of their own) and when the scale factor changes (a window must not mix
two factors). A window that starts before ``valid_from``, or a channel that is offline at b,
gives "not available" (``None``).

    peak_demand           max of the valid demands since the last reset (0 right after one)
    Reset at t            accepted when t - last accepted reset >= reset_lockout, then:
                            previous_peak_demand = peak_demand
                            cumulative_demand   += peak_demand
                            peak_demand = 0; reset_count += 1
    consumption           initial_reading + pulses_total * scale_factor, piecewise when the
                          factor changes, so it never jumps

A *virtual* channel computes the coincident demand of several physical channels, its *terms*
(a site total, a net of consumption and generation). Each pulse of a term counts with that
term's signed factor (+scale_factor to add it, -scale_factor to subtract it), so P above
becomes the window's sum of signed contributions and demand may be negative. The window is
valid when no term's outage touches it. A physical channel is the one-term case with
+scale_factor, so both kinds share every rule here: term 0 lives in the channel's own fields
(a physical channel's state is unchanged), terms 1..K-1 in small per-term records. Counts stay
integers per term and are multiplied by their factors only when demand or consumption is read,
term by term in a fixed order, so a virtual channel over one added term equals that channel to
the last bit.

``projected(now)`` extrapolates the coming boundary's demand from the part of its window seen.

Billing periods: every accepted reset closes one, from the previous accepted reset (or the
channel's creation) to this one, with the consumption between them and the peak the reset moves
to previous peak. A channel with a ``reset_schedule`` resets itself at each scheduled instant
(``fire``); the next one due is part of its state, so a restart applies each missed instant
exactly once (gateway/core/schedule.py has the calendar arithmetic).

Events are applied in the order given; events at a boundary instant b come after the row for
b, which the caller obtains with ``close(b)`` before feeding them. The work per pulse event and
per boundary is O(1): the window's pulses live in a ring of W/S interval counts with a running
sum, never a scan of history.
"""

from __future__ import annotations

import math

from gateway.core.timeline import MICROS_PER_SECOND, Instant, next_boundary_after
from gateway.core.values import (
    NEVER,
    ChannelRules,
    ChannelState,
    DemandError,
    Period,
    Reading,
    ResetOutcome,
    TermState,
    Totals,
    _check_factors,
    _factors,
    _next_fire,
    _Term,
)


class Channel:
    """One channel's demand state machine, fed timestamped events in time order."""

    # fmt: off
    __slots__ = (
        "_last_valid_demand", "_more", "_offline_since", "_open_interval", "_peak_time",
        "_pulses_at_base", "_ring", "_ring_pos", "_valid_from", "_window_pulses",
        "consumption_base", "cumulative_demand", "demand", "last_reset", "next_boundary", "now",
        "peak_demand", "period_base", "period_start", "previous_peak_demand", "previous_period",
        "pulses_total", "rejected_resets", "reset_count", "rules", "scale_factor",
        "schedule_next",
    )
    # fmt: on

    def __init__(
        self, rules: ChannelRules, start: Instant, factors: tuple[float, ...] | None = None
    ) -> None:
        """A new channel whose counting begins at ``start``.

        ``factors``: a virtual channel's signed factor per term (the Engine resolves them from
        the terms' rules); a physical channel's is its scale_factor.
        """
        factors = _factors(rules, factors)
        self.rules = rules
        self.scale_factor = factors[0]
        self.pulses_total = 0
        self.consumption_base = rules.initial_reading
        self._pulses_at_base = 0
        self._ring = [0] * rules.slides_per_window
        self._ring_pos = 0  # index of the oldest closed interval in the window
        self._window_pulses = 0  # sum of the ring
        self._open_interval = 0  # pulses in [next_boundary - S, next_boundary)
        self._more = [_Term(factor, rules.slides_per_window) for factor in factors[1:]]
        self.next_boundary = next_boundary_after(start, rules.slide)
        self._valid_from = start
        self._offline_since: Instant | None = None
        self.now = start
        self.demand: float | None = None
        self._last_valid_demand: float | None = None
        self.peak_demand = 0.0
        self._peak_time: Instant | None = None
        self.previous_peak_demand = 0.0
        self.cumulative_demand = 0.0
        self.reset_count = 0
        self.last_reset: Instant | None = None
        self.rejected_resets = 0
        self.period_start = start
        self.period_base = rules.initial_reading
        self.previous_period = 0.0
        self.schedule_next = _next_fire(rules, start)

    # -- read side ----------------------------------------------------------------------------

    @property
    def consumption(self) -> float:
        total = (
            self.consumption_base + (self.pulses_total - self._pulses_at_base) * self.scale_factor
        )
        if self._more:
            for term in self._more:  # term order, so the sum is the same float every time
                total += (term.pulses_total - term.pulses_at_base) * term.factor
        return total

    @property
    def period_consumption(self) -> float:
        """Consumption since the last accepted reset (or the channel's creation)."""
        return self.consumption - self.period_base

    @property
    def factors(self) -> tuple[float, ...]:
        """The signed factor of each term (a physical channel: its scale factor)."""
        return (self.scale_factor, *[term.factor for term in self._more])

    @property
    def is_online(self) -> bool:
        """Every term delivers (a virtual channel is offline while any term is)."""
        return self._offline_since is None and all(
            term.offline_since is None for term in self._more
        )

    def term_online(self, term: int) -> bool:
        if term == 0:
            return self._offline_since is None
        return self._term(term).offline_since is None

    @property
    def valid_from(self) -> Instant:
        """The earliest instant a valid window may start (counting began, last outage ended)."""
        return self._valid_from

    @property
    def peak_time(self) -> Instant | None:
        return self._peak_time

    @property
    def last_valid_demand(self) -> float | None:
        """The value BACnet keeps showing while demand is not available."""
        return self._last_valid_demand

    def totals(self) -> Totals:
        return Totals(
            self.peak_demand, self.previous_peak_demand, self.cumulative_demand, self.reset_count
        )

    def reading(self, time: Instant) -> Reading:
        return Reading(
            time,
            None if self.rules.terms else self.pulses_total,
            self.consumption,
            self.demand,
            self.peak_demand,
            self.previous_peak_demand,
            self.cumulative_demand,
            self.reset_count,
        )

    def projected(self, now: Instant) -> float | None:
        """The demand the next boundary b1 will show if the open interval goes on as it began:

            (P(b1 - W, b0) + P(b0, now) * S / (now - b0)) * scale_factor * units_Scale / W

        with b0 the last boundary (contributions instead of pulses for a virtual channel).
        None during the first tenth of the slide (at least 1 s), and when the window of b1 is
        already invalid (a term offline now, or the window starts before ``valid_from``).
        ``now`` is at or after the channel's last event and before its next boundary.
        """
        rules = self.rules
        slide = rules.slide
        b1 = self.next_boundary
        b0 = b1 - slide
        if now < self.now or not b0 <= now < b1:
            raise DemandError("projected demand is read between the last boundary and the next")
        elapsed = now - b0
        if elapsed * 10 < slide or elapsed < MICROS_PER_SECOND:
            return None
        if b1 - rules.window < self._valid_from or not self.is_online:
            return None
        pos = self._ring_pos  # the oldest interval: the one b1's window no longer holds
        closed = (self._window_pulses - self._ring[pos]) * self.scale_factor
        current = self._open_interval * self.scale_factor
        for term in self._more:
            closed += (term.window_pulses - term.ring[pos]) * term.factor
            current += term.open_interval * term.factor
        return (
            (closed + current * slide / elapsed)
            * rules.unit.units_scale
            / (rules.window / MICROS_PER_SECOND)
        )

    # -- events -------------------------------------------------------------------------------

    def _check_time(self, t: Instant) -> None:
        if t < self.now:
            raise DemandError(
                "event is earlier than the one before it: events must be in time order"
            )
        if t >= self.next_boundary:
            raise DemandError("the boundary before this event has not been closed")
        if t >= self.schedule_next:  # a scheduled reset comes before events at its instant
            raise DemandError("the scheduled reset due by this event has not been applied")

    def _term(self, term: int) -> _Term:
        """Term 1..K-1's record (term 0 is the channel's own fields)."""
        if not 0 < term <= len(self._more):
            raise DemandError(f"the channel has no term {term}")
        return self._more[term - 1]

    def pulses(self, t: Instant, count: int, term: int = 0) -> None:
        """``count`` pulses of ``term`` counted at ``t``.

        Pulses that carry their own time go into the interval of that time even while the
        channel is offline: every window that overlaps the outage is invalid anyway, and one that
        starts exactly when the outage ends rightly holds a pulse stamped at that instant.
        """
        if count < 1:
            raise DemandError(f"a pulse count must be at least 1, not {count}")
        if term:
            record = self._term(term)
            self._check_time(t)
            self.now = t
            record.pulses_total += count
            record.open_interval += count
            return
        self._check_time(t)
        self.now = t
        self.pulses_total += count
        self._open_interval += count

    def offline(self, t: Instant, term: int = 0) -> None:
        """The source of ``term`` stopped delivering at ``t``; an outage under way goes on."""
        record = self._term(term) if term else None
        self._check_time(t)
        self.now = t
        if record is None:
            if self._offline_since is None:
                self._offline_since = t
        elif record.offline_since is None:
            record.offline_since = t

    def offline_all(self, t: Instant) -> None:
        """Every term stops delivering at ``t`` (a downtime, a clock step, a reload)."""
        self._check_time(t)
        self.now = t
        if self._offline_since is None:
            self._offline_since = t
        for record in self._more:
            if record.offline_since is None:
                record.offline_since = t

    def online(self, t: Instant, catch_up: int = 0, term: int = 0) -> None:
        """The source of ``term`` delivers again at ``t`` with ``catch_up`` pulses counted
        meanwhile.

        Catch-up pulses have no time of their own, so they go into pulses_total and consumption
        only, and no window that holds ``t`` is valid, even after a zero-length outage.
        """
        if catch_up < 0:
            raise DemandError(f"catch-up pulses cannot be negative, not {catch_up}")
        record = self._term(term) if term else None
        self._check_time(t)
        self.now = t
        if record is None:
            self.pulses_total += catch_up
            self._offline_since = None
        else:
            record.pulses_total += catch_up
            record.offline_since = None
        self._valid_from = max(self._valid_from, t)

    def reset(self, t: Instant) -> ResetOutcome:
        """An operator Reset at ``t``: accepted outside the lockout, refused (no change) inside."""
        self._check_time(t)
        self.now = t
        before = self.totals()
        lockout = self.rules.reset_lockout
        if self.last_reset is not None and t - self.last_reset < lockout:
            self.rejected_resets += 1
            return ResetOutcome(t, False, "lockout", before, before)
        consumption = self.consumption
        peak_time = self._peak_time
        period = Period(
            self.period_start,
            t,
            consumption - self.period_base,
            None if peak_time is None else self.peak_demand,
            peak_time,
        )
        self.previous_period = period.consumption
        self.period_start = t
        self.period_base = consumption
        self.previous_peak_demand = self.peak_demand
        self.cumulative_demand += self.peak_demand
        self.peak_demand = 0.0
        self._peak_time = None
        self.reset_count += 1
        self.last_reset = t
        return ResetOutcome(t, True, "accepted", before, self.totals(), period)

    def fire(self, then: Instant | None = None) -> ResetOutcome:
        """The scheduled reset due at ``schedule_next``: a Reset at that instant under the
        same lockout, then the schedule moves on (a refused one is not tried again).

        ``then``: the schedule's next instant when the caller has it already (a start-up
        applying a year of missed resets computes each date once for all channels)."""
        t = self.schedule_next
        if t == NEVER:
            raise DemandError("no scheduled reset is due")
        if t >= self.next_boundary:
            raise DemandError("the boundary before this scheduled reset has not been closed")
        self.schedule_next = NEVER  # lets reset() take t itself
        try:
            outcome = self.reset(t)
        except DemandError:
            self.schedule_next = t
            raise
        self.schedule_next = _next_fire(self.rules, t) if then is None else then
        return outcome

    def change_scale(self, t: Instant, scale_factor: float) -> None:
        """A new scale factor from ``t`` on (a reload): consumption stays continuous, and no
        window that mixes the two factors is valid."""
        if not (math.isfinite(scale_factor) and scale_factor > 0):
            raise DemandError(f"scale_factor must be a positive number, not {scale_factor!r}")
        if self.rules.terms:
            raise DemandError("a virtual channel's factors are its terms' (change_factors)")
        self.change_factors(t, (scale_factor,))

    def change_factors(self, t: Instant, factors: tuple[float, ...]) -> None:
        """New signed term factors from ``t`` on (a term's scale factor was reloaded), with
        the rules of a scale change: consumption continuous, no window mixing factors valid."""
        _check_factors(factors, len(self._more) + 1)
        self._check_time(t)
        self.now = t
        if factors == self.factors:
            return
        self.consumption_base = self.consumption
        self._pulses_at_base = self.pulses_total
        self.scale_factor = factors[0]
        for record, factor in zip(self._more, factors[1:], strict=True):
            record.pulses_at_base = record.pulses_total
            record.factor = factor
        self._valid_from = max(self._valid_from, t)

    def reconfigure(
        self, t: Instant, rules: ChannelRules, factors: tuple[float, ...] | None = None
    ) -> None:
        """New rules from ``t`` on (a reload) that keep the channel's counts and reset totals.

        A new scale factor alone is ``change_scale`` (for a virtual channel, new ``factors``
        are ``change_factors``). A new unit, window, slide or term list restarts the window:
        the first-window rule applies again from ``t``. pulses_total, consumption, peak,
        previous peak, cumulative demand, reset count and the lockout clock are kept, so a
        reload never loses a count or hides a reset. A new term list rebases consumption, so
        it goes on from the value it had; a term kept keeps its count and its outage.
        """
        factors = _factors(rules, factors)
        self._check_time(t)
        if rules == self.rules and factors == self.factors:
            return
        old = self.rules
        terms_changed = rules.terms != old.terms
        window = (rules.unit, rules.window, rules.slide)
        window_changed = terms_changed or window != (old.unit, old.window, old.slide)
        schedule = (rules.reset_schedule, rules.timezone)
        schedule_changed = schedule != (old.reset_schedule, old.timezone)
        if terms_changed:
            self._retarget(t, rules, factors)
        else:
            self.change_factors(t, factors)
        self.rules = rules
        if schedule_changed:  # a new schedule counts from now: nothing before it is missed
            self.schedule_next = _next_fire(rules, t)
        if window_changed:
            self._clear_window()
            self.next_boundary = next_boundary_after(t, rules.slide)
            self._valid_from = max(self._valid_from, t)
            self.demand = None

    def _retarget(self, t: Instant, rules: ChannelRules, factors: tuple[float, ...]) -> None:
        """Take a new term list at ``t``: consumption rebased, kept terms keep their counts
        and outages (a physical channel's one term is keyed None)."""
        self.now = t
        old_keys: list[str | None] = [term_id for term_id, _ in self.rules.terms] or [None]
        old = [(self.pulses_total, self._offline_since)] + [
            (record.pulses_total, record.offline_since) for record in self._more
        ]
        kept = dict(zip(old_keys, old, strict=True))
        self.consumption_base = self.consumption
        new_keys: list[str | None] = [term_id for term_id, _ in rules.terms] or [None]
        terms = [kept.get(key, (0, None)) for key in new_keys]
        self.scale_factor = factors[0]
        self.pulses_total, self._offline_since = terms[0]
        self._pulses_at_base = self.pulses_total
        self._more = []
        for factor, (pulses_total, offline_since) in zip(factors[1:], terms[1:], strict=True):
            record = _Term(factor, rules.slides_per_window)
            record.pulses_total = record.pulses_at_base = pulses_total
            record.offline_since = offline_since
            self._more.append(record)
        self._valid_from = max(self._valid_from, t)

    def _clear_window(self) -> None:
        """Empty every term's window and open interval (sized for the current rules)."""
        slides = self.rules.slides_per_window
        self._ring = [0] * slides
        self._ring_pos = 0
        self._window_pulses = 0
        self._open_interval = 0
        for record in self._more:
            record.ring = [0] * slides
            record.window_pulses = 0
            record.open_interval = 0

    # -- boundaries ---------------------------------------------------------------------------

    def close(self) -> Reading:
        """Close the interval ending at ``next_boundary`` and compute demand there."""
        b = self.next_boundary
        rules = self.rules
        ring = self._ring
        pos = self._ring_pos
        closed = self._open_interval
        self._window_pulses += closed - ring[pos]
        ring[pos] = closed
        self._open_interval = 0
        more = self._more
        if more:
            for record in more:
                closed = record.open_interval
                record.window_pulses += closed - record.ring[pos]
                record.ring[pos] = closed
                record.open_interval = 0
        self._ring_pos = pos + 1 if pos + 1 < len(ring) else 0
        self.next_boundary = b + rules.slide
        if (
            self._offline_since is None
            and b - rules.window >= self._valid_from
            and (not more or self.is_online)
        ):
            # the window's contribution: counts times factors, term by term in order
            contribution = self._window_pulses * self.scale_factor
            if more:
                for record in more:
                    contribution += record.window_pulses * record.factor
            demand = contribution * rules.unit.units_scale / (rules.window / MICROS_PER_SECOND)
            self.demand = demand
            self._last_valid_demand = demand
            if demand > self.peak_demand:
                self.peak_demand = demand
                self._peak_time = b
        else:
            self.demand = None
        return self.reading(b)

    def skip_to(self, t: Instant) -> None:
        """Pass every boundary b <= t without readings, while the channel is offline.

        For a gap the gateway did not observe (downtime, a forward clock step): every window
        in it is invalid anyway, so a long gap costs O(W/S), not one close per boundary.
        """
        if self.is_online:
            raise DemandError("only an offline channel can skip boundaries")
        if t < self.now:
            raise DemandError("cannot skip backwards in time")
        if t >= self.next_boundary + self.rules.window:
            # the whole window has left the gap behind: nothing in it can be counted
            self._clear_window()
            self.next_boundary = next_boundary_after(t, self.rules.slide)
            self.demand = None
        else:
            while self.next_boundary <= t:
                self.close()
        self.now = t

    # -- state --------------------------------------------------------------------------------

    def state(self) -> ChannelState:
        """The whole state as a plain value (the rings rotated oldest first)."""
        pos = self._ring_pos
        more = self._more
        # positional, in ChannelState's field order: every checkpoint takes one per channel
        # on the event loop, and keyword arguments cost half as much again
        return ChannelState(
            self.pulses_total,
            self.consumption_base,
            self._pulses_at_base,
            self.scale_factor,
            tuple(self._ring[pos:] + self._ring[:pos]),
            self._open_interval,
            self.next_boundary,
            self._valid_from,
            self._offline_since,
            self.now,
            self.demand,
            self._last_valid_demand,
            self.peak_demand,
            self._peak_time,
            self.previous_peak_demand,
            self.cumulative_demand,
            self.reset_count,
            self.last_reset,
            self.rejected_resets,
            self.period_start,
            self.period_base,
            self.previous_period,
            self.schedule_next,
            tuple(
                [
                    TermState(
                        record.factor,
                        record.pulses_total,
                        record.pulses_at_base,
                        tuple(record.ring[pos:] + record.ring[:pos]),
                        record.open_interval,
                        record.offline_since,
                    )
                    for record in more
                ]
            )
            if more
            else (),
        )

    @classmethod
    def restore(cls, rules: ChannelRules, state: ChannelState) -> Channel:
        """A channel that continues exactly where ``state`` left off."""
        slides = rules.slides_per_window
        if len(state.more_terms) + 1 != max(1, len(rules.terms)):
            raise DemandError(
                f"saved channel has {len(state.more_terms) + 1} terms, "
                f"the rules name {max(1, len(rules.terms))}"
            )
        for intervals in [state.window_intervals, *[m.window_intervals for m in state.more_terms]]:
            if len(intervals) != slides:
                raise DemandError(
                    f"saved window has {len(intervals)} intervals, the rules need {slides}"
                )
        if state.next_boundary % rules.slide:
            raise DemandError("saved next boundary is not on this channel's slide")
        factors = (state.scale_factor, *[m.scale_factor for m in state.more_terms])
        channel = cls(rules, state.now, factors if rules.terms else None)
        for name in _SAVED_AS_IS:  # the fields a channel keeps under the state's own names
            setattr(channel, name, getattr(state, name))
        channel._pulses_at_base = state.pulses_at_base
        channel._ring = list(state.window_intervals)
        channel._ring_pos = 0
        channel._window_pulses = sum(state.window_intervals)
        channel._open_interval = state.open_interval
        for record, saved in zip(channel._more, state.more_terms, strict=True):
            record.pulses_total = saved.pulses_total
            record.pulses_at_base = saved.pulses_at_base
            record.ring = list(saved.window_intervals)
            record.window_pulses = sum(saved.window_intervals)
            record.open_interval = saved.open_interval
            record.offline_since = saved.offline_since
        channel._valid_from = state.valid_from
        channel._offline_since = state.offline_since
        channel._last_valid_demand = state.last_valid_demand
        channel._peak_time = state.peak_time
        return channel


# ChannelState fields a Channel holds under the same public name (restore copies them as is)
_SAVED_AS_IS = (
    "pulses_total", "consumption_base", "scale_factor", "next_boundary", "demand",
    "peak_demand", "previous_peak_demand", "cumulative_demand", "reset_count", "last_reset",
    "rejected_resets", "period_start", "period_base", "previous_period", "schedule_next",
)  # fmt: skip
