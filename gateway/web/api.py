"""The JSON API under ``/api/v1`` (docs/reference/http-api.md) and what its handlers share.

Answers are JSON; an error is ``{"error": "..."}`` with 400 (a bad query or body), 403 (resets
not enabled, or a request from another site), 404 (no such channel), 415 (a body that is not
JSON) or 500 (the state could not be read or written; the gateway's log has the detail), and
never a stack trace. Numbers are JSON numbers, never NaN: a missing value is null.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.core import Instant, TimeSyntaxError, parse_instant
from gateway.logging import get_logger
from gateway.metrics import Metrics
from gateway.web.records import Records, RecordsError
from gateway.web.snapshot import (
    Json,
    StatusReading,
    WebView,
    gateway_now,
    iso,
    one_channel,
    outcome,
    status_reading,
)

log = get_logger("web")

DAY_US = 86_400_000_000
MAX_SPAN_US = 31 * DAY_US  # intervals per request: a month of one channel
DEFAULT_RESETS = 100
MAX_RESETS = 1000
CHANNEL_RESETS = 20  # resets shown with one channel
CHANNEL_PERIODS = 24  # billing periods shown with one channel
# a reset refused before the engine saw it, counted under the reason BACnet uses for a writer
# outside reset_allowed_from (pulse_gateway_reset_rejections_total)
NOT_ALLOWED = "not_allowed"


# The status document at 2,000 channels is ~900 kB and ~15 ms of work; every viewer of the
# status page asks for it every 2 s. Built at most once a second of the gateway's time and
# shared, so ten viewers cost what one does (its "time" says as of when). A document up to
# STATUS_STALE_US old is answered at once while the next one is built in the background, so
# no viewer waits for a build behind the checkpoint writer.
STATUS_MAX_AGE_US = 1_000_000
STATUS_STALE_US = 3_000_000


@dataclass
class Site:
    """What every handler reads: the gateway, its metrics, its records and the settings."""

    view: WebView
    metrics: Metrics
    records: Records
    started: Instant
    allow_reset: bool  # http.allow_reset and basic auth both configured
    username: str | None  # the basic-auth user, when configured
    # the last status document (gateway time of its snapshot, JSON text), one build at once,
    # and the build under way in the background, if any
    status_text: tuple[Instant, str] | None = None
    status_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    status_build: asyncio.Task[str] | None = None

    async def status_json(self) -> str:
        """The status document as JSON text: at most STATUS_MAX_AGE_US old, or up to
        STATUS_STALE_US old while its successor is being built."""
        cached = self.status_text
        if cached is not None:
            age = gateway_now(self.view) - cached[0]
            if age < STATUS_MAX_AGE_US:
                return cached[1]
            if age < STATUS_STALE_US:
                if self.status_build is None or self.status_build.done():
                    self.status_build = asyncio.create_task(self._build_status())
                return cached[1]
        return await self._build_status()

    async def _build_status(self) -> str:
        async with self.status_lock:  # a request during a build waits for it and shares it
            cached = self.status_text
            if cached is not None and gateway_now(self.view) - cached[0] < STATUS_MAX_AGE_US:
                return cached[1]
            reading = await self.reading()  # the numbers are read on the loop, in one go
            built_at = gateway_now(self.view)
            # formatted and encoded by a worker thread, a chunk at a time, so BACnet requests
            # do not wait behind it on the loop (the rows are plain values nothing changes)
            text = await asyncio.to_thread(reading.text)
            self.status_text = (built_at, text)
            return text

    async def last_file_drop(self) -> str | None:
        try:
            return await asyncio.to_thread(self.records.last_file_drop)
        except RecordsError as exc:  # the page still shows everything else
            log.warning("web_records_unreadable", error=str(exc))
            return None

    async def reading(self) -> StatusReading:
        """The status document's numbers as of now (read on the loop, in one go)."""
        last_drop = await self.last_file_drop()
        return status_reading(
            self.view, gateway_now(self.view), self.started, last_drop, self.allow_reset
        )

    async def status(self) -> Json:
        """The status document (the pages): its numbers read on the loop, in one go."""
        return (await self.reading()).document()

    async def channel(self, channel_id: str) -> Json:
        """One channel with its billing periods and last resets; 404 when there is none."""
        facts = one_channel(self.view, channel_id)
        if facts is None:
            raise no_channel(channel_id)
        resets = await read(self.records.resets, CHANNEL_RESETS, channel_id)
        periods = await read(self.records.periods, channel_id, CHANNEL_PERIODS)
        return {**facts, "periods": periods, "resets": resets}


SITE = web.AppKey("site", Site)


def json_response(data: Any, status: int = 200) -> web.Response:
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json")


