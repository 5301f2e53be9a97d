"""The service with injected clocks: clock steps and downtime become outages, never false peaks."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from gateway.clock import Timeline
from gateway.config import Config, load_config
from gateway.service import Gateway
from gateway.store import Store
from tests.daemon import write_config
from tests.helpers import FakeClocks

CHANNELS = (
    "  - {id: e, unit: kWh, scale_factor: 1, demand_window: 2s, demand_slide: 1s,\n"
    "     source: {id: sim, rate: 0.001, mode: constant}}\n"
)


async def started(tmp_path: Path, clocks: FakeClocks) -> Gateway:
    config = load_config(write_config(tmp_path, channels=CHANNELS), purpose="run")
    return await started_with(config, clocks)


async def started_with(config: Config, clocks: FakeClocks) -> Gateway:
    gateway = Gateway(config, timeline=Timeline(clocks.wall, clocks.mono))
    await gateway.start()
    for _ in range(50):  # the source task reports itself up on its first run
        if gateway.status.sources_up.get("sim"):
            break
        await asyncio.sleep(0.01)
    return gateway


def steady(gateway: Gateway, clocks: FakeClocks, seconds: int) -> None:
    """10 pulses every half second: a demand of 20 pulses/s * 3600 = 72000 kW."""
    for _ in range(seconds * 2):
        clocks.elapse(0.5)
        gateway.pulses("e", 10)


@pytest.mark.asyncio
async def test_a_forward_clock_step_is_an_outage_not_a_burst_of_windows(tmp_path: Path) -> None:
    """A one-hour jump: no reading in the gap, demand not available, the peak untouched."""
    clocks = FakeClocks()
    gateway = await started(tmp_path, clocks)
    try:
        steady(gateway, clocks, 4)
        channel = gateway.engine.channels["e"]
        peak, count = channel.peak_demand, channel.pulses_total
        assert peak == 72000.0
        clocks.wall_us += 3600 * 1_000_000
        clocks.mono_us += 1000
        gateway.pulses("e", 10)
        channel = gateway.engine.channels["e"]
        assert channel.demand is None and channel.peak_demand == peak
        assert channel.pulses_total == count + 10
        assert channel.next_boundary > clocks.wall_us  # the hour was skipped, not closed
        steady(gateway, clocks, 4)
        assert channel.demand == 72000.0  # valid again after a whole window
    finally:
        await gateway.stop()


@pytest.mark.asyncio
async def test_a_backward_clock_step_holds_time_and_never_piles_pulses_into_a_peak(
    tmp_path: Path,
) -> None:
    """Ten minutes back: events keep their order, the burst counts but makes no peak."""
    clocks = FakeClocks()
    gateway = await started(tmp_path, clocks)
    try:
        steady(gateway, clocks, 4)
        channel = gateway.engine.channels["e"]
        peak, held_at = channel.peak_demand, channel.now
        clocks.wall_us -= 600 * 1_000_000
        clocks.mono_us += 1000
        for _ in range(20):  # 10 minutes' worth of pulses while the clock is behind
            clocks.elapse(30)
            gateway.pulses("e", 500)
            assert channel.now == held_at and not channel.is_online
        clocks.elapse(1)  # the wall clock passes the held instant: the hold ends
        steady(gateway, clocks, 4)
        assert channel.is_online and channel.now > held_at
        assert channel.peak_demand == peak  # 10,000 held pulses never formed a window
        assert channel.pulses_total >= 80 + 10_000  # and none were lost
    finally:
        await gateway.stop()


@pytest.mark.asyncio
async def test_a_restart_restores_exactly_and_counts_the_downtime_as_an_outage(
    tmp_path: Path,
) -> None:
    """Counts and peaks come back exactly; windows over the downtime are not available."""
    clocks = FakeClocks()
    gateway = await started(tmp_path, clocks)
    steady(gateway, clocks, 4)
    before = gateway.engine.channels["e"].state()
    await gateway.stop()
    clocks.elapse(3600)  # an hour down
    gateway = await started(tmp_path, clocks)
    try:
        channel = gateway.engine.channels["e"]
        after = channel.state()
        assert (after.pulses_total, after.peak_demand, after.cumulative_demand) == (
            before.pulses_total,
            before.peak_demand,
            before.cumulative_demand,
        )
        assert after.valid_from >= clocks.wall_us - 1_000_000
        clocks.elapse(1.2)
        gateway.pulses("e", 1)
        assert channel.demand is None  # the first window after the restart is incomplete
    finally:
        await gateway.stop()


TWO_CHANNELS = CHANNELS + (
    "  - {id: g, unit: cubic_feet, scale_factor: 1, demand_window: 2s, demand_slide: 1s,\n"
    "     reset_lockout: 1h, source: {id: sim, rate: 0.001, mode: constant}}\n"
)


@pytest.mark.asyncio
async def test_reset_all_is_one_durable_step_and_refusals_are_audited(tmp_path: Path) -> None:
    """reset_all writes every channel's outcome; refusals before the engine reach the audit."""
    clocks = FakeClocks()
    config = load_config(write_config(tmp_path, channels=TWO_CHANNELS), purpose="run")
    gateway = Gateway(config, timeline=Timeline(clocks.wall, clocks.mono))
    await gateway.start()
    try:
        steady(gateway, clocks, 4)
        assert gateway.reset("g", "bacnet:127.0.0.1:47900").accepted
        outcomes = gateway.reset_all("bacnet:127.0.0.1:47900")
        assert {cid: o.accepted for cid, o in outcomes.items()} == {"e": True, "g": False}
        gateway.count_rejection("e", "not_allowed")
        gateway.audit_refusal("e", "not_allowed", "bacnet:192.0.2.9:47808")
        with Store.open_readonly(tmp_path / "state" / "gateway.db") as store:
            log, verdicts = store.reset_log(), store.verdict()
        assert [(r.channel, r.accepted, r.reason) for r in log] == [
            ("g", True, "accepted"),
            ("e", True, "accepted"),
            ("g", False, "lockout"),
            ("e", False, "not_allowed"),
        ]
        assert all(v.ok for v in verdicts)
        assert gateway.reset_rejections() == {("e", "not_allowed"): 1}
    finally:
        await gateway.stop()


