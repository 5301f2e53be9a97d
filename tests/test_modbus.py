"""The Modbus source against the real pymodbus simulator on 127.0.0.1: exact counts through
wraps, resets and every fault, decoding, pacing, coalescing and resume from saved baselines."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from gateway.config import load_config
from gateway.config_sources import ModbusPoint
from gateway.service import Gateway
from gateway.sources import SourceError, build_sources
from gateway.sources.modbus import ChannelDelta, Endpoint, ModbusSource, plan_reads
from simulators.modbus_counter import CounterLayout, CounterModule, running
from tests.daemon import free_port

WAIT_S = 10.0
FAST = {"poll_interval": 0.1, "timeout": 0.25, "backoff_max": 0.3, "min_request_gap": 0.005}


class RecordingSink:
    """Our PulseSink, recording: timed pulses, catch-up and up/down transitions."""

    def __init__(self) -> None:
        self.timed: dict[str, int] = {}
        self.caught: dict[str, int] = {}
        self.events: list[tuple[str, dict[str, int]]] = []

    def pulses(self, channel: str, count: int) -> None:
        assert count > 0, "a source reports only positive counts"
        self.timed[channel] = self.timed.get(channel, 0) + count

    def source_down(self, source: str) -> None:
        self.events.append(("down", {}))

    def source_up(self, source: str, catch_up: Mapping[str, int]) -> None:
        assert all(count > 0 for count in catch_up.values())
        self.events.append(("up", dict(catch_up)))
        for channel, count in catch_up.items():
            self.caught[channel] = self.caught.get(channel, 0) + count

    def total(self, channel: str) -> int:
        return self.timed.get(channel, 0) + self.caught.get(channel, 0)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def counter_points(layout: CounterLayout, **changes: Any) -> dict[str, ModbusPoint]:
    """One point per simulated channel, named c0, c1..."""
    return {
        f"c{i}": replace(
            ModbusPoint("mb", "holding", layout.address(i), layout.type, layout.word_order),  # type: ignore[arg-type]
            rollover=layout.rollover,
            **changes,
        )
        for i in range(layout.channels)
    }


async def until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@dataclass
class Rig:
    """A simulated module, a source polling it, and the sink it reports to."""

    module: CounterModule
    source: ModbusSource
    sink: RecordingSink

    async def polls(self, count: int = 2) -> None:
        """Wait until the device has answered ``count`` more polls."""
        target = self.module.request_count + count * len(self.source.blocks)
        await until(lambda: self.module.request_count >= target)

    async def up(self) -> None:
        await until(lambda: self.source.up is True)

    async def down(self) -> None:
        await until(lambda: self.source.up is False)

    def truth(self, channel: int) -> int:
        self.module.model.advance()
        return self.module.model.truth[channel]


@contextlib.asynccontextmanager
async def rig(
    layout: CounterLayout | None = None,
    points: dict[str, ModbusPoint] | None = None,
    **options: Any,
) -> AsyncIterator[Rig]:
    """Start a module (rates 0 unless given) and a source on it; checks it stayed read-only."""
    layout = layout or CounterLayout(channels=2, rates=(0.0,))
    async with running(layout) as simulator:
        module = simulator.modules[0]
        endpoint = Endpoint("127.0.0.1", module.port, rtu=layout.framer == "rtu")
        source = ModbusSource(
            "mb", endpoint, points or counter_points(layout), **{**FAST, **options}
        )
        sink = RecordingSink()
        task = asyncio.create_task(source.run(sink))
        try:
            yield Rig(module, source, sink)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert module.writes == 0  # a second master never writes (docs/design/sources.md)


@pytest.mark.asyncio
async def test_totals_equal_the_simulator_count_through_many_wraps() -> None:
    """Counters wrapping at 1000 every ~2 s: the pulses reported equal the pulses emitted."""
    layout = CounterLayout(channels=3, rollover=1000, rates=(0.0,))
    async with rig(layout, max_rate=1000) as r:
        await r.up()
        for channel, rate in enumerate((800.0, 300.0, 7.0)):
            r.module.model.set_rate(channel, rate)
        await asyncio.sleep(3.0)
        for channel in range(3):
            r.module.model.set_rate(channel, 0)
        await r.polls(2)
        assert r.truth(0) > 2 * layout.modulus  # it did wrap, more than once
        assert [r.sink.total(f"c{i}") for i in range(3)] == [r.truth(i) for i in range(3)]
        assert r.sink.caught == {} and r.source.glitches == {"c0": 0, "c1": 0, "c2": 0}


@pytest.mark.parametrize(
    ("kind", "order", "initial"),
    [
        ("u16", "big", 65_530),
        ("u32", "big", 70_000),
        ("u32", "little", 70_000),
        ("u64", "big", 2**40 + 5),
        ("u64", "little", 2**40 + 5),
        ("i32", "big", 2**31 - 4),
        ("i32", "little", 2**31 - 4),
    ],
)
@pytest.mark.asyncio
async def test_integer_types_and_word_orders_decode_and_wrap(
    kind: str, order: str, initial: int
) -> None:
    """Each integer type in each word order decodes to the simulator's value and wraps right."""
    layout = CounterLayout(channels=2, type=kind, word_order=order, initial=initial, rates=(0.0,))  # type: ignore[arg-type]
    async with rig(layout) as r:
        await r.up()
        assert r.source.baselines()["c1"] == r.module.model.value(1)
        r.module.model.pulse(1, 9)  # u16 and i32 cross their wrap here
        await until(lambda: r.sink.total("c1") == 9)
        assert r.source.baselines()["c1"] == r.module.model.value(1)
        assert r.sink.total("c0") == 0 and r.source.glitches["c1"] == 0


