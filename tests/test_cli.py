"""`check`, `resets`, `init` and `run` at the command line: exit codes and messages a person
reads, and the configs the package carries."""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway import cli
from gateway.cli import bundled_config, demo_state_dir, main
from gateway.config import RunConfig
from gateway.core import Channel, Engine
from gateway.store import Store
from tests.daemon import Daemon, write_config
from tests.helpers import DEMO_CONFIG, ROOT, at, rules


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_check_prints_a_summary_of_a_good_config(capsys) -> None:
    """`check` on the demo config exits 0 and names its channels and object count."""
    code, out, err = run_cli(capsys, "check", "-c", str(DEMO_CONFIG))
    assert (code, err) == (0, "")
    # per channel 9 analog inputs, a reset and 2 trend logs; device, reset_all, network port
    assert out.startswith(f"OK {DEMO_CONFIG}: 4 channels, 1 source, 51 BACnet objects")
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
        # closing(): sqlite3's own context manager commits but leaves the connection open
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
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


# -- the bundled configs, init and the demo --------------------------------------------------


@pytest.mark.parametrize("name", ["demo.yaml", "example.yaml", "modbus-demo.yaml"])
def test_the_package_carries_the_configs_of_the_config_folder(name: str) -> None:
    """The installed package reads config/NAME: the same text, from the one copy in config/."""
    assert bundled_config(name).read_text(encoding="utf-8") == (ROOT / "config" / name).read_text(
        encoding="utf-8"
    )


def test_the_demo_state_goes_under_xdg_state_home(state_home: Path) -> None:
    """$XDG_STATE_HOME/pulse-gateway/demo when XDG_STATE_HOME is set."""
    assert demo_state_dir() == state_home / "pulse-gateway" / "demo"


@pytest.mark.parametrize("xdg", [None, "", "relative/state"])
def test_the_demo_state_falls_back_to_dot_local_state(
    xdg: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unset, empty or relative XDG_STATE_HOME (the spec ignores it): ~/.local/state/..."""
    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg is None:
        monkeypatch.delenv("XDG_STATE_HOME")
    else:
        monkeypatch.setenv("XDG_STATE_HOME", xdg)
    assert demo_state_dir() == tmp_path / ".local" / "state" / "pulse-gateway" / "demo"


def test_run_without_a_config_serves_the_demo_with_its_state_in_the_user_state_dir(
    state_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` alone loads the bundled demo, says where its state goes, and puts it there, on a
    reload too."""
    served: list[RunConfig] = []

    def serve(config: RunConfig, reread: Callable[[], RunConfig] | None = None) -> int:
        assert reread is not None
        served.extend([config, reread()])
        return 0

    monkeypatch.setattr(cli, "_serve", serve)
    code, out, err = run_cli(capsys, "run")
    expected = state_home / "pulse-gateway" / "demo"
    assert (code, out, err) == (0, f"demo state: {expected}\n", "")
    for config in served:
        assert config.gateway.state_dir == expected
        assert config.gateway.name == "demo"
        assert [c.id for c in config.channels] == ["electric", "gas", "water", "steam"]


def demo_ports_taken() -> str | None:
    """Why the demo cannot start here now (its fixed ports are in use), or None."""
    with socket.socket() as tcp:
        if tcp.connect_ex(("127.0.0.1", 9842)) == 0:
            return "127.0.0.1:9842 (the demo's metrics port) is in use"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.bind(("127.0.0.1", 47808))
        except OSError:
            return "127.0.0.1:47808 (the demo's BACnet port) is in use"
    return None


def test_the_demo_runs_from_any_directory_and_keeps_its_state_where_it_said(
    tmp_path: Path, state_home: Path
) -> None:
    """The real `pulse-gateway run` from an empty directory: ready, state under XDG_STATE_HOME,
    reloaded on SIGHUP, nothing written where it was started, exit 0 on SIGTERM."""
    if reason := demo_ports_taken():
        pytest.skip(reason)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    expected = state_home / "pulse-gateway" / "demo"
    with Daemon(None, cwd=workdir) as demo:
        started = demo.wait_for("gateway_started")
        demo.ready()
        demo.signal(signal.SIGHUP)
        demo.wait_for("config_reloaded")
        assert demo.stop() == 0
    assert demo.seen[0] == {"event": "unparsed", "text": f"demo state: {expected}\n"}
    assert started["state_dir"] == str(expected)
    assert (expected / "gateway.db").is_file()
    assert list(workdir.iterdir()) == []


def test_init_writes_the_commented_example_and_it_passes_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`init FILE` writes config/example.yaml's text to FILE, and `check -c FILE` accepts it."""
    site = tmp_path / "site.yaml"
    code, out, err = run_cli(capsys, "init", str(site))
    assert (code, err) == (0, "")
    assert str(site) in out
    assert site.read_text(encoding="utf-8") == (ROOT / "config" / "example.yaml").read_text(
        encoding="utf-8"
    )
    code, out, err = run_cli(capsys, "check", "-c", str(site))
    assert (code, err) == (0, "")
    assert out.startswith(f"OK {site}: 4 channels, 4 sources")


def test_init_never_overwrites_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing FILE: exit 2, one line on stderr naming it, the file untouched."""
    site = tmp_path / "site.yaml"
    site.write_text("gateway: {name: the-real-site}\n")
    code, out, err = run_cli(capsys, "init", str(site))
    assert (code, out) == (2, "")
    assert err == f"pulse-gateway init: {site} already exists: not overwritten\n"
    assert site.read_text() == "gateway: {name: the-real-site}\n"


def test_init_into_a_missing_directory_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FILE whose directory does not exist: exit 2, one line naming FILE and the reason."""
    site = tmp_path / "no-such-dir" / "site.yaml"
    code, out, err = run_cli(capsys, "init", str(site))
    assert (code, out) == (2, "")
    assert err == f"pulse-gateway init: {site}: cannot write: No such file or directory\n"
    assert not site.parent.exists()


def test_init_at_the_command_line_exits_2_without_a_traceback(tmp_path: Path) -> None:
    """The installed entry point: a refused init is exit 2 and one line, never a traceback."""
    site = tmp_path / "site.yaml"
    site.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "init", str(site)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"pulse-gateway init: {site} already exists: not overwritten"
    ]
