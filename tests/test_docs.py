"""The README, the guides, the reference pages and the monitoring files in docs/: every
command in them runs, every link leads somewhere, every alert and dashboard query is valid
PromQL over metrics the gateway really exposes.

Conventions the guides follow (docs/monitoring/README.md repeats them for writers):

- A command is a line of a fenced block tagged ``sh`` (a trailing ``\\`` joins the next line).
  Every command in every guide is run here, from a working directory that links the
  repository's top level (so ``config/demo.yaml`` and ``docs/...`` work) and must exit 0, or is
  listed in ``NOT_RUN`` with the reason. ``pulse-gateway run`` never returns, so its
  configuration is checked with ``pulse-gateway check`` instead.
- An ``sh`` block that starts with ``#!`` is one script, run whole.
- Paths of an installed gateway (``/etc/pulse-gateway/gateway.yaml``, ``/var/lib/pulse-gateway``,
  ``127.0.0.1:9842``...) are written as a technician types them; ``PLACES`` maps each to a file
  or server this test prepares: a site built from ``config/example.yaml`` whose database holds
  ten days of replayed meter data with resets, and a live ``/metrics`` endpoint.
- A block tagged ``text expected-output`` right after an ``sh`` block is exactly what that block
  prints to stdout.
- A block tagged ``sh demo`` (the README's tour) runs against a live demo gateway, started by
  this test from ``config/demo.yaml`` on free ports: ``127.0.0.1:47808``, ``127.0.0.1:9842``, the
  client address ``127.0.0.1/8:47809`` and the demo's state directory
  ``~/.local/state/pulse-gateway/demo`` stand for that gateway's. Every command in it is run.
- ``.venv/bin/`` in a command is the virtualenv running the tests.
- A block tagged ``yaml config`` is a whole configuration and must pass ``check``; a block tagged
  ``yaml site-config`` must pass it when merged into ``config/example.yaml``.
- Other shell-like tags (bash, console, bat, powershell...) are not allowed: such commands would
  escape the check.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import main as cli_main
from gateway.config import parse_config
from gateway.core import Channel, Engine, Unit
from gateway.metrics import Metrics
from gateway.web.server import metrics_app, serve
from tests.helpers import at, rules

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MONITORING = DOCS / "monitoring"
REFERENCE = DOCS / "reference"
DESIGN = DOCS / "design"
GUIDES = [
    ROOT / "README.md",
    *sorted(DOCS.glob("*.md")),
    *sorted(REFERENCE.glob("*.md")),
    *sorted(DESIGN.glob("*.md")),
    *sorted(MONITORING.glob("*.md")),
]
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
OWN_GUIDES = ("commissioning.md", "bms-integration.md", "resets.md", "energycap.md")
# Where the README's long text lives now: each page must exist and tag its fences.
REFERENCE_PAGES = (
    "reference/demand-rules.md",
    "reference/commands.md",
    "reference/configuration.md",
    "reference/bacnet.md",
    "reference/state-and-resets.md",
    "reference/export-formats.md",
    "reference/metrics.md",
    "design/bacpypes3.md",
    "design/sources.md",
    "decisions.md",
    "performance.md",
)

# What a guide writes for an installed gateway (docs/install.md's layout) -> what the test gives
# it (Site.places); longest first where one is a prefix of another.
PLACES = (
    "/etc/pulse-gateway/gateway.yaml",
    "/var/lib/pulse-gateway/gateway.db",
    "/var/lib/pulse-gateway",
    "/var/lib/prometheus/node-exporter",
    "127.0.0.1:9842",
)
# Operator commands run as the service user on a real gateway; the test runs them as itself.
AS_SERVICE_USER = "runuser -u pulse-gateway -- "

_SYSTEMD = "needs a running systemd with the unit installed, as root"
_ROOT_SETUP = (
    "installs or changes the system as root (packages, users, /etc, /opt, udev); "
    "tests/test_systemd_unit.py checks the files it installs"
)
_JOURNAL = (
    "reads systemd's journal; the event names are docs/reference/commands.md's and "
    "tests/test_daemon.py reads them from the real daemon's log"
)
_EDITOR = "opens an editor"

# Commands the test cannot run, each with the reason. A command here that no guide holds any
# more is an error too, so this list cannot go stale.
NOT_RUN: dict[str, str] = {
    # README.md
    "python3.13 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/pulse-gateway run": (
        "creates a virtualenv and installs from the network; .ci/wheel-smoke installs the "
        "wheel and runs the demo, and the README's tour runs here against a live demo"
    ),
    "python3.13 -m venv .venv && .venv/bin/pip install -q -e '.[test,gpio]' && "
    ".venv/bin/python -m pytest": "the test suite itself, as .ci/run runs it",
    ".venv/bin/python -m simulators.modbus_counter --channels 4 --rate 2,0.5,3,0.3 --rollover "
    "65536 --initial 65440": "runs until stopped; tests/test_simulators.py runs the simulator and "
    "tests/test_modbus_gateway.py the gateway against it",
    # docs/commissioning.md, docs/resets.md, docs/install.md
    "systemctl reload pulse-gateway": f"{_SYSTEMD}; SIGHUP reload is tested end to end in "
    "tests/test_daemon.py",
    "systemctl stop pulse-gateway": f"{_SYSTEMD}; SIGTERM is tested in tests/test_daemon.py",
    "systemctl start pulse-gateway": _SYSTEMD,
    "systemctl restart pulse-gateway": _SYSTEMD,
    "systemctl daemon-reload": _SYSTEMD,
    "systemctl enable --now pulse-gateway": _SYSTEMD,
    "systemctl status pulse-gateway": _SYSTEMD,
    "cp -a /var/lib/pulse-gateway /root/pulse-gateway-evidence-$(date +%F)": "copies a stopped "
    "gateway's state as root: nothing to check but cp",
    'journalctl -u pulse-gateway -o cat | grep -E \'"event": "(reset_not_recorded|'
    "checkpoint_failed)\"'": _JOURNAL,
    # docs/monitoring/README.md, docs/energycap.md
    "systemctl reload prometheus": "needs a Prometheus server under systemd; the files it "
    "reloads pass promtool in this test",
    '"c:\\Program Files\\EnergyCAP Enterprise\\imptsk.exe" -d DSN -u USER -p PASSWORD -c '
    'STANDARD:SIMPLE_TEXT -f "\\\\fileserver\\energycap\\outbox\\site-a_*.csv" -l '
    '"import.log" -s "pulse-gateway energycap3"': "EnergyCAP's importer, on the EnergyCAP "
    "(Windows) server",
    # docs/install.md
    "apt-get install -y python3 python3-venv": _ROOT_SETUP,
    "python3 -m venv /opt/pulse-gateway": _ROOT_SETUP,
    "/opt/pulse-gateway/bin/pip install '.[gpio]'": f"{_ROOT_SETUP}; .ci/run installs the "
    "same way into .venv",
    "ln -sf /opt/pulse-gateway/bin/pulse-gateway /usr/local/bin/pulse-gateway": _ROOT_SETUP,
    "install -D -m 0644 systemd/pulse-gateway.sysusers /etc/sysusers.d/pulse-gateway.conf": (
        _ROOT_SETUP
    ),
    "systemd-sysusers /etc/sysusers.d/pulse-gateway.conf": "creates a system user; "
    "tests/test_systemd_unit.py runs systemd-sysusers on the file against an empty root",
    "install -D -m 0640 -o root -g pulse-gateway config/example.yaml "
    "/etc/pulse-gateway/gateway.yaml": _ROOT_SETUP,
    "editor /etc/pulse-gateway/gateway.yaml": _EDITOR,
    "install -m 0644 systemd/pulse-gateway.service /etc/systemd/system/pulse-gateway.service": (
        _ROOT_SETUP
    ),
    "systemd-analyze verify /etc/systemd/system/pulse-gateway.service": "tests/test_systemd_unit"
    ".py runs systemd-analyze verify on systemd/pulse-gateway.service",
    "journalctl -u pulse-gateway -n 20 -o cat": _JOURNAL,
    "journalctl -u pulse-gateway -f -o cat": _JOURNAL,
    'journalctl -u pulse-gateway --since today -o cat | grep \'"level": "error"\'': _JOURNAL,
    'journalctl -u pulse-gateway -o cat | grep \'"event": "reset_\'': _JOURNAL,
    "install -D -m 0644 systemd/hardware.conf "
    "/etc/systemd/system/pulse-gateway.service.d/hardware.conf": _ROOT_SETUP,
    "editor /etc/systemd/system/pulse-gateway.service.d/hardware.conf": _EDITOR,
    "groupadd --system gpio": _ROOT_SETUP,
    'echo \'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"\' > '
    "/etc/udev/rules.d/60-gpiochip.rules": _ROOT_SETUP,
    "udevadm control --reload": _ROOT_SETUP,
    "udevadm trigger --subsystem-match=gpio": _ROOT_SETUP,
    "systemd-analyze security pulse-gateway": "tests/test_systemd_unit.py runs systemd-analyze "
    "security --offline on the unit and checks the score docs/install.md states",
}

SHELL_TAGS = {"bash", "shell", "console", "zsh", "bat", "cmd", "powershell", "ps1", "pwsh"}


# -- reading the guides ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced block of a guide: its info string, first line number and body."""

    doc: Path
    line: int
    info: str
    body: str

    @property
    def tag(self) -> str:
        return self.info.split()[0] if self.info else ""

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def script(self) -> bool:
        return self.body.startswith("#!")

    def commands(self) -> list[str]:
        """The logical command lines: comments and blank lines dropped, ``\\`` lines joined."""
        commands: list[str] = []
        pending = ""
        for raw in self.body.splitlines():
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            commands.append(pending + line)
            pending = ""
        if pending:
            commands.append(pending.strip())
        return commands


