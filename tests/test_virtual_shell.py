"""Virtual channels everywhere a channel appears: the config and check, the running gateway
(BACnet read by bac-py, a real /metrics scrape, the JSON API), restarts, reloads and replay."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import main
from gateway.clock import Timeline
from gateway.config import load_config, parse_config
from gateway.service import Gateway
from tests.bacnet_support import rig
from tests.daemon import write_config
from tests.helpers import FakeClocks, until

# two feeders and a site total; a net of the two; all on one simulated source that adds nothing
FEEDERS = (
    "  - {id: a, unit: kWh, scale_factor: 0.5, demand_window: 2s, demand_slide: 1s,\n"
    "     source: {id: sim, rate: 0.001, mode: constant}}\n"
    "  - {id: b, unit: kWh, scale_factor: 0.1, demand_window: 2s, demand_slide: 1s,\n"
    "     source: {id: sim, rate: 0.001, mode: constant}}\n"
)
# their own window and slide: 4 s sliding by 2 s (projected demand needs a slide over 1 s)
VIRTUAL = (
    "  - {id: total, unit: kWh, virtual: {add: [a, b]}, demand_window: 4s, demand_slide: 2s}\n"
    "  - {id: net, unit: kWh, virtual: {add: [a], subtract: [b]}, demand_window: 4s,\n"
    "     demand_slide: 2s, initial_reading: 100}\n"
)

BASE = """\
channels:
  - {id: feeder_a, unit: kWh, scale_factor: 0.5, demand_window: 15min, demand_slide: 5min}
  - {id: feeder_b, unit: kWh, scale_factor: 0.1, demand_window: 15min, demand_slide: 5min}
  - {id: gas, unit: m3, scale_factor: 0.1, demand_window: 15min, demand_slide: 5min}
  - id: total
    unit: kWh
    virtual: VIRTUAL
    demand_window: 15min
    demand_slide: 5min
