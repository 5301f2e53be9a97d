"""The systemd unit, its hardware drop-in and its user: the settings, and systemd's own verdicts.

`systemd-analyze verify` and `systemd-analyze security --offline=true` need no running systemd,
only the `systemd` package; CI installs it (.ci/run), elsewhere those tests skip without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import EXIT_BAD_INPUT
from gateway.service import STOP_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "pulse-gateway.service"
HARDWARE = ROOT / "systemd" / "hardware.conf"
SYSUSERS = ROOT / "systemd" / "pulse-gateway.sysusers"
INSTALL_GUIDE = ROOT / "docs" / "install.md"
BINARY = "/opt/pulse-gateway/bin/pulse-gateway"
CONFIG = "/etc/pulse-gateway/gateway.yaml"
RATINGS_OK_OR_BETTER = ("OK", "SAFE", "PERFECT")

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """A unit file as {section: {key: [every value, in order]}} (keys may repeat)."""
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"no continuation lines, please: {raw!r}"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a setting before any section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(path: Path = UNIT) -> dict[str, list[str]]:
    """The [Service] section of a unit file or drop-in."""
    return parse_unit(path.read_text())["Service"]


def one(settings: dict[str, list[str]], key: str) -> str:
    """The value of a key set exactly once."""
    values = settings.get(key, [])
    assert len(values) == 1, f"{key}= is set {len(values)} times: {values}"
    return values[0]


def seconds(value: str) -> float:
    """A systemd time span of the forms this unit uses (``30s``, ``5min``, ``10``)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min)?", value)
    assert match, f"unexpected time span {value!r}"
    return float(match[1]) * {"ms": 0.001, "s": 1.0, "min": 60.0, None: 1.0}[match[2]]