def error(status: int, message: str) -> web.HTTPException:
    """An HTTP error with a JSON body (raise it)."""
    exc = web.HTTPException(text=json.dumps({"error": message}), content_type="application/json")
    exc.set_status(status)
    return exc


def no_channel(channel_id: str) -> web.HTTPException:
    return error(404, f"no channel {channel_id!r}")


async def read(call: Callable[..., Any], *args: Any) -> Any:
    """A records query in a worker thread; a database that cannot be read answers 500."""
    try:
        return await asyncio.to_thread(call, *args)
    except RecordsError as exc:
        log.error("web_records_unreadable", error=str(exc))
        raise error(500, "the gateway's records cannot be read now; see its log") from None


# -- GET ----------------------------------------------------------------------------------------


async def status(request: web.Request) -> web.Response:
    text = await request.app[SITE].status_json()
    return web.Response(text=text, content_type="application/json")


async def channel(request: web.Request) -> web.Response:
    return json_response(await request.app[SITE].channel(request.match_info["id"]))


def _instant(request: web.Request, name: str, default: Instant) -> Instant:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        return parse_instant(text)
    except TimeSyntaxError as exc:
        raise error(400, f"{name}: {exc}") from None


async def intervals(request: web.Request) -> web.Response:
    """``?from=T&to=T`` (ISO 8601 with a zone): records with from < end <= to; default the
    last 24 hours; at most 31 days."""
    site = request.app[SITE]
    channel_id = request.match_info["id"]
    if channel_id not in site.view.live_channels():
        raise no_channel(channel_id)
    until = _instant(request, "to", gateway_now(site.view))
    since = _instant(request, "from", until - DAY_US)
    if since >= until:
        raise error(400, "from must be before to")
    if until - since > MAX_SPAN_US:
        raise error(400, "at most 31 days per request: ask for the rest in another")
    records = await read(site.records.intervals, channel_id, since, until)
    if site.view.live_channels()[channel_id].rules.is_virtual:
        for record in records:  # a virtual channel counts no pulses of its own
            record["pulses"] = None
    return json_response(records)


async def resets(request: web.Request) -> web.Response:
    """``?limit=N`` (1 to 1000, default 100): the last reset attempts, newest first."""
    text = request.query.get("limit", str(DEFAULT_RESETS))
    if not text.isdigit() or not 1 <= int(text) <= MAX_RESETS:
        raise error(400, f"limit must be a whole number from 1 to {MAX_RESETS}")
    site = request.app[SITE]
    return json_response(await read(site.records.resets, int(text)))


# -- POST ---------------------------------------------------------------------------------------


def _same_site(request: web.Request) -> bool:
    """A browser names the page that sent a request in Origin: it must be one of ours."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site request (curl, scripts)
    return origin.split("://", 1)[-1] == request.host


async def reset(request: web.Request) -> web.Response:
    """Reset one channel's peak demand through the reset desk, as a BACnet write would."""
    site = request.app[SITE]
    channel_id = request.match_info["id"]
    if not site.allow_reset or site.username is None:
        # counted and logged, not audited: without basic auth anyone who reaches the port
        # could fill the reset audit with rows (docs/decisions.md)
        if channel_id in site.view.live_channels():
            site.view.count_rejection(channel_id, NOT_ALLOWED)
        log.warning(
            "web_reset_refused",
            channel=channel_id,
            address=request.remote,
            reason="resets over HTTP are not enabled",
        )
        raise error(403, "resets over HTTP are not enabled (http.allow_reset with basic_auth)")
    if not _same_site(request):
        raise error(403, "a reset must be sent from the gateway's own pages")
    if request.content_type != "application/json":
        raise error(415, "send the reset as JSON (Content-Type: application/json), e.g. {}")
    try:
        body = json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise error(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise error(400, "the body must be a JSON object, e.g. {}")
    if channel_id not in site.view.live_channels():
        raise no_channel(channel_id)
    origin = f"http:{site.username}@{request.remote}"
    try:
        result = site.view.reset(channel_id, origin)
    except Exception as exc:  # not stored, so not done: the desk has put the channel back
        log.error("web_reset_failed", channel=channel_id, origin=origin, error=str(exc))
        raise error(500, "the reset could not be stored, so it did not happen") from None
    log.info("web_reset", channel=channel_id, origin=origin, accepted=result.accepted)
    return json_response(outcome(channel_id, result, origin), 200 if result.accepted else 409)


def routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/channels/{id}", channel)
    app.router.add_get("/api/v1/channels/{id}/intervals", intervals)
    app.router.add_get("/api/v1/resets", resets)
    app.router.add_post("/api/v1/channels/{id}/reset", reset)


__all__ = ["SITE", "Site", "iso", "routes"]
