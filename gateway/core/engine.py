"""Many channels on one timeline: boundaries in time order, then in config order.

The engine owns the order of things across channels (docs/reference/demand-rules.md, "Events
at one instant"): every boundary b <= t of every channel is closed before an event at t is
applied, and readings at one instant come in config order. It is what ``replay`` drives from a
file and what the service drives from sources and the wall clock. Like the rest of the core it
never reads a clock: ``advance(t)`` is told what time it is.

It also wires virtual channels to their terms: a physical channel's pulses and outages go to
the channel itself and then, with the term's index, to every virtual channel that names it
(a routing map rebuilt whenever the channel set changes). The terms' factors come from the
terms' own rules, so a term's new scale factor on a reload is a factor change of the virtual
channel too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import tzinfo
from functools import partial
from typing import NamedTuple

from gateway.core.demand import (
    NEVER,
    Channel,
    ChannelRules,
    ChannelState,
    DemandError,
    Reading,
    ResetOutcome,
)
from gateway.core.schedule import ResetSchedule, between, next_after
from gateway.core.timeline import Instant

type Saved = tuple[ChannelRules, ChannelState]  # a channel as the store keeps it


@dataclass(frozen=True, slots=True)
class ChannelReading:
    """A boundary reading tagged with its channel id."""

    channel: str
    reading: Reading


class ResetAttempt(NamedTuple):
    """One reset attempt on one channel (accepted or refused), for the audit."""

    channel: str
    outcome: ResetOutcome


class Resumed(NamedTuple):
    """An engine after a downtime, and the scheduled resets it applied for the downtime."""

    engine: Engine
    # channel by channel in config order, each channel's in time order: every reset is at its
    # own instant; the audit takes them in this order (a year's worth writes fastest so)
    missed: list[ResetAttempt]


class Engine:
    """The demand rules for an ordered set of channels.

    Scheduled resets are events the engine knows in advance: ``next_fire`` is the earliest
    one due. Whoever drives the engine applies them in time order with the boundaries::

        while engine.next_fire <= t:
            readings = engine.advance(engine.next_fire)   # boundaries first, then
            fired = engine.fire()                          # the resets at that instant
        readings = engine.advance(t)

    ``advance`` refuses to pass a scheduled reset, so none can be skipped by mistake.
    """

    __slots__ = (
        "_order",
        "_routes",
        "_touched",
        "channels",
        "feeds",
        "next_due",
        "next_fire",
        "now",
        "start",
    )

    def __init__(self, rules: Mapping[str, ChannelRules], start: Instant) -> None:
        """Channels in config order, all counted from ``start``."""
        _check_terms(rules)
        self.channels: dict[str, Channel] = {
            channel_id: Channel(channel_rules, start, _term_factors(rules, channel_rules))
            for channel_id, channel_rules in rules.items()
        }
        self.start = start
        self.now = start
        self._routes: dict[str, tuple[tuple[Channel, int], ...]] = {}
        # per channel, what takes its pulses (t, count) on a hot path like replay's: the
        # channel's own ``pulses`` (it still refuses an event out of order or past an unclosed
        # boundary), or ``Engine.pulses`` for a term of a virtual channel (it passes them on)
        # and for a virtual channel (it refuses them)
        self.feeds: dict[str, Callable[[Instant, int], None]] = {}
        self._channels_changed()

    @classmethod
    def of(cls, channels: Mapping[str, Channel], now: Instant) -> Engine:
        """An engine over existing channels (restored from state, or kept across a reload)."""
        _check_terms({channel_id: channel.rules for channel_id, channel in channels.items()})
        engine = cls({}, now)
        engine.channels = dict(channels)
        engine.now = max([now, *(channel.now for channel in engine.channels.values())])
        engine._channels_changed()
        return engine

    @staticmethod
    def resume_instant(saved: Mapping[str, Saved], saved_at: Instant) -> Instant:
        """The earliest instant a gateway may resume ``saved`` at: no channel goes back in
        time (a clock that was ahead when the state was written makes the caller hold)."""
        return max([saved_at, *(state.now for _, state in saved.values())])

    @classmethod
    def resume(
        cls,
        rules: Mapping[str, ChannelRules],
        saved: Mapping[str, Saved],
        saved_at: Instant,
        now: Instant,
    ) -> Resumed:
        """The configured channels (``rules``, in config order) at ``now`` after a downtime.

        A saved channel continues exactly, offline from the last moment the old process was
        alive through ``now`` (the downtime is an outage: no window over it is valid), then
        takes its configured rules as a reload would. Its scheduled resets that fell in the
        downtime are applied each at its own instant, from the first one the saved state had
        not applied, with the configured schedule (a channel saved without one starts its
        schedule at ``now``). A channel with nothing saved starts at ``now``, offline until
        its source reports. Every channel is offline afterwards (a virtual one: every term).
        """
        _check_terms(rules)
        engine = cls({}, now)
        missed: list[ResetAttempt] = []
        calendar = _Calendar()  # channels on one schedule share its instants (a year: 365)
        for channel_id, channel_rules in rules.items():
            entry = saved.get(channel_id)
            factors = _term_factors(rules, channel_rules)
            if entry is None:
                channel = Channel(channel_rules, now, factors)
            else:
                channel, fired = _resumed(
                    entry, saved_at, now, channel_rules, catch_up=True, calendar=calendar
                )
                missed += [ResetAttempt(channel_id, outcome) for outcome in fired]
                channel.reconfigure(now, channel_rules, factors)
            channel.offline_all(now)
            engine.channels[channel_id] = channel
        engine._channels_changed()
        return Resumed(engine, missed)

    def _earliest_boundary(self) -> Instant:
        if not self.channels:
            return NEVER  # no channel, no boundary
        return min(channel.next_boundary for channel in self.channels.values())

    def _earliest_fire(self) -> Instant:
        if not self.channels:
            return NEVER
        return min(channel.schedule_next for channel in self.channels.values())

    def _times_changed(self) -> None:
        self.next_due = self._earliest_boundary()
        self.next_fire = self._earliest_fire()

    def _channels_changed(self) -> None:
        """The order, the routes from terms to virtual channels and the times, after the
        channel set (or one channel object) changed."""
        self._order = list(self.channels.items())
        routes: dict[str, list[tuple[Channel, int]]] = {}
        fed: dict[str, dict[str, None]] = {}  # per term, the virtual channels it feeds
        for channel_id, channel in self._order:
            for term, (term_id, _) in enumerate(channel.rules.terms):
                routes.setdefault(term_id, []).append((channel, term))
                fed.setdefault(term_id, {})[channel_id] = None
        self._routes = {term_id: tuple(targets) for term_id, targets in routes.items()}
        self._touched = {
            channel_id: (channel_id, *fed.get(channel_id, ())) for channel_id, _ in self._order
        }
        self.feeds = {
            channel_id: (
                partial(self.pulses, channel_id)
                if channel_id in routes or channel.rules.terms
                else channel.pulses
            )
            for channel_id, channel in self._order
        }
        self._times_changed()

    def _source(self, channel_id: str) -> Channel:
        """A channel that takes events from a source: not a virtual one."""
        channel = self._channel(channel_id)
        if channel.rules.terms:
            raise DemandError(
                f"{channel_id!r} is a virtual channel: its events are its terms' events"
            )
        return channel

    def _channel(self, channel_id: str) -> Channel:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise DemandError(f"unknown channel {channel_id!r}") from None

    def _at(self, t: Instant) -> None:
        if t < self.now:
            raise DemandError(
                "event is earlier than the one before it: events must be in time order"
            )
        if t >= self.next_due:
            raise DemandError("boundaries up to this event have not been closed: call advance(t)")
        if t >= self.next_fire:  # a scheduled reset comes before events at its instant
            raise DemandError("the scheduled reset due by this event has not been applied: fire()")
        self.now = t

    def advance(self, t: Instant) -> list[ChannelReading]:
        """Close every boundary b <= t; readings ordered by time, then config order."""
        if t < self.now:
            raise DemandError("cannot advance backwards in time")
        if t > self.next_fire:
            raise DemandError("a scheduled reset is due before this instant: fire() it first")
        readings: list[ChannelReading] = []
        while self.next_due <= t:
            due = self.next_due
            for channel_id, channel in self._order:
                if channel.next_boundary == due:
                    readings.append(ChannelReading(channel_id, channel.close()))
            self.next_due = self._earliest_boundary()
        self.now = t
        return readings

    def fire(self) -> list[ResetAttempt]:
        """Apply the scheduled resets due at ``next_fire``, in config order; the boundaries up
        to that instant must be closed first (``advance(next_fire)``)."""
        s = self.next_fire
        if s == NEVER:
            raise DemandError("no scheduled reset is due")
        if s >= self.next_due:
            raise DemandError("boundaries up to this scheduled reset have not been closed")
        self.now = s
        fired = [
            ResetAttempt(channel_id, channel.fire())
            for channel_id, channel in self._order
            if channel.schedule_next == s
        ]
        self.next_fire = self._earliest_fire()
        return fired

    def skip_to(self, t: Instant) -> None:
        """Pass every boundary b <= t without readings; every channel must be offline.

        Like ``advance`` it stops at a scheduled reset: a gap (downtime, a clock step) is an
        outage, so the resets in it change nothing but the reset totals, but each still
        happens at its own instant, through ``fire``.
        """
        if t < self.now:
            raise DemandError("cannot skip backwards in time")
        if t > self.next_fire:
            raise DemandError("a scheduled reset is due before this instant: fire() it first")
        for channel in self.channels.values():
            channel.skip_to(t)
        self.now = t
        self.next_due = self._earliest_boundary()

    def touched(self, channel_id: str) -> tuple[str, ...]:
        """The channels a pulse of ``channel_id`` changes: itself and every virtual channel
        it is a term of (empty for a channel the engine does not have)."""
        return self._touched.get(channel_id, ())

    def pulses(self, channel_id: str, t: Instant, count: int) -> None:
        """Pulses of a physical channel, and of every virtual channel it is a term of."""
        channel = self._source(channel_id)
        self._at(t)
        channel.pulses(t, count)
        for target, term in self._routes.get(channel_id, ()):
            target.pulses(t, count, term)

    def offline(self, channel_id: str, t: Instant) -> None:
        channel = self._source(channel_id)
        self._at(t)
        channel.offline(t)
        for target, term in self._routes.get(channel_id, ()):
            target.offline(t, term)

    def online(self, channel_id: str, t: Instant, catch_up: int = 0) -> None:
        channel = self._source(channel_id)
        self._at(t)
        channel.online(t, catch_up)
        for target, term in self._routes.get(channel_id, ()):
            target.online(t, catch_up, term)

    def reset(self, channel_id: str, t: Instant) -> ResetOutcome:
        channel = self._channel(channel_id)
        self._at(t)
        return channel.reset(t)

    def reset_all(self, t: Instant) -> dict[str, ResetOutcome]:
        """Reset every channel at one instant; each channel's own lockout still applies."""
        self._at(t)
        return {channel_id: channel.reset(t) for channel_id, channel in self._order}

    # -- the channel set: reloads and resets that could not be stored ----------------------

    def update(
        self,
        t: Instant,
        rules: Mapping[str, ChannelRules],
        *,
        resumed: Mapping[str, Saved] | None = None,
        offline: bool = False,
    ) -> None:
        """The channels of a new config from ``t`` on (a reload), in its order.

        A kept channel keeps everything; one with new rules is reconfigured (counts, peaks
        and resets kept, see ``Channel.reconfigure``); one no longer configured is dropped
        (its last state is the caller's to save). A new channel continues from ``resumed``
        if it was saved before (removed earlier and configured again), like a restart would,
        else starts at ``t``; either way offline until its source reports. ``offline`` takes
        every channel offline at ``t`` (their sources are restarting).

        A virtual channel's terms are then set online or offline as their channels are, so a
        new virtual channel over running terms counts from ``t`` and one whose term is new
        sees that term's outage.

        The ``channels`` mapping is changed in place: readers that hold it see the new set.
        """
        _check_terms(rules)
        self._at(t)
        kept = dict(self.channels)
        self.channels.clear()
        for channel_id, channel_rules in rules.items():
            channel = kept.get(channel_id)
            factors = _term_factors(rules, channel_rules)
            if channel is None:
                entry = (resumed or {}).get(channel_id)
                # one removed while running was last seen alive at its own last event (0); its
                # schedule starts afresh, like a new one's
                if entry is None:
                    channel = Channel(channel_rules, t, factors)
                else:
                    channel, _ = _resumed(entry, 0, t, channel_rules, catch_up=False)
                channel.offline_all(t)
            if channel.rules != channel_rules or channel.factors != factors:
                channel.reconfigure(t, channel_rules, factors)
            if offline:
                channel.offline_all(t)
            self.channels[channel_id] = channel
        for channel in self.channels.values():
            for term, (term_id, _) in enumerate(channel.rules.terms):
                online = self.channels[term_id].is_online
                if online and not channel.term_online(term):
                    channel.online(t, 0, term)
                elif not online and channel.term_online(term):
                    channel.offline(t, term)
        self._channels_changed()

    def offline_all(self, t: Instant) -> None:
        """Every channel stops delivering at ``t`` (a clock step: nothing after it is timed)."""
        self._at(t)
        for channel in self.channels.values():
            channel.offline_all(t)

    def put_back(self, channel_id: str, state: ChannelState) -> None:
        """Return a channel to ``state`` (taken earlier from it with its current rules):
        a reset that could not be made durable is undone, as if it never happened."""
        channel = self._channel(channel_id)
        self.channels[channel_id] = Channel.restore(channel.rules, state)
        self._channels_changed()  # the routes hold channel objects


