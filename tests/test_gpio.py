"""The GPIO source against a fake line request: edges, settings, lost and late events, failures."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.config_sources import GpioPoint
from gateway.sources import SourceError, build_sources
from gateway.sources.gpio import GpioSource, import_gpiod
from simulators.gpio_pulses import FakeGpiod, FakeLineRequest, press, pulse_train
from tests.test_modbus import RecordingSink, write_run_config

MS = 1_000  # config durations are microseconds
WAIT_S = 5.0


def points(**lines: dict[str, Any]) -> dict[str, GpioPoint]:
    return {
        channel: GpioPoint(
            "gpio0",
            spec["line"],
            spec.get("edge", "falling"),
            spec.get("debounce", 1 * MS),
        )
        for channel, spec in lines.items()
    }


async def until(condition: Any, timeout: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def running(source: GpioSource, sink: RecordingSink, gpiod: FakeGpiod) -> asyncio.Task[None]:
    task = asyncio.create_task(source.run(sink))
    await until(lambda: bool(gpiod.requests) and source.up)
    return task


@pytest.mark.asyncio
async def test_edges_are_read_through_the_loop_and_counted_per_channel() -> None:
    """Pulses on two lines arrive through add_reader on the request's fd, one pulse per edge."""
    gpiod = FakeGpiod()
    source = GpioSource(
        "gpio0", "/dev/gpiochip0", points(gas={"line": 17}, water={"line": 27}), gpiod=gpiod
    )
    sink = RecordingSink()
    task = await running(source, sink, gpiod)
    try:
        request = gpiod.requests[0]
        await asyncio.gather(
            pulse_train(request, 17, rate=200, count=40, width=0.002),
            pulse_train(request, 27, rate=100, count=25, width=0.002),
        )
        await until(lambda: sink.total("gas") == 40 and sink.total("water") == 25)
        assert sink.caught == {}
        assert source.edges == {"gas": 40, "water": 25} and source.lost_edges["gas"] == 0
        assert sink.events == [("up", {})]
    finally:
        task.cancel()


@pytest.mark.asyncio
async def test_both_edges_count_every_transition_for_three_wire_kyz() -> None:
    """edge: both counts each transition, so one closure and opening is two pulses."""
    gpiod = FakeGpiod()
    source = GpioSource(
        "gpio0", "/dev/gpiochip0", points(kyz={"line": 4, "edge": "both"}), gpiod=gpiod
    )
    sink = RecordingSink()
    task = await running(source, sink, gpiod)
    try:
        await pulse_train(gpiod.requests[0], 4, rate=100, count=10, width=0.003)
        await until(lambda: sink.total("kyz") == 20)
    finally:
        task.cancel()


def test_settings_built_from_the_config_with_a_stand_in_gpiod() -> None:
    """Edge, bias, active_low and debounce reach LineSettings; lines are inputs on MONOTONIC."""
    gpiod = FakeGpiod()
    point = GpioPoint("gpio0", 17, "rising", 20 * MS)
    source = GpioSource("gpio0", "/dev/gpiochip0", {"gas": point}, gpiod=gpiod)
    settings = source.settings[17]
    line = gpiod.line
    assert settings.direction == line.Direction.INPUT
    assert settings.edge_detection == line.Edge.RISING
    assert settings.bias == line.Bias.AS_IS and settings.active_low is False
    assert settings.debounce_period == timedelta(milliseconds=20)
    assert settings.event_clock == line.Clock.MONOTONIC


def test_settings_are_real_gpiod_line_settings_with_bias_and_active_low() -> None:
    """The real libgpiod LineSettings carries pull-up and active-low too (the test command
    installs the gpio extra, so this runs everywhere the suite does)."""
    import gpiod

    class Point:  # a point with the keys the config may add (bias, active_low)
        id, line, edge, debounce = "gpio0", 5, "both", 5 * MS
        bias, active_low = "pull_up", True

    source = GpioSource("gpio0", "/dev/gpiochip0", {"kyz": Point()}, gpiod=FakeGpiod(real=gpiod))  # type: ignore[dict-item]
    settings = source.settings[5]
    assert isinstance(settings, gpiod.LineSettings)
    assert settings.edge_detection == gpiod.line.Edge.BOTH
    assert settings.bias == gpiod.line.Bias.PULL_UP and settings.active_low is True
    assert settings.debounce_period == timedelta(milliseconds=5)
    assert settings.direction == gpiod.line.Direction.INPUT


@pytest.mark.asyncio
async def test_the_request_gets_the_settings_and_a_buffer_bigger_than_the_kernel_default() -> None:
    """request_lines receives each line's settings and an event buffer of at least 256."""
    gpiod = FakeGpiod()
    source = GpioSource("gpio0", "/dev/gpiochip0", points(gas={"line": 17}), gpiod=gpiod)
    task = await running(source, RecordingSink(), gpiod)
    try:
        request = gpiod.requests[0]
        assert request.settings == {17: source.settings[17]}
        assert request.capacity == 256
    finally:
        task.cancel()