FENCE = re.compile(r"^(\s*)(```+|~~~+)(.*)$")


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of ``doc`` in order (indented ones in lists too)."""
    found: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence, info = opening[1], opening[2], opening[3].strip()
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        found.append(Block(doc, index - len(body), info, "\n".join(body) + "\n"))
        index += 1
    return found


def all_blocks() -> list[Block]:
    return [block for doc in GUIDES for block in blocks(doc)]


def program(command: str) -> str:
    """The program a command line runs (``runuser -u pulse-gateway --`` skipped)."""
    words = command.removeprefix(AS_SERVICE_USER).split()
    return Path(words[0]).name if words else ""


def runnable(command: str) -> bool:
    """Whether this test runs ``command`` (the others must be in NOT_RUN)."""
    return program(command) in {"pulse-gateway", "promtool"} or (
        program(command) == "curl" and "127.0.0.1:9842" in command
    )


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = doc.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {slug(m[1]) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


# -- a site for the commands: example.yaml, ten days of replayed data, a /metrics ---------------

SITE_START = datetime(2026, 2, 28, 5, 0, tzinfo=UTC)  # local midnight, America/New_York
SITE_DAYS = 10
STEP = timedelta(minutes=5)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def site_events() -> str:
    """Ten days of the four example.yaml meters: a pulse row per channel every 5 minutes with a
    day-shaped load, a gas outage with catch-up, a monthly reset_all, a reset refused by the
    25-day lockout and a second gas reset."""
    special = {
        datetime(2026, 3, 1, 5, 0, tzinfo=UTC): [",reset_all,"],
        datetime(2026, 3, 2, 15, 0, tzinfo=UTC): ["gas,offline,"],
        datetime(2026, 3, 2, 16, 30, tzinfo=UTC): ["gas,online,25"],
        datetime(2026, 3, 3, 14, 0, tzinfo=UTC): ["main_electric,reset,"],
        datetime(2026, 3, 5, 5, 0, tzinfo=UTC): ["gas,reset,"],
    }
    outage = (datetime(2026, 3, 2, 15, 0, tzinfo=UTC), datetime(2026, 3, 2, 16, 30, tzinfo=UTC))
    rows = ["time,channel,event,value"]
    for step in range(SITE_DAYS * 288 + 1):
        moment = SITE_START + step * STEP
        hour = (moment - timedelta(hours=5)).hour  # local standard time
        busy = 7 <= hour < 19
        counts = {
            "main_electric": 8 + (6 if busy else 0) + step % 3,
            "tenant_b_electric": 150 + (120 if busy else 0) + step % 41,
            "gas": (step % 4) + (2 if busy else 0),
            "water": 3 + (5 if busy else 0) + step % 2,
        }
        for channel, count in counts.items():
            if count and not (channel == "gas" and outage[0] <= moment < outage[1]):
                rows.append(f"{_iso(moment)},{channel},pulses,{count}")
        rows += [f"{_iso(moment)},{row}" for row in special.get(moment, [])]
    return "\n".join(rows) + "\n"


def quiet_cli(*argv: str) -> int:
    """Run a pulse-gateway command in this process with its output swallowed."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli_main(list(argv))


