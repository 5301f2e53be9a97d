"""Prometheus metrics (docs/reference/metrics.md), computed from the live channels at scrape time.

There is no second copy of the numbers: ``GatewayCollector`` reads the engine's
``gateway.core.Channel`` objects (and the service's source and reset bookkeeping) through a
small read-only ``GatewayView`` each time ``/metrics`` is scraped, the way prometheus
client_python's own custom collectors work. The gateway's HTTP listener (gateway/web/server.py)
calls ``Metrics.scrape`` on the asyncio loop that drives the engine: it reads the numbers there,
between two events, so it never sees a half-applied one, and a worker thread turns them into
text (1.3 MB at 2,000 channels, over 100 ms of work that BACnet requests must not wait for).
The registry is the gateway's own, never the process-global one, so two gateways in one
process (tests) never clash.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.core import Channel, Instant, Unit
from gateway.core.demand import NEVER
from gateway.readings import projected

__all__ = ["GatewayCollector", "GatewayView", "Metrics"]

LOCKOUT = "lockout"  # the reset rejection reason the engine itself counts

# Bucket bounds in seconds: a checkpoint is one small SQLite WAL transaction, normally
# milliseconds; the upper buckets exist to show a slow or failing disk.
CHECKPOINT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayView(Protocol):
    """What the metrics read from the running gateway; every call is a cheap read, no I/O."""

    def channel_readings(self) -> Iterable[tuple[str, Unit, Channel]]:
        """(id, unit, live engine channel) for each channel in config order; none before the
        engine exists."""
        ...

    def sources_up(self) -> Mapping[str, bool]:
        """Each configured source by id: True while it delivers good readings."""
        ...

    def reset_rejections(self) -> Mapping[tuple[str, str], int]:
        """Refused resets by (channel, reason) that the engine never saw, e.g. "not_allowed"."""
        ...

    def boundary_lag_seconds(self) -> float:
        """How late the last boundary tick ran after its boundary instant, in seconds."""
        ...

    def checksum_ok(self) -> Mapping[str, bool]:
        """Per channel, whether its reset checksum holds (checked at start, after resets,
        hourly)."""
        ...

    def latest_time(self) -> Instant:
        """The gateway's time as of its last clock reading (projected demand is read at it)."""
        ...

    def source_counters(self) -> Mapping[str, Mapping[str, int]]:
        """Per counter ("glitches", "lost_edges", "late_edges"), the count per channel that
        the running sources report (since they started)."""
        ...


def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    """Fresh, empty metric families: one set per scrape, so nothing is kept between scrapes."""

    def gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"pulse_gateway_{name}", doc, labels=list(labels))

    def counter(name: str, doc: str, *labels: str) -> CounterMetricFamily:
        # CounterMetricFamily appends "_total" itself: "pulses" is exposed as pulses_total.
        return CounterMetricFamily(f"pulse_gateway_{name}", doc, labels=list(labels))

    per_unit = "in the unit given by the unit label"
    return {
        "pulses": counter(
            "pulses", "Pulses counted since the channel was created; never reset.", "channel"
        ),
        "consumption": gauge(
            "consumption",
            f"Meter reading: initial_reading + pulses * scale_factor, {per_unit} "
            "(e.g. kilowatt-hours).",
            "channel",
            "unit",
        ),
        "demand": gauge(
            "demand",
            f"Sliding-window demand at the last slide boundary, {per_unit} (e.g. kilowatts); "
            "NaN while not available (first window, outage, scale change).",
            "channel",
            "unit",
        ),
        "peak_demand": gauge(
            "peak_demand",
            f"Highest valid demand since the last reset, {per_unit} (e.g. kilowatts).",
            "channel",
            "unit",
        ),
        "previous_peak_demand": gauge(
            "previous_peak_demand",
            f"Peak demand of the period before the last reset, {per_unit} (e.g. kilowatts).",
            "channel",
            "unit",
        ),
        "cumulative_demand": gauge(
            "cumulative_demand",
            f"Sum of the peak demands at every accepted reset, {per_unit} (e.g. kilowatts).",
            "channel",
            "unit",
        ),
        "projected_demand": gauge(
            "projected_demand",
            f"The demand the next slide boundary will show if the current slide's rate holds,"
            f" {per_unit}; NaN while not available (the first tenth of a slide, an outage).",
            "channel",
            "unit",
        ),
        "period_consumption": gauge(
            "period_consumption",
            f"Consumption since the last accepted reset (this billing period), {per_unit}.",
            "channel",
            "unit",
        ),
        "previous_period_consumption": gauge(
            "previous_period_consumption",
            f"Consumption of the last closed billing period, {per_unit}; 0 before the first.",
            "channel",
            "unit",
        ),
        "peak_time": gauge(
            "peak_demand_timestamp_seconds",
            "Unix time of the slide boundary that set the current peak demand; absent while"
            " the peak is 0 (no valid demand above 0 since the last reset).",
            "channel",
        ),
        "next_reset": gauge(
            "next_reset_timestamp_seconds",
            "Unix time of the channel's next scheduled billing reset; absent for a channel"
            " without a reset_schedule.",
            "channel",
        ),
        "resets": counter("resets", "Accepted peak demand resets.", "channel"),
        "rejections": counter(
            "reset_rejections",
            "Refused peak demand resets, by reason (lockout: inside reset_lockout).",
            "channel",
            "reason",
        ),
        "online": gauge(
            "channel_online",
            "1 while the channel's source delivers, 0 during an outage.",
            "channel",
        ),
        "source_up": gauge(
            "source_up", "1 while the source delivers good readings, 0 when it does not.", "source"
        ),
        "lag": gauge(
            "boundary_lag_seconds",
            "Seconds the last slide boundary tick ran after its boundary instant.",
        ),
        "checksum_ok": gauge(
            "checksum_ok",
            "1 while cumulative demand equals the sum of the logged previous peaks and reset_count"
            " the accepted resets (the B6070 checksum), 0 when broken: see pulse-gateway resets.",
            "channel",
        ),
        "glitches": counter(
            "source_glitches",
            "Implausible device readings (backwards beyond a wrap, or faster than max_rate):"
            " never counted as pulses; the baseline resyncs once a reading confirms them.",
            "channel",
        ),
        "lost_edges": counter(
            "gpio_lost_edges",
            "GPIO edges the kernel dropped (sequence gaps), counted as catch-up pulses.",
            "channel",
        ),
        "late_edges": counter(
            "gpio_late_edges",
            "GPIO edges read too late to be timed, counted as catch-up pulses.",
            "channel",
        ),
    }


