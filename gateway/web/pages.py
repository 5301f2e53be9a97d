"""The HTML pages: the site at a glance (``/``) and one channel (``/channels/{id}``).

Drawn on the server from the same snapshot the JSON API serves, so a page is complete without
JavaScript (the filter box then filters on the server, through ``?q=``). With JavaScript,
static/live.js polls ``/api/v1/status`` (one request for every channel, never one per row) and
updates the cells in place. Every resource a page loads comes from the gateway itself.

The display rules (numbers to three decimals, rounded half away from zero on the exact value,
ages, times) are mirrored in static/live.js: a value looks the same drawn by either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from html import escape
from typing import Any

from gateway.core import parse_instant
from gateway.web.snapshot import Json

DASH = "\u2014"
_MILLI = Decimal("0.001")

# (key in the channel's JSON, column heading, how it is shown)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("unit", "unit", "text"),
    ("online", "online", "online"),
    ("consumption", "consumption", "number"),
    ("demand", "demand", "number"),
    ("projected_demand", "projected demand", "number"),
    ("peak_demand", "peak demand", "number"),
    ("peak_time", "peak at (UTC)", "time"),
    ("previous_peak_demand", "previous peak", "number"),
    ("cumulative_demand", "cumulative demand", "number"),
    ("reset_count", "resets", "text"),
    ("period_consumption", "period consumption", "number"),
    ("next_scheduled_reset", "next scheduled reset (UTC)", "time"),
    ("last_pulse", "last pulse", "age"),
    ("checksum_ok", "checksum", "checksum"),
)


# -- display rules (mirrored in static/live.js) ---------------------------------------------


def show_number(value: float | None) -> str:
    """Three decimals, half away from zero on the exact binary value (JavaScript's toFixed)."""
    if value is None:
        return DASH
    if value == 0:
        value = 0.0  # no "-0.000"
    return str(Decimal(value).quantize(_MILLI, rounding=ROUND_HALF_UP))


def show_time(text: str | None) -> str:
    return DASH if text is None else text.replace("T", " ")


def show_when(text: str | None) -> str:
    """A time that may not exist (a schedule that is not configured): "none"."""
    return "none" if text is None else show_time(text)


def show_age(seconds: float | None) -> str:
    """How long ago, in the largest whole unit: "4 s", "12 min", "3 h", "2 d"."""
    if seconds is None:
        return "never"
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def show_duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    parts = [f"{days} d"] if days else []
    return " ".join([*parts, f"{hours} h", f"{rest // 60} min"])


def _seconds_between(later: str | None, earlier: str | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (parse_instant(later) - parse_instant(earlier)) / 1e6


def show(kind: str, value: Any, now: str | None = None) -> str:
    match kind:
        case "number":
            return show_number(value)
        case "time":
            return show_time(value)
        case "age":
            return show_age(_seconds_between(now, value))
        case "online":
            return "online" if value else "offline"
        case "checksum":
            return DASH if value is None else "ok" if value else "BROKEN"
        case _:
            return DASH if value is None else str(value)


# -- the frame ------------------------------------------------------------------------------


def _page(title: str, body: str, page: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        '<link rel="stylesheet" href="/static/style.css">'
        '<script src="/static/live.js" defer></script>'
        f'</head><body data-page="{page}">{body}</body></html>\n'
    )


def _dl(rows: Iterable[tuple[str, str, str]]) -> str:
    """A definition list; each row is (key for live.js, label, shown value)."""
    items = "".join(
        f'<dt>{escape(label)}</dt><dd data-g="{key}">{escape(value)}</dd>'
        for key, label, value in rows
    )
    return f'<dl class="facts">{items}</dl>'


def gateway_rows(gateway: Json) -> list[tuple[str, str, str]]:
    bacnet = gateway["bacnet"]
    return [
        ("version", "version", gateway["version"]),
        ("uptime", "up for", show_duration(gateway["uptime_s"])),
        ("time", "clock (UTC)", show_time(gateway["time"])),
        ("local_time", f"local time ({gateway['timezone']})", show_time(gateway["local_time"])),
        (
            "bacnet",
            "BACnet device",
            f"{bacnet['device_instance']} at {bacnet['address']}:{bacnet['port']}",
        ),
        ("last_checkpoint", "last checkpoint", show_time(gateway["last_checkpoint"])),
        (
            "next_scheduled_reset",
            "next scheduled reset",
            show_when(gateway["next_scheduled_reset"]),
        ),
        ("last_file_drop", "last file drop (day)", gateway["last_file_drop"] or "none"),
        ("next_file_drop", "next file drop", show_when(gateway["next_file_drop"])),
    ]


def source_rows(sources: Sequence[Json]) -> str:
    rows = []
    for s in sources:
        state = "up" if s["up"] else "down"
        rows.append(
            f'<tr class="{state}"><td>{escape(s["id"])}</td><td>{escape(s["type"])}</td>'
            f"<td>{escape(s['device'])}</td><td>{state}</td>"
            f"<td>{escape(show_time(s['last_good_reading']))}</td>"
            f"<td>{escape(s['error'] or DASH)}</td><td>{s['glitches']}</td>"
            f"<td>{s['channels']}</td></tr>"
        )
    return "".join(rows)


def channel_row(channel: Json, now: str) -> str:
    cid = escape(channel["id"])
    classes = [] if channel["online"] else ["off"]
    if channel["checksum_ok"] is False:
        classes.append("bad")
    cells = "".join(
        f'<td data-k="{key}">{escape(show(kind, channel[key], now))}</td>'
        for key, _, kind in COLUMNS
    )
    return (
        f'<tr data-id="{cid}" class="{" ".join(classes)}">'
        f'<td><a href="/channels/{escape(channel["id"], quote=True)}">{cid}</a></td>{cells}</tr>'
    )


def status_page(document: Json, query: str = "") -> str:
    """``GET /``; ``query`` keeps the channels whose id contains it (case-insensitive)."""
    gateway = document["gateway"]
    wanted = query.casefold()
    channels = [c for c in document["channels"] if wanted in c["id"].casefold()]
    now = gateway["time"]
    head = "".join(f"<th>{escape(label)}</th>" for _, label, _ in COLUMNS)
    shown = f"{len(channels)} of {len(document['channels'])}" if query else str(len(channels))
    body = (
        f"<header><h1>{escape(gateway['name'])}</h1>"
        '<p id="live" class="live">as of the page load; reload for new values</p></header>'
        '<main><section id="gateway"><h2>Gateway</h2>'
        f"{_dl(gateway_rows(gateway))}</section>"
        '<section><h2>Sources</h2><table class="sources"><thead><tr><th>source</th><th>type</th>'
        "<th>device</th><th>state</th><th>last good reading (UTC)</th><th>problem</th>"
        "<th>glitches</th><th>channels</th></tr></thead>"
        f'<tbody id="source-rows">{source_rows(document["sources"])}</tbody></table></section>'
        f'<section><h2>Channels <span id="count">{shown}</span></h2>'
        '<form method="get" action="/" id="filter-form" class="filter">'
        '<label for="filter">filter by id</label>'
        f'<input id="filter" name="q" value="{escape(query, quote=True)}" autocomplete="off">'
        '<button type="submit">filter</button></form>'
        '<div class="scroll"><table id="channel-table"><thead><tr><th>channel</th>'
        f"{head}</tr></thead><tbody>"
        + "".join(channel_row(c, now) for c in channels)
        + "</tbody></table></div></section></main>"
    )
    return _page(f"{gateway['name']}: pulse-gateway", body, "status")


def channel_page(
    gateway: Json,
    channel: Json,
    chart: str,
    periods: Sequence[Json],
    resets: Sequence[Json],
    allow_reset: bool,
) -> str:
    """``GET /channels/{id}``: the values, the 24-hour chart, billing periods and resets."""
    now = gateway["time"]
    values = [
        (key, label, show(kind, channel[key], now))
        for key, label, kind in (("id", "channel", "text"), ("source", "source", "text"), *COLUMNS)
    ]
    values.insert(3, ("pulses_total", "pulses counted", str(channel["pulses_total"])))
    if periods:
        period_rows = "".join(
            f"<tr><td>{escape(show_time(p['start']))}</td><td>{escape(show_time(p['end']))}</td>"
            f"<td>{show_number(p['consumption'])}</td><td>{show_number(p['peak_demand'])}</td>"
            f"<td>{escape(show_time(p['peak_time']))}</td><td>{escape(p['closed_by'])}</td></tr>"
            for p in periods
        )
        period_html = (
            '<table class="resets"><thead><tr><th>from (UTC)</th><th>to (UTC)</th>'
            "<th>consumption</th><th>peak demand</th><th>peak at (UTC)</th>"
            f"<th>closed by</th></tr></thead><tbody>{period_rows}</tbody></table>"
        )
    else:
        period_html = "<p>No billing periods are recorded for this channel.</p>"
    if resets:
        reset_rows = "".join(
            f'<tr class="{"ok" if r["accepted"] else "refused"}">'
            f"<td>{escape(show_time(r['time']))}</td><td>{escape(r['source'])}</td>"
            f"<td>{'accepted' if r['accepted'] else 'refused: ' + escape(r['reason'])}</td>"
            f"<td>{show_number(r['before']['peak_demand'])}</td>"
            f"<td>{show_number(r['after']['previous_peak_demand'])}</td>"
            f"<td>{show_number(r['after']['cumulative_demand'])}</td>"
            f"<td>{r['after']['reset_count']}</td></tr>"
            for r in resets
        )
        reset_html = (
            '<table class="resets"><thead><tr><th>time (UTC)</th><th>sent by</th>'
            "<th>outcome</th><th>peak before</th><th>previous peak after</th>"
            "<th>cumulative after</th><th>resets after</th></tr></thead>"
            f"<tbody>{reset_rows}</tbody></table>"
        )
    else:
        reset_html = "<p>No reset was ever sent to this channel.</p>"
    button = (
        '<p><button type="button" id="reset" data-channel="'
        f'{escape(channel["id"], quote=True)}">reset the peak demand</button>'
        ' <span id="reset-outcome"></span></p>'
        if allow_reset
        else ""
    )
    body = (
        f'<header><p><a href="/">&larr; {escape(gateway["name"])}</a></p>'
        f"<h1>Channel {escape(channel['id'])}</h1>"
        f'<p class="live">as of {escape(show_time(now))}</p></header>'
        f"<main><section><h2>Values</h2>{_dl(values)}{button}</section>"
        f"<section><h2>Demand, last 24 hours</h2>{chart}</section>"
        f"<section><h2>Billing periods</h2>{period_html}</section>"
        f"<section><h2>Last resets</h2>{reset_html}</section></main>"
    )
    return _page(f"{channel['id']}: {gateway['name']}", body, "channel")


def not_found_page(what: str) -> str:
    return _page("not found", f"<main><h1>Not found</h1><p>{escape(what)}</p></main>", "error")