def build_site(folder: Path) -> tuple[Path, Path]:
    """config/example.yaml with its state in ``folder``/state, and the replayed database."""
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / "state"
    config = folder / "site.yaml"
    text = (ROOT / "config" / "example.yaml").read_text(encoding="utf-8")
    assert "state_dir: /var/lib/pulse-gateway" in text
    config.write_text(text.replace("state_dir: /var/lib/pulse-gateway", f"state_dir: {state}"))
    events = folder / "events.csv"
    events.write_text(site_events())
    db = state / "gateway.db"
    assert quiet_cli("replay", "-c", str(config), str(events), "--db", str(db)) == 0
    return config, db


class MetricsView:
    """A running gateway's side of the metrics, over a real engine, with every family filled."""

    def __init__(self) -> None:
        self.engine = Engine(
            {
                "main_electric": rules("kWh", 0.5, "15min", "5min", initial=104250.5),
                "gas": rules("cubic_feet", 10, "1h", "15min"),
            },
            at("00:00:00"),
        )
        self.engine.pulses("main_electric", at("00:01:00"), 40)
        self.engine.pulses("gas", at("00:02:00"), 3)
        self.engine.advance(at("00:20:00"))
        self.engine.reset("main_electric", at("00:20:00"))
        self.engine.reset("main_electric", at("00:21:00"))  # refused: the engine counts it

    def channel_readings(self) -> Iterator[tuple[str, Unit, Channel]]:
        for channel_id, channel in self.engine.channels.items():
            yield channel_id, channel.rules.unit, channel

    def sources_up(self) -> Mapping[str, bool]:
        return {"adam1": True, "gpio0": False}

    def reset_rejections(self) -> Mapping[tuple[str, str], int]:
        return {("main_electric", "not_allowed"): 2, ("gas", "bad_value"): 1}

    def latest_time(self) -> int:
        return self.engine.now

    def boundary_lag_seconds(self) -> float:
        return 0.004

    def checksum_ok(self) -> Mapping[str, bool]:
        return {channel_id: True for channel_id in self.engine.channels}

    def source_counters(self) -> Mapping[str, Mapping[str, int]]:
        return {
            "glitches": {"main_electric": 1},
            "lost_edges": {"gas": 0},
            "late_edges": {"gas": 0},
        }


def live_metrics() -> Metrics:
    metrics = Metrics(MetricsView())
    metrics.checkpoint_duration.observe(0.003)
    return metrics