@pytest.mark.parametrize(
    ("kind", "order"), [("f32", "big"), ("f32", "little"), ("f64", "big"), ("f64", "little")]
)
@pytest.mark.asyncio
async def test_float_totals_decode_and_give_pulses_per_count(kind: str, order: str) -> None:
    """A kWh total (0.5 per pulse) read as f32/f64 with 2 pulses per count gives every pulse."""
    layout = CounterLayout(
        channels=1,
        type=kind,
        word_order=order,
        scale=0.5,
        initial=123_457,
        rates=(0.0,),  # type: ignore[arg-type]
    )
    points = counter_points(layout, kind="total", pulses_per_count=2.0)
    async with rig(layout, points) as r:
        await r.up()
        assert r.source.baselines()["c0"] == 61_728.5
        r.module.model.pulse(0, 11)
        await until(lambda: r.sink.total("c0") == 11)


@pytest.mark.asyncio
async def test_rtu_framing_over_tcp_counts_exactly() -> None:
    """The same counts through RTU frames (CRC, no transaction id) over a TCP socket."""
    layout = CounterLayout(channels=4, framer="rtu", rates=(0.0,), unit_id=7)
    async with rig(layout, unit_id=7) as r:
        await r.up()
        r.module.model.set_rate(2, 80.0)
        await asyncio.sleep(1.0)
        r.module.model.set_rate(2, 0)
        await r.polls(2)
        assert r.sink.total("c2") == r.truth(2) > 0
        assert r.source.min_request_gap == FAST["min_request_gap"]


