"""Scheduled resets in replay, worked by hand across Berlin's DST changes, and the periods
command reading a replayed database with or without its config."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from gateway.cli import main

# Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z); 2026-10-25 03:00 CEST ->
# 02:00 CET (01:00Z). A daily reset at 02:30 therefore fires at the jump on 29 March
# (01:00Z) and at the first 02:30 on 25 October (00:30Z, CEST).
CONFIG = """\
gateway:
  timezone: Europe/Berlin
  reset_schedule: {every: day, at: "02:30"}
channels:
  - id: main
    import_id: KZG002614057
    unit: kWh
    scale_factor: 0.5
    demand_window: 15min
    demand_slide: 15min
  - id: sub
    unit: kWh
    scale_factor: 1
    demand_window: 15min
    demand_slide: 15min
    reset_schedule: {every: month, day: last, at: "00:00"}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def write(folder: Path, events: str) -> tuple[Path, Path]:
    config = folder / "site.yaml"
    config.write_text(CONFIG)
    log = folder / "events.csv"
    log.write_text("time,channel,event,value\n" + events)
    return config, log


def test_daily_resets_across_spring_forward_fire_at_the_jump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, log = write(
        tmp_path,
        "2026-03-28T00:00:00Z,main,pulses,4\n"  # 2 kWh before the first reset
        "2026-03-28T01:30:00Z,main,pulses,10\n"  # at the 02:30 CET reset: after it
        "2026-03-29T00:59:59Z,main,pulses,6\n"  # just before the jump
        "2026-03-29T01:00:00Z,main,pulses,2\n"  # at the jump: after the reset
        "2026-03-31T23:00:00Z,sub,pulses,1\n",
    )
    db = tmp_path / "replay" / "gateway.db"
    run(
        capsys,
        "replay",
        "-c",
        str(config),
        str(log),
        "--start",
        "2026-03-27T23:00:00Z",
        "--end",
        "2026-04-01T00:00:00Z",
        "--db",
        str(db),
    )
    rows = list(csv.DictReader(io.StringIO(run(capsys, "periods", "--db", str(db), "--csv"))))
    assert [tuple(r.values()) for r in rows] == [
        # start (counting began), end, consumption, the peak it closed (4 pulses in 15 min of
        # 0.5 kWh each: 8 kW at 00:15Z) and what reset it
        (
            "main",
            "2026-03-27T23:00:00Z",
            "2026-03-28T01:30:00Z",
            "2.0",
            "8.0",
            "2026-03-28T00:15:00Z",
            "schedule",
        ),
        (
            "main",
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "8.0",
            "20.0",
            "2026-03-28T01:45:00Z",
            "schedule",
        ),
        (
            "main",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z",
            "1.0",
            "4.0",
            "2026-03-29T01:15:00Z",
            "schedule",
        ),
        # sub: the last day of March at 00:00 CEST (in the audit's time order)
        ("sub", "2026-03-27T23:00:00Z", "2026-03-30T22:00:00Z", "0.0", "", "", "schedule"),
        ("main", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z", "0.0", "", "", "schedule"),
    ]
    assert list(rows[0]) == [
        "channel",
        "start",
        "end",
        "consumption",
        "peak_demand",
        "peak_time",
        "source",
    ]


def test_the_repeated_hour_fires_once_at_its_first_showing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, log = write(tmp_path, "2026-10-24T12:00:00Z,main,pulses,2\n")
    db = tmp_path / "replay" / "gateway.db"
    run(
        capsys,
        "replay",
        "-c",
        str(config),
        str(log),
        "--start",
        "2026-10-24T12:00:00Z",
        "--end",
        "2026-10-26T12:00:00Z",
        "--db",
        str(db),
    )
    rows = list(csv.DictReader(io.StringIO(run(capsys, "periods", "--db", str(db), "--csv"))))
    assert [(r["channel"], r["end"]) for r in rows] == [
        ("main", "2026-10-25T00:30:00Z"),  # 02:30 CEST, not 02:30 CET an hour later
        ("main", "2026-10-26T01:30:00Z"),  # 02:30 CET
    ]


def test_the_table_shows_import_ids_and_local_times_from_the_database_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, log = write(tmp_path, "2026-03-28T00:00:00Z,main,pulses,4\n")
    db = tmp_path / "replay" / "gateway.db"
    run(
        capsys,
        "replay",
        "-c",
        str(config),
        str(log),
        "--start",
        "2026-03-27T23:00:00Z",
        "--end",
        "2026-03-29T12:00:00Z",
        "--db",
        str(db),
    )
    table = run(capsys, "periods", "--db", str(db)).splitlines()
    assert table[0].split() == [
        "channel",
        "import_id",
        "start",
        "end",
        "consumption",
        "peak_demand",
        "peak_time",
        "source",
    ]
    first = table[1].split()
    assert first[:4] == [
        "main",
        "KZG002614057",
        "2026-03-28T00:00:00+01:00",
        "2026-03-28T02:30:00+01:00",
    ]
    assert first[4:6] == ["2.000", "kilowatt-hours"]
    assert table[2].split()[3] == "2026-03-29T03:00:00+02:00"  # the jump, in CEST
    # the CSV of one channel, and the resets report lists the schedule's resets too
    only = run(capsys, "periods", "--db", str(db), "--csv", "--channel", "main")
    assert {row.split(",")[0] for row in only.splitlines()[1:]} == {"main"}
    assert "schedule" in run(capsys, "resets", "--db", str(db))


def test_an_empty_database_has_no_periods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, log = write(tmp_path, "2026-03-28T00:00:00Z,main,pulses,4\n")
    db = tmp_path / "replay" / "gateway.db"
    run(capsys, "replay", "-c", str(config), str(log), "--db", str(db))
    assert run(capsys, "periods", "--db", str(db)) == "no billing periods closed yet\n"
    assert run(capsys, "periods", "--db", str(db), "--csv").splitlines() == [
        "channel,start,end,consumption,peak_demand,peak_time,source"
    ]