@contextlib.contextmanager
def metrics_server() -> Iterator[int]:
    """A real /metrics endpoint on 127.0.0.1 (its own loop in a thread); yields the port."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []
    server: list[web.AppRunner] = []

    async def start() -> None:
        server.append(await serve(metrics_app(live_metrics()), "127.0.0.1", 0))
        port.append(server[0].addresses[0][1])
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert started.wait(10)
    try:
        yield port[0]
    finally:

        async def stop() -> None:
            await server[0].cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass
class Site:
    """What the guides' paths stand for in the test, and where commands run."""

    workdir: Path
    places: dict[str, str] = field(default_factory=dict)

    def substitute(self, text: str) -> str:
        """``text`` as the test runs it: its places replaced, runuser dropped."""
        for place in PLACES:
            text = text.replace(place, self.places[place])
        return text.replace(AS_SERVICE_USER, "")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The example site with ten days of data, a live /metrics and a working directory."""
    base = tmp_path_factory.mktemp("site")
    config, db = build_site(base / "etc")
    workdir = base / "work"
    workdir.mkdir()
    for entry in ROOT.iterdir():
        if not entry.name.startswith(".") and entry.name not in {"build", "dist"}:
            (workdir / entry.name).symlink_to(entry)
    # the README's `.venv/bin/...`: the virtualenv running these tests, wherever it is (the
    # whole of it: its python finds its packages through the pyvenv.cfg beside bin/)
    if sys.prefix != sys.base_prefix:
        (workdir / ".venv").symlink_to(sys.prefix)
    else:
        (workdir / ".venv").mkdir()
        (workdir / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    (base / "textfile").mkdir()
    with metrics_server() as port:
        yield Site(
            workdir,
            {
                "/etc/pulse-gateway/gateway.yaml": str(config),
                "/var/lib/pulse-gateway/gateway.db": str(db),
                "/var/lib/pulse-gateway": str(db.parent),
                "/var/lib/prometheus/node-exporter": str(base / "textfile"),
                "127.0.0.1:9842": f"127.0.0.1:{port}",
            },
        )


def tool(name: str) -> str:
    """The path of an external tool the docs use; a test without it fails in CI, else skips."""
    found = shutil.which(name)
    if found is None:
        hint = {"promtool": "apt-get install -y prometheus", "curl": "apt-get install -y curl"}
        message = f"{name} not found on PATH: {hint.get(name, 'install it')}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run_shell(
    site: Site, script: str, *, shell: str = "bash", places: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (paths substituted) in the site's working directory, the venv's
    ``pulse-gateway`` first on PATH; bash runs single commands with pipefail."""
    text = Site(site.workdir, {**site.places, **(places or {})}).substitute(script)
    argv = ["bash", "-o", "pipefail", "-c", text] if shell == "bash" else [shell, "-c", text]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        argv,
        cwd=site.workdir,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )


RUN_LINE = re.compile(r"^(?P<head>.*?pulse-gateway) run(?P<rest>(?: .*)?)$")


def as_run(command: str) -> str:
    """``pulse-gateway run [-c FILE]`` never returns: check its configuration instead."""
    match = RUN_LINE.match(command)
    if match is None:
        return command
    rest = match["rest"].strip() or "-c config/demo.yaml"
    return f"{match['head']} check {rest}"


def expected_output(block: Block) -> str | None:
    """The ``text expected-output`` block right after ``block`` in its guide, if any."""
    found = blocks(block.doc)
    index = found.index(block)
    if index + 1 < len(found) and found[index + 1].info == "text expected-output":
        return found[index + 1].body
    return None


def sh_blocks() -> list[Block]:
    return [block for block in all_blocks() if block.tag == "sh"]


def is_demo(block: Block) -> bool:
    """An ``sh demo`` block: run whole against a live demo gateway, not the test site."""
    return block.tag == "sh" and "demo" in block.info.split()[1:]


def run_blocks() -> list[Block]:
    """The sh blocks with something to run against the test site (the rest only hold NOT_RUN
    commands, or run against the demo)."""
    return [
        b
        for b in sh_blocks()
        if not is_demo(b) and (b.script or any(runnable(c) for c in b.commands()))
    ]


def demo_blocks() -> list[Block]:
    return [block for block in all_blocks() if is_demo(block)]


# -- every command is run or listed --------------------------------------------------------------


def test_the_guides_are_there_and_fences_are_tagged() -> None:
    """The four guides, the reference pages, the design notes and the monitoring README exist;
    their fences and the README's all name a language."""
    for name in OWN_GUIDES + REFERENCE_PAGES:
        assert (DOCS / name).is_file(), name
    assert (MONITORING / "README.md") in GUIDES
    assert (ROOT / "README.md") in GUIDES
    pages = [*(DOCS / name for name in OWN_GUIDES + REFERENCE_PAGES), MONITORING / "README.md"]
    for doc in [ROOT / "README.md", *pages]:
        untagged = [block.where for block in blocks(doc) if not block.tag]
        assert not untagged, f"fences without a language: {untagged}"


def test_every_command_is_run_or_listed_with_a_reason() -> None:
    """Each command of an sh block is run by this test or in NOT_RUN; NOT_RUN holds no stale
    entry; no command hides in a block of another shell language."""
    unclassified, seen = [], set()
    for block in all_blocks():
        if block.tag in SHELL_TAGS:
            for command in block.commands():
                seen.add(command)
                if command not in NOT_RUN:
                    unclassified.append(f"{block.where}: {block.tag} block: {command}")
        if block.tag != "sh" or block.script or is_demo(block):
            continue  # a demo block is run whole (test_the_tour_runs_against_a_live_demo)
        for command in block.commands():
            seen.add(command)
            if not runnable(command) and command not in NOT_RUN:
                unclassified.append(f"{block.where}: {command}")
    assert not unclassified, (
        "commands neither run by tests/test_docs.py nor listed in NOT_RUN with a reason:\n"
        + "\n".join(unclassified)
    )
    assert not set(NOT_RUN) - seen, f"NOT_RUN lists commands no guide has: {set(NOT_RUN) - seen}"


