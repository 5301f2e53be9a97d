"""What the status pages and the JSON API show, as plain JSON-ready values.

Everything here is read on the event loop that drives the engine, between two events, so a
snapshot never mixes two moments (the same rule as a /metrics scrape): each channel's numbers
as a plain row (``channel_row``), about a microsecond each, no I/O, no lock. Turning rows into
JSON (``facts_of``, ``StatusReading.text``) is most of the work and may run in a worker
thread (docs/reference/http-api.md). Billing periods are read from the database
(records.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from gateway import __version__
from gateway.clock import Timeline
from gateway.core import Channel, Instant, ResetOutcome, Totals, Unit
from gateway.core.demand import NEVER
from gateway.readings import projected
from gateway.status import Status

if TYPE_CHECKING:
    from gateway.config import RunConfig

type Json = dict[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class WebView(Protocol):
    """What the web side reads from (and asks of) the running gateway."""

    @property
    def config(self) -> RunConfig: ...

    @property
    def status(self) -> Status: ...

    @property
    def timeline(self) -> Timeline:
        """The gateway's clock: what it stamps events with (held after a backward step)."""
        ...

    def live_channels(self) -> Mapping[str, Channel]:
        """The engine's channels by id, in config order."""
        ...

    def source_counters(self) -> Mapping[str, Mapping[str, int]]:
        """Per counter name ("glitches", ...), the count per channel since the sources started."""
        ...

    def reset(self, channel_id: str, origin: str) -> ResetOutcome:
        """Reset one channel through the reset desk; durable before it returns."""
        ...

    def count_rejection(self, channel_id: str, reason: str) -> None:
        """Count a reset refused before it reached the engine (for the metrics)."""
        ...


# -- formatting -------------------------------------------------------------------------------


def iso(instant: Instant | None) -> str | None:
    """An instant as ISO 8601 UTC with ``Z``; milliseconds only when it has them."""
    if instant is None:
        return None
    moment = _EPOCH + timedelta(microseconds=instant)
    spec = "seconds" if not instant % 1_000_000 else "milliseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def number(value: float | None) -> float | None:
    """A JSON number: None for a missing value, and for NaN or infinity (not JSON)."""
    if value is None or not math.isfinite(value):
        return None
    return value


def gateway_now(view: WebView) -> Instant:
    """The gateway's time as of its last reading of the clock (every event and tick), read
    without side effects: a page never closes boundaries or notices a clock step itself."""
    return view.timeline.now


# -- the values that are not plain fields of a channel ---------------------------------------


def next_scheduled_reset(view: WebView, now: Instant) -> Instant | None:
    """The earliest next scheduled reset of any channel; None when no channel has a schedule."""
    due = [
        c.schedule_next
        for c in view.live_channels().values()
        if c.rules.reset_schedule is not None and c.schedule_next < NEVER
    ]
    return min(due, default=None)


def channel_next_reset(channel: Channel) -> Instant | None:
    """The channel's own next scheduled reset, None without a schedule."""
    if channel.rules.reset_schedule is None or channel.schedule_next >= NEVER:
        return None
    return channel.schedule_next


