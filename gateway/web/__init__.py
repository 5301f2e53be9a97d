"""The gateway's one HTTP listener: /metrics, the status pages and the JSON API, on aiohttp.

server.py     the listener: TLS, basic auth on every path, errors without stack traces
snapshot.py   what the pages and the API show: one small view function per value
records.py    the reset audit and interval records, read on a read-only connection
api.py        the JSON API under /api/v1 (docs/reference/http-api.md)
pages.py      the HTML pages: the site at a glance, one channel
chart.py      the 24-hour demand chart as SVG, drawn on the server
static/       the stylesheet and the live-update script, served by the gateway itself
"""

from gateway.web.server import WebError, WebServer

__all__ = ["WebError", "WebServer"]
