"""`check`, `resets` and `run` at the command line: exit codes and messages a person reads."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import DEMO_CONFIG, main
from gateway.core import Channel, Engine
from gateway.store import Store
from tests.daemon import write_config
from tests.helpers import at, rules


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_check_prints_a_summary_of_a_good_config(capsys) -> None:
    """`check` on the demo config exits 0 and names its channels and object count."""
    code, out, err = run_cli(capsys, "check", "-c", str(DEMO_CONFIG))
    assert (code, err) == (0, "")
    assert out.startswith(f"OK {DEMO_CONFIG}: 4 channels, 1 source, 31 BACnet objects")
    for channel in ("electric", "gas", "water", "steam"):
        assert f"channel {channel}:" in out


def test_check_lists_every_problem_and_exits_2(tmp_path: Path, capsys) -> None:
    """`check` on a broken config prints one FILE:LINE:COL line per problem and exits 2."""
    config = write_config(tmp_path)
    config.write_text(
        config.read_text()
        .replace("unit: kWh", "unit: kwh")
        .replace("demand_slide: 2s", "slide: 2s")
    )
    code, out, err = run_cli(capsys, "check", "-c", str(config))
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert len(lines) >= 2 and all(line.startswith(f"{config}:") for line in lines)
    assert any("channels[0].unit: unknown unit 'kwh'" in line for line in lines)
    assert any("channels[1].slide: unknown key" in line for line in lines)


def make_state(db_dir: Path, tamper: bool = False) -> Path:
    """A state dir with two channels, three resets logged, one refused by its lockout."""
    engine = Engine(
        {"main": rules(lockout="10min"), "gas": rules(unit="cubic_feet")}, at("00:00:00")
    )
    with Store.open(db_dir) as store:
        engine.advance(at("00:00:00"))
        engine.pulses("main", at("00:00:10"), 5)
        engine.pulses("gas", at("00:00:10"), 2)
        engine.advance(at("00:01:00"))
        for t, channel in (("00:01:10", "main"), ("00:01:20", "gas"), ("00:01:30", "main")):
            engine.advance(at(t))
            outcome = engine.reset(channel, at(t))
            target: Channel = engine.channels[channel]
            store.record_reset(
                channel, outcome, "bacnet:127.0.0.1:47809", (target.rules, target.state())
            )
        store.checkpoint(
            {cid: (c.rules, c.state()) for cid, c in engine.channels.items()}, at("00:02:00")
        )
    db = db_dir / "gateway.db"
    if tamper:
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE channel_state SET cumulative_demand = 1.5 WHERE channel = 'gas'")
    return db


def test_resets_prints_the_log_and_an_ok_verdict(tmp_path: Path, capsys) -> None:
    """`resets --db` lists every attempt, accepted or refused, and says OK per channel."""
    db = make_state(tmp_path / "state")
    code, out, err = run_cli(capsys, "resets", "--db", str(db))
    assert (code, err) == (0, "")
    assert out.count("bacnet:127.0.0.1:47809") == 3
    assert "lockout" in out
    assert "main: OK" in out and "gas: OK" in out


def test_resets_exits_1_and_names_the_channel_whose_checksum_breaks(tmp_path: Path, capsys) -> None:
    """A cumulative demand that disagrees with the logged peaks is reported, exit 1."""
    db = make_state(tmp_path / "state", tamper=True)
    code, out, _ = run_cli(capsys, "resets", "--db", str(db))
    assert code == 1
    assert "main: OK" in out
    assert "gas: CHECKSUM BROKEN" in out


def test_resets_finds_the_database_from_the_config(tmp_path: Path, capsys) -> None:
    """`resets -c FILE` reads {state_dir}/gateway.db of that config."""
    make_state(tmp_path / "state")
    code, out, _ = run_cli(capsys, "resets", "-c", str(write_config(tmp_path)))
    assert code == 0 and "main: OK" in out


def garble(db: Path) -> None:
    db.write_bytes(b"this is not a database at all" * 100)


def from_the_future(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()  # checkpoints the WAL into the file before the test reads its bytes


@pytest.mark.parametrize(
    ("damage", "message"), [(garble, "gateway.db"), (from_the_future, "newer")]
)
def test_run_refuses_a_damaged_or_newer_database_without_touching_it(
    tmp_path: Path, damage, message: str
) -> None:
    """A corrupt or newer database stops `run`: exit 1, one clear line, the file untouched."""
    config = write_config(tmp_path)
    db = make_state(tmp_path / "state")
    damage(db)
    before = db.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and message in result.stderr
    assert db.read_bytes() == before
