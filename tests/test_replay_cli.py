"""`pulse-gateway replay` on bad input: one clear line naming the place, exit 2, no output."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import parse_config
from gateway.replay import replay
from gateway.store import Store

CONFIG = """\
channels:
  - {id: a, unit: kWh, scale_factor: 1, demand_window: 2min, demand_slide: 1min}
  - {id: b, unit: us_gallons, scale_factor: 2, demand_window: 1min, demand_slide: 1min}
"""
GOOD = "2026-01-01T00:00:00Z,a,pulses,3\n2026-01-01T00:00:30Z,b,pulses,1\n"
HEADER = "time,channel,event,value\n"


@pytest.fixture
def files(tmp_path: Path):
    config = tmp_path / "site.yaml"
    config.write_text(CONFIG)

    def write(events: str, name: str = "events.csv") -> tuple[str, str]:
        path = tmp_path / name
        path.write_text(events)
        return str(config), str(path)

    return write


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


BAD_ROWS = [
    ("2026-01-01T00:01:00Z,a,pulses,0\n", 4, "at least 1"),
    ("2026-01-01T00:01:00Z,a,pulses,-3\n", 4, "not a whole number"),
    ("2026-01-01T00:01:00Z,a,pulses,1.5\n", 4, "not a whole number"),
    ("2026-01-01T00:01:00Z,a,pulses,\n", 4, "not a whole number"),
    ("2026-01-01T00:01:00Z,a,pulses,lots\n", 4, "not a whole number"),
    ("2026-01-01T00:01:00Z,z,pulses,1\n", 4, "unknown channel 'z'"),
    ("2026-01-01T00:01:00Z,,pulses,1\n", 4, "channel is empty"),
    ("2026-01-01T00:01:00Z,a,pulse,1\n", 4, "unknown event 'pulse'"),
    ("2026-01-01T00:01:00Z,a,reset,1\n", 4, "takes no value"),
    ("2026-01-01T00:01:00Z,a,offline,2\n", 4, "takes no value"),
    ("2026-01-01T00:01:00Z,a,reset_all,\n", 4, "leave channel empty"),
    ("2026-01-01T00:01:00Z,,reset_all,1\n", 4, "takes no value"),
    ("2026-01-01T00:01:00Z,a,online,-1\n", 4, "not a whole number"),
    ("2026-01-01T00:01:00Z,a,online,x\n", 4, "not a whole number"),
    ("2026-01-01T00:00:10Z,a,pulses,1\n", 4, "earlier than the row before"),
    ("2026-01-01 00:01:00,a,pulses,1\n", 4, "no zone"),
    ("yesterday,a,pulses,1\n", 4, "cannot read time"),
    ("2026-02-30T00:00:00Z,a,pulses,1\n", 4, "cannot read time"),
    ("2026-01-01T00:01:00Z,a,pulses,1,extra\n", 4, "expected 4 fields"),
    ("2026-01-01T00:01:00Z,a\n", 4, "expected 4 fields"),
    ("2026-01-01T00:01:00Z,a,pulses,1\n2026-01-01T00:02:00Z,b,pulses,0\n", 5, "at least 1"),
]


@pytest.mark.parametrize(("rows", "line", "message"), BAD_ROWS)
def test_a_bad_row_is_one_error_line_with_its_number_and_no_output(
    files, capsys: pytest.CaptureFixture[str], rows: str, line: int, message: str
) -> None:
    """A bad row gives exit 2, one stderr line naming file:line, and no partial table."""
    config, events = files(HEADER + GOOD + rows)
    code, out, err = run_cli(capsys, "replay", "-c", config, events)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert f"events.csv:{line}: " in err
    assert message in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("when,channel,event,value\n", "expected the header"),
        ("time,channel,event\n", "expected the header"),
    ],
)
def test_a_bad_header_is_an_error_on_line_one(files, capsys, content: str, message: str) -> None:
    """The header must be exactly time,channel,event,value."""
    config, events = files(content)
    code, out, err = run_cli(capsys, "replay", "-c", config, events)
    assert (code, out) == (2, "")
    assert "events.csv:1: " in err and message in err


def test_a_row_before_start_is_an_error(files, capsys) -> None:
    """--start says when counting began; an earlier row contradicts it."""
    config, events = files(HEADER + GOOD)
    code, _, err = run_cli(
        capsys, "replay", "-c", config, events, "--start", "2026-01-01T00:00:10Z"
    )
    assert code == 2 and "events.csv:2: " in err and "before --start" in err


def test_end_before_start_is_an_error(files, capsys) -> None:
    """An empty time range is a mistake, not an empty table."""
    config, events = files(HEADER + GOOD)
    code, out, err = run_cli(
        capsys,
        "replay",
        "-c",
        config,
        events,
        "--start",
        "2026-01-02T00:00:00Z",
        "--end",
        "2026-01-01T00:00:00Z",
    )
    assert (code, out) == (2, "") and "--end is earlier than --start" in err


@pytest.mark.parametrize("flag", ["--start", "--end"])
def test_an_unreadable_time_argument_is_a_usage_error(files, capsys, flag: str) -> None:
    """A bad --start/--end is refused by the argument parser with exit 2."""
    config, events = files(HEADER + GOOD)
    code, out, err = run_cli(capsys, "replay", "-c", config, events, flag, "tomorrow")
    assert (code, out) == (2, "") and "cannot read time 'tomorrow'" in err


def test_a_missing_or_binary_events_file_is_named(files, capsys, tmp_path: Path) -> None:
    """An unreadable log names the file; a non-UTF-8 one says so."""
    config, _ = files(HEADER)
    code, _, err = run_cli(capsys, "replay", "-c", config, str(tmp_path / "nope.csv"))
    assert code == 2 and "nope.csv: cannot read" in err
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"time,channel,event,value\n\xff\xfe\x00,a,pulses,1\n")
    code, _, err = run_cli(capsys, "replay", "-c", config, str(binary))
    assert code == 2 and "not UTF-8" in err


def test_a_bad_config_is_reported_with_its_place(files, capsys, tmp_path: Path) -> None:
    """A broken config stops replay with FILE:LINE:COL messages and exit 2."""
    _, events = files(HEADER + GOOD)
    config = tmp_path / "broken.yaml"
    config.write_text(
        "channels:\n"
        "  - {id: a, unit: kwh, scale_factor: 1, demand_window: 2min, demand_slide: 1min}\n"
    )
    code, out, err = run_cli(capsys, "replay", "-c", str(config), events)
    assert (code, out) == (2, "")
    assert err.startswith(
        f"{config}:2:19: channels[0].unit: unknown unit 'kwh' (did you mean 'kWh'?)"
    )


def test_no_traceback_reaches_the_user() -> None:
    """The installed command prints one line and exit 2 for a bad log, not a traceback."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "replay",
            "-c",
            "/nonexistent.yaml",
            "/nonexistent.csv",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == "/nonexistent.yaml:1:1: (file): cannot read: No such file or directory"
    )


