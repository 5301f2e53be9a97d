"""Reload planning is pure (two configs in, a plan out); the engine carries the plan out."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import RunConfig, load_config
from gateway.core import DemandError, Engine
from gateway.reload import plan_reload
from tests.helpers import at, rules

BASE = (
    "gateway: {name: site, state_dir: state}\n"
    "bacnet: {address: 127.0.0.1/8, port: 47901, device_instance: 7, device_name: G}\n"
    "metrics: {listen: '127.0.0.1:9901'}\n"
    "sources:\n"
    "  - {id: sim, type: simulated, seed: 1}\n"
    "  - {id: mb, type: modbus-tcp, host: 127.0.0.1, port: 1502}\n"
)
SIM = "  - {{id: {id}, unit: kWh, scale_factor: {scale}, demand_window: 2s, demand_slide: 1s,\n"
SIM += "     source: {{id: sim, rate: 1}}}}\n"
MODBUS = "  - {{id: {id}, unit: kWh, scale_factor: 1, demand_window: 2s, demand_slide: 1s,\n"
MODBUS += "     source: {{id: mb, table: holding, address: {address}, type: u32}}}}\n"


def config(tmp_path: Path, channels: str, base: str = BASE, name: str = "a.yaml") -> RunConfig:
    path = tmp_path / name
    path.write_text(base + "channels:\n" + channels)
    return load_config(path, purpose="run")


def test_an_unchanged_file_keeps_everything_and_restarts_nothing(tmp_path: Path) -> None:
    """The same file again: every channel kept, no source, endpoint or server restarted."""
    channels = SIM.format(id="a", scale=1) + MODBUS.format(id="m", address=0)
    plan = plan_reload(config(tmp_path, channels), config(tmp_path, channels, name="b.yaml"))
    assert plan.kept == ("a", "m") and not (plan.changed or plan.added or plan.removed)
    assert not (plan.sources_changed or plan.metrics_changed or plan.bacnet_changed)
    assert not plan.export_changed and plan.refused is None


def test_channels_are_kept_changed_added_and_removed_by_id(tmp_path: Path) -> None:
    """A new scale factor is a change, a new id an addition, a missing id a removal; the
    lists follow the new file's order (removals the old one's)."""
    old = config(tmp_path, SIM.format(id="a", scale=1) + SIM.format(id="b", scale=1))
    new = config(
        tmp_path,
        SIM.format(id="c", scale=1) + SIM.format(id="a", scale=2),
        name="b.yaml",
    )
    plan = plan_reload(old, new)
    assert (plan.kept, plan.changed, plan.added, plan.removed) == ((), ("a",), ("c",), ("b",))
    assert plan.sources_changed  # a channel's point is part of the sources' work


def test_a_channel_moved_to_another_register_drops_its_baseline_only(tmp_path: Path) -> None:
    """Moving m to another register restarts the sources and drops m's baseline (a difference
    between two registers is no pulse count); n, read as before, keeps its baseline."""
    old = config(tmp_path, MODBUS.format(id="m", address=0) + MODBUS.format(id="n", address=2))
    new = config(
        tmp_path,
        MODBUS.format(id="m", address=4) + MODBUS.format(id="n", address=2),
        name="b.yaml",
    )
    plan = plan_reload(old, new)
    assert plan.sources_changed and plan.baselines_dropped == ("m",)


def test_sections_restart_only_when_they_change(tmp_path: Path) -> None:
    """A new metrics address restarts the endpoint, a new BACnet port the server; neither
    touches the channels or sources."""
    channels = SIM.format(id="a", scale=1)
    moved = BASE.replace("9901", "9902").replace("47901", "47902")
    plan = plan_reload(config(tmp_path, channels), config(tmp_path, channels, moved, "b.yaml"))
    assert plan.metrics_changed and plan.bacnet_changed
    assert plan.kept == ("a",) and not plan.sources_changed


def test_a_new_state_dir_is_refused(tmp_path: Path) -> None:
    """The database is open and locked: moving it needs a restart, and the plan says so."""
    channels = SIM.format(id="a", scale=1)
    moved = BASE.replace("state_dir: state", "state_dir: elsewhere")
    plan = plan_reload(config(tmp_path, channels), config(tmp_path, channels, moved, "b.yaml"))
    assert plan.refused is not None and "state_dir" in plan.refused


def test_engine_update_keeps_counts_and_resumes_a_channel_configured_again() -> None:
    """Carrying a plan out: a kept channel is untouched, a changed one keeps its counts and
    resets, a removed one leaves, and one configured again continues from its saved state
    (offline, its peak and reset count intact) instead of starting from zero."""
    kwh = rules(window="2min", slide="1min")
    engine = Engine({"a": kwh, "b": kwh}, at("00:00:00"))
    engine.pulses("a", at("00:00:10"), 5)
    engine.pulses("b", at("00:00:20"), 7)
    engine.advance(at("00:03:00"))
    engine.pulses("b", at("00:03:10"), 3)
    assert engine.reset("b", at("00:03:20")).accepted
    saved_b = (engine.channels["b"].rules, engine.channels["b"].state())
    mapping = engine.channels

    engine.advance(at("00:04:00"))  # the service closes the boundaries due first
    engine.update(at("00:04:00"), {"a": kwh})  # b removed
    assert list(engine.channels) == ["a"] and engine.channels is mapping
    kept = engine.channels["a"]

    doubled = rules(scale=2.0, window="2min", slide="1min")
    engine.advance(at("00:05:30"))
    engine.update(at("00:05:30"), {"b": kwh, "a": doubled}, resumed={"b": saved_b})
    assert list(engine.channels) == ["b", "a"] and engine.channels["a"] is kept
    assert kept.pulses_total == 5 and kept.consumption == 5.0 and kept.rules == doubled
    back = engine.channels["b"]
    assert back.pulses_total == 10 and back.reset_count == 1 and not back.is_online
    assert back.cumulative_demand == saved_b[1].cumulative_demand
    engine.online("b", at("00:05:40"))
    engine.pulses("b", at("00:05:50"), 1)
    assert back.pulses_total == 11


def test_engine_update_refuses_an_instant_before_its_last_event() -> None:
    """A reload is an event too: it cannot be applied before the last one, and nothing
    changes when it is refused."""
    kwh = rules()
    engine = Engine({"a": kwh}, at("00:00:00"))
    engine.pulses("a", at("00:00:30"), 1)
    with pytest.raises(DemandError):
        engine.update(at("00:00:10"), {"b": kwh})
    assert list(engine.channels) == ["a"] and engine.channels["a"].pulses_total == 1


def test_put_back_undoes_a_reset_exactly() -> None:
    """A reset that could not be stored is undone: the channel is its state from before."""
    engine = Engine({"a": rules()}, at("00:00:00"))
    engine.pulses("a", at("00:00:30"), 4)
    engine.advance(at("00:02:00"))
    before = engine.channels["a"].state()
    assert engine.reset("a", at("00:02:10")).accepted
    engine.put_back("a", before)
    assert engine.channels["a"].state() == before