def need(tool: str) -> str:
    """The path of a systemd tool; skip without it, but fail in CI, which must install it."""
    path = shutil.which(tool)
    if path is None:
        message = (
            f"{tool} is not installed: .ci/run must install it "
            "(apt-get install -y --no-install-recommends systemd)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def runnable_copy(folder: Path, *, drop_ins: tuple[Path, ...] = ()) -> Path:
    """The unit in ``folder`` with ExecStart on this virtualenv's real pulse-gateway.

    `systemd-analyze verify` checks that the ExecStart binary exists and is executable;
    /opt/pulse-gateway is not installed here, so the copy points at the same program in
    this virtualenv. Drop-ins go in ``folder/pulse-gateway.service.d/``, where verify and
    security read them.
    """
    binary = Path(sys.executable).parent / "pulse-gateway"
    assert os.access(binary, os.X_OK), f"{binary} missing: pip install -e . first"
    text = UNIT.read_text()
    assert text.count(BINARY) == 1
    copy = folder / UNIT.name
    copy.write_text(text.replace(BINARY, str(binary)))
    if drop_ins:
        (folder / f"{UNIT.name}.d").mkdir()
        for drop_in in drop_ins:
            shutil.copy(drop_in, folder / f"{UNIT.name}.d" / drop_in.name)
    return copy


def exposure(unit: Path) -> tuple[float, str]:
    """`systemd-analyze security --offline=true`'s overall exposure and its rating."""
    result = subprocess.run(
        [need("systemd-analyze"), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", result.stdout)
    assert match, result.stdout
    return float(match[1]), match[2]


def documented_exposures() -> dict[str, tuple[float, str, str]]:
    """{"unit" | "hardware": (score, rating, systemd version)} as docs/install.md states them."""
    found = {}
    pattern = r"<!-- exposure (\w+): (\d+\.\d) (\w+) systemd (\d+) -->"
    for name, score, rating, version in re.findall(pattern, INSTALL_GUIDE.read_text()):
        found[name] = (float(score), rating, version)
    return found


def systemd_version() -> str:
    """The major version of the installed systemd (e.g. ``252``)."""
    out = subprocess.run(
        [need("systemd-analyze"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.match(r"systemd (\d+)", out)
    assert match, out
    return match[1]


# -- the settings -------------------------------------------------------------------------


def test_the_unit_speaks_sd_notify_with_a_watchdog() -> None:
    """Type=notify from the main process, a 30 s watchdog, reload by SIGHUP."""
    unit = service()
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    assert seconds(one(unit, "WatchdogSec")) == 30
    assert one(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"


def test_exec_start_runs_the_installed_gateway_on_the_etc_config() -> None:
    """ExecStart is the /opt/pulse-gateway virtualenv's binary on the /etc config."""
    assert one(service(), "ExecStart") == f"{BINARY} run -c {CONFIG}"
    guide = INSTALL_GUIDE.read_text()
    assert BINARY in guide and CONFIG in guide
    assert "python3 -m venv /opt/pulse-gateway" in guide


def test_restart_on_failure_but_not_on_a_config_error() -> None:
    """Restart=on-failure, except exit 2, the CLI's bad-input code (a config error)."""
    unit = service()
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "RestartPreventExitStatus") == str(EXIT_BAD_INPUT) == "2"
    assert seconds(one(unit, "RestartSec")) >= 1


def test_stop_timeout_leaves_room_for_the_final_checkpoint() -> None:
    """TimeoutStopSec exceeds the gateway's own stop budget (5 s) with a margin."""
    assert seconds(one(service(), "TimeoutStopSec")) >= STOP_TIMEOUT_S + 5


def test_a_dedicated_user_with_state_and_configuration_directories() -> None:
    """User pulse-gateway (from the sysusers file), /var/lib and /etc directories, UMask 0077."""
    unit = service()
    assert one(unit, "User") == one(unit, "Group") == "pulse-gateway"
    assert "DynamicUser" not in unit
    assert one(unit, "StateDirectory") == "pulse-gateway"
    assert one(unit, "ConfigurationDirectory") == "pulse-gateway"
    assert one(unit, "WorkingDirectory") == "/var/lib/pulse-gateway"
    assert one(unit, "UMask") == "0077"
    users = [line.split() for line in SYSUSERS.read_text().splitlines() if line[:1] == "u"]
    assert users and users[0][:2] == ["u", "pulse-gateway"]
    assert users[0][-1] == "/var/lib/pulse-gateway"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateUsers", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("DevicePolicy", "closed"),
    ],
)
def test_the_unit_is_hardened(key: str, value: str) -> None:
    """Each hardening setting is present once with the expected value."""
    assert one(service(), key) == value


def test_system_calls_are_the_service_set_minus_privileged_ones() -> None:
    """SystemCallFilter allows @system-service, then takes @privileged and @resources away."""
    filters = service()["SystemCallFilter"]
    assert filters == ["@system-service", "~@privileged @resources"]


def test_the_hardware_drop_in_opens_only_listed_devices() -> None:
    """The GPIO/serial drop-in: real /dev, but only DeviceAllow'd nodes, and their groups."""
    drop_in = service(HARDWARE)
    assert one(drop_in, "PrivateDevices") == "no"
    assert drop_in["DeviceAllow"] == ["/dev/gpiochip0 rw", "/dev/ttyUSB0 rw"]
    assert one(drop_in, "SupplementaryGroups") == "dialout gpio"
    assert one(service(), "DevicePolicy") == "closed"  # the unit keeps the allow list closed


def test_the_install_guide_uses_the_shipped_files() -> None:
    """docs/install.md installs the unit, drop-in and sysusers file from systemd/ by name."""
    guide = INSTALL_GUIDE.read_text()
    for path in (UNIT, HARDWARE, SYSUSERS):
        assert f"systemd/{path.name}" in guide, path.name
    assert "/etc/systemd/system/pulse-gateway.service.d/hardware.conf" in guide


# -- systemd's verdicts -------------------------------------------------------------------


def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit prints nothing: no unknown key, no bad value."""
    tool = need("systemd-analyze")
    result = subprocess.run(
        [tool, "verify", str(runnable_copy(tmp_path))], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_analyze_verify_is_silent_with_the_hardware_drop_in(tmp_path: Path) -> None:
    """The unit plus systemd/hardware.conf as a drop-in also verifies without a word."""
    tool = need("systemd-analyze")
    copy = runnable_copy(tmp_path, drop_ins=(HARDWARE,))
    result = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """The silence means something: an unknown key in a drop-in makes verify speak."""
    tool = need("systemd-analyze")
    bogus = tmp_path / "bogus.conf"
    bogus.write_text("[Service]\nProtectSytem=strict\n")
    copy = runnable_copy(tmp_path, drop_ins=(bogus,))
    result = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True)
    assert "Unknown key 'ProtectSytem'" in result.stdout + result.stderr


@pytest.mark.parametrize(("name", "drop_ins"), [("unit", ()), ("hardware", (HARDWARE,))])
def test_exposure_is_ok_or_better_and_as_documented(
    tmp_path: Path, name: str, drop_ins: tuple[Path, ...]
) -> None:
    """`systemd-analyze security` rates the unit OK or better; docs/install.md states the score."""
    score, rating = exposure(runnable_copy(tmp_path, drop_ins=drop_ins))
    assert rating in RATINGS_OK_OR_BETTER, (score, rating)
    documented = documented_exposures()[name]
    if documented[2] == systemd_version():  # other versions weigh the checks differently
        assert (score, rating) == documented[:2]


def test_sysusers_creates_the_user(tmp_path: Path) -> None:
    """systemd-sysusers, run on an empty root, creates pulse-gateway with no login shell."""
    tool = need("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    subprocess.run([tool, f"--root={tmp_path}", str(SYSUSERS)], check=True, capture_output=True)
    passwd = (tmp_path / "etc" / "passwd").read_text().splitlines()
    entry = next(line.split(":") for line in passwd if line.startswith("pulse-gateway:"))
    assert entry[5] == "/var/lib/pulse-gateway"
    assert entry[6] in ("/usr/sbin/nologin", "/sbin/nologin")
    assert "pulse-gateway:" in (tmp_path / "etc" / "group").read_text()


def test_the_guides_check_command_passes_on_the_example_config(tmp_path: Path) -> None:
    """`pulse-gateway check -c /etc/pulse-gateway/gateway.yaml` as in the guide, on the example."""
    guide = INSTALL_GUIDE.read_text()
    command = f"runuser -u pulse-gateway -- pulse-gateway check -c {CONFIG}"
    assert command in guide
    assert "config/example.yaml /etc/pulse-gateway/gateway.yaml" in guide
    config = tmp_path / "gateway.yaml"
    shutil.copy(ROOT / "config" / "example.yaml", config)
    binary = Path(sys.executable).parent / "pulse-gateway"
    result = subprocess.run(
        [str(binary), "check", "-c", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK {config}")
    assert "state in /var/lib/pulse-gateway" in result.stdout  # the unit's StateDirectory
