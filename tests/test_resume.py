"""Resuming after downtime: the saved Modbus baseline is bounded by how long the gateway was
down, and a channel configured again on reload continues where it stopped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.clock import Timeline
from gateway.config import load_config
from gateway.service import Gateway
from gateway.store import Store
from simulators.modbus_counter import CounterLayout, running
from tests.daemon import free_port, write_config
from tests.helpers import FakeClocks, until


def modbus_config(folder: Path, port: int) -> Path:
    """One counter read every 100 ms, plausible up to 5 pulses/s."""
    path = folder / "gateway.yaml"
    path.write_text(
        "gateway: {name: resume, state_dir: state}\n"
        f"bacnet: {{address: 127.0.0.1/8, port: {free_port()}, device_instance: 1001,"
        " device_name: R}\n"
        "sources:\n"
        f"  - {{id: mb, type: modbus-tcp, host: 127.0.0.1, port: {port},"
        " poll_interval: 100ms, timeout: 200ms}\n"
        "channels:\n"
        "  - {id: e, unit: kWh, scale_factor: 1, demand_window: 2s, demand_slide: 1s,\n"
        "     source: {id: mb, table: holding, address: 0, type: u32, max_rate: 5}}\n"
    )
    return path


async def restart_after(
    path: Path, clocks: FakeClocks, down_s: float, counted_meanwhile: int
) -> tuple[int, int]:
    """Count 2 pulses, stop, let the device count ``counted_meanwhile`` more while the
    gateway is down for ``down_s`` seconds of its clock, start again: the channel's
    pulses_total and the glitches seen after the restart."""
    layout = CounterLayout(channels=1, rates=(0.0,), initial=1000)
    async with running(layout) as simulator:
        module = simulator.modules[0]
        config = load_config(modbus_config(path, module.port), purpose="run")
        gateway = Gateway(config, timeline=Timeline(clocks.wall, clocks.mono))
        await gateway.start()
        try:
            await until(lambda: gateway.status.sources_up.get("mb", False), "source up")
            module.model.pulse(0, 2)  # within max_rate for one poll
            await until(lambda: gateway.engine.channels["e"].pulses_total == 2, "2 pulses")
        finally:
            await gateway.stop()
        clocks.elapse(down_s)
        module.model.pulse(0, counted_meanwhile)
        gateway = Gateway(config, timeline=Timeline(clocks.wall, clocks.mono))
        await gateway.start()
        try:
            await until(lambda: gateway.status.sources_up.get("mb", False), "source up again")
            await asyncio.sleep(0.5)  # a few more polls: nothing else may arrive
            glitches = gateway.source_counters()["glitches"]["e"]
            return gateway.engine.channels["e"].pulses_total, glitches
        finally:
            await gateway.stop()


@pytest.mark.asyncio
async def test_counts_made_while_down_are_caught_up_when_the_rate_allows_them(
    tmp_path: Path,
) -> None:
    """60 s down, 120 pulses counted by the device (2/s, max_rate 5/s): all caught up."""
    total, glitches = await restart_after(tmp_path, FakeClocks(), 60, 120)
    assert (total, glitches) == (122, 0)


@pytest.mark.asyncio
async def test_a_jump_larger_than_max_rate_allows_in_the_downtime_is_a_glitch(
    tmp_path: Path,
) -> None:
    """10 s down, yet the register moved by 5,000 (500/s against max_rate 5/s): a device
    swapped or a register misread, not pulses. Nothing is caught up and a glitch is counted,
    where a saved baseline of unknown age would have taken all 5,000 as consumption."""
    total, glitches = await restart_after(tmp_path, FakeClocks(), 10, 5000)
    assert (total, glitches) == (2, 1)


@pytest.mark.asyncio
async def test_a_channel_removed_and_configured_again_on_reload_continues(
    tmp_path: Path,
) -> None:
    """Removed by one reload and put back by the next, a channel resumes its saved counts,
    resets and checksum instead of starting from zero (which would break the checksum)."""
    channels = (
        "  - {id: e, unit: kWh, scale_factor: 1, demand_window: 2s, demand_slide: 1s,\n"
        "     source: {id: sim, rate: 0.001, mode: constant}}\n"
    )
    other = channels.replace("id: e,", "id: f,")
    path = write_config(tmp_path, channels=channels + other)
    clocks = FakeClocks()
    gateway = Gateway(load_config(path, purpose="run"), timeline=Timeline(clocks.wall, clocks.mono))
    await gateway.start()
    try:
        await until(lambda: gateway.status.sources_up.get("sim", False), "source up")
        for _ in range(6):
            clocks.elapse(0.5)
            gateway.pulses("e", 10)
        assert gateway.reset("e", "bacnet:127.0.0.1:47900").accepted
        before = gateway.engine.channels["e"].state()
        full = path.read_text()
        path.write_text(full.replace(channels, ""))
        assert await gateway.reload()
        assert list(gateway.engine.channels) == ["f"]
        clocks.elapse(5)
        path.write_text(full)
        assert await gateway.reload()
        back = gateway.engine.channels["e"]
        assert back.pulses_total == before.pulses_total and back.reset_count == 1
        assert back.cumulative_demand == before.cumulative_demand
        await until(lambda: back.is_online, "e online again")
        assert gateway.reset("e", "bacnet:127.0.0.1:47900").accepted
        assert gateway.checksum_ok() == {"e": True, "f": True}
    finally:
        await gateway.stop()
    with Store.open_readonly(tmp_path / "state" / "gateway.db") as store:
        assert all(verdict.status == "ok" for verdict in store.verdict())
