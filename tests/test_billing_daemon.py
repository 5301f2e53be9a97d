"""Scheduled resets in the running gateway: at their instant, under the lockout, and the ones
missed while it was down applied at start-up exactly once, even after a kill -9."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.clock import Timeline
from gateway.config import load_config
from gateway.core import Instant, parse_instant
from gateway.service import Gateway
from gateway.store import Store
from gateway.store_periods import PeriodRecord
from gateway.store_resets import ResetRecord
from tests.daemon import Daemon, write_config
from tests.helpers import FakeClocks, until

DAY_S = 86400
CHANNEL = (
    "  - {id: e, unit: kWh, scale_factor: 0.5, demand_window: 2s, demand_slide: 1s,\n"
    "     source: {id: sim, rate: 0.001, mode: constant}LOCKOUT}\n"
)
OPERATOR = "bacnet:127.0.0.1:47900"


def at(text: str) -> Instant:
    return parse_instant(text)


def config(folder: Path, schedule: str, *, lockout: str = "", zone: str = "UTC") -> Path:
    path = write_config(folder, channels=CHANNEL.replace("LOCKOUT", lockout))
    text = path.read_text().replace(
        "gateway: {name: test-site, state_dir: state}",
        f"gateway: {{name: test-site, state_dir: state, timezone: {zone},"
        f" reset_schedule: {schedule}}}",
    )
    path.write_text(text)
    return path


def audit(folder: Path) -> tuple[list[ResetRecord], list[PeriodRecord]]:
    with Store.open_readonly(folder / "state" / "gateway.db") as store:
        return store.reset_log(), store.periods()


def gateway_at(path: Path, clocks: FakeClocks) -> Gateway:
    return Gateway(load_config(path, purpose="run"), timeline=Timeline(clocks.wall, clocks.mono))


async def counting(gateway: Gateway, clocks: FakeClocks, seconds: int, per_second: int) -> None:
    """``per_second`` pulses each second of the fake clock, ``seconds`` times."""
    await until(lambda: gateway.status.sources_up.get("sim", False), "source up")
    for _ in range(seconds):
        clocks.elapse(1)
        gateway.pulses("e", per_second)


@pytest.mark.asyncio
async def test_a_scheduled_reset_fires_at_its_instant_and_closes_a_period(tmp_path: Path) -> None:
    clocks = FakeClocks()  # 2026-01-01T00:00:00Z
    path = config(tmp_path, '{every: day, at: "00:00:10"}')
    gateway = gateway_at(path, clocks)
    await gateway.start()
    try:
        await counting(gateway, clocks, 9, 4)  # to 00:00:09, 2 kWh a second
        channel = gateway.engine.channels["e"]
        assert channel.reset_count == 0
        peak = channel.peak_demand
        assert peak > 0
        await counting(gateway, clocks, 2, 4)  # past 00:00:10
        assert channel.reset_count == 1
        assert channel.previous_peak_demand == peak
        assert channel.period_consumption == 4.0  # at 00:00:10 and :11, after the reset
        assert gateway.checksum_ok() == {"e": True}
    finally:
        await gateway.stop()
    resets, periods = audit(tmp_path)
    assert [(r.channel, r.time, r.source, r.accepted) for r in resets] == [
        ("e", at("2026-01-01T00:00:10Z"), "schedule", True)
    ]
    (period,) = periods
    assert (period.start, period.end) == (clocks_start(), at("2026-01-01T00:00:10Z"))
    assert period.consumption == 9 * 2.0  # 36 pulses of 0.5 kWh before the reset
    assert period.peak_demand == peak and period.source == "schedule"


def clocks_start() -> Instant:
    return FakeClocks().wall_us


@pytest.mark.asyncio
async def test_the_lockout_refuses_a_scheduled_reset_and_the_audit_says_so(
    tmp_path: Path,
) -> None:
    clocks = FakeClocks()
    path = config(tmp_path, '{every: day, at: "00:00:10"}', lockout=", reset_lockout: 1h")
    gateway = gateway_at(path, clocks)
    await gateway.start()
    try:
        await counting(gateway, clocks, 5, 4)
        assert gateway.reset("e", OPERATOR).accepted  # at 00:00:05
        await counting(gateway, clocks, 10, 4)
        assert gateway.engine.channels["e"].reset_count == 1
    finally:
        await gateway.stop()
    resets, periods = audit(tmp_path)
    assert [(r.time, r.source, r.accepted, r.reason) for r in resets] == [
        (at("2026-01-01T00:00:05Z"), OPERATOR, True, "accepted"),
        (at("2026-01-01T00:00:10Z"), "schedule", False, "lockout"),
    ]
    assert [p.source for p in periods] == [OPERATOR]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("down_until", "missed"),
    [
        ("2026-01-01T05:00:00Z", []),
        ("2026-01-01T07:00:00Z", ["2026-01-01T06:00:00Z"]),
        (
            "2026-01-03T07:00:00Z",
            ["2026-01-01T06:00:00Z", "2026-01-02T06:00:00Z", "2026-01-03T06:00:00Z"],
        ),
    ],
)
async def test_resets_missed_while_down_are_applied_once_at_their_own_instants(
    tmp_path: Path, down_until: str, missed: list[str]
) -> None:
    clocks = FakeClocks()
    path = config(tmp_path, '{every: day, at: "06:00"}')
    gateway = gateway_at(path, clocks)
    await gateway.start()
    try:
        await counting(gateway, clocks, 20, 4)  # 40 kWh
        peak = gateway.engine.channels["e"].peak_demand
    finally:
        await gateway.stop()
    clocks.elapse((at(down_until) - clocks.wall_us) / 1e6)
    for _ in range(2):  # a second start finds nothing more to apply
        gateway = gateway_at(path, clocks)
        await gateway.start()
        try:
            channel = gateway.engine.channels["e"]
            assert channel.reset_count == len(missed)
            assert gateway.checksum_ok() == {"e": True}
        finally:
            await gateway.stop()
        clocks.elapse(60)
    resets, periods = audit(tmp_path)
    assert [(r.time, r.source, r.accepted) for r in resets] == [
        (at(t), "schedule", True) for t in missed
    ]
    # the first period holds everything counted; the downtime's periods are empty
    expected = []
    start = clocks_start()
    for index, t in enumerate(missed):
        consumption, period_peak = (40.0, peak) if index == 0 else (0.0, None)
        expected.append((start, at(t), consumption, period_peak))
        start = at(t)
    assert [(p.start, p.end, p.consumption, p.peak_demand) for p in periods] == expected


def test_a_kill_right_after_the_start_up_resets_applies_none_twice(tmp_path: Path) -> None:
    """The real daemon: three daily instants missed, applied at start-up, then SIGKILL as soon
    as they are written; the next start finds them done and applies none again."""
    path = config(tmp_path, '{every: day, at: "06:00"}')
    clocks = FakeClocks()
    clocks.wall_us = int(time.time() * 1e6) - 3 * DAY_S * 1_000_000 - 60_000_000
    asyncio.run(_run_briefly(path, clocks))
    with Daemon(path) as daemon:
        applied = daemon.wait_for("missed_resets_applied")
        daemon.kill()
    assert applied["count"] == 3
    first, _ = audit(tmp_path)
    assert len(first) == 3 and all(r.source == "schedule" for r in first)
    with Daemon(path) as daemon:
        daemon.ready()
        assert not [line for line in daemon.seen if line.get("event") == "missed_resets_applied"]
        assert daemon.stop() == 0
    again, periods = audit(tmp_path)
    assert again == first
    assert [p.end for p in periods] == [r.time for r in first]


async def _run_briefly(path: Path, clocks: FakeClocks) -> None:
    gateway = gateway_at(path, clocks)
    await gateway.start()
    try:
        await counting(gateway, clocks, 3, 2)
    finally:
        await gateway.stop()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The gateway's /metrics over real HTTP, as (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.asyncio
async def test_metrics_show_the_periods_the_peak_time_and_the_next_reset(tmp_path: Path) -> None:
    clocks = FakeClocks()
    path = config(tmp_path, '{every: month, day: 1, at: "00:00:10"}')
    text = path.read_text().replace(
        "channels:\n",
        "channels:\n  - {id: n, unit: kWh, scale_factor: 1, demand_window: 2s, demand_slide: 1s,"
        " reset_schedule: none, source: {id: sim, rate: 0.001, mode: constant}}\n",
    )
    path.write_text(text)
    gateway = gateway_at(path, clocks)
    await gateway.start()
    try:
        await counting(gateway, clocks, 9, 4)
        peak_time = gateway.engine.channels["e"].peak_time
        assert peak_time is not None
        await counting(gateway, clocks, 3, 4)  # the reset at 00:00:10, then 3 seconds more
        port = gateway.metrics_port
        assert port is not None
        found = await asyncio.to_thread(scrape, port)
    finally:
        await gateway.stop()
    e, kwh = (("channel", "e"),), (("channel", "e"), ("unit", "kilowatt-hours"))
    assert found[("pulse_gateway_period_consumption", kwh)] == 6.0
    assert found[("pulse_gateway_previous_period_consumption", kwh)] == 18.0
    # the reset moved the peak: the new one was set after it
    assert found[("pulse_gateway_peak_demand_timestamp_seconds", e)] > peak_time / 1e6
    assert (
        found[("pulse_gateway_next_reset_timestamp_seconds", e)] == at("2026-02-01T00:00:10Z") / 1e6
    )
    n = (("channel", "n"),)
    assert ("pulse_gateway_next_reset_timestamp_seconds", n) not in found
