"""A channel's demand over the last 24 hours as an SVG drawn on the server.

One bar per interval record (its average demand over the interval), estimated records (quality
E, an outage lumped into one record) in another colour, the highest record marked with its
value and time, and the channel's peak demand since the last reset as a dashed line. No
script, no style sheet, no font to load: presentation attributes only, so the page's content
security policy allows it and it shows without JavaScript.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from gateway.core import Instant

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 16, 28  # margins for the axes' labels
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

type Point = tuple[Instant, Instant, float, bool]  # start, end, average demand, estimated


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def demand_chart(
    points: Sequence[Point],
    now: Instant,
    zone: ZoneInfo,
    unit: str,
    peak: float | None = None,
) -> str:
    """The SVG text for the 24 hours before ``now``; ``peak``: the channel's peak demand."""
    since = now - DAY_US
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    shown = [p for p in points if p[1] > since and p[2] == p[2]]  # p[2] == p[2]: not NaN
    top = max([p[2] for p in shown] + [peak or 0.0, 0.0])
    top = top * 1.1 if top > 0 else 1.0

    def x(t: Instant) -> float:
        return LEFT + (max(t, since) - since) * plot_w / DAY_US

    def y(v: float) -> float:
        return TOP + plot_h - max(v, 0.0) * plot_h / top

    title = f"demand, {unit}, last 24 hours"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}"'
        ' class="chart" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa"'
        ' stroke="#ccc"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):  # the value axis
        value = top * fraction
        out.append(
            f'<text x="{LEFT - 4}" y="{y(value) + 4:.1f}" text-anchor="end"'
            f' fill="#555">{_label(value)}</text>'
        )
    first_hour = (since // HOUR_US + 1) * HOUR_US
    for tick in range(first_hour, now + 1, HOUR_US):  # the time axis, local hours
        local = (_EPOCH + timedelta(microseconds=tick)).astimezone(zone)
        if local.hour % 3:
            continue
        tx = x(tick)
        out.append(
            f'<line x1="{tx:.1f}" y1="{TOP}" x2="{tx:.1f}" y2="{TOP + plot_h}" stroke="#e4e4e4"/>'
            f'<text x="{tx:.1f}" y="{HEIGHT - 10}" text-anchor="middle"'
            f' fill="#555">{local:%H:%M}</text>'
        )
    for start, end, value, estimated in shown:
        x0, x1 = x(start), x(end)
        colour = "#d08c2a" if estimated else "#2a6fd0"
        out.append(
            f'<rect x="{x0:.1f}" y="{y(value):.1f}" width="{max(x1 - x0, 0.6):.1f}"'
            f' height="{TOP + plot_h - y(value):.1f}" fill="{colour}"/>'
        )
    if peak is not None and peak > 0:
        py = y(peak)
        out.append(
            f'<line x1="{LEFT}" y1="{py:.1f}" x2="{LEFT + plot_w}" y2="{py:.1f}" stroke="#b00"'
            ' stroke-dasharray="5 4"/>'
            f'<text x="{LEFT + 4}" y="{py - 4:.1f}" fill="#b00">peak demand {_label(peak)}</text>'
        )
    if shown:
        best = max(shown, key=lambda p: p[2])
        bx, by = (x(best[0]) + x(best[1])) / 2, y(best[2])
        local = (_EPOCH + timedelta(microseconds=best[1])).astimezone(zone)
        anchor = "end" if bx > LEFT + plot_w * 0.8 else "start"
        out.append(
            f'<circle cx="{bx:.1f}" cy="{by:.1f}" r="4" fill="none" stroke="#b00"'
            ' stroke-width="2" class="peak-mark"/>'
            f'<text x="{bx + (-6 if anchor == "end" else 6):.1f}" y="{max(by - 6, TOP + 10):.1f}"'
            f' text-anchor="{anchor}" fill="#b00">highest {_label(best[2])}'
            f" at {local:%H:%M}</text>"
        )
    else:
        out.append(
            f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle"'
            ' fill="#555">no interval records in the last 24 hours</text>'
        )
    out.append("</svg>")
    return "".join(out)
