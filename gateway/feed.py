"""The data path: what sources report, stamped with the gateway's time, into the engine.

Sources never read the clock and never touch the engine (gateway/sources/__init__.py). The
feed is their ``PulseSink``: it reads the timeline, closes every boundary due before it applies
an event (the engine's rule: readings first, then events at that instant), and hands the
boundary readings on to the interval log, the checkpoints and the BACnet subscribers. The
tick closes boundaries when no event comes and asks for a checkpoint every second.

Clock steps (gateway/clock.py) become outages here: a forward step skips the boundaries it
spans without readings; a backward step holds time and keeps every channel offline until the
wall clock has caught up, so pulses counted meanwhile go into consumption but no window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from gateway.checkpoints import Checkpoints
from gateway.clock import Step, Timeline
from gateway.config import Config
from gateway.core import ChannelReading, Engine, Instant, IntervalLog, IntervalMark
from gateway.logging import get_logger
from gateway.status import Status

log = get_logger("service")


class Feed:
    """Sources' reports and the wall clock into one engine (the sources' ``PulseSink``)."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        timeline: Timeline,
        intervals: IntervalLog,
        checkpoints: Checkpoints,
        status: Status,
        *,
        changed: Callable[[tuple[str, ...] | None], None],
        sources_changed: Callable[[], object],
        fire: Callable[[], object],
        fire_failed: Callable[[], object],
        live: bool = False,
    ) -> None:
        """``changed``: something a BACnet subscriber may care about changed, in the channels
        named or (None) anywhere (cheap, called often); ``sources_changed``: a source went up
        or down; ``fire``: apply and record the scheduled resets due at the engine's
        ``next_fire`` (durable, or put back and raise);
        ``fire_failed``: one could not be recorded, so the gateway must stop; ``live``: log
        one line per channel each slide, for a person watching."""
        self.config = config  # the service replaces it on reload
        self.engine = engine
        self.timeline = timeline
        self.intervals = intervals
        self.checkpoints = checkpoints
        self.status = status
        self._changed = changed
        self._sources_changed = sources_changed
        self._fire = fire
        self._fire_failed = fire_failed
        self.live = live
        self.held = timeline.held  # channels kept offline until a clock hold ends
        # a scheduled reset that could not be stored: time stops here until the gateway has
        # stopped, so the saved state still has it due and the next start applies it
        self.frozen = False

    # -- PulseSink ------------------------------------------------------------------------

    def pulses(self, channel: str, count: int) -> None:
        t = self.now()
        if channel in self.engine.channels:
            self.engine.pulses(channel, t, count)
            self._changed(self.engine.touched(channel))

    def source_down(self, source: str) -> None:
        t = self.now()
        was_up = self.status.sources_up.get(source)
        self.status.sources_up[source] = False
        if was_up:
            log.warning("source_down", source=source)
            self._sources_changed()
        for channel_id in self._channels_of(source):
            self.engine.offline(channel_id, t)
        self._changed(None)

    def source_up(self, source: str, catch_up: Mapping[str, int]) -> None:
        t = self.now()
        was_up = self.status.sources_up.get(source)
        self.status.sources_up[source] = True
        if not was_up:
            log.info("source_up", source=source)
            self._sources_changed()
        for channel_id in self._channels_of(source):
            extra = catch_up.get(channel_id, 0)
            if self.held:  # stays offline until the clock hold ends; count the pulses now
                if extra:
                    self.engine.pulses(channel_id, t, extra)
            else:
                self.engine.online(channel_id, t, extra)
        self._changed(None)

    def _channels_of(self, source: str) -> list[str]:
        return [
            c.id
            for c in self.config.channels
            if c.source is not None and c.source.id == source and c.id in self.engine.channels
        ]

    # -- time and boundaries ----------------------------------------------------------------

    def now(self) -> Instant:
        """The current instant, after closing every boundary up to it (and handling steps)."""
        t, step = self.timeline.read()
        if self.frozen:
            return self.engine.now
        if step is not None:
            self._on_step(step, t)
        engine = self.engine
        if not self._through(t, lambda s: self._on_readings(engine.advance(s), s)):
            return engine.now
        if t >= engine.next_due:
            self._on_readings(engine.advance(t), t)
        if self.held and not self.timeline.held:
            # after the boundaries up to t: the channels were offline through all of them
            self.held = False
            log.info("clock_hold_ended", at=t)
            self.channels_online(t)
            self._changed(None)
        return t

    def _through(self, t: Instant, reach: Callable[[Instant], object]) -> bool:
        """Apply every scheduled reset due by ``t``, each once ``reach`` has brought the engine
        to its instant; False when one could not be recorded (the gateway is stopping)."""
        engine = self.engine
        while engine.next_fire <= t and not self.frozen:
            s = engine.next_fire
            reach(s)
            try:
                self._fire()
            except Exception as exc:
                log.error("scheduled_reset_not_recorded", at=s, error=repr(exc))
                self.frozen = True
                self._fire_failed()
        return not self.frozen

    def _on_step(self, step: Step, t: Instant) -> None:
        """A wall-clock step is an outage: no reordering, no burst of invented windows."""
        log.warning("clock_step", last=step.last, wall=step.wall, forwards=step.forwards)
        # the boundaries before the step were observed: close them normally (the caller has
        # applied the scheduled resets due by then)
        self._on_readings(self.engine.advance(step.last), step.last)
        self.engine.offline_all(step.last)
        if step.forwards:
            # the scheduled resets the step jumped over still happen, each at its instant
            if not self._through(t, self.engine.skip_to):
                return
            self.engine.skip_to(t)
            self.channels_online(t)
        else:
            self.held = True
        self._changed(None)

    def channels_online(self, t: Instant) -> None:
        """Bring online every offline channel whose source is up."""
        for channel_config in self.config.channels:
            source = channel_config.source.id if channel_config.source else None
            if source is not None and self.status.sources_up.get(source):
                channel = self.engine.channels[channel_config.id]
                if not channel.is_online:
                    self.engine.online(channel_config.id, t, 0)

    def mark_new_channels(self, t: Instant) -> None:
        """Interval records of a channel with no mark yet start at ``t`` from its totals."""
        for channel_id, channel in self.engine.channels.items():
            if channel_id not in self.intervals.marks:
                mark = IntervalMark(t, channel.pulses_total, channel.consumption)
                self.intervals.marks[channel_id] = mark

    async def tick(self, watchdog: Callable[[], object]) -> None:
        """Close boundaries at their wall-clock instants; checkpoint every second."""
        while True:
            due = min(self.engine.next_due, self.checkpoints.due)
            # at most a second: a held clock (backward step) must not stop checkpoints and pings
            await asyncio.sleep(min(self.timeline.seconds_until(due), 1.0))
            now = self.now()
            if now >= self.checkpoints.due:
                self.checkpoints.request(now)
            watchdog()

    def _on_readings(self, readings: list[ChannelReading], t: Instant) -> None:
        if not readings:
            return
        self.checkpoints.add(self.intervals.observe(readings, self.engine.channels))
        self._changed(None)
        self.status.boundary_lag_s = max(0.0, (t - readings[-1].reading.time) / 1e6)
        if self.live:
            self._show(readings)
        self.checkpoints.request(t)

    def _show(self, readings: list[ChannelReading]) -> None:
        """One compact line per channel and slide, for a person at a terminal."""
        for item in readings:
            r = item.reading
            unit = self.engine.channels[item.channel].rules.unit
            log.info(
                "reading",
                channel=item.channel,
                consumption=f"{r.consumption:.3f} {unit.consumption}",
                demand="n/a" if r.demand is None else f"{r.demand:.3f} {unit.demand}",
                peak=f"{r.peak_demand:.3f} {unit.demand}",
                resets=r.reset_count,
            )