def next_file_drop(view: WebView, now: Instant) -> Instant | None:
    """When the daily EnergyCAP drop runs next (``export.schedule.at``), None without one."""
    export = view.config.export
    if export is None:
        return None
    zone = ZoneInfo("UTC") if export.utc else view.config.gateway.zone
    local = (_EPOCH + timedelta(microseconds=now)).astimezone(zone)
    hour, minute = export.at
    run = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if run <= local:
        run = (run + timedelta(days=1)).replace(hour=hour, minute=minute)
    return (run.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


# One channel's numbers as read on the loop (``channel_row``), in this order: id, unit,
# virtual, source, online, consumption, demand, projected demand, peak demand, peak time,
# previous peak, cumulative demand, reset count, period consumption, next scheduled reset,
# pulses total, last pulse, checksum verdict. Plain values: a worker thread formats them.
type ChannelRow = tuple[
    str, Unit, bool, str | None, bool, float, float | None, float | None, float,
    Instant | None, float, float, int, float, Instant | None, int, Instant | None, bool | None,
]  # fmt: skip


def channel_row(
    channel_id: str,
    channel: Channel,
    now: Instant,
    source: str | None,
    last_pulse: Mapping[str, Instant],
    checksums: Mapping[str, bool],
) -> ChannelRow:
    """One channel's numbers as of now: call it on the loop that drives the engine."""
    return (
        channel_id,
        channel.rules.unit,
        channel.rules.is_virtual,
        source,
        channel.is_online,
        channel.consumption,
        channel.demand,
        projected(channel, now),
        channel.peak_demand,
        channel.peak_time,
        channel.previous_peak_demand,
        channel.cumulative_demand,
        channel.reset_count,
        channel.period_consumption,
        channel_next_reset(channel),
        channel.pulses_total,
        last_pulse.get(channel_id),
        checksums.get(channel_id),
    )


def facts_of(row: ChannelRow) -> Json:
    """One channel as the API and the pages show it (docs/reference/http-api.md); any thread."""
    unit = row[1]
    return {
        "id": row[0],
        "unit": unit.name,
        "consumption_unit": unit.consumption,
        "demand_unit": unit.demand,
        "virtual": row[2],
        "source": row[3],
        "online": row[4],
        "consumption": number(row[5]),
        "demand": number(row[6]),
        "projected_demand": number(row[7]),
        "peak_demand": number(row[8]),
        "peak_time": iso(row[9]),
        "previous_peak_demand": number(row[10]),
        "cumulative_demand": number(row[11]),
        "reset_count": row[12],
        "period_consumption": number(row[13]),
        "next_scheduled_reset": iso(row[14]),
        # a virtual channel counts no pulses of its own (its terms do)
        "pulses_total": None if row[2] else row[15],
        "last_pulse": iso(row[16]),
        "checksum_ok": row[17],
    }


def channel_rows(view: WebView) -> list[ChannelRow]:
    """Every channel's numbers, in config order, as of now (on the loop)."""
    sources = {c.id: c.source.id if c.source else None for c in view.config.channels}
    status = view.status
    last_pulse, checksums = status.last_pulse, status.checksums
    now = gateway_now(view)
    return [
        channel_row(cid, channel, now, sources.get(cid), last_pulse, checksums)
        for cid, channel in view.live_channels().items()
    ]


def channels(view: WebView) -> list[Json]:
    """Every channel, in config order."""
    return [facts_of(row) for row in channel_rows(view)]


def _where(source: object) -> str:
    """A source's device as a technician would look for it."""
    unit = getattr(source, "unit_id", None)
    unit_text = f" unit {unit}" if unit is not None else ""
    if (host := getattr(source, "host", None)) is not None:
        return f"{host}:{getattr(source, 'port', 502)}{unit_text}"
    if (device := getattr(source, "device", None)) is not None:
        return f"{device}{unit_text}"
    if (chip := getattr(source, "chip", None)) is not None:
        return f"GPIO chip {chip}"
    return "the simulator"


def sources(view: WebView, now: Instant, started: Instant) -> list[Json]:
    """Every configured source that has channels: up or down, since when, and why not."""
    status = view.status
    glitches = view.source_counters().get("glitches", {})
    by_source: dict[str, list[str]] = {}
    for c in view.config.channels:
        if c.source is not None:
            by_source.setdefault(c.source.id, []).append(c.id)
    out = []
    for source in view.config.sources:
        members = by_source.get(source.id)
        if not members:
            continue
        up = bool(status.sources_up.get(source.id))
        since = status.source_since.get(source.id)
        where = _where(source)
        error = None
        if not up:
            quiet_s = max(0, (now - (since if since is not None else started)) // 1_000_000)
            heard = "no answer" if since is None else "no good reading"
            error = f"{heard} from {where} for {quiet_s} s"
        out.append(
            {
                "id": source.id,
                "type": source.type,
                "device": where,
                "up": up,
                "since": iso(since),
                # while up, its readings are good now; when down, the last was when it went down
                "last_good_reading": iso(now if up else since),
                "error": error,
                "glitches": sum(glitches.get(cid, 0) for cid in members),
                "channels": len(members),
            }
        )
    return out


def gateway_facts(
    view: WebView, now: Instant, started: Instant, last_drop: str | None, allow_reset: bool
) -> Json:
    """The gateway itself: who, which version, since when, its clock and its BACnet device."""
    config = view.config
    zone = config.gateway.zone
    bacnet = config.bacnet
    local = (_EPOCH + timedelta(microseconds=now)).astimezone(zone)
    return {
        "name": config.gateway.name,
        "version": __version__,
        "started": iso(started),
        "uptime_s": max(0, (now - started) // 1_000_000),
        "time": iso(now),
        "timezone": config.gateway.timezone,
        "local_time": local.isoformat(timespec="seconds"),
        "bacnet": {
            "device_instance": bacnet.device_instance,
            "device_name": bacnet.device_name,
            "address": str(bacnet.address.ip),
            "port": bacnet.port,
        },
        "last_checkpoint": iso(view.status.last_checkpoint or None),
        "next_scheduled_reset": iso(next_scheduled_reset(view, now)),
        "last_file_drop": last_drop,
        "next_file_drop": iso(next_file_drop(view, now)),
        "allow_reset": allow_reset,
    }


@dataclass(frozen=True, slots=True)
class StatusReading:
    """The status document's content as read on the loop: the gateway and its sources as
    JSON values (a few dozen), the channels as plain rows (thousands) for a thread to format."""

    gateway: Json
    sources: list[Json]
    channels: list[ChannelRow]

    def document(self) -> Json:
        """The document itself (any thread)."""
        return {
            "gateway": self.gateway,
            "sources": self.sources,
            "channels": [facts_of(row) for row in self.channels],
        }

    def text(self) -> str:
        """The document as compact JSON, the bytes ``json.dumps(self.document())`` gives, made
        CHUNK channels at a time (any thread): json's C encoder keeps the interpreter for a
        whole call, so a worker thread encoding 2,000 channels in one call would hold the
        event loop up for milliseconds; between chunks the loop gets its turn."""
        head = _dumps({"gateway": self.gateway, "sources": self.sources})
        parts = [head[:-1], ',"channels":[']
        rows = self.channels
        for start in range(0, len(rows), CHUNK):
            if start:
                parts.append(",")
            parts.append(_dumps([facts_of(row) for row in rows[start : start + CHUNK]])[1:-1])
        parts.append("]}")
        return "".join(parts)


CHUNK = 100  # channels per json call in StatusReading.text: ~0.3 ms each


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def status_reading(
    view: WebView, now: Instant, started: Instant, last_drop: str | None, allow_reset: bool
) -> StatusReading:
    """Everything ``GET /api/v1/status`` shows, as of now: call it on the loop."""
    return StatusReading(
        gateway_facts(view, now, started, last_drop, allow_reset),
        sources(view, now, started),
        channel_rows(view),
    )


def status_document(
    view: WebView, now: Instant, started: Instant, last_drop: str | None, allow_reset: bool
) -> Json:
    """``GET /api/v1/status``: the gateway, its sources and every channel, as of now."""
    return status_reading(view, now, started, last_drop, allow_reset).document()


def one_channel(view: WebView, channel_id: str) -> Json | None:
    """One channel's facts, None when there is no such channel."""
    channel = view.live_channels().get(channel_id)
    if channel is None:
        return None
    source = next((c.source for c in view.config.channels if c.id == channel_id), None)
    status = view.status
    now = gateway_now(view)
    source_id = source.id if source else None
    return facts_of(
        channel_row(channel_id, channel, now, source_id, status.last_pulse, status.checksums)
    )


def totals(t: Totals) -> Json:
    return {
        "peak_demand": number(t.peak_demand),
        "previous_peak_demand": number(t.previous_peak_demand),
        "cumulative_demand": number(t.cumulative_demand),
        "reset_count": t.reset_count,
    }


def outcome(channel_id: str, result: ResetOutcome, origin: str) -> Json:
    """A reset's outcome as the API answers it."""
    return {
        "channel": channel_id,
        "time": iso(result.time),
        "source": origin,
        "accepted": result.accepted,
        "reason": result.reason,
        "before": totals(result.before),
        "after": totals(result.after),
    }