def test_paths_of_an_installed_gateway_are_all_known() -> None:
    """Every /etc, /var or /srv path in a run command is one the test substitutes."""
    unknown = []
    for block in sh_blocks():
        commands = [block.body] if block.script else block.commands()
        for command in commands:
            if not block.script and not runnable(command):
                continue
            text = command
            for place in PLACES:
                text = text.replace(place, "")
            for path in re.findall(r"(?<![\w.])/(?:etc|var|srv|opt)/[\w./-]*", text):
                unknown.append(f"{block.where}: {path}")
    assert not unknown, f"paths tests/test_docs.py does not provide (add to PLACES): {unknown}"


def _block_id(block: Block) -> str:
    return block.where


@pytest.mark.parametrize("block", run_blocks(), ids=_block_id)
def test_the_commands_of_a_block_succeed(site: Site, block: Block) -> None:
    """Every command of the block exits 0 against the test site (a script runs whole), prints
    what the next expected-output block says, and writes what --out names."""
    if block.script:
        commands = [block.body]
    else:
        commands = [as_run(c) for c in block.commands() if runnable(c)]
    for command in commands:
        for name in {"promtool", "curl"} & set(re.findall(r"[\w-]+", command)):
            tool(name)
    stdout = ""
    for command in commands:
        result = run_shell(site, command, shell="sh" if block.script else "bash")
        assert result.returncode == 0, (
            f"{block.where}: exit {result.returncode}: {command}\n{result.stdout}{result.stderr}"
        )
        assert "Traceback" not in result.stderr, result.stderr
        stdout += result.stdout
        out = re.search(r"--out (\S+)", command)
        if out is not None:
            written_to = site.workdir / site.substitute(out[1])  # relative: to the workdir
            written = written_to.read_text(encoding="utf-8").splitlines()
            assert len(written) > 1, f"{block.where}: {out[1]} holds no data rows"
    expected = expected_output(block)
    if expected is not None:
        assert stdout == expected, f"{block.where}: the output differs from the guide"


# -- the README's tour, against a live demo -------------------------------------------------------

DEMO_STATE = "~/.local/state/pulse-gateway/demo"
BACNET_ERRORS = ("no-response", "error", "denied", "unknown-", "out-of-range")


@dataclass(frozen=True)
class Demo:
    """A running demo gateway and what the tour's addresses and paths stand for."""

    places: dict[str, str]
    log: Path

    def substitute(self, text: str) -> str:
        for place, value in self.places.items():
            text = text.replace(place, value)
        return text


def free_port(kind: socket.SocketKind) -> int:
    """A port of 127.0.0.1 that nothing uses now (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def demo(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """config/demo.yaml running as a real daemon, on free ports, its state in a temporary
    directory; stopped with SIGTERM afterwards."""
    base = tmp_path_factory.mktemp("demo")
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    bacnet, metrics = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    client = free_port(socket.SOCK_DGRAM)
    state = base / "state"
    config["gateway"]["state_dir"] = str(state)
    config["bacnet"]["port"] = bacnet
    config["http"]["listen"] = f"127.0.0.1:{metrics}"
    path = base / "demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    log = base / "demo.log"
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "-c", str(path)],
            cwd=site.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while '"gateway_ready"' not in log.read_text(encoding="utf-8"):
            assert process.poll() is None, f"the demo exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"the demo is not ready: {log.read_text()}"
            time.sleep(0.1)
        yield Demo(
            {
                DEMO_STATE: str(state),
                "127.0.0.1:47808": f"127.0.0.1:{bacnet}",
                "127.0.0.1/8:47809": f"127.0.0.1/8:{client}",
                "127.0.0.1:9842": f"127.0.0.1:{metrics}",
            },
            log,
        )
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_tour_output(command: str, out: str) -> str | None:
    """What is wrong with a tour command's output, for the commands whose output is known."""
    if "bacpypes3" in command:
        if any(word in out for word in BACNET_ERRORS):
            return "the BACnet console reports an error"
        if "'read " in command:
            try:
                float(out.strip())
            except ValueError:
                return "a present-value read did not print a number"
        if "'write " in command and out.strip():
            return "a reset write was not acknowledged"
    if "/metrics" in command and "pulse_gateway_consumption{" not in out:
        return "the metrics have no consumption"
    if " resets " in command and ("accepted" not in out or "electric: OK" not in out):
        return "the audit lacks the tour's accepted reset or its checksum"
    if " export " in command and not out.startswith("TIMESTAMP,IMPORTID,UNIT,VALUE\n"):
        return "the export has no energycap3 header"
    return None


def test_the_tour_runs_against_a_live_demo(site: Site, demo: Demo) -> None:
    """Every command of the README's tour (its `sh demo` blocks), in order, succeeds against a
    running demo gateway and prints what the tour says: a BACnet read, an accepted reset, an
    audit whose checksum holds, an export."""
    blocks_ = demo_blocks()
    assert [b.doc for b in blocks_] == [ROOT / "README.md"] * len(blocks_) and len(blocks_) >= 4
    commands = [command for block in blocks_ for command in block.commands()]
    assert any("binary-value" in c for c in commands), "the tour has no reset"
    for command in commands:
        if "curl" in command:
            tool("curl")
        result = run_shell(site, demo.substitute(command))
        out = result.stdout + result.stderr
        assert result.returncode == 0, f"exit {result.returncode}: {command}\n{out}"
        assert "Traceback" not in out, out
        problem = check_tour_output(command, result.stdout)
        assert problem is None, f"{problem}: {command}\n{out}\n{demo.log.read_text()}"