def _check_terms(rules: Mapping[str, ChannelRules]) -> None:
    """Every term of a virtual channel is a physical channel of the same set (no nesting)."""
    for channel_id, channel_rules in rules.items():
        for term_id, _ in channel_rules.terms:
            term = rules.get(term_id)
            if term is None:
                raise DemandError(f"{channel_id}: term {term_id!r} is not a channel")
            if term.terms:
                raise DemandError(
                    f"{channel_id}: term {term_id!r} is a virtual channel; terms are physical"
                )


def _term_factors(
    rules: Mapping[str, ChannelRules], channel_rules: ChannelRules
) -> tuple[float, ...] | None:
    """A virtual channel's signed term factors: each term's own scale factor, signed."""
    if not channel_rules.terms:
        return None
    return tuple([sign * rules[term_id].scale_factor for term_id, sign in channel_rules.terms])


class _Calendar:
    """The instants of each schedule in a downtime, computed once for all its channels."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[tuple[object, ...], tuple[list[Instant], Instant]] = {}

    def span(
        self, schedule: ResetSchedule, zone: tzinfo | None, after: Instant, until: Instant
    ) -> tuple[list[Instant], Instant]:
        """The instants s with after < s <= until, and the first one after until."""
        key = (schedule, zone, after, until)
        found = self._known.get(key)
        if found is None:
            instants = list(between(schedule, zone, after, until))
            following = next_after(schedule, zone, instants[-1] if instants else until)
            found = self._known[key] = (instants, following)
        return found


def _resumed(
    entry: Saved,
    saved_at: Instant,
    now: Instant,
    configured: ChannelRules,
    *,
    catch_up: bool,
    calendar: _Calendar | None = None,
) -> tuple[Channel, list[ResetOutcome]]:
    """A saved channel brought to ``now``, offline since the last moment it was seen alive,
    with the configured schedule; with ``catch_up``, its scheduled resets in the gap applied."""
    saved_rules, state = entry
    # the schedule is the configured one (the saved rules do not carry it), so the reload
    # that follows sees no schedule change
    rules = replace(
        saved_rules, reset_schedule=configured.reset_schedule, timezone=configured.timezone
    )
    channel = Channel.restore(rules, state)
    schedule = rules.reset_schedule
    pending = state.schedule_next
    instants: list[Instant] = []
    following = NEVER
    if schedule is None:
        channel.schedule_next = NEVER
    elif pending == NEVER or not catch_up:
        channel.schedule_next = next_after(schedule, rules.timezone, max(now, channel.now))
    else:  # the configured schedule's instants from the first one not yet applied
        instants, following = (calendar or _Calendar()).span(
            schedule, rules.timezone, max(pending - 1, channel.now), now
        )
        channel.schedule_next = instants[0] if instants else following
    # the old process was alive until its last checkpoint, and at most until the channel's
    # next boundary (it would have closed it otherwise) or its next scheduled reset
    down = max(channel.now, min(saved_at, channel.next_boundary - 1, channel.schedule_next - 1))
    channel.offline_all(down)
    fired: list[ResetOutcome] = []
    if instants:
        for s, then in zip(instants, [*instants[1:], following], strict=True):
            channel.skip_to(s)
            fired.append(channel.fire(then))
    channel.skip_to(now)
    return channel, fired