@pytest.mark.asyncio
async def test_a_reset_that_cannot_be_written_is_undone(tmp_path: Path, monkeypatch) -> None:
    """If the disk refuses the reset, no channel keeps it and the caller gets the error."""
    clocks = FakeClocks()
    config = load_config(write_config(tmp_path, channels=TWO_CHANNELS), purpose="run")
    gateway = Gateway(config, timeline=Timeline(clocks.wall, clocks.mono))
    await gateway.start()
    try:
        steady(gateway, clocks, 4)
        before = {cid: c.state() for cid, c in gateway.engine.channels.items()}

        def disk_full(*_: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(gateway.store, "record_resets", disk_full)
        with pytest.raises(sqlite3.OperationalError):
            gateway.reset_all("bacnet:127.0.0.1:47900")
        after = {cid: c.state() for cid, c in gateway.engine.channels.items()}
        assert {cid: s.reset_count for cid, s in after.items()} == {"e": 0, "g": 0}
        assert {cid: s.peak_demand for cid, s in after.items()} == {
            cid: s.peak_demand for cid, s in before.items()
        }
        monkeypatch.undo()
        assert gateway.reset("e", "bacnet:127.0.0.1:47900").accepted  # and it works again
    finally:
        await gateway.stop()


@pytest.mark.asyncio
async def test_interval_records_add_up_across_a_restart(tmp_path: Path) -> None:
    """Records are saved with the checkpoint; after downtime one E record lumps the gap."""
    channels = CHANNELS.replace("demand_slide: 1s,", "demand_slide: 1s, interval: 2s,")
    config = load_config(write_config(tmp_path, channels=channels), purpose="run")
    clocks = FakeClocks()
    gateway = Gateway(config, timeline=Timeline(clocks.wall, clocks.mono))
    await gateway.start()
    steady(gateway, clocks, 5)
    await gateway.stop()
    clocks.elapse(60)  # a minute down
    gateway = Gateway(config, timeline=Timeline(clocks.wall, clocks.mono))
    await gateway.start()
    for _ in range(50):
        if gateway.status.sources_up.get("sim"):
            break
        await asyncio.sleep(0.01)
    steady(gateway, clocks, 5)
    consumption = gateway.engine.channels["e"].consumption
    await gateway.stop()
    with Store.open_readonly(tmp_path / "state" / "gateway.db") as store:
        records = list(store.intervals(0, clocks.wall_us))
    assert all(r.channel == "e" for r in records)
    assert [r.end - r.start for r in records].count(2_000_000) >= 3
    lumps = [r for r in records if r.end - r.start > 2_000_000]
    assert len(lumps) == 1 and lumps[0].estimated
    assert any(not r.estimated for r in records)
    total = sum(r.consumption for r in records)
    last = records[-1]
    assert total == pytest.approx(last.consumption_total) and last.consumption_total <= consumption


@pytest.mark.asyncio
async def test_the_daily_drop_writes_yesterday_and_catches_up_after_downtime(
    tmp_path: Path,
) -> None:
    """At its time the schedule drops the previous day; days missed while down come at start."""
    channels = CHANNELS.replace("demand_slide: 1s,", "demand_slide: 1s, interval: 2s,")
    path = write_config(tmp_path, channels=channels)
    path.write_text(
        path.read_text()
        + "export:\n  schedule: {directory: drop, prefix: gss, format: energycap3, at: '00:00',"
        " utc: true, time_format: 'MM/dd/yyyy HH:mm:ss', value: consumption}\n"
    )
    config = load_config(path, purpose="run")
    clocks = FakeClocks()
    clocks.wall_us -= 10_000_000  # 2025-12-31T23:59:50Z
    drop = tmp_path / "drop"

    async def run_once(seconds: int) -> None:
        gateway = await started_with(config, clocks)
        try:
            steady(gateway, clocks, seconds)
            for _ in range(100):  # the drop runs in a worker thread: wait for every due day
                if gateway.due_export_days(clocks.wall_us) == []:
                    break
                await asyncio.sleep(0.02)
            assert gateway.due_export_days(clocks.wall_us) == []
        finally:
            await gateway.stop()

    await run_once(6)  # 23:59:50 -> 23:59:56: the first run ever drops only the day before
    clocks.elapse(10)  # down over midnight
    await run_once(2)  # 00:00:06 on Jan 1st: Dec 31st is due now
    files = sorted(p.name for p in drop.iterdir())
    assert files == ["gss_20251230.csv", "gss_20251231.csv"]
    assert (drop / "gss_20251230.csv").read_text() == "TIMESTAMP,IMPORTID,UNIT,VALUE\n"
    rows = (drop / "gss_20251231.csv").read_text().splitlines()[1:]
    assert rows and all(
        row.startswith("12/31/2025 23:59:") or row.startswith("01/01/2026 00:00:00") for row in rows
    )
    assert all(",e,KWH," in row for row in rows)


def saved_states(tmp_path: Path) -> dict[str, tuple[int, int]]:
    """(pulses_total, reset_count) per channel, as the database holds them now."""
    with Store.open_readonly(tmp_path / "state" / "gateway.db") as store:
        saved = store.load()
    assert saved is not None
    return {cid: (c.state.pulses_total, c.state.reset_count) for cid, c in saved.channels.items()}


@pytest.mark.asyncio
async def test_a_reset_during_a_checkpoint_write_is_never_overwritten_by_it(
    tmp_path: Path, monkeypatch
) -> None:
    """Checkpoints are written by a worker thread while the loop goes on: the loop counts and
    resets during the write, and the older states it carries never replace the reset."""
    clocks = FakeClocks()
    gateway = await started(tmp_path, clocks)
    try:
        steady(gateway, clocks, 4)
        store = gateway.store
        write = store.checkpoint
        entered, release = threading.Event(), threading.Event()

        def slow_disk(*args: object, **kwargs: object) -> None:
            entered.set()
            release.wait(10)
            write(*args, **kwargs)

        monkeypatch.setattr(store, "checkpoint", slow_disk)
        clocks.elapse(1.0)
        gateway.pulses("e", 10)  # a boundary: its readings ask for a checkpoint
        assert await asyncio.to_thread(entered.wait, 10)
        taken = gateway.engine.channels["e"].pulses_total
        gateway.pulses("e", 5)  # the loop is not waiting for the disk
        assert gateway.reset("e", "bacnet:127.0.0.1:47900").accepted
        assert saved_states(tmp_path)["e"] == (taken + 5, 1)  # durable before the ack
        release.set()
        await saved_up_to(gateway, clocks.wall_us)
        assert saved_states(tmp_path)["e"] == (taken + 5, 1)  # not the older state
        gateway.pulses("e", 1)
    finally:
        await gateway.stop()
    assert saved_states(tmp_path)["e"] == (taken + 6, 1)


async def saved_up_to(gateway: Gateway, t: int) -> None:
    """Wait (real time, bounded) until the checkpoint of instant ``t`` is in the database."""
    for _ in range(500):
        if gateway.status.last_checkpoint >= t:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no checkpoint of {t} in 5 s")


@pytest.mark.asyncio
async def test_a_failing_checkpoint_is_retried_once_a_second_and_loses_no_interval(
    tmp_path: Path, monkeypatch
) -> None:
    """A full disk: checkpoints fail, tried again once a second of the gateway's clock (not in
    a busy loop), and the interval records waiting in memory reach the database once it writes
    again, every one, in order."""
    clocks = FakeClocks()
    channels = CHANNELS.replace("demand_slide: 1s,", "demand_slide: 1s, interval: 2s,")
    config = load_config(write_config(tmp_path, channels=channels), purpose="run")
    gateway = await started_with(config, clocks)
    calls: list[int] = []
    try:
        store = gateway.store
        write = store.checkpoint

        def disk_full(*args: object, **kwargs: object) -> None:
            calls.append(len(args[3]))  # the interval records it was given
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(store, "checkpoint", disk_full)
        steady(gateway, clocks, 20)  # a boundary every second, an interval end every two
        await asyncio.sleep(1.5)  # real time: the tick runs, the gateway's clock stands still
        tried = len(calls)
        assert 1 <= tried <= 2  # the first boundary's, then one for all the boundaries after
        clocks.elapse(1.0)
        await asyncio.sleep(1.5)
        assert len(calls) == tried + 1  # one more second, one more try
        assert calls[-1] == 10  # the ten records are carried over, not dropped
        monkeypatch.setattr(store, "checkpoint", write)
        clocks.elapse(1.0)
        await saved_up_to(gateway, clocks.wall_us)
    finally:
        await gateway.stop()
    with Store.open_readonly(tmp_path / "state" / "gateway.db") as reader:
        ends = [r.end for r in reader.intervals(0, clocks.wall_us)]
    # the ten, and the one that ended after the disk came back: none lost, none twice
    assert ends == [ends[0] + k * 2_000_000 for k in range(11)]
