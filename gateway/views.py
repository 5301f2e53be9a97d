"""What the parts around a running gateway see of it and may ask of it.

Readers never hold a channel object across a reload: BACnet objects look their channel up by
id in the engine's live mapping (``live_channels``), and metrics read the channels anew at
every scrape (``channel_readings``). Writers go through the jobs that own the rules: what
sources report goes to the feed, resets go to the reset desk.

``GatewayView`` is the gateway's side of that contract, mixed into ``gateway.service.Gateway``
so the lifecycle module holds the lifecycle only. It implements ``gateway.metrics.GatewayView``,
``gateway.bacnet.server.BacnetView``, ``gateway.web.snapshot.WebView`` and
``gateway.sources.PulseSink``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date

from gateway.core import Channel, Engine, Instant, ResetOutcome, Unit
from gateway.feed import Feed
from gateway.reset_desk import ResetDesk
from gateway.schedule import Schedule
from gateway.sources.running import RunningSources
from gateway.status import Status


class GatewayView:
    """The read side and the entry points of a running gateway (see the module docstring)."""

    status: Status
    engine: Engine
    feed: Feed
    desk: ResetDesk
    schedule: Schedule
    sources: RunningSources

    # -- what sources report (PulseSink) ------------------------------------------------------

    def pulses(self, channel: str, count: int) -> None:
        self.feed.pulses(channel, count)
        if count:
            self.status.last_pulse[channel] = self.engine.now  # the instant the feed stamped

    def source_down(self, source: str) -> None:
        was_up = self.status.sources_up.get(source)
        self.feed.source_down(source)
        if was_up:
            self.status.source_since[source] = self.engine.now

    def source_up(self, source: str, catch_up: Mapping[str, int]) -> None:
        was_up = self.status.sources_up.get(source)
        self.feed.source_up(source, catch_up)
        if not was_up:
            self.status.source_since[source] = self.engine.now

    # -- resets (BacnetView) ------------------------------------------------------------------

    def reset(self, channel_id: str, origin: str) -> ResetOutcome:
        """Reset one channel; durable on disk before this returns."""
        return self.desk.reset(channel_id, origin)

    def reset_all(self, origin: str) -> dict[str, ResetOutcome]:
        """Reset every channel at one instant, each under its own lockout; one transaction."""
        return self.desk.reset_all(origin)

    def count_rejection(self, channel_id: str, reason: str) -> None:
        self.desk.count_rejection(channel_id, reason)

    def audit_refusal(self, channel_id: str, reason: str, origin: str) -> None:
        self.desk.audit_refusals([channel_id], reason, origin)

    def audit_refusals(self, channel_ids: list[str], reason: str, origin: str) -> None:
        self.desk.audit_refusals(channel_ids, reason, origin)

    # -- reading --------------------------------------------------------------------------------

    def live_channels(self) -> Mapping[str, Channel]:
        return self.engine.channels

    def latest_time(self) -> Instant:
        """The gateway's time as of its last clock reading (every event and tick takes one,
        after closing the boundaries due); reading it changes nothing."""
        return self.feed.timeline.now

    def channel_readings(self) -> Iterator[tuple[str, Unit, Channel]]:
        for channel_id, channel in self.engine.channels.items():
            yield channel_id, channel.rules.unit, channel

    def sources_up(self) -> Mapping[str, bool]:
        return self.status.sources_up

    def reset_rejections(self) -> Mapping[tuple[str, str], int]:
        return self.status.rejections

    def boundary_lag_seconds(self) -> float:
        return self.status.boundary_lag_s

    def checksum_ok(self) -> Mapping[str, bool]:
        return self.status.checksums

    def source_counters(self) -> Mapping[str, Mapping[str, int]]:
        return self.sources.counters()

    def due_export_days(self, now: Instant) -> list[date]:
        """The days whose daily file is due at ``now`` (``Schedule.due_export_days``)."""
        return self.schedule.due_export_days(now)