"""


def problems(virtual: str, extra: str = "") -> list[str]:
    text = BASE.replace("VIRTUAL", virtual) + extra
    with pytest.raises(Exception) as caught:
        parse_config(text, "site.yaml", purpose="replay")
    return [str(p) for p in getattr(caught.value, "problems", [caught.value])]


@pytest.mark.parametrize(
    ("virtual", "extra", "expected"),
    [
        (
            "{add: [feeder_a, fedder_b]}",
            "",
            "site.yaml:7:31: channels[3].virtual.add[1]: "
            "no channel 'fedder_b' (did you mean 'feeder_b'?)",
        ),
        (
            "{add: [feeder_a], subtract: [gas]}",
            "",
            "site.yaml:7:43: channels[3].virtual.subtract[0]: 'gas' counts m3, this channel kWh",
        ),
        (
            "{add: [feeder_a, feeder_a]}",
            "",
            "site.yaml:7:31: channels[3].virtual.add[1]: "
            "'feeder_a' is already a term (channels[3].virtual.add[0])",
        ),
        (
            "{add: [feeder_a], subtract: [feeder_a]}",
            "",
            "site.yaml:7:43: channels[3].virtual.subtract[0]: 'feeder_a' is already a term",
        ),
        (
            "{add: [total]}",
            "",
            "site.yaml:7:21: channels[3].virtual.add[0]: a virtual channel "
            "cannot be a term of itself",
        ),
        (
            "{add: []}",
            "",
            "site.yaml:7:14: channels[3].virtual: a virtual channel needs at least one term",
        ),
        ("{add: feeder_a}", "", "site.yaml:7:20: channels[3].virtual.add: expected a list"),
        ("{plus: [feeder_a]}", "", "site.yaml:7:15: channels[3].virtual.plus: unknown key"),
        (
            "{add: [feeder_a]}\n    scale_factor: 2",
            "",
            "site.yaml:8:19: channels[3].scale_factor: a virtual channel has no scale_factor",
        ),
        (
            "{add: [feeder_a]}",
            "  - {id: nested, unit: kWh, virtual: {add: [total]}, demand_window: 15min,"
            " demand_slide: 5min}\n",
            "site.yaml:10:45: channels[4].virtual.add[0]: 'total' is a virtual channel: "
            "terms are physical channels (no nesting)",
        ),
    ],
)
def test_a_bad_virtual_channel_is_named_with_its_place(
    virtual: str, extra: str, expected: str
) -> None:
    found = problems(virtual, extra)
    assert any(p.startswith(expected) for p in found), found


def test_a_virtual_channel_with_a_source_is_refused_for_run(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        channels=FEEDERS
        + "  - {id: total, unit: kWh, virtual: {add: [a]}, demand_window: 2s, demand_slide: 1s,"
        " source: {id: sim}}\n",
    )
    with pytest.raises(Exception) as caught:
        load_config(path, purpose="run")
    assert any(
        "channels[2].source: a virtual channel has no source" in str(p)
        for p in caught.value.problems  # type: ignore[attr-defined]
    )


def test_check_summarises_a_virtual_channel(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, channels=FEEDERS + VIRTUAL), purpose="run")
    lines = config.summary().splitlines()
    assert any(line.startswith("  channel total:") and "virtual a + b" in line for line in lines)
    assert any(line.startswith("  channel net:") and "virtual a - b" in line for line in lines)
    rules = config.rules()
    assert rules["net"].terms == (("a", 1), ("b", -1))


def fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


def scrape(port: int) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, sample.labels["channel"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "channel" in sample.labels and "reason" not in sample.labels
    }


@pytest.mark.asyncio
async def test_the_running_gateway_serves_virtual_channels(tmp_path: Path) -> None:
    """BACnet (bac-py), /metrics and the API show the sum and the net of the feeders."""
    async with rig(tmp_path, channels=FEEDERS + VIRTUAL) as r:
        for _ in range(11):  # to 5.5 s: the boundary at 4 s closed the first whole window
            r.clocks.elapse(0.5)
            r.gateway.pulses("a", 4)  # 2 kWh
            r.gateway.pulses("b", 10)  # 1 kWh
        r.server.refresh()
        engine = r.gateway.engine.channels
        assert engine["total"].consumption == engine["a"].consumption + engine["b"].consumption
        # net: 100 + a - b; BACnet carries REALs
        assert await r.read("ai,401", "object-name") == "net.consumption"
        assert await r.read("ai,401", "pv") == pytest.approx(100 + 22.0 - 11.0)
        assert await r.read("ai,301", "pv") == pytest.approx(33.0)
        assert engine["total"].demand is not None  # the window [0 s, 4 s)
        assert await r.read("ai,302", "pv") == pytest.approx(engine["total"].demand)
        # at 5.5 s, 1.5 s into the slide to 6 s: what the window [2 s, 6 s) is heading for
        expected = engine["total"].projected(r.gateway.latest_time())
        assert expected is not None and expected > 0
        projected = await r.read("ai,309", "pv")
        assert projected == pytest.approx(expected)
        assert (await r.read("ai,309", "status-flags"))[1] is False  # no fault
        port = r.gateway.metrics_port
        assert port is not None
        found = await asyncio.to_thread(scrape, port)  # the gateway answers on this loop
        assert ("pulse_gateway_pulses_total", "a") in found
        assert ("pulse_gateway_pulses_total", "total") not in found  # it counts no pulses
        assert found[("pulse_gateway_consumption", "net")] == 100 + 22.0 - 11.0
        assert found[("pulse_gateway_projected_demand", "total")] == pytest.approx(projected)
        document = await asyncio.to_thread(fetch_json, f"http://127.0.0.1:{port}/api/v1/status")
        status = {c["id"]: c for c in document["channels"]}
        assert status["total"]["virtual"] is True and status["a"]["virtual"] is False
        assert status["net"]["consumption"] == 100 + 22.0 - 11.0


@pytest.mark.asyncio
async def test_cov_follows_a_terms_pulses_to_the_virtual_channels_it_feeds(tmp_path: Path) -> None:
    """A pulse event names the channels it changed, the term and the virtual channels it
    feeds; a COV pass evaluates the subscribed objects of those channels only, so a virtual
    channel's subscriber hears of its terms' pulses."""
    async with rig(tmp_path, channels=FEEDERS + VIRTUAL) as r:
        told: list[tuple[str, ...] | None] = []
        original = r.gateway.listeners.refresh

        def refresh(channels: tuple[str, ...] | None = None) -> None:
            told.append(channels)
            original(channels)

        r.gateway.listeners.refresh = refresh  # type: ignore[method-assign]
        r.clocks.elapse(0.5)
        r.gateway.pulses("b", 10)
        assert told == [("b", "total", "net")] == [r.gateway.engine.touched("b")]
        await r.subscribe("ai,301", process_id=1)  # total's consumption
        await r.subscribe("ai,101", process_id=2)  # a's consumption
        first = {(await r.notification())["object"].instance_number for _ in range(2)}
        assert first == {101, 301}

        def one_pass(channels: tuple[str, ...]) -> int:
            """A pass for ``channels``, run here: how many notifications it sent."""
            r.server.refresh(channels)
            handle = r.server._refresh_handle
            assert handle is not None
            handle.cancel()
            return r.server._evaluate()

        r.gateway.pulses("a", 2)  # a and total change
        assert one_pass(("b",)) == 0  # told of b only: a and total are not evaluated
        assert one_pass(r.gateway.engine.touched("a")) == 2
        values = {(n := await r.notification())["object"].instance_number: n for _ in range(2)}
        engine = r.gateway.engine.channels
        assert values[101]["PRESENT_VALUE"] == pytest.approx(engine["a"].consumption)
        assert values[301]["PRESENT_VALUE"] == pytest.approx(engine["total"].consumption)


@pytest.mark.asyncio
async def test_a_virtual_channel_survives_a_restart_and_a_reload(tmp_path: Path) -> None:
    path = write_config(tmp_path, channels=FEEDERS + VIRTUAL)
    clocks = FakeClocks()
    gateway = Gateway(load_config(path, purpose="run"), timeline=Timeline(clocks.wall, clocks.mono))
    await gateway.start()
    try:
        await until(lambda: gateway.status.sources_up.get("sim", False), "source up")
        for _ in range(8):
            clocks.elapse(0.5)
            gateway.pulses("a", 2)
            gateway.pulses("b", 5)
        total = gateway.engine.channels["total"]
        before = (total.consumption, total.peak_demand)
        assert before[1] > 0
    finally:
        await gateway.stop()
    clocks.elapse(10)
    gateway = Gateway(load_config(path, purpose="run"), timeline=Timeline(clocks.wall, clocks.mono))
    await gateway.start()
    try:
        total = gateway.engine.channels["total"]
        assert (total.consumption, total.peak_demand) == before  # restored exactly
        # the terms change: b leaves the total; consumption and the peak are kept
        text = path.read_text().replace("virtual: {add: [a, b]}", "virtual: {add: [a]}")
        path.write_text(text)
        assert await gateway.reload()
        total = gateway.engine.channels["total"]
        assert total.rules.terms == (("a", 1),)
        assert (total.consumption, total.peak_demand) == before
        clocks.elapse(0.5)
        gateway.pulses("b", 10)  # no longer a term
        gateway.pulses("a", 2)
        assert total.consumption == before[0] + 1.0
    finally:
        await gateway.stop()


def test_replay_leaves_pulses_total_empty_for_a_virtual_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(
        "channels:\n"
        "  - {id: a, unit: kWh, scale_factor: 0.5, demand_window: 10min, demand_slide: 5min}\n"
        "  - {id: b, unit: kWh, scale_factor: 0.1, demand_window: 10min, demand_slide: 5min}\n"
        "  - {id: net, unit: kWh, virtual: {add: [a], subtract: [b]}, demand_window: 10min,"
        " demand_slide: 5min}\n"
    )
    events = tmp_path / "events.csv"
    events.write_text(
        "time,channel,event,value\n"
        "2026-03-01T00:01:00Z,a,pulses,2\n"
        "2026-03-01T00:02:00Z,b,pulses,30\n"
        "2026-03-01T00:06:00Z,net,pulses,1\n"
    )
    code = main(["replay", "-c", str(config), str(events), "--start", "2026-03-01T00:00:00Z"])
    out = capsys.readouterr()
    assert code == 2 and "events.csv:4" in out.err and "virtual" in out.err
    events.write_text("\n".join(events.read_text().splitlines()[:3]) + "\n")
    assert (
        main(
            [
                "replay",
                "-c",
                str(config),
                str(events),
                "--start",
                "2026-03-01T00:00:00Z",
                "--end",
                "2026-03-01T00:10:00Z",
            ]
        )
        == 0
    )
    rows = [
        r for r in csv.DictReader(io.StringIO(capsys.readouterr().out)) if r["channel"] == "net"
    ]
    # at 00:10 the window [00:00, 00:10) holds a's 1 kWh and b's 3 kWh: -2 kWh in 10 minutes
    assert [(r["time"], r["pulses_total"], r["consumption"], r["demand"]) for r in rows] == [
        ("2026-03-01T00:05:00Z", "", "-2.0", ""),
        ("2026-03-01T00:10:00Z", "", "-2.0", "-12.0"),
    ]
    assert rows[-1]["peak_demand"] == "0.0"  # a negative demand never raises the peak above 0


def test_a_virtual_channel_exports_its_own_interval_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """replay --db, then export: the net's rows carry its own ImportID and its own demand,
    which is the feeders' coincident demand, not the sum of their rows."""
    config = tmp_path / "site.yaml"
    config.write_text(
        "channels:\n"
        "  - {id: a, unit: kWh, scale_factor: 0.5, demand_window: 15min, demand_slide: 15min}\n"
        "  - {id: b, unit: kWh, scale_factor: 0.1, demand_window: 15min, demand_slide: 15min}\n"
        "  - {id: net, import_id: NET-1, unit: kWh, virtual: {add: [a], subtract: [b]},\n"
        "     demand_window: 15min, demand_slide: 15min}\n"
    )
    events = tmp_path / "events.csv"
    events.write_text(
        "time,channel,event,value\n"
        "2026-03-01T00:01:00Z,a,pulses,40\n"  # 20 kWh
        "2026-03-01T00:02:00Z,b,pulses,50\n"  # 5 kWh
        "2026-03-01T00:20:00Z,b,pulses,10\n"  # 1 kWh
    )
    db = tmp_path / "replayed" / "gateway.db"
    argv = ["replay", "-c", str(config), str(events), "--start", "2026-03-01T00:00:00Z"]
    assert main([*argv, "--end", "2026-03-01T00:30:00Z", "--db", str(db)]) == 0
    capsys.readouterr()
    code = main(
        [
            "export",
            "--db",
            str(db),
            "--format",
            "energycap1",
            "--utc",
            "--value",
            "consumption",
            "--from",
            "2026-03-01T00:00Z",
            "--to",
            "2026-03-01T00:30Z",
        ]
    )
    out = capsys.readouterr()
    assert (code, out.err) == (0, "")
    rows = [line.split(",") for line in out.out.splitlines() if "NET-1" in line]
    assert [row[-1] for row in rows] == ["15", "-1"]  # 20 - 5 kWh, then -1 kWh
