"""Prometheus metrics (docs/reference/metrics.md), computed from the live channels at scrape time.

There is no second copy of the numbers: ``GatewayCollector`` reads the engine's
``gateway.core.Channel`` objects (and the service's source and reset bookkeeping) through a
small read-only ``GatewayView`` each time ``/metrics`` is scraped, the way prometheus
client_python's own custom collectors work. ``serve_metrics`` answers HTTP on the asyncio loop
that drives the engine: a scrape reads the numbers there, between two events, so it never sees
a half-applied one, and a worker thread turns them into text (1.3 MB at 2,000 channels, over
100 ms of work that BACnet requests must not wait for). The registry is the gateway's own, never
the process-global one, so two gateways in one process (tests) never clash.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import math
import re
import ssl
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.core import Channel, Unit
from gateway.logging import get_logger

if TYPE_CHECKING:
    from gateway.config import MetricsSettings

__all__ = [
    "HEAD_LIMIT",
    "READ_TIMEOUT",
    "GatewayCollector",
    "GatewayView",
    "Metrics",
    "serve_metrics",
]

log = get_logger("metrics")

HEAD_LIMIT = 8 * 1024  # bytes of request line + headers; a scrape needs a few hundred
READ_TIMEOUT = 5.0  # seconds a client may take to send its request head
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


@dataclass(frozen=True, slots=True)
class GatewayReading:
    """The numbers of one scrape, copied from the view: plain values a thread may format."""

    # per channel: id, consumption unit, demand unit, pulses, consumption, demand (None when
    # not available), peak, previous peak, cumulative demand, resets, lockout rejections, online
    channels: list[
        tuple[str, str, str, int, float, float | None, float, float, float, int, int, bool]
    ]
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
        return GatewayReading(
            channels=[
                (
                    channel_id,
                    unit.consumption,
                    unit.demand,
                    c.pulses_total,
                    c.consumption,
                    c.demand,
                    c.peak_demand,
                    c.previous_peak_demand,
                    c.cumulative_demand,
                    c.reset_count,
                    c.rejected_resets,
                    c.is_online,
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
        """The families of one reading (any thread)."""
        f = _families()
        pulses, consumption, demand = f["pulses"], f["consumption"], f["demand"]
        peak, previous, cumulative = (
            f["peak_demand"],
            f["previous_peak_demand"],
            f["cumulative_demand"],
        )
        resets, rejections, online = f["resets"], f["rejections"], f["online"]
        for row in reading.channels:
            channel_id, consumption_unit, demand_unit = row[0], row[1], row[2]
            consumption_labels = [channel_id, consumption_unit]
            demand_labels = [channel_id, demand_unit]
            pulses.add_metric([channel_id], row[3])
            consumption.add_metric(consumption_labels, row[4])
            demand.add_metric(demand_labels, math.nan if row[5] is None else row[5])
            peak.add_metric(demand_labels, row[6])
            previous.add_metric(demand_labels, row[7])
            cumulative.add_metric(demand_labels, row[8])
            resets.add_metric([channel_id], row[9])
            # Always present, so a rate() over it works from the first scrape on.
            rejections.add_metric([channel_id, LOCKOUT], row[10])
            online.add_metric([channel_id], 1.0 if row[11] else 0.0)
        for (channel_id, reason), count in reading.rejections:
            # The engine's count is the one truth for lockouts; a second "lockout" sample
            # would be a duplicate series, which Prometheus rejects.
            if reason != LOCKOUT:
                rejections.add_metric([channel_id, reason], count)
        for source_id, up in reading.sources:
            f["source_up"].add_metric([source_id], 1.0 if up else 0.0)
        f["lag"].add_metric([], reading.lag)
        for channel_id, ok in reading.checksums:
            f["checksum_ok"].add_metric([channel_id], 1.0 if ok else 0.0)
        for name, per_channel in reading.counters:
            for channel_id, count in per_channel:
                f[name].add_metric([channel_id], count)
        return list(f.values())


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
        return generate_latest(_Scrape(GatewayCollector.families(reading), self._others))


# -- HTTP ------------------------------------------------------------------------------------

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.[01]")
_HEADER_LINE = re.compile(_TOKEN + rb":[\t\x20-\x7e\x80-\xff]*")
_ALLOWED = ("GET", "HEAD")
_LINGER = 1.0  # seconds to drain what a client still sends after our answer (see _answer)


class _HttpError(Exception):
    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, bytes | None] | None:
    """The method, target and Authorization header of one request; None if the client sent
    nothing at all."""
    lines: list[bytes] = []
    size = 0
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # one line beyond the stream's limit
            raise _HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
        size += len(line)
        if size > HEAD_LIMIT:
            raise _HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        if not line.endswith(b"\n"):
            if not line and not lines:
                return None
            raise _HttpError(HTTPStatus.BAD_REQUEST)  # connection closed mid-head
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]  # bare LF, like http.server
        if line:
            lines.append(line)
        elif lines:
            break
        # else: an empty line before the request line, which RFC 9112 says to ignore
    request = _REQUEST_LINE.fullmatch(lines[0])
    if request is None or not all(_HEADER_LINE.fullmatch(header) for header in lines[1:]):
        raise _HttpError(HTTPStatus.BAD_REQUEST)
    authorization = None
    for header in lines[1:]:
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"authorization":
            authorization = value.strip()
    return request[1].decode("ascii"), request[2].decode("ascii"), authorization


def _response(
    status: HTTPStatus, body: bytes, content_type: str, *, head_only: bool = False
) -> bytes:
    headers = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        headers.append("Allow: " + ", ".join(_ALLOWED))
    if status == HTTPStatus.UNAUTHORIZED:
        headers.append('WWW-Authenticate: Basic realm="pulse-gateway", charset="UTF-8"')
    head = ("\r\n".join(headers) + "\r\n\r\n").encode("ascii")
    return head if head_only else head + body


def _error(status: HTTPStatus) -> bytes:
    return _response(status, f"{status.value} {status.phrase}\n".encode(), "text/plain")


async def _route(metrics: Metrics, method: str, target: str) -> bytes:
    if urlsplit(target).path != "/metrics":
        return _response(
            HTTPStatus.NOT_FOUND, b"Not found: metrics are at /metrics\n", "text/plain"
        )
    if method not in _ALLOWED:
        return _error(HTTPStatus.METHOD_NOT_ALLOWED)
    try:
        body = await metrics.scrape()
    except Exception:  # a bug in a collector must cost one scrape, not the server
        log.exception("metrics_render_failed")
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR)
    return _response(HTTPStatus.OK, body, CONTENT_TYPE_LATEST, head_only=method == "HEAD")


def _authorized(authorization: bytes | None, expected: bytes | None) -> bool:
    """Basic auth (RFC 7617), compared in constant time; no credentials configured = open."""
    if expected is None:
        return True
    return authorization is not None and hmac.compare_digest(authorization, expected)


async def _answer(
    metrics: Metrics,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    read_timeout: float,
    expected: bytes | None = None,
) -> None:
    try:
        try:
            async with asyncio.timeout(read_timeout):
                head = await _read_head(reader)
        except TimeoutError:
            response = _error(HTTPStatus.REQUEST_TIMEOUT)
        except _HttpError as exc:
            response = _error(exc.status)
        else:
            if head is None:
                return
            method, target, authorization = head
            if _authorized(authorization, expected):
                response = await _route(metrics, method, target)
            else:
                response = _error(HTTPStatus.UNAUTHORIZED)
        writer.write(response)
        async with asyncio.timeout(read_timeout):
            await writer.drain()
            # Closing with unread input makes the kernel send RST, which can destroy our answer
            # before the client reads it (an oversized head); so half-close and drain for a moment.
            if writer.can_write_eof():
                writer.write_eof()
        async with asyncio.timeout(_LINGER):
            while await reader.read(64 * 1024):
                pass
    except (ConnectionError, TimeoutError):
        pass  # the client left or stalled: nothing more to tell it
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve_metrics(
    metrics: Metrics,
    host: str,
    port: int,
    *,
    read_timeout: float = READ_TIMEOUT,
    tls: ssl.SSLContext | None = None,
    credentials: tuple[str, str] | None = None,
) -> asyncio.Server:
    """Serve ``GET /metrics`` over HTTP/1.1 on the running loop, one request per connection.

    Port 0 binds a free port (read it from ``server.sockets``). Other paths answer 404, other
    methods 405, a malformed request 400, a head over ``HEAD_LIMIT`` bytes 431 and a client
    slower than ``read_timeout`` seconds 408. With ``tls`` it speaks HTTPS; with
    ``credentials`` (username, password) every request needs that Basic auth, else 401. The
    caller closes the returned server.
    """
    expected = None
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode("ascii")
        expected = f"Basic {token}".encode("ascii")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _answer(metrics, reader, writer, read_timeout, expected)

    return await asyncio.start_server(handle, host, port, limit=HEAD_LIMIT, ssl=tls)


class MetricsError(Exception):
    """The endpoint cannot start as configured (TLS or password file); the message says why."""


class Endpoint:
    """The ``/metrics`` listener of one gateway, as its ``metrics:`` section says."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.server: asyncio.Server | None = None
        self.listen: str | None = None  # host:port as configured, while listening

    @property
    def port(self) -> int | None:
        """The bound port (the one asked for, or a free one for port 0)."""
        if self.server is None or not self.server.sockets:
            return None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, settings: MetricsSettings | None) -> None:
        """Listen; nothing when there is no ``metrics:`` section. TLS and Basic auth are read
        from their files now, so a missing or empty file stops the gateway at start with its
        name (``MetricsError``)."""
        if settings is None:
            return
        tls = credentials = None
        try:
            if settings.tls_cert is not None and settings.tls_key is not None:
                tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                tls.load_cert_chain(settings.tls_cert, settings.tls_key)
            if settings.username is not None and settings.password_file is not None:
                password = settings.password_file.read_text(encoding="utf-8").strip()
                if not password:
                    raise MetricsError(f"{settings.password_file} holds no password")
                credentials = (settings.username, password)
        except (OSError, ssl.SSLError) as exc:
            raise MetricsError(f"metrics TLS or password file: {exc}") from None
        self.server = await serve_metrics(
            self.metrics, settings.host, settings.port, tls=tls, credentials=credentials
        )
        self.listen = settings.listen

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), timeout=1.0)
            self.server = self.listen = None