FAULTS: dict[str, tuple[Callable[[CounterModule], Any], Callable[[CounterModule], Any]]] = {
    "no answer": (
        lambda m: setattr(m.proxy, "mute", True),
        lambda m: setattr(m.proxy, "mute", False),
    ),
    "exception response": (
        lambda m: setattr(m, "exception", 6),
        lambda m: setattr(m, "exception", None),
    ),
    "slow replies beyond the timeout": (
        lambda m: setattr(m.proxy, "delay", 0.6),
        lambda m: setattr(m.proxy, "delay", 0.0),
    ),
    "connection refused": (lambda m: m.proxy.down(), lambda m: m.proxy.up()),
    "dropped connections": (
        lambda m: (m.proxy.drop(), setattr(m.proxy, "limit", 0)),
        lambda m: setattr(m.proxy, "limit", None),
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.asyncio
async def test_a_fault_is_one_outage_and_its_pulses_arrive_as_exact_catch_up(fault: str) -> None:
    """Down once; the pulses made during the fault come back as catch-up; nothing is lost."""
    start, stop = FAULTS[fault]
    async with rig() as r:
        await r.up()
        r.module.model.pulse(0, 5)
        await until(lambda: r.sink.timed.get("c0") == 5)
        result = start(r.module)
        if asyncio.iscoroutine(result):
            await result
        await r.down()
        r.module.model.pulse(0, 7)
        r.module.model.pulse(1, 2)
        await asyncio.sleep(0.5)  # some reconnect attempts with backoff
        result = stop(r.module)
        if asyncio.iscoroutine(result):
            await result
        await r.up()
        r.module.model.pulse(0, 3)
        await until(lambda: r.sink.total("c0") == 15)
        assert r.sink.kinds() == ["up", "down", "up"]
        assert r.sink.events[2] == ("up", {"c0": 7, "c1": 2})
        assert r.sink.timed == {"c0": 8}
        assert r.module.proxy.peak == 1  # one connection at a time, through every reconnect


@pytest.mark.asyncio
async def test_slow_replies_within_the_timeout_are_no_outage() -> None:
    """A device answering slowly but in time keeps the source up and every count."""
    async with rig(timeout=0.5) as r:
        await r.up()
        r.module.proxy.delay = 0.15
        r.module.model.set_rate(0, 40.0)
        await asyncio.sleep(1.0)
        r.module.model.set_rate(0, 0)
        await r.polls(2)
        assert r.sink.kinds() == ["up"]
        assert r.sink.total("c0") == r.truth(0) > 0


@pytest.mark.asyncio
async def test_a_connection_limit_held_by_another_master_is_an_outage_until_freed() -> None:
    """With the device's only slot taken, the source waits (refused) and recovers the counts."""
    async with rig() as r:
        await r.up()
        r.module.proxy.limit = 1
        r.module.proxy.drop()
        other = AsyncModbusTcpClient("127.0.0.1", port=r.module.port, reconnect_delay=0)
        try:
            assert await other.connect()
            await r.down()
            r.module.model.pulse(1, 4)
            await until(lambda: r.module.proxy.refused >= 2)
        finally:
            other.close()
        await r.up()
        assert r.sink.events[-1] == ("up", {"c1": 4})


@pytest.mark.asyncio
async def test_with_the_oldest_eviction_policy_both_masters_keep_counting() -> None:
    """A device that evicts its oldest connection bounces masters; counts still come out exact."""
    async with rig() as r:
        await r.up()
        r.module.proxy.limit, r.module.proxy.policy = 1, "oldest"
        r.module.model.set_rate(0, 30.0)
        other = AsyncModbusTcpClient("127.0.0.1", port=r.module.port, reconnect_delay=0)
        try:
            assert await other.connect()  # evicts the source's connection
            await r.down()
        finally:
            other.close()
        await r.up()
        r.module.model.set_rate(0, 0)
        await r.polls(2)
        assert r.sink.total("c0") == r.truth(0)


@pytest.mark.asyncio
async def test_a_counter_reset_is_a_glitch_then_a_resync_never_a_negative_or_a_wrap() -> None:
    """A device reset (to 0) reports no pulses, counts one glitch, and resyncs to the new value."""
    async with rig() as r:
        await r.up()
        r.module.model.pulse(0, 100)
        await until(lambda: r.sink.total("c0") == 100)
        r.module.model.reset(0)
        await until(lambda: r.source.glitches["c0"] == 1)
        await r.polls(2)
        assert r.source.baselines()["c0"] == 0
        r.module.model.pulse(0, 5)
        await until(lambda: r.sink.total("c0") == 105)
        assert r.sink.kinds() == ["up"] and r.source.glitches == {"c0": 1, "c1": 0}


@pytest.mark.asyncio
async def test_no_burst_after_an_outage_requests_stay_paced() -> None:
    """After an outage the source polls on its grid again, never back to back."""
    layout = CounterLayout(channels=3, stride=3, rates=(0.0,))  # gaps invalid: 3 reads a poll
    async with rig(layout, min_request_gap=0.04, retries=0) as r:
        await r.up()
        r.module.proxy.mute = True
        await r.down()
        await asyncio.sleep(1.0)
        r.module.proxy.mute = False
        await r.up()
        recovered = r.module.requests[-1].at
        await asyncio.sleep(1.0)
        times = [request.at for request in r.module.requests]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert min(gaps) >= 0.04 * 0.8  # the device's view: never closer than min_request_gap
        after = [t for t in times if recovered < t <= recovered + 1.0]
        assert len(after) <= (1.0 / 0.1 + 2) * len(r.source.blocks)  # no make-up polls


@pytest.mark.asyncio
async def test_contiguous_points_are_read_in_the_fewest_requests() -> None:
    """70 u32 counters (140 registers) take two reads a poll: the 125-register limit."""
    layout = CounterLayout(channels=70, rates=(0.0,))
    async with rig(layout) as r:
        await r.up()
        await r.polls(1)
        last = list(r.module.requests)[-2:]
        assert sorted((q.address, q.count) for q in last) == [(0, 124), (124, 16)]
        assert len(r.source.blocks) == 2


@pytest.mark.asyncio
async def test_a_merged_read_refused_for_its_holes_is_split_for_good() -> None:
    """Exception 2 on a read spanning invalid gaps splits it; the points still count."""
    layout = CounterLayout(channels=4, stride=4, rates=(0.0,))  # registers 2-3 of 4 invalid
    async with rig(layout) as r:
        await r.up()
        assert [(b.address, b.count) for b in r.source.blocks] == [(0, 2), (4, 2), (8, 2), (12, 2)]
        r.module.model.pulse(3, 6)
        await until(lambda: r.sink.total("c3") == 6)
        assert r.sink.kinds() == ["up"]


def test_planning_merges_nearby_points_per_table_only() -> None:
    """Small gaps are read through, tables never mix, far points get their own read."""
    pts = {
        "a": ModbusPoint("mb", "input", 0, "u32"),
        "b": ModbusPoint("mb", "input", 6, "u16"),
        "c": ModbusPoint("mb", "holding", 2, "u32"),
        "d": ModbusPoint("mb", "input", 200, "u64"),
    }
    blocks = plan_reads(pts, max_gap=8)
    assert [(b.table, b.address, b.count) for b in blocks] == [
        ("holding", 2, 2),
        ("input", 0, 7),
        ("input", 200, 4),
    ]
    assert [b.contiguous for b in blocks] == [True, False, True]
    assert len(plan_reads(pts, max_gap=0)) == 4


@pytest.mark.asyncio
async def test_saved_baselines_turn_counts_made_while_down_into_catch_up() -> None:
    """A new source with the old one's baselines reports the device's counts meanwhile."""
    layout = CounterLayout(channels=2, rates=(0.0,), initial=1000)
    async with running(layout) as simulator:
        module = simulator.modules[0]
        endpoint = Endpoint("127.0.0.1", module.port)
        first = ModbusSource("mb", endpoint, counter_points(layout), **FAST)
        sink = RecordingSink()
        task = asyncio.create_task(first.run(sink))
        await until(lambda: first.up is True)
        module.model.pulse(0, 10)
        await until(lambda: sink.total("c0") == 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        saved = first.baselines()
        assert saved == {"c0": 1010, "c1": 1000}
        module.model.pulse(0, 42)  # counted by the device while the gateway was down
        module.model.reset(1)  # and one counter lost power meanwhile
        again = ModbusSource("mb", endpoint, counter_points(layout), baselines=saved, **FAST)
        resumed = RecordingSink()
        task = asyncio.create_task(again.run(resumed))
        try:
            await until(lambda: again.up is True)
            assert resumed.events == [("up", {"c0": 42})]
            assert again.glitches == {"c0": 0, "c1": 1}  # backwards at resume: a reset
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_without_a_baseline_the_first_reading_only_sets_it() -> None:
    """Counts a device had before the gateway existed are not the channel's pulses."""
    layout = CounterLayout(channels=1, rates=(0.0,), initial=987_654)
    async with rig(layout) as r:
        await r.up()
        await r.polls(2)
        assert r.sink.events == [("up", {})] and r.sink.timed == {}


POINT = ModbusPoint("mb", "holding", 0, "u32")


def test_a_transient_spike_is_a_glitch_and_loses_nothing() -> None:
    """One absurd reading between two good ones: no pulses for it, and none lost after it."""
    delta = ChannelDelta("mb", "e", POINT, max_rate=100)
    assert delta.update(1000, 0.0) == 0
    assert delta.update(1010, 1.0) == 10
    assert delta.update(3_000_000_000, 2.0) == 0  # a bit flip
    assert delta.update(1030, 3.0) == 20
    assert delta.glitches == 1 and delta.baseline() == 1030


def test_a_jump_beyond_max_rate_is_a_glitch_and_a_wrap_within_it_is_counted() -> None:
    """Delta mod 2^32 is taken when the rate allows it; a bigger jump resyncs after confirming."""
    delta = ChannelDelta("mb", "e", POINT, max_rate=100, slack=0.0)
    delta.update(2**32 - 50, 0.0)
    assert delta.update(30, 1.0) == 80  # wrapped
    assert delta.update(530, 2.0) == 0  # 500 in 1 s: more than 100/s
    assert delta.update(560, 3.0) == 30  # agrees with the jump: resynced there
    assert delta.glitches == 1


def test_a_total_going_backwards_is_a_glitch_never_negative() -> None:
    """A meter total that decreases (meter replaced) gives no pulses and resyncs."""
    point = ModbusPoint("mb", "input", 0, "f32", kind="total", pulses_per_count=10.0)
    delta = ChannelDelta("mb", "e", point)
    delta.update(500.0, 0.0)
    assert delta.update(12.5, 1.0) == 0
    assert delta.update(13.0, 2.0) == 5
    assert delta.update(math.nan, 3.0) == 0
    assert delta.glitches == 2


def test_fractions_of_a_pulse_are_carried_and_kept_in_the_baseline() -> None:
    """0.3 pulses per count: 10 counts are 3 pulses, the rest waits; the baseline says so."""
    point = ModbusPoint("mb", "holding", 0, "u32", pulses_per_count=0.3)
    delta = ChannelDelta("mb", "e", point)
    delta.update(100, 0.0)
    assert delta.update(105, 1.0) == 1  # 1.5 pulses: 1 now, 0.5 carried
    assert delta.update(110, 2.0) == 2  # 1.5 + 0.5
    assert delta.baseline() == 110
    assert delta.update(111, 3.0) == 0
    assert delta.baseline() == pytest.approx(110)


def test_a_saved_baseline_of_known_age_bounds_the_catch_up() -> None:
    """With the baseline's age known, a resume jump beyond max_rate is a glitch."""
    delta = ChannelDelta("mb", "e", POINT, max_rate=10, slack=0.0, baseline=100, baseline_time=0.0)
    assert delta.update(100_000, 60.0) == 0  # 99,900 counts in a minute at <= 10/s: no
    assert delta.update(100_010, 61.0) == 10


@pytest.mark.asyncio
async def test_the_gateway_counts_every_pulse_and_makes_no_peak_from_an_outage(
    tmp_path: Path,
) -> None:
    """End to end: service + source + simulator; exact total, the outage's pulses in no window."""
    layout = CounterLayout(channels=1, rates=(0.0,))
    async with running(layout) as simulator:
        module = simulator.modules[0]
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(
            "gateway: {name: e2e, state_dir: state}\n"
            f"bacnet: {{address: 127.0.0.1/8, port: {free_port()}, device_instance: 1001,"
            " device_name: E2E}\n"
            "sources:\n"
            f"  - {{id: mb, type: modbus-tcp, host: 127.0.0.1, port: {module.port},"
            " poll_interval: 100ms, timeout: 200ms}\n"
            "channels:\n"
            "  - {id: e, unit: kWh, scale_factor: 1, demand_window: 2s, demand_slide: 1s,\n"
            "     source: {id: mb, table: holding, address: 0, type: u32}}\n"
        )
        gateway = Gateway(load_config(config_file, purpose="run"))
        await gateway.start()
        try:
            await until(lambda: gateway.status.sources_up.get("mb", False))
            module.model.set_rate(0, 20.0)  # a steady 20 pulses/s = 72,000 kW
            await asyncio.sleep(3.0)
            module.proxy.mute = True
            await until(lambda: not gateway.status.sources_up["mb"])
            await asyncio.sleep(2.0)  # ~40 pulses pile up in the device
            module.proxy.mute = False
            await until(lambda: gateway.status.sources_up["mb"])
            await asyncio.sleep(2.5)
            module.model.set_rate(0, 0)
            await asyncio.sleep(0.5)
            assert gateway.engine is not None
            channel = gateway.engine.channels["e"]
            module.model.advance()
            assert channel.pulses_total == module.model.truth[0]
            # timed, the catch-up would have put ~80 pulses in one 2 s window: 144,000 kW
            assert 0 < channel.peak_demand <= 72_000 * 1.25
        finally:
            await gateway.stop()


def write_run_config(folder: Path, sources: str, channels: str) -> Path:
    path = folder / "gateway.yaml"
    path.write_text(
        "gateway: {name: t, state_dir: state}\n"
        f"bacnet: {{address: 127.0.0.1/8, port: {free_port()}, device_instance: 1001,"
        " device_name: T}\n"
        f"sources:\n{sources}channels:\n{channels}"
    )
    return path


def test_build_sources_makes_modbus_sources_with_their_saved_baselines(tmp_path: Path) -> None:
    """modbus-tcp config becomes a ModbusSource with its settings and the channel's baseline."""
    config = load_config(
        write_run_config(
            tmp_path,
            "  - {id: adam, type: modbus-tcp, host: 127.0.0.1, port: 1502, unit_id: 3,"
            " poll_interval: 2s, timeout: 300ms}\n",
            "  - {id: e, unit: kWh, scale_factor: 1, demand_window: 1min, demand_slide: 1min,\n"
            "     source: {id: adam, table: input, address: 4, type: u32, word_order: little}}\n",
        ),
        purpose="run",
    )
    (source,) = build_sources(config, {"e": 4242, "gone": 7})
    assert isinstance(source, ModbusSource)
    assert (source.endpoint, source.unit_id) == (Endpoint("127.0.0.1", 1502), 3)
    assert (source.poll_interval, source.timeout, source.retries) == (2.0, 0.3, 1)
    assert source.min_request_gap == 0.02 and source.baselines() == {"e": 4242}
    assert [(b.table, b.address, b.count) for b in source.blocks] == [("input", 4, 2)]


def test_modbus_sources_poll_at_phases_spread_over_their_interval(tmp_path: Path) -> None:
    """Four Modbus sources with channels poll a quarter of their interval apart, in config
    order; a source without channels takes no turn."""
    config = load_config(
        write_run_config(
            tmp_path,
            "".join(
                f"  - {{id: m{k}, type: modbus-tcp, host: 127.0.0.1, port: {1502 + k}}}\n"
                for k in range(5)
            ),
            "".join(
                f"  - {{id: e{k}, unit: kWh, scale_factor: 1, demand_window: 1min,"
                f" demand_slide: 1min,"
                f" source: {{id: m{k}, table: input, address: 0, type: u32}}}}\n"
                for k in (0, 1, 3, 4)  # m2 has none
            ),
        ),
        purpose="run",
    )
    sources = build_sources(config, {})
    assert [(s.id, s.phase) for s in sources if isinstance(s, ModbusSource)] == [
        ("m0", 0.0),
        ("m1", 0.25),
        ("m3", 0.5),
        ("m4", 0.75),
    ]


@given(
    phase=st.floats(0.0, 0.999),
    interval=st.sampled_from([0.1, 1.0, 2.5, 60.0]),
    after=st.floats(0.0, 1e6),
)
def test_the_next_slot_is_on_the_sources_grid_within_one_interval(
    phase: float, interval: float, after: float
) -> None:
    """Whenever a poll ends, the next one is due within one interval, at the source's phase."""
    source = ModbusSource("m", Endpoint("127.0.0.1", 1502), {}, poll_interval=interval, phase=phase)
    due = source.next_slot(after)
    assert after < due <= after + interval * (1 + 1e-9)
    offset = (due - phase * interval) % interval
    assert min(offset, interval - offset) < 1e-6 * max(1.0, due)


@pytest.mark.asyncio
async def test_two_sources_at_opposite_phases_take_turns() -> None:
    """Two sources polling one device every 0.2 s, at phases 0 and 0.5: the device sees their
    requests alternate, about 0.1 s apart, not in pairs."""
    layout = CounterLayout(channels=1, rates=(0.0,))
    async with running(layout) as simulator:
        module = simulator.modules[0]
        endpoint = Endpoint("127.0.0.1", module.port)
        options = {**FAST, "poll_interval": 0.2}
        sources = [
            ModbusSource(f"m{k}", endpoint, counter_points(layout), phase=k / 2, **options)
            for k in range(2)
        ]
        tasks = [asyncio.create_task(s.run(RecordingSink())) for s in sources]
        try:
            await asyncio.sleep(0.3)  # both up, on their grids
            first = len(module.requests)
            await asyncio.sleep(1.0)
            times = [q.at for q in list(module.requests)[first:]]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(times) >= 8
    assert min(gaps) > 0.05  # never two polls together: each is a half interval from the next


def test_modbus_rtu_without_pyserial_is_a_clear_source_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serial line needs pyserial; without it the error says what to install."""
    monkeypatch.setitem(sys.modules, "serial", None)
    config = load_config(
        write_run_config(
            tmp_path,
            "  - {id: bus, type: modbus-rtu, device: /dev/ttyUSB0, baudrate: 9600}\n",
            "  - {id: e, unit: kWh, scale_factor: 1, demand_window: 1min, demand_slide: 1min,\n"
            "     source: {id: bus, table: holding, address: 0, type: u16}}\n",
        ),
        purpose="run",
    )
    with pytest.raises(SourceError, match=r"pip install 'pymodbus\[serial\]'"):
        build_sources(config, {})