type ChannelRow = tuple[
    str, str, str, int | None, float, float | None, float, float, float, int, int, bool,
    float, float, float | None, float | None, float | None,
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class GatewayReading:
    """The numbers of one scrape, copied from the view: plain values a thread may format."""

    # per channel: id, consumption unit, demand unit, pulses (None for a virtual channel: it
    # counts no pulses of its own), consumption, demand (None when not available), peak,
    # previous peak, cumulative demand, resets, lockout rejections, online, period
    # consumption, previous period's, peak time and next scheduled reset in seconds (None:
    # none), projected demand (None when not available)
    channels: list[ChannelRow]
    rejections: list[tuple[tuple[str, str], int]]
    sources: list[tuple[str, bool]]
    lag: float
    checksums: list[tuple[str, bool]]
    counters: list[tuple[str, list[tuple[str, int]]]]


class GatewayCollector(Collector):
    """The documented metric families, read from a ``GatewayView`` at each scrape."""

    def __init__(self, view: GatewayView) -> None:
        self._view = view

    def describe(self) -> Iterator[Metric]:
        """The families without samples: lets the registry refuse a clashing name up front
        without reading the view, which may not be running yet."""
        yield from _families().values()

    def read(self) -> GatewayReading:
        """Every number of a scrape, as of now: call it on the loop that drives the engine."""
        view = self._view
        now = view.latest_time()
        return GatewayReading(
            channels=[
                (
                    channel_id,
                    unit.consumption,
                    unit.demand,
                    None if c.rules.is_virtual else c.pulses_total,
                    c.consumption,
                    c.demand,
                    c.peak_demand,
                    c.previous_peak_demand,
                    c.cumulative_demand,
                    c.reset_count,
                    c.rejected_resets,
                    c.is_online,
                    c.period_consumption,
                    c.previous_period,
                    None if (peak_time := c.peak_time) is None else peak_time / 1e6,
                    None if (due := c.schedule_next) == NEVER else due / 1e6,
                    projected(c, now),
                )
                for channel_id, unit, c in view.channel_readings()
            ],
            rejections=sorted(view.reset_rejections().items()),
            sources=list(view.sources_up().items()),
            lag=view.boundary_lag_seconds(),
            checksums=sorted(view.checksum_ok().items()),
            counters=[
                (name, sorted(per_channel.items()))
                for name, per_channel in view.source_counters().items()
            ],
        )

    def collect(self) -> Iterator[Metric]:
        """Every family with one sample per channel, source or reason, as of now."""
        yield from self.families(self.read())

    @staticmethod
    def families(reading: GatewayReading) -> list[Metric]:
        """The families of one reading (any thread): the reference ``text`` is held to."""
        f = _families()
        for key, labels, value in _samples(reading):
            f[key].add_metric(list(labels), value)
        return list(f.values())

    @staticmethod
    def text(reading: GatewayReading) -> bytes:
        """``generate_latest`` of ``families(reading)``, byte for byte, in a third of the time
        and without its 37,000 ``Sample`` tuples and label dicts at 2,000 channels (any
        thread): each distinct label set is formatted once per scrape, and the HELP and TYPE
        lines are ``generate_latest``'s own. ``tests/test_metrics.py`` holds the two equal."""
        f = _families()
        lines: dict[str, list[str]] = {key: [] for key in f}
        # label names per family, as each was made (prometheus_client keeps them there)
        names = {key: tuple(family._labelnames) for key, family in f.items()}
        sample_names = {
            key: escape_metric_name(
                family.name + "_total" if family.type == "counter" else family.name
            )
            for key, family in f.items()
        }
        cache: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
        for key, labels, value in _samples(reading):
            label_key = (names[key], labels)
            text = cache.get(label_key)
            if text is None:
                text = cache[label_key] = _label_text(dict(zip(*label_key, strict=True)))
            lines[key].append(f"{sample_names[key]}{text} {floatToGoString(value)}\n")
        out = []
        for key, family in f.items():
            out.append(generate_latest(_Scrape([family], [])).decode())  # HELP and TYPE
            out.extend(lines[key])
        return "".join(out).encode("utf-8")


def _samples(reading: GatewayReading) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """Every sample of a reading as (family key, label values, value), in exposition order."""
    for row in reading.channels:
        channel_id, consumption_unit, demand_unit = row[0], row[1], row[2]
        channel = (channel_id,)
        consumption = (channel_id, consumption_unit)
        demand = (channel_id, demand_unit)
        if row[3] is not None:
            yield "pulses", channel, row[3]
        yield "consumption", consumption, row[4]
        yield "demand", demand, math.nan if row[5] is None else row[5]
        yield "peak_demand", demand, row[6]
        yield "previous_peak_demand", demand, row[7]
        yield "cumulative_demand", demand, row[8]
        yield "resets", channel, row[9]
        # Always present, so a rate() over it works from the first scrape on.
        yield "rejections", (channel_id, LOCKOUT), row[10]
        yield "online", channel, 1.0 if row[11] else 0.0
        yield "period_consumption", consumption, row[12]
        yield "previous_period_consumption", consumption, row[13]
        if row[14] is not None:
            yield "peak_time", channel, row[14]
        if row[15] is not None:
            yield "next_reset", channel, row[15]
        yield "projected_demand", demand, math.nan if row[16] is None else row[16]
    for (channel_id, reason), count in reading.rejections:
        # The engine's count is the one truth for lockouts; a second "lockout" sample
        # would be a duplicate series, which Prometheus rejects.
        if reason != LOCKOUT:
            yield "rejections", (channel_id, reason), count
    for source_id, up in reading.sources:
        yield "source_up", (source_id,), 1.0 if up else 0.0
    yield "lag", (), reading.lag
    for channel_id, ok in reading.checksums:
        yield "checksum_ok", (channel_id,), 1.0 if ok else 0.0
    for name, per_channel in reading.counters:
        for channel_id, count in per_channel:
            yield name, (channel_id,), count


class _Scrape(Collector):
    """One scrape's families: the gateway's from a reading, then the registry's others."""

    def __init__(self, families: list[Metric], others: list[Collector]) -> None:
        self._families = families
        self._others = others

    def collect(self) -> Iterator[Metric]:
        yield from self._families
        for other in self._others:
            yield from other.collect()


class Metrics:
    """The gateway's own registry: the documented families, process and platform metrics, and the
    checkpoint duration histogram that the service observes."""

    def __init__(self, view: GatewayView) -> None:
        self.registry = CollectorRegistry()
        self.collector = GatewayCollector(view)
        self.registry.register(self.collector)
        self.checkpoint_duration = Histogram(
            "pulse_gateway_checkpoint_duration_seconds",
            "Seconds taken to write one state checkpoint to the database.",
            buckets=CHECKPOINT_BUCKETS,
            registry=None,  # registered below, after the process and platform collectors
        )
        # thread-safe collectors (they take their own locks or read /proc): any thread
        self._others: list[Collector] = [
            ProcessCollector(registry=self.registry),
            PlatformCollector(registry=self.registry),
            self.checkpoint_duration,
        ]
        self.registry.register(self.checkpoint_duration)

    def render(self) -> bytes:
        """The text exposition of every metric, as served at ``/metrics`` (on the loop)."""
        return generate_latest(self.registry)

    async def scrape(self) -> bytes:
        """``render``, the same bytes, with the numbers read on the loop and the text made
        by a worker thread."""
        reading = self.collector.read()
        return await asyncio.to_thread(self._text, reading)

    def _text(self, reading: GatewayReading) -> bytes:
        return GatewayCollector.text(reading) + generate_latest(_Scrape([], self._others))


def _label_text(labels: Mapping[str, str]) -> str:
    """A sample's labels as the text exposition writes them: sorted by name, values escaped."""
    if not labels:
        return ""
    pairs = (
        '{}="{}"'.format(
            escape_label_name(name),
            value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\""),
        )
        for name, value in sorted(labels.items())
    )
    return "{" + ",".join(pairs) + "}"
