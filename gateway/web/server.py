"""The gateway's HTTP listener on aiohttp: /metrics, the pages, the JSON API, the static files.

One listener as the ``http:`` section says (``metrics:`` is its older name): ``listen``, TLS
from ``tls`` and Basic auth from ``basic_auth``, which then guards every path, the static
files and the 404s included. It runs on the loop that drives the engine, so a page, an API
answer and a scrape each read the numbers between two events. The Prometheus text is made by
a worker thread (``Metrics.scrape``); the status JSON is built on the loop, a few milliseconds
at 2,000 channels.

Every answer carries a content security policy that allows resources from the gateway only;
a failure inside a handler answers 500 with a short message, never a stack trace.
"""

from __future__ import annotations

import base64
import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.core import Instant
from gateway.logging import get_logger
from gateway.metrics import Metrics
from gateway.web import api, pages
from gateway.web.api import SITE, Site
from gateway.web.chart import DAY_US, demand_chart
from gateway.web.records import Records
from gateway.web.snapshot import WebView, gateway_now

if TYPE_CHECKING:
    from gateway.config import MetricsSettings

log = get_logger("web")

STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0  # an idle connection is closed after this
SHUTDOWN_S = 1.0  # requests in flight at stop get this long
MAX_BODY = 16 * 1024  # a reset's JSON body is a few bytes
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
METRICS = web.AppKey("metrics", Metrics)
# aiohttp logs each malformed request with a traceback; our middleware logs handler failures
_QUIET = logging.getLogger("gateway.web.protocol")
_QUIET.setLevel(logging.CRITICAL)
type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebError(Exception):
    """The listener cannot start as configured (TLS or password file); the message says why."""


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _plain(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors as JSON under /api, as text elsewhere; a bug answers 500, logged."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = exc.reason if exc.status != 404 else f"not found: {request.path}"
        if _is_api(request):
            return api.json_response({"error": message}, exc.status)
        return _plain(exc.status, f"{exc.status} {message}", dict(exc.headers))
    except Exception:
        log.exception("web_request_failed", path=request.path, method=request.method)
        if _is_api(request):
            return api.json_response({"error": "internal error; see the gateway's log"}, 500)
        return _plain(500, "500 internal error; see the gateway's log")


def basic_auth(expected: bytes | None) -> Any:
    """Every request needs this Authorization header (RFC 7617), compared in constant time."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode("latin-1", "replace")
            if not hmac.compare_digest(given, expected):
                challenge = {"WWW-Authenticate": 'Basic realm="pulse-gateway", charset="UTF-8"'}
                if _is_api(request):
                    answer = api.json_response({"error": "authentication required"}, 401)
                    answer.headers.update(challenge)
                    return answer
                return _plain(401, "401 authentication required", challenge)
        return await handler(request)

    return guard


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(HEADERS)
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")


# -- handlers that are not the JSON API -------------------------------------------------------


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text, the same bytes ``Metrics.render`` gives."""
    try:
        body = await request.app[METRICS].scrape()
    except Exception:  # a bug in a collector must cost one scrape, not the server
        log.exception("metrics_render_failed")
        return _plain(500, "500 the metrics could not be rendered; see the gateway's log")
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def status_page(request: web.Request) -> web.Response:
    document = await request.app[SITE].status()
    html = pages.status_page(document, request.query.get("q", "").strip())
    return web.Response(text=html, content_type="text/html")


async def channel_page(request: web.Request) -> web.Response:
    site = request.app[SITE]
    channel_id = request.match_info["id"]
    document = await site.status()  # the gateway facts of the same moment
    facts = next((c for c in document["channels"] if c["id"] == channel_id), None)
    if facts is None:
        return web.Response(
            status=404,
            text=pages.not_found_page(f"no channel {channel_id!r}"),
            content_type="text/html",
        )
    now = gateway_now(site.view)
    points = await api.read(site.records.demand_points, channel_id, now - DAY_US, now)
    resets = await api.read(site.records.resets, api.CHANNEL_RESETS, channel_id)
    periods = await api.read(site.records.periods, channel_id, api.CHANNEL_PERIODS)
    chart = demand_chart(
        points, now, site.view.config.gateway.zone, facts["demand_unit"], facts["peak_demand"]
    )
    html = pages.channel_page(
        document["gateway"],
        facts,
        chart,
        periods,
        resets,
        site.allow_reset,
    )
    return web.Response(text=html, content_type="text/html")


def metrics_app(source: Metrics, expected: bytes | None = None) -> web.Application:
    """An application serving ``/metrics`` only (``make_app`` adds the rest); ``expected``:
    the Authorization header every request must carry."""
    app = web.Application(middlewares=[errors, basic_auth(expected)], client_max_size=MAX_BODY)
    app[METRICS] = source
    app.on_response_prepare.append(_headers)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(
    app: web.Application, host: str, port: int, tls: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Listen on ``host:port`` (0: a free port, see ``runner.addresses``); the caller
    cleans the runner up."""
    runner = web.AppRunner(
        app,
        access_log=None,  # the gateway logs what matters itself
        logger=_QUIET,  # a malformed request is the client's problem: answered 400, not logged
        keepalive_timeout=KEEPALIVE_S,
        shutdown_timeout=SHUTDOWN_S,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=tls).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def make_app(site: Site, credentials: tuple[str, str] | None) -> web.Application:
    expected = None
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode("ascii")
        expected = f"Basic {token}".encode("ascii")
    app = metrics_app(site.metrics, expected)
    app[SITE] = site
    app.router.add_get("/", status_page)
    app.router.add_get("/channels/{id}", channel_page)
    api.routes(app)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


# -- the listener -------------------------------------------------------------------------------


class WebServer:
    """The HTTP listener of one gateway, as its ``http:`` (or ``metrics:``) section says."""

    def __init__(self, view: WebView, metrics: Metrics) -> None:
        self.view = view
        self.metrics = metrics
        self.started: Instant = gateway_now(view)  # the gateway's uptime counts from here
        self.runner: web.AppRunner | None = None
        self.records: Records | None = None
        self.listen: str | None = None  # host:port as configured, while listening

    @property
    def port(self) -> int | None:
        """The bound port (the one asked for, or a free one for port 0)."""
        if self.runner is None or not self.runner.addresses:
            return None
        return int(self.runner.addresses[0][1])

    async def start(self, settings: MetricsSettings | None) -> None:
        """Listen; nothing without the section. TLS and Basic auth are read from their files
        now, so a missing or empty file stops the gateway at start with its name."""
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
                    raise WebError(f"{settings.password_file} holds no password")
                credentials = (settings.username, password)
        except (OSError, ssl.SSLError) as exc:
            raise WebError(f"http TLS or password file: {exc}") from None
        wanted = settings.allow_reset
        if wanted and credentials is None:
            log.warning("http_reset_disabled", reason="http.allow_reset needs http.basic_auth")
        self.records = Records(Path(self.view.config.gateway.state_dir) / "gateway.db")
        site = Site(
            self.view,
            self.metrics,
            self.records,
            self.started,
            allow_reset=wanted and credentials is not None,
            username=credentials[0] if credentials else None,
        )
        try:
            self.runner = await serve(
                make_app(site, credentials), settings.host, settings.port, tls
            )
        except BaseException:
            self.records.close()
            self.records = None
            raise
        self.listen = settings.listen

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = self.listen = None
        if self.records is not None:
            self.records.close()
            self.records = None
