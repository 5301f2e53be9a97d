"""One instant, three readers: the JSON API, a /metrics scrape and BACnet (bac-py) agree.

The gateway runs on fake clocks that do not move while the three read, so they read the same
instant; BACnet carries REALs (single precision), the other two the engine's doubles.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.bacnet_support import rig

# e: kWh, 2 s window sliding by 1 s; w: US gallons, 4 s sliding by 2 s
CHANNELS = (
    "  - {id: e, unit: kWh, scale_factor: 0.5, demand_window: 2s, demand_slide: 1s,\n"
    "     source: {id: sim, rate: 0.001, mode: constant}}\n"
    "  - {id: w, unit: us_gallons, scale_factor: 1, demand_window: 4s, demand_slide: 2s,\n"
    "     source: {id: sim, rate: 0.001, mode: constant}}\n"
)
# the analog-input offsets from the channel's base, and the API/metrics names of each
FIELDS = {
    1: ("consumption", "consumption"),
    2: ("demand", "demand"),
    3: ("peak_demand", "peak_demand"),
    4: ("previous_peak_demand", "previous_peak_demand"),
    5: ("cumulative_demand", "cumulative_demand"),
    6: ("reset_count", "resets_total"),
    7: ("period_consumption", "period_consumption"),
    9: ("projected_demand", "projected_demand"),
}
BASES = {"e": 100, "w": 200}


def f32(value: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return bytes(answer.read())


def samples(text: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name.removeprefix("pulse_gateway_"), sample.labels["channel"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "channel" in sample.labels and "reason" not in sample.labels
    }


@pytest.mark.asyncio
async def test_the_api_metrics_and_bacnet_show_the_same_numbers(tmp_path: Path) -> None:
    async with rig(tmp_path, channels=CHANNELS) as r:
        for _ in range(9):  # 4.5 s: whole windows on both, w 0.5 s into its slide
            r.clocks.elapse(0.5)
            r.gateway.pulses("e", 3)
            r.gateway.pulses("w", 7)
        assert r.gateway.reset("e", "bacnet:127.0.0.1:47900").accepted
        r.clocks.elapse(0.6)  # w 1.1 s into its 2 s slide: its projected demand is available
        r.gateway.pulses("w", 2)
        r.server.refresh()
        base = f"http://127.0.0.1:{r.gateway.metrics_port}"
        # nothing moves now: the fake clocks stand still while the three read
        document = json.loads(await asyncio.to_thread(get, base + "/api/v1/status"))
        scraped = samples((await asyncio.to_thread(get, base + "/metrics")).decode())
        api = {c["id"]: c for c in document["channels"]}
        compared = 0
        for channel, base_instance in BASES.items():
            for offset, (api_name, metric_name) in FIELDS.items():
                value: Any = api[channel][api_name]
                metric = scraped[(metric_name, channel)]
                bacnet = await r.read(f"ai,{base_instance + offset}", "pv")
                if value is None:  # not available: NaN in metrics, 0 with a fault on BACnet
                    assert math.isnan(metric), (channel, api_name)
                    assert bacnet == 0.0
                    flags = await r.read(f"ai,{base_instance + offset}", "status-flags")
                    assert flags[1], (channel, api_name)
                else:
                    assert metric == value, (channel, api_name)
                    assert bacnet == f32(value), (channel, api_name)
                compared += 1
        assert api["w"]["projected_demand"] is not None
        assert api["e"]["reset_count"] == 1 and api["e"]["previous_peak_demand"] > 0
        assert compared == 2 * len(FIELDS)
