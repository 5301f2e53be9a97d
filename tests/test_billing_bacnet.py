"""The billing period objects over BACnet, read and subscribed to by bac-py: base+7
``{id}.period_consumption`` and base+8 ``{id}.previous_period_consumption``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bacnet_support import rig


@pytest.mark.asyncio
async def test_a_reset_closes_the_period_the_bms_sees(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        assert await r.read("ai,107", "object-name") == "e.period_consumption"
        assert await r.read("ai,108", "object-name") == "e.previous_period_consumption"
        assert int(await r.read("ai,107", "units")) == 19  # kilowatt-hours
        r.steady(3)  # 60 pulses of 0.5 kWh
        assert await r.read("ai,107", "present-value") == pytest.approx(30.0)
        assert await r.read("ai,108", "present-value") == 0.0
        await r.subscribe("ai,108", process_id=21, confirmed=True, lifetime=60)
        first = await r.notification()  # the value at subscription
        assert first["PRESENT_VALUE"] == 0.0
        await r.write("bv,101", "present-value", 1)  # the operator's reset
        r.server.refresh()
        closed = await r.notification()
        assert closed["PRESENT_VALUE"] == pytest.approx(30.0)
        assert await r.read("ai,107", "present-value") == 0.0
        r.steady(1)
        assert await r.read("ai,107", "present-value") == pytest.approx(10.0)
        assert await r.read("ai,108", "present-value") == pytest.approx(30.0)
