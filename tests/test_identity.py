"""Billing data keeps its identity: a database records the ImportIDs and the timezone its
config gave, so what is read from the database alone is labelled as the config would."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.clock import Timeline
from gateway.config import load_config
from gateway.service import Gateway
from gateway.store import Store
from tests.daemon import write_config
from tests.helpers import ROOT, FakeClocks

EDGES = ROOT / "tests" / "golden" / "shared-replay-edges"


def site_config(folder: Path) -> Path:
    """The edges example's channel with an ImportID of its own, in New York time, keeping its
    state in ``folder / "state"`` (where ``replay --db`` below writes)."""
    config = (
        (EDGES / "config.yaml")
        .read_text()
        .replace("  - id: main\n", "  - id: main\n    import_id: KZG002614057\n")
    )
    path = folder / "site.yaml"
    path.write_text(
        "gateway: {name: site, state_dir: state, timezone: America/New_York}\n"
        "bacnet: {address: 127.0.0.1/8, port: 47999, device_instance: 5, device_name: S}\n"
        "sources:\n  - {id: sim, type: simulated}\n"
        + config.replace(
            "    reset_lockout: 15min\n",
            "    reset_lockout: 15min\n    source: {id: sim, rate: 1}\n",
        )
    )
    return path


def export(capsys: pytest.CaptureFixture[str], *where: str, fmt: str = "energycap1") -> str:
    code = main(["export", *where, "--format", fmt, "--from", "2026-02-28", "--to", "2026-03-01"])
    out = capsys.readouterr()
    assert (code, out.err) == (0, "")
    return out.out


@pytest.mark.parametrize("fmt", ["energycap1", "energycap3", "energycap4"])
def test_export_from_a_replayed_database_alone_equals_export_with_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """replay -c site.yaml --db, then export --db: the same ImportID (not the channel id) and
    the same local times as export -c site.yaml, byte for byte."""
    config = site_config(tmp_path)
    db = tmp_path / "state" / "gateway.db"
    (tmp_path / "state").mkdir()
    assert main(["replay", "-c", str(config), str(EDGES / "events.csv"), "--db", str(db)]) == 0
    capsys.readouterr()
    alone = export(capsys, "--db", str(db), fmt=fmt)
    assert alone == export(capsys, "-c", str(config), fmt=fmt)
    assert "KZG002614057" in alone and ",main," not in alone
    # the intervals end at 00:15-00:45Z on March 1st: 19:15-19:45 the day before in New York
    assert "02/28/2026" in alone and "03/01/2026" not in alone


def test_a_database_no_config_described_still_exports_ids_in_utc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay config without a gateway section says nothing of a timezone: UTC, and a
    channel without an import_id is booked under its id."""
    db = tmp_path / "edges.db"
    replay = ["replay", "-c", str(EDGES / "config.yaml"), str(EDGES / "events.csv")]
    assert main([*replay, "--db", str(db)]) == 0
    capsys.readouterr()
    with Store.open_readonly(db) as store:
        assert store.identity() == ({"main": "main"}, "UTC")
    assert "03/01/2026 00:15,main,KW" in export(capsys, "--db", str(db), fmt="energycap3")


@pytest.mark.asyncio
async def test_the_daemon_records_its_identity_at_start_and_on_reload(tmp_path: Path) -> None:
    """Start records the config's ImportIDs and timezone; a reload that changes them records
    the new ones, so a later export from the database follows the config in force."""
    channels = (
        "  - {id: e, import_id: MTR-1, unit: kWh, scale_factor: 1, demand_window: 2s,\n"
        "     demand_slide: 1s, source: {id: sim, rate: 0.001, mode: constant}}\n"
    )
    path = write_config(tmp_path, channels=channels)
    clocks = FakeClocks()
    gateway = Gateway(load_config(path, purpose="run"), timeline=Timeline(clocks.wall, clocks.mono))
    await gateway.start()
    try:
        assert gateway.store is not None
        assert gateway.store.identity() == ({"e": "MTR-1"}, "UTC")
        text = path.read_text().replace("MTR-1", "MTR-2")
        path.write_text(
            text.replace("name: test-site,", "name: test-site, timezone: Europe/Berlin,")
        )
        assert await gateway.reload()
        assert gateway.store.identity() == ({"e": "MTR-2"}, "Europe/Berlin")
    finally:
        await gateway.stop()
