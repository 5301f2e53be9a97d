"""`pulse-gateway points`: the BACnet object map of docs/reference/bacnet.md, as CSV for
integrators."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.points import points_rows
from tests.daemon import write_config
from tests.helpers import DEMO_CONFIG


def test_points_lists_the_object_map_of_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    """Device, reset_all, then per channel nine analog inputs at base+1..+9, its reset and its
    two trend logs."""
    assert main(["points", "-c", str(DEMO_CONFIG)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in rows[:2]] == ["Pulse Gateway Demo", "reset_all"]
    gas = {r["name"]: r for r in rows if r["name"].startswith("gas.")}
    assert {(r["type"], r["instance"], r["units"]) for r in gas.values()} == {
        ("analog-input", "201", "cubic-feet"),
        ("analog-input", "202", "cubic-feet-per-minute"),
        ("analog-input", "203", "cubic-feet-per-minute"),
        ("analog-input", "204", "cubic-feet-per-minute"),
        ("analog-input", "205", "cubic-feet-per-minute"),
        ("analog-input", "206", "no-units"),
        ("analog-input", "207", "cubic-feet"),
        ("analog-input", "208", "cubic-feet"),
        ("analog-input", "209", "cubic-feet-per-minute"),
        ("binary-value", "201", ""),
        ("trend-log", "201", "cubic-feet"),
        ("trend-log", "202", "cubic-feet-per-minute"),
    }
    assert {r["name"] for r in rows if r["writable"] == "yes"} == {
        "reset_all",
        "electric.reset",
        "gas.reset",
        "water.reset",
        "steam.reset",
    }
    assert rows[-1]["type"] == "network-port"
    assert len(rows) == load_config(DEMO_CONFIG, purpose="run").bacnet_object_count


def test_an_explicit_instance_base_moves_a_channels_objects(tmp_path: Path) -> None:
    """bacnet_instance_base replaces 100 * k for that channel only."""
    config = write_config(
        tmp_path,
        channels=(
            "  - {id: a, unit: kWh, scale_factor: 1, demand_window: 1min, demand_slide: 1min,\n"
            "     source: {id: sim, rate: 1}, bacnet_instance_base: 5000}\n"
            "  - {id: b, unit: lbs, scale_factor: 1, demand_window: 1min, demand_slide: 1min,\n"
            "     source: {id: sim, rate: 1}}\n"
        ),
    )
    rows = points_rows(load_config(config, purpose="run"))
    listed = {(kind, instance): name for kind, instance, name, *_ in rows}
    assert listed[("analog-input", 5001)] == "a.consumption"
    assert listed[("binary-value", 5001)] == "a.reset"
    assert listed[("analog-input", 206)] == "b.reset_count"
    assert listed[("analog-input", 202)] == "b.demand"
