"""For any event log and any schedule, the live gateway's resets equal replay's.

The live side is the shell's own data path without sockets: the ``Feed`` stamping events with
a fake wall clock, the ``ResetDesk`` making each reset durable in a real SQLite file. The
replay side is ``replay`` with ``--db``. Both must log the same reset attempts at the same
instants with the same totals, and close the same billing periods.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.checkpoints import Checkpoints
from gateway.clock import Timeline
from gateway.config import load_config, parse_config
from gateway.core import Engine, Instant, IntervalLog, format_instant
from gateway.core.schedule import WEEKDAYS, between
from gateway.feed import Feed
from gateway.replay import ResetLog, replay
from gateway.reset_desk import ResetDesk
from gateway.status import Status
from gateway.store import Store
from tests.daemon import write_config
from tests.helpers import FakeClocks

START = FakeClocks().wall_us  # 2026-01-01T00:00:00Z, a Thursday
SECOND = 1_000_000
HOUR = 3600 * SECOND
OPERATOR = "bacnet:127.0.0.1:47900"

times = st.tuples(st.integers(0, 23), st.integers(0, 59), st.sampled_from([0, 30]))
schedules = st.one_of(
    st.builds(
        lambda at: f'{{every: day, at: "{at}"}}',
        times.map(lambda t: f"{t[0]:02}:{t[1]:02}:{t[2]:02}"),
    ),
    st.builds(
        lambda day, at: f'{{every: week, weekday: {day}, at: "{at}"}}',
        st.sampled_from(WEEKDAYS),
        times.map(lambda t: f"{t[0]:02}:{t[1]:02}"),
    ),
    st.builds(
        lambda day, at: f'{{every: month, day: {day}, at: "{at}"}}',
        st.sampled_from([1, 2, 15, 31, "last"]),
        times.map(lambda t: f"{t[0]:02}:{t[1]:02}"),
    ),
)
# (seconds after the previous event, what): pulses on a channel, or an operator's reset
events = st.lists(
    st.tuples(
        st.integers(1, 30 * 3600),
        st.sampled_from(["a", "b"]),
        st.one_of(st.integers(1, 40), st.just("reset")),
    ),
    max_size=40,
)
zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"])


def site(folder: Path, schedule: str, zone: str) -> Path:
    channels = (
        "  - {id: a, unit: kWh, scale_factor: 0.5, demand_window: 30min, demand_slide: 10min,\n"
        "     reset_lockout: 2h, source: {id: sim, rate: 1, mode: constant}}\n"
        "  - {id: b, unit: m3, scale_factor: 0.1, demand_window: 1h, demand_slide: 1h,\n"
        "     reset_schedule: none, source: {id: sim, rate: 1, mode: constant}}\n"
    )
    path = write_config(folder, channels=channels)
    text = path.read_text().replace(
        "gateway: {name: test-site, state_dir: state}",
        f"gateway: {{name: test-site, state_dir: state, timezone: {zone},"
        f" reset_schedule: {schedule}}}",
    )
    path.write_text(text)  # a has the default schedule, b opts out
    return path


def live(path: Path, log: list[tuple[Instant, str, int | str]], end: Instant) -> Store:
    """The shell's data path over ``log``: Feed, ResetDesk, a real store, a fake clock."""
    config = load_config(path, purpose="run")
    clocks = FakeClocks()
    timeline = Timeline(clocks.wall, clocks.mono)
    store = Store.open(config.gateway.state_dir)
    engine, missed = Engine.resume(config.rules(), {}, 0, START)
    assert missed == []
    status = Status()
    intervals = IntervalLog({c.id: c.interval for c in config.channels}, {})
    checkpoints = Checkpoints(
        store, engine, intervals, status, baselines=dict, observe=lambda _: None
    )
    desk: ResetDesk
    feed = Feed(
        config,
        engine,
        timeline,
        intervals,
        checkpoints,
        status,
        changed=lambda channels: None,
        sources_changed=lambda: None,
        fire=lambda: desk.fire(),
        fire_failed=lambda: None,
    )
    desk = ResetDesk(store, engine, status, now=feed.now, baselines=dict)
    feed.mark_new_channels(START)
    feed.source_up("sim", {})  # both channels online from the start, as replay has them
    for t, channel, what in log:
        to(clocks, t)
        if what == "reset":
            desk.reset(channel, OPERATOR)
        else:
            assert isinstance(what, int)
            feed.pulses(channel, what)
    to(clocks, end)
    feed.now()
    return store


def to(clocks: FakeClocks, t: Instant) -> None:
    """Both clocks on to ``t`` (the wall clock does not step: no clock_step)."""
    delta = t - clocks.wall_us
    clocks.wall_us += delta
    clocks.mono_us += delta


def replayed(path: Path, log: list[tuple[Instant, str, int | str]], end: Instant) -> ResetLog:
    config = parse_config(path.read_text(), str(path), purpose="replay")
    rows = ["time,channel,event,value"]
    for t, channel, what in log:
        stamp = format_instant(t)
        rows.append(
            f"{stamp},{channel},reset," if what == "reset" else f"{stamp},{channel},pulses,{what}"
        )
    resets: ResetLog = []
    replay(config, rows, io.StringIO(), start=START, end=end, resets=resets)
    return resets


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=schedules, zone=zones, steps=events, tail=st.integers(0, 40 * 24 * 3600))
def test_the_live_gateway_resets_as_replay_does(
    schedule: str, zone: str, steps: list[tuple[int, str, int | str]], tail: int
) -> None:
    log: list[tuple[Instant, str, int | str]] = []
    t = START
    for gap, channel, what in steps:
        t += gap * SECOND
        log.append((t, channel, what))
    end = t + tail * SECOND
    with tempfile.TemporaryDirectory() as folder:
        path = site(Path(folder), schedule, zone)
        store = live(path, log, end)
        try:
            audit = [
                (
                    r.time,
                    r.channel,
                    r.accepted,
                    r.reason,
                    r.before,
                    r.after,
                    "schedule" if r.source == "schedule" else "operator",
                )
                for r in store.reset_log()
            ]
            periods = [
                (p.channel, p.start, p.end, p.consumption, p.peak_demand, p.peak_time)
                for p in store.periods()
            ]
        finally:
            store.close()
        replay_log = replayed(path, log, end)
        config = parse_config(path.read_text(), str(path), purpose="replay")
    expected = []
    expected_periods = []
    for source, outcomes, _ in replay_log:
        for channel, o in outcomes.items():
            kind = "schedule" if source == "schedule" else "operator"
            expected.append((o.time, channel, o.accepted, o.reason, o.before, o.after, kind))
            if o.period is not None:
                p = o.period
                expected_periods.append(
                    (channel, p.start, p.end, p.consumption, p.peak_demand, p.peak_time)
                )
    assert audit == expected
    assert periods == expected_periods
    # and both fired a's schedule at every instant it names, b's never
    rules = config.rules()["a"]
    assert rules.reset_schedule is not None
    named = list(between(rules.reset_schedule, rules.timezone, START, end))
    assert [(row[0], row[1]) for row in audit if row[-1] == "schedule"] == [(t, "a") for t in named]