def test_debounce_hides_contact_bounce_in_the_fake_kernel() -> None:
    """A bouncing reed contact gives one edge per pulse with debounce, several without."""
    counts = {}
    for debounce in (0, 5 * MS):
        gpiod = FakeGpiod()
        source = GpioSource(
            "gpio0", "/dev/gpiochip0", points(w={"line": 1, "debounce": debounce}), gpiod=gpiod
        )
        request = gpiod.request_lines("/dev/gpiochip0", config=dict(source.settings))
        for i in range(5):
            press(request, 1, i * 100_000_000, 50_000_000, bounce=3)
        request.settle(10**9)
        sink = RecordingSink()
        source.handle(request.read_edge_events(), sink, now_ns=10**9)
        counts[debounce] = sink.total("w")
    assert counts == {0: 35, 5 * MS: 5}  # 3 chatters per transition: 7 falling edges


def test_lost_events_are_found_from_seqno_gaps_and_counted_as_catch_up() -> None:
    """A burst over the kernel buffer loses the oldest edges; the gap arrives as catch-up."""
    gpiod = FakeGpiod()
    source = GpioSource(
        "gpio0", "/dev/gpiochip0", points(e={"line": 3}, g={"line": 4}), gpiod=gpiod
    )
    request = gpiod.request_lines(
        "/dev/gpiochip0", config=dict(source.settings), event_buffer_size=16
    )
    for i in range(20):  # 20 pulses = 20 falling edges on line 3 into a 16-event buffer
        press(request, 3, i * 10_000_000, 5_000_000)
    press(request, 4, 300_000_000, 5_000_000)
    request.settle(10**9)
    sink = RecordingSink()
    source.handle(request.read_edge_events(), sink, now_ns=10**9)
    assert request.discarded == 5
    assert source.lost_edges == {"e": 5, "g": 0}
    assert sink.events == [("down", {}), ("up", {"e": 5})]
    assert sink.timed == {"e": 15, "g": 1}
    assert sink.total("e") == 20


def test_events_read_too_late_are_catch_up_not_timed_pulses() -> None:
    """An edge stamped seconds before it is read (a stalled loop) fills no demand window."""
    gpiod = FakeGpiod()
    source = GpioSource(
        "gpio0", "/dev/gpiochip0", points(e={"line": 3, "debounce": 0}), gpiod=gpiod
    )
    request = gpiod.request_lines("/dev/gpiochip0", config=dict(source.settings))
    press(request, 3, 0, 1_000_000)
    press(request, 3, 3_000_000_000, 1_000_000)
    request.settle(4 * 10**9)
    sink = RecordingSink()
    source.handle(request.read_edge_events(), sink, now_ns=3_500_000_000)
    assert source.late_edges == {"e": 1}
    assert sink.caught == {"e": 1} and sink.timed == {"e": 1}


@pytest.mark.asyncio
async def test_a_failed_read_takes_the_source_down_and_it_requests_the_lines_again() -> None:
    """The chip going away is an outage; a new request brings the source up, seqnos anew."""
    gpiod = FakeGpiod()
    source = GpioSource(
        "gpio0", "/dev/gpiochip0", points(e={"line": 3, "debounce": 0}), gpiod=gpiod
    )
    sink = RecordingSink()
    task = await running(source, sink, gpiod)
    try:
        gpiod.requests[0].fail(OSError(19, "No such device"))
        await until(lambda: len(gpiod.requests) == 2 and source.up, timeout=WAIT_S)
        assert gpiod.requests[0].released
        assert [kind for kind, _ in sink.events] == ["up", "down", "up"]
        await pulse_train(gpiod.requests[1], 3, rate=200, count=5, width=0.002)
        await until(lambda: sink.total("e") == 5)
        assert source.lost_edges == {"e": 0}  # the new request's seqnos restart at 1
    finally:
        task.cancel()


@pytest.mark.asyncio
async def test_a_missing_chip_is_an_outage_retried_not_a_crash() -> None:
    """request_lines failing (no such chip) marks the source down once and keeps retrying."""
    gpiod = FakeGpiod(chips=())
    source = GpioSource("gpio0", "/dev/gpiochip9", points(e={"line": 3}), gpiod=gpiod)
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        await until(lambda: source.up is False)
        await asyncio.sleep(0.1)
        assert sink.events == [("down", {})] and not task.done()
    finally:
        task.cancel()


def test_without_gpiod_installed_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No libgpiod bindings: a SourceError naming the gpio extra, not an ImportError."""
    monkeypatch.setitem(sys.modules, "gpiod", None)
    with pytest.raises(SourceError, match=r"pip install 'pulse-gateway\[gpio\]'"):
        import_gpiod()
    with pytest.raises(SourceError, match="gpio extra"):
        GpioSource("gpio0", "/dev/gpiochip0", points(e={"line": 3}))


def test_the_fake_request_is_a_context_manager_with_a_readable_fd() -> None:
    """The fake exposes fd and fileno() like gpiod.LineRequest and releases on exit."""
    with FakeLineRequest("/dev/gpiochip0", {}, None) as request:
        assert request.fd == request.fileno()
    assert request.released


def test_build_sources_refuses_a_gpio_source_without_gpiod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config with a gpio source on a machine without libgpiod fails with the install hint."""
    monkeypatch.setitem(sys.modules, "gpiod", None)
    config = load_config(
        write_run_config(
            tmp_path,
            "  - {id: gpio0, type: gpio, chip: /dev/gpiochip0}\n",
            "  - {id: w, unit: us_gallons, scale_factor: 1, demand_window: 1min,\n"
            "     demand_slide: 1min, source: {id: gpio0, line: 17, edge: falling}}\n",
        ),
        purpose="run",
    )
    with pytest.raises(SourceError, match="gpio extra"):
        build_sources(config, {})