# -- links ---------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_links_between_the_docs_lead_somewhere() -> None:
    """Every relative Markdown link of the README and the docs names an existing file, and an
    anchor in it that exists."""
    broken = []
    for doc in GUIDES:
        text = re.sub(r"^\s*```.*?^\s*```", "", doc.read_text(encoding="utf-8"), flags=re.S | re.M)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{doc.relative_to(ROOT)}: {target}: no such heading")
    assert not broken, broken


def test_the_readme_layout_names_every_module() -> None:
    """The README's Layout lists every module of gateway/, and only modules that exist."""
    (layout,) = [
        b for b in blocks(ROOT / "README.md") if b.tag == "text" and b.body.startswith("gateway/")
    ]
    listed = set(re.findall(r"\b(\w+\.py)\b", layout.body)) - {"__init__.py"}
    modules = {path.name for path in (ROOT / "gateway").rglob("*.py")} - {"__init__.py"}
    assert not modules - listed, f"modules missing from the README's layout: {modules - listed}"
    assert not listed - modules, f"the README's layout names no such module: {listed - modules}"
    packages = {p.parent.name for p in (ROOT / "gateway").rglob("__init__.py")} - {"gateway"}
    assert all(f"{name}/" in layout.body for name in packages), packages


def test_the_readme_quick_start_is_two_commands() -> None:
    """The README's Quick start section holds exactly two commands: run the demo, run the
    tests."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    quick = [b for b in blocks(ROOT / "README.md") if b.tag == "sh" and b.body.strip() in section]
    commands = [command for block in quick for command in block.commands()]
    assert len(commands) == 2, commands
    assert commands[0].endswith(".venv/bin/pulse-gateway run")
    assert commands[1].endswith(".venv/bin/python -m pytest")


def _merge(base: dict, fragment: dict) -> dict:
    for key, value in fragment.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def yaml_blocks() -> list[Block]:
    return [block for block in all_blocks() if block.tag == "yaml"]


@pytest.mark.parametrize("block", yaml_blocks(), ids=_block_id)
def test_yaml_in_the_guides_is_valid(tmp_path: Path, block: Block) -> None:
    """Every yaml block parses; a site-config block merged into config/example.yaml passes the
    gateway's own check."""
    fragment = yaml.safe_load(block.body)
    assert fragment, f"{block.where}: empty YAML"
    if "config" in block.info.split():
        whole = dict(fragment)
        whole["gateway"] = {**whole["gateway"], "state_dir": str(tmp_path / "state")}
        text = yaml.safe_dump(whole, sort_keys=False)
        parse_config(text, str(tmp_path / "site.yaml"), purpose="run")
        return
    if "site-config" not in block.info.split():
        return
    base = yaml.safe_load((ROOT / "config" / "example.yaml").read_text(encoding="utf-8"))
    config = _merge(base, fragment)
    config["gateway"]["state_dir"] = str(tmp_path / "state")
    text = yaml.safe_dump(config, sort_keys=False)
    parse_config(text, str(tmp_path / "site.yaml"), purpose="run")