def test_rows_stream_in_bounded_memory() -> None:
    """Peak memory does not grow with the length of the log (10x the rows, same peak)."""
    config = parse_config(
        "channels:\n  - {id: a, unit: kWh, scale_factor: 1, demand_window: 1h, demand_slide: 1h}\n"
    )

    def log(seconds: int) -> Iterator[str]:
        yield HEADER
        for s in range(seconds):
            yield f"2026-01-01T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z,a,pulses,1\n"

    class Sink:
        def write(self, text: str) -> int:
            return len(text)

    peaks = []
    for seconds in (8_000, 80_000):
        tracemalloc.start()
        replay(config, log(seconds), Sink())  # type: ignore[arg-type]
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 2 * peaks[0], peaks


def test_replay_db_records_the_resets_and_final_state(files, capsys, tmp_path: Path) -> None:
    """--db stores every reset attempt (source replay) and the final state; checksums hold."""
    config, events = files(
        HEADER + GOOD + "2026-01-01T00:03:00Z,a,reset,\n2026-01-01T00:04:00Z,,reset_all,\n"
    )
    db = tmp_path / "replayed.db"
    code, out, err = run_cli(capsys, "replay", "-c", config, events, "--db", str(db))
    assert (code, err) == (0, "") and out.startswith("time,channel,")
    with Store.open_readonly(db) as store:
        log, verdicts, state = store.reset_log(), store.verdict(), store.load()
    assert [(r.channel, r.source, r.accepted) for r in log] == [
        ("a", "replay", True),
        ("a", "replay", True),
        ("b", "replay", True),
    ]
    assert all(v.ok for v in verdicts)
    assert state is not None and state.channels["a"].state.pulses_total == 3


def test_replay_db_refuses_a_database_with_state_and_a_bad_log_writes_nothing(
    files, capsys, tmp_path: Path
) -> None:
    """A bad log leaves --db empty (a rerun works); a database with state is never overwritten."""
    db = tmp_path / "replayed.db"
    config, events = files(HEADER + GOOD + "2026-01-01T00:00:40Z,a,reset,\nnonsense\n")
    code, out, err = run_cli(capsys, "replay", "-c", config, events, "--db", str(db))
    assert (code, out) == (2, "") and "events.csv:5:" in err
    config, events = files(HEADER + GOOD + "2026-01-01T00:00:40Z,a,reset,\n")
    assert run_cli(capsys, "replay", "-c", config, events, "--db", str(db))[0] == 0
    code, out, err = run_cli(capsys, "replay", "-c", config, events, "--db", str(db))
    assert (code, out) == (2, "") and "already holds state" in err


def test_replay_db_writes_interval_records(capsys, tmp_path: Path) -> None:
    """--db holds the 15-minute records of the log, flagged and summed as worked by hand."""
    case = Path(__file__).parent / "golden" / "shared-replay-edges"
    db = tmp_path / "edges.db"
    code = main(
        ["replay", "-c", str(case / "config.yaml"), str(case / "events.csv"), "--db", str(db)]
    )
    capsys.readouterr()
    assert code == 0
    with Store.open_readonly(db) as store:
        records = list(store.intervals(0, 2**62))
    assert [
        (r.end - r.start, r.pulses, r.consumption, r.average_demand, r.estimated) for r in records
    ] == [
        (900_000_000, 25, 12.5, 50.0, False),
        (900_000_000, 3, 1.5, 6.0, True),  # offline from 00:26
        (900_000_000, 46, 23.0, 92.0, True),  # the 40 catch-up pulses at 00:33, 5, and 1
    ]
    assert records[-1].consumption_total == 1037.0
