"""Replay golden files: the worked replay examples and hand-computed edge cases, via the CLI.

Each folder under tests/golden holds config.yaml, events.csv, expected.csv (worked out by hand
from the demand rules in docs/reference/demand-rules.md, not produced by this code) and
optionally args.txt; a new folder is a new test. The shared-replay-* folders are the worked
examples of the replay format (docs/reference/commands.md).
"""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CASES = sorted(p for p in (HERE / "golden").iterdir() if p.is_dir())


def replay_output(case: Path) -> subprocess.CompletedProcess[str]:
    args = (case / "args.txt").read_text().split() if (case / "args.txt").exists() else []
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "replay",
            "-c",
            str(case / "config.yaml"),
            str(case / "events.csv"),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def assert_same_table(actual: str, expected: str) -> None:
    """Numbers compared as numbers (1e-9 relative), text exactly."""
    got = list(csv.reader(io.StringIO(actual)))
    want = list(csv.reader(io.StringIO(expected)))
    assert got[0] == want[0], "header"
    assert len(got) == len(want), f"{len(got) - 1} rows, expected {len(want) - 1}"
    for number, (g, w) in enumerate(zip(got, want, strict=True), start=1):
        assert len(g) == len(w), f"row {number}: {g}"
        for a, b in zip(g, w, strict=True):
            try:
                x, y = float(a), float(b)
            except ValueError:
                assert a == b, f"row {number}: {g} != {w}"
            else:
                assert math.isclose(x, y, rel_tol=1e-9), f"row {number}: {g} != {w}"


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replay_matches_the_expected_table(case: Path) -> None:
    """`pulse-gateway replay` prints the expected boundary table for each golden case."""
    result = replay_output(case)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert_same_table(result.stdout, (case / "expected.csv").read_text())


def test_the_worked_replay_examples_are_golden_cases() -> None:
    """Both worked replay examples are in tests/golden, so a clone alone runs them."""
    bundled = {p.name.removeprefix("shared-") for p in CASES}
    assert {"replay-basic", "replay-edges"} <= bundled