def test_the_checksum_script_publishes_ok_and_broken_channels(site: Site, tmp_path: Path) -> None:
    """The textfile script of docs/monitoring/README.md writes pulse_gateway_checksum_ok 1 per
    channel for the test site and 0 for a channel whose cumulative demand was tampered with."""
    (script,) = [b for b in blocks(MONITORING / "README.md") if b.tag == "sh" and b.script]
    textfile = Path(site.places["/var/lib/prometheus/node-exporter"])

    def published(places: Mapping[str, str]) -> dict[str, float]:
        result = run_shell(site, script.body, shell="sh", places=places)
        assert result.returncode == 0, result.stderr
        text = (textfile / "pulse_gateway_checksum.prom").read_text()
        if shutil.which("promtool"):
            lint = subprocess.run(
                ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
            )
            assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")
        return {
            s.labels["channel"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "pulse_gateway_checksum_ok"
        }

    assert published({}) == dict.fromkeys(
        ["gas", "main_electric", "tenant_b_electric", "water"], 1.0
    )
    broken_state = tmp_path / "state"
    shutil.copytree(Path(site.places["/var/lib/pulse-gateway"]), broken_state)
    # closing(): a Connection's own context manager commits but never closes
    with contextlib.closing(sqlite3.connect(broken_state / "gateway.db")) as conn, conn:
        conn.execute("UPDATE channel_state SET cumulative_demand = 99.5 WHERE channel = 'gas'")
    config = Path(site.places["/etc/pulse-gateway/gateway.yaml"])
    broken_config = tmp_path / "site.yaml"
    broken_config.write_text(
        config.read_text().replace(site.places["/var/lib/pulse-gateway"], str(broken_state))
    )
    after = published({"/etc/pulse-gateway/gateway.yaml": str(broken_config)})
    assert after == {"gas": 0.0, "main_electric": 1.0, "tenant_b_electric": 1.0, "water": 1.0}


# -- the metric names and labels a gateway exposes ------------------------------------------------

TARGET_LABELS = {"job", "instance", "site", "address"}  # added by prometheus.yml
SCRAPE_METRICS = {"up": set(), "scrape_duration_seconds": set()}  # added by Prometheus
# Metrics the rules use before the gateway exposes them (none now: checksum_ok is exposed).
PROPOSED: dict[str, set[str]] = {}


def exposed() -> dict[str, set[str]]:
    """Sample name -> label names, from a real render of Metrics over a real engine."""
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(live_metrics().render().decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def recorded() -> dict[str, set[str]]:
    """Recording rules of alerts.yml -> the labels of the series they read."""
    known = {**exposed(), **SCRAPE_METRICS}
    found: dict[str, set[str]] = {}
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                used = parse_promql(rule["expr"]).selectors
                found[rule["record"]] = set().union(*(known[name] for name, _ in used if name))
    return found


def allowed() -> dict[str, set[str]]:
    """Every metric name a query may use, with the labels it may match on."""
    names = {**exposed(), **SCRAPE_METRICS, **PROPOSED, **recorded()}
    return {name: labels | TARGET_LABELS for name, labels in names.items()}


FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count_over_time", "day_of_month", "day_of_week", "delta",
    "deriv", "exp", "floor", "histogram_quantile", "holt_winters", "hour", "idelta",
    "increase", "irate", "label_join", "label_replace", "last_over_time", "ln", "log2",
    "log10", "max_over_time", "min_over_time", "minute", "month", "predict_linear",
    "present_over_time", "quantile_over_time", "rate", "resets", "round", "scalar", "sgn",
    "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time",
    "time", "timestamp", "vector", "year",
    # aggregations
    "avg", "bottomk", "count", "count_values", "group", "max", "min", "quantile", "stddev",
    "stdvar", "sum", "topk",
}  # fmt: skip
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<range>\[[^\]]*\])
      |(?P<number>(?<![\w:])\d[\w.]*)
      |(?P<name>[A-Za-z_:][\w:]*)
      |(?P<punct>\S)
      |\s+""",
    re.X,
)


@dataclass
class Query:
    """What a PromQL expression refers to: (metric name or None, matcher labels) per selector,
    the labels of by/on/without/ignoring lists, and the functions it calls."""

    selectors: list[tuple[str | None, set[str]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)


def parse_promql(expr: str) -> Query:
    """Pick a PromQL expression apart well enough to check its names (Grafana's $variables are
    replaced first: intervals by a duration, others only occur inside strings)."""
    expr = re.sub(r"\$__\w+", "5m", expr)
    tokens = [(m.lastgroup, m[0]) for m in TOKEN.finditer(expr) if m.lastgroup]
    query = Query()
    index = 0

    def labels_until(closing: str) -> set[str]:
        nonlocal index
        found = set()
        while tokens[index][1] != closing:
            if tokens[index][0] == "name":
                found.add(tokens[index][1])
            index += 1
        index += 1
        return found

    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        index += 1
        if kind == "name" and text in GROUPING:
            if following == "(":
                index += 1
                query.grouping |= labels_until(")")
        elif kind == "name" and text in KEYWORDS:
            continue
        elif kind == "name" and (following == "(" or following in GROUPING):
            query.functions.add(text)  # a function, or an aggregation with by/without first
        elif kind == "name":
            matchers = set()
            if following == "{":
                index += 1
                matchers = labels_until("}")
            query.selectors.append((text, matchers))
        elif text == "{":
            query.selectors.append((None, labels_until("}")))
    return query


def check_query(expr: str, names: Mapping[str, set[str]]) -> list[str]:
    """What is wrong with ``expr``: unknown metrics, labels or functions."""
    query = parse_promql(expr)
    problems = [f"unknown function {f}" for f in sorted(query.functions - FUNCTIONS)]
    everything = set().union(*names.values())
    for name, matchers in query.selectors:
        if name is None or name not in names:
            problems.append(f"metric {name!r} is not exposed by the gateway")
        elif matchers - names[name]:
            problems.append(f"{name} has no label {sorted(matchers - names[name])}")
    problems += [f"no metric has the label {label}" for label in query.grouping - everything]
    return problems


def test_the_query_checker_sees_names_labels_and_functions() -> None:
    """parse_promql finds metrics, matcher labels, grouping labels and functions."""
    query = parse_promql(
        'histogram_quantile(0.99, sum by (le, site) (rate(a_bucket{x="1", y=~"$y"}'
        '[$__rate_interval]))) > 0.5 and on(job) b offset 1w unless {z="q"}'
    )
    assert query.selectors == [("a_bucket", {"x", "y"}), ("b", set()), (None, {"z"})]
    assert query.grouping == {"le", "site", "job"}
    assert query.functions == {"histogram_quantile", "sum", "rate"}
    assert check_query("rat(up[5m])", {"up": set()}) == ["unknown function rat"]


def test_the_exposed_names_come_from_a_real_render() -> None:
    """The name list holds the §8 metrics with their labels, the histogram and process metrics."""
    names = exposed()
    assert names["pulse_gateway_demand"] == {"channel", "unit"}
    assert names["pulse_gateway_reset_rejections_total"] == {"channel", "reason"}
    assert names["pulse_gateway_checkpoint_duration_seconds_bucket"] == {"le"}
    for name in ("pulse_gateway_source_glitches_total", "pulse_gateway_gpio_lost_edges_total"):
        assert names[name] == {"channel"}
    assert "process_cpu_seconds_total" in names
    assert not set(PROPOSED) & set(names), "the proposed metric exists now: drop it from PROPOSED"


# -- Prometheus: rules, config, unit tests --------------------------------------------------------


def rules_of(path: Path) -> list[dict]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules docs/monitoring/alerts.yml` succeeds."""
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_scrape_config() -> None:
    """`promtool check config docs/monitoring/prometheus.yml` succeeds (rules included)."""
    result = subprocess.run(
        [tool("promtool"), "check", "config", str(MONITORING / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_the_alert_unit_tests_pass() -> None:
    """`promtool test rules docs/monitoring/alerts_test.yml` passes."""
    result = subprocess.run(
        [tool("promtool"), "test", "rules", str(MONITORING / "alerts_test.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert len(tested) >= 3


def test_the_readme_targets_file_gets_friendly_instances(tmp_path: Path) -> None:
    """The README's targets file passes promtool, and service discovery with prometheus.yml's
    relabelling gives each gateway its site, its friendly instance name and its address."""
    promtool = tool("promtool")
    (targets,) = [b for b in blocks(MONITORING / "README.md") if b.info == "yaml targets"]
    shutil.copy(MONITORING / "prometheus.yml", tmp_path)
    shutil.copy(ALERTS, tmp_path)
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "plant-north.yml").write_text(targets.body)
    checked = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "WARNING" not in checked.stdout + checked.stderr
    found = subprocess.run(
        [
            promtool,
            "check",
            "service-discovery",
            "--timeout=3s",
            "prometheus.yml",
            "pulse-gateway",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stdout + found.stderr
    labels = [
        {k: v for k, v in target["labels"].items() if not k.startswith("__")}
        for target in json.loads(found.stdout)
    ]
    assert sorted(labels, key=lambda x: x["address"]) == [
        {"job": "pulse-gateway", "site": "plant-north", "instance": "pg-north-1",
         "address": "10.20.1.50:9842"},
        {"job": "pulse-gateway", "site": "plant-north-annex", "instance": "pg-north-2",
         "address": "10.20.1.51:9842"},
        {"job": "pulse-gateway", "site": "plant-north", "instance": "10.20.1.52:9842",
         "address": "10.20.1.52:9842"},
    ]  # fmt: skip


def test_the_rules_use_only_what_the_gateway_exposes() -> None:
    """Every rule expression names exposed metrics (or the recorded and proposed ones), with
    labels they have, and known functions."""
    names = allowed()
    problems = [
        f"{rule.get('alert') or rule.get('record')}: {problem}"
        for rule in rules_of(ALERTS)
        for problem in check_query(rule["expr"], names)
    ]
    assert not problems, problems
    used = {name for rule in rules_of(ALERTS) for name, _ in parse_promql(rule["expr"]).selectors}
    assert used & set(PROPOSED) == set(PROPOSED)  # a proposal stays listed only while in use
    assert "pulse_gateway_checksum_ok" in used  # the checksum alert reads the gateway's gauge


def test_every_alert_says_what_and_where_to_read() -> None:
    """Each alert has a severity, a summary, a description and a runbook anchor that exists,
    and is explained in docs/monitoring/README.md."""
    readme = (MONITORING / "README.md").read_text()
    for rule in rules_of(ALERTS):
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name
        doc, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert anchor in anchors(ROOT / doc), f"{name}: no heading for {rule['annotations']}"
        assert f"`{name}`" in readme, f"{name} is missing from the README's alert table"


# -- Grafana ---------------------------------------------------------------------------------------

PANEL_TYPES = {"row", "stat", "timeseries", "table", "state-timeline"}
EXPECTED_PANELS = {
    "Gateways up", "Gateways down", "Sources down", "Channels offline", "Checksums broken",
    "Demand", "Peak demand since reset", "Peaks", "Consumption per interval", "Pulse rate",
    "Meter readings", "Sources", "Channels online", "Glitches and lost edges",
    "Checkpoint time (p99)", "Accepted resets", "Refused resets",
}  # fmt: skip


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and annotation of the dashboard."""
    board = dashboard()
    queries = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    queries += [
        (f"annotation {a['name']!r}", a["expr"])
        for a in board["annotations"]["list"]
        if "expr" in a
    ]
    return queries


def test_the_dashboard_has_the_expected_shape() -> None:
    """The JSON has a current schema, the variables, the expected panels on a clean grid, and
    every query goes to the chosen Prometheus data source."""
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert list(variables) == ["datasource", "site", "instance", "channel"]
    assert variables["datasource"]["query"] == "prometheus"
    panels = board["panels"]
    assert {p["title"] for p in panels} >= EXPECTED_PANELS
    assert {p["type"] for p in panels} <= PANEL_TYPES
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_the_dashboard_queries_use_what_the_gateway_exposes() -> None:
    """Every panel, annotation and variable query names exposed metrics, labels and functions,
    and every gateway metric is filtered by the site and instance variables."""
    names = allowed()
    problems = [
        f"{where}: {problem}"
        for where, expr in dashboard_queries()
        for problem in check_query(expr, names)
    ]
    for where, expr in dashboard_queries():
        for name, matchers in parse_promql(expr).selectors:
            if not {"site", "instance"} <= matchers:
                problems.append(f"{where}: {name} is not filtered by $site and $instance")
            if "channel" in names.get(name or "", set()) and "channel" not in matchers:
                problems.append(f"{where}: {name} is not filtered by $channel")
    for variable in dashboard()["templating"]["list"][1:]:
        match = re.fullmatch(r"label_values\((.*), *(\w+)\)", variable["query"]["query"])
        assert match is not None, variable["name"]
        problems += [f"variable {variable['name']}: {p}" for p in check_query(match[1], names)]
        selector = parse_promql(match[1]).selectors[0][0]
        if match[2] not in names[selector or ""]:
            problems.append(f"variable {variable['name']}: no label {match[2]}")
    assert not problems, problems


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as recording rules, variables filled in)."""
    rules = [
        {"record": f"dashboard:query_{n}", "expr": re.sub(r"\$__\w+", "5m", expr).replace("$", "")}
        for n, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
