"""The ``pulse-gateway`` command line: the only place that maps errors to exit codes.

Exit codes: 0 success, 2 bad input (a config, an event log, an argument). A user mistake prints
one line per problem on stderr, never a traceback (docs/reference/commands.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import date, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from gateway import __version__
from gateway.config import ConfigError, RunConfig, load_config
from gateway.core import Instant, IntervalRecord, TimeSyntaxError, parse_instant
from gateway.export import (
    DEFAULT_TIME_FORMAT,
    FORMATS,
    VALUE_FIELDS,
    VALUES,
    ExportChannel,
    day_span,
    local_to_instant,
    write_values,
)
from gateway.notify import Notifier
from gateway.points import points_csv
from gateway.replay import ReplayError, ResetLog, replay
from gateway.service import Gateway, GatewayError
from gateway.store import Store, StoreError, format_resets
from gateway.store_periods import format_periods, write_periods_csv

EXIT_OK = 0
EXIT_FAILED = 1  # the gateway could not run (state dir locked or damaged), or a checksum broke
EXIT_BAD_INPUT = 2

# The repository's config/ folder, installed as the package gateway.configs (pyproject.toml).
BUNDLED_CONFIGS = "gateway.configs"
DEMO = "demo.yaml"  # what `pulse-gateway run` runs with no -c
EXAMPLE = "example.yaml"  # what `pulse-gateway init` writes
SWITCH_INTERVAL_S = 0.0005  # how long the event loop may wait for a worker thread (_serve)


def bundled_config(name: str) -> Traversable:
    """A config shipped inside the package: a file in an install, config/NAME in a checkout."""
    return resources.files(BUNDLED_CONFIGS).joinpath(name)


def demo_state_dir() -> Path:
    """Where the bundled demo keeps its state: never inside the install or the working tree.

    ``$XDG_STATE_HOME/pulse-gateway/demo``, or ``~/.local/state/pulse-gateway/demo``; a relative
    XDG_STATE_HOME is ignored, as the XDG base directory spec says.
    """
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "pulse-gateway" / "demo"


def _instant(text: str) -> Instant:
    try:
        return parse_instant(text)
    except TimeSyntaxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulse-gateway",
        description="Pulse-output utility meters as BACnet/IP points, with B6070 demand rules.",
    )
    parser.add_argument("--version", action="version", version=f"pulse-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the gateway daemon",
        description="Run the gateway. With no -c it runs the bundled demo config: simulated "
        "meters, everything on 127.0.0.1.",
    )
    run.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config YAML (default: the bundled demo, its state in "
        "$XDG_STATE_HOME/pulse-gateway/demo or ~/.local/state/pulse-gateway/demo)",
    )

    init = commands.add_parser(
        "init",
        help="write the commented example config to FILE for a new site",
        description="Write the commented example config (every option, explained) to FILE, to "
        "edit for a new site. An existing FILE is never overwritten.",
    )
    init.add_argument("file", metavar="FILE", help="the new config file")

    check = commands.add_parser(
        "check", help="validate a config and print a summary (exit 0 valid, 2 invalid)"
    )
    check.add_argument("-c", "--config", required=True, metavar="FILE", help="config YAML")

    export = commands.add_parser(
        "export",
        help="interval data in an EnergyCAP import format",
        description="Export interval records (interval ends in the range) in an EnergyCAP text "
        "import format. Times are the config's local standard time all year (so no timestamp "
        "repeats or goes missing at DST changes) unless --dst or --utc; with --db alone they "
        "are UTC and ImportIDs are the channel ids.",
    )
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--config", metavar="FILE", help="config YAML (its state_dir)")
    source.add_argument("--db", metavar="PATH", help="a gateway.db file (or one from replay --db)")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument(
        "--from",
        dest="since",
        required=True,
        metavar="D",
        help="first day (YYYY-MM-DD) or time after which interval ends count",
    )
    export.add_argument(
        "--to",
        dest="until",
        required=True,
        metavar="D",
        help="last day (YYYY-MM-DD, inclusive) or last interval end",
    )
    export.add_argument("--value", choices=VALUES, default="demand")
    export.add_argument(
        "--time-format",
        default=DEFAULT_TIME_FORMAT,
        metavar="PICTURE",
        help=f"an EnergyCAP timestamp picture (default {DEFAULT_TIME_FORMAT!r})",
    )
    export.add_argument("--utc", action="store_true", help="timestamps in UTC (GMT)")
    export.add_argument(
        "--dst",
        action="store_true",
        help="wall-clock local time (warns about the repeated and skipped hour)",
    )
    export.add_argument("--channels", metavar="ID,ID", help="only these channels")
    export.add_argument("--out", metavar="FILE", help="write here (atomically) instead of stdout")

    points = commands.add_parser(
        "points",
        help="print the BACnet points list (CSV) for BMS integrators",
        description="Print every BACnet object the config defines: type, instance, name, units, "
        "writable, description.",
    )
    points.add_argument("-c", "--config", required=True, metavar="FILE", help="config YAML")

    resets = commands.add_parser(
        "resets",
        help="print the reset audit log and the checksum verdict per channel",
        description="Print every logged reset attempt and check, per channel, that cumulative "
        "demand equals the sum of logged previous peaks and reset_count the accepted resets. "
        "Exit 1 when a checksum breaks.",
    )
    where = resets.add_mutually_exclusive_group(required=True)
    where.add_argument("-c", "--config", metavar="FILE", help="config YAML (its state_dir)")
    where.add_argument("--db", metavar="PATH", help="a gateway.db file")

    periods = commands.add_parser(
        "periods",
        help="print the closed billing periods (a table, or CSV with --csv)",
        description="Print every closed billing period: from one accepted reset (or the "
        "channel's creation) to the next, its consumption and the peak demand it closed. The "
        "table shows ImportIDs and local times; --csv gives channel ids and UTC times.",
    )
    where = periods.add_mutually_exclusive_group(required=True)
    where.add_argument("-c", "--config", metavar="FILE", help="config YAML (its state_dir)")
    where.add_argument("--db", metavar="PATH", help="a gateway.db file (or one from replay --db)")
    periods.add_argument("--csv", action="store_true", help="CSV for scripts")
    periods.add_argument("--channel", metavar="ID", help="one channel only")

    run_replay = commands.add_parser(
        "replay",
        help="recompute the demand rules offline from an event log; CSV to stdout",
        description="Recompute the demand rules offline from an event log (CSV with header "
        "time,channel,event,value) and print one row per slide boundary of every channel.",
    )
    run_replay.add_argument("-c", "--config", required=True, metavar="FILE", help="config YAML")
    run_replay.add_argument("events", metavar="EVENTS.csv", help="event log, or - for stdin")
    run_replay.add_argument(
        "--start",
        type=_instant,
        metavar="T",
        help="when counting began (default: the first row's time)",
    )
    run_replay.add_argument(
        "--end",
        type=_instant,
        metavar="T",
        help="last instant to show (default: the last row's time)",
    )
    run_replay.add_argument(
        "--db",
        metavar="PATH",
        help="also write the resets (source 'replay') and the final channel state into this "
        "new database; a database that already holds state is refused",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "replay":
            return _replay(args)
        if args.command == "check":
            return _check(args)
        if args.command == "run":
            return _run(args)
        if args.command == "init":
            return _init(Path(args.file))
        if args.command == "resets":
            return _resets(args)
        if args.command == "periods":
            return _periods(args)
        if args.command == "export":
            return _export(args)
        if args.command == "points":
            print(points_csv(load_config(args.config, purpose="run")), end="")
            return EXIT_OK
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    except ReplayError as exc:
        print(f"pulse-gateway replay: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExportError as exc:
        print(f"pulse-gateway export: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InitError as exc:
        print(f"pulse-gateway init: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (StoreError, GatewayError) as exc:
        print(f"pulse-gateway {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `replay ... | head` is normal use
        sys.stderr.close()
        return EXIT_OK
    raise AssertionError(f"unhandled command {args.command}")  # argparse allows no other


def _check(args: argparse.Namespace) -> int:
    print(load_config(args.config, purpose="run").summary())
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    if args.config is not None:
        return _serve(load_config(args.config, purpose="run"))
    # as_file: a real path for the daemon's lifetime (a reload reads the file again)
    with resources.as_file(bundled_config(DEMO)) as demo:
        state_dir = demo_state_dir()
        config = _load_demo(demo, state_dir)
        print(f"demo state: {state_dir}", flush=True)
        return _serve(config, reread=functools.partial(_load_demo, demo, state_dir))


def _load_demo(path: Path, state_dir: Path) -> RunConfig:
    """The bundled demo with its state in ``state_dir``: its own state_dir is relative to the
    file, that is inside the install."""
    config = load_config(path, purpose="run")
    return dataclasses.replace(
        config, gateway=dataclasses.replace(config.gateway, state_dir=state_dir)
    )


def _serve(config: RunConfig, reread: Callable[[], RunConfig] | None = None) -> int:
    from gateway.logging import configure

    configure()
    # The worker threads (the /metrics text, the status JSON, checkpoint rows) hold the
    # interpreter while they work, and the event loop gives it up at every socket call: it
    # then waits for a worker up to the switch interval to get it back. At the default 5 ms
    # a ReadProperty arriving during a 200 ms scrape waited 5 to 15 ms; at 0.5 ms the loop
    # is back within half a millisecond, and the workers take a little longer.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gateway = Gateway(config, live=sys.stdout.isatty(), notifier=Notifier(), reread=reread)
    try:
        asyncio.run(gateway.run())
    except OSError as exc:  # a listen address in use or not on this host
        raise GatewayError(f"cannot start: {exc.strerror or exc}") from None
    return EXIT_OK


class InitError(Exception):
    """``init`` cannot write its file; the message names it and says why."""


def _init(path: Path) -> int:
    text = bundled_config(EXAMPLE).read_text(encoding="utf-8")
    created = False
    try:
        # "x": never overwrite a site's config, not even one created a moment ago
        with open(path, "x", encoding="utf-8") as out:
            created = True
            out.write(text)
    except FileExistsError:
        raise InitError(f"{path} already exists: not overwritten") from None
    except OSError as exc:
        if created:  # a full disk: no half config left to be mistaken for a whole one
            path.unlink(missing_ok=True)
        raise InitError(f"{path}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {path}: edit it for the site, then run pulse-gateway check -c {path}")
    return EXIT_OK


class ExportError(Exception):
    """A bad export request (range, channels, picture); the message says which."""


def _export(args: argparse.Namespace) -> int:
    if args.config is not None:
        config = load_config(args.config, purpose="run")
        db = Path(config.gateway.state_dir) / "gateway.db"
        zone = None if args.utc else config.gateway.zone
        known = [ExportChannel.of(channel) for channel in config.channels]
    else:
        db, zone, known = Path(args.db), None, []
    with Store.open_readonly(db) as store:
        if args.config is None:
            # the ImportIDs and timezone the config that wrote the database gave (a channel no
            # config described keeps its id), units as saved with the channels
            saved = store.load()
            import_ids, timezone = store.identity()
            if timezone is not None and not args.utc:
                zone = ZoneInfo(timezone)
            known = [
                ExportChannel(cid, import_ids.get(cid, cid), entry.rules.unit)
                for cid, entry in (saved.channels.items() if saved else [])
            ]
        channels = _chosen(known, args.channels)
        since = _export_time(args.since, zone, args.dst, end_of_day=False)
        until = _export_time(args.until, zone, args.dst, end_of_day=True)
        if until <= since:
            raise ExportError("--to is not after --from: nothing to export")
        values = store.interval_values(
            since, until, VALUE_FIELDS[args.value], [c.id for c in channels]
        )
        options = {
            "format": args.format,
            "value": args.value,
            "time_format": args.time_format,
            "zone": zone,
            "dst": args.dst,
            "warn": _warn,
        }
        try:
            if args.out is None:
                write_values(values, channels, sys.stdout, **options)
            else:
                _write_atomically(
                    Path(args.out), lambda out: write_values(values, channels, out, **options)
                )
        except ValueError as exc:
            raise ExportError(str(exc)) from None
    return EXIT_OK


def _chosen(known: list[ExportChannel], wanted: str | None) -> list[ExportChannel]:
    if wanted is None:
        return known
    ids = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [w for w in ids if w not in {c.id for c in known}]
    if unknown or not ids:
        names = ", ".join(c.id for c in known)
        raise ExportError(f"unknown channel {', '.join(unknown) or '(none)'}: known are {names}")
    return [c for c in known if c.id in ids]


def _export_time(text: str, zone: ZoneInfo | None, dst: bool, *, end_of_day: bool) -> Instant:
    """A day (its intervals) or an ISO time; without a zone, local time of the config."""
    try:
        if len(text) == 10:
            after, through = day_span(date.fromisoformat(text), zone, dst=dst)
            return through if end_of_day else after
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(
            f"cannot read {text!r}: a day like 2026-01-31 or a time like 2026-01-31T06:00"
        ) from None
    if moment.tzinfo is not None:
        return parse_instant(text)
    return local_to_instant(moment, zone, dst=dst)


def _write_atomically(path: Path, write: Callable[[TextIO], object]) -> None:
    """Write ``path`` through a temporary file in its directory: never a half file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _warn(message: str) -> None:
    print(f"pulse-gateway export: warning: {message}", file=sys.stderr)


def _resets(args: argparse.Namespace) -> int:
    if args.db is not None:
        db = Path(args.db)
    else:
        config = load_config(args.config, purpose="run")
        db = Path(config.gateway.state_dir) / "gateway.db"
    with Store.open_readonly(db) as store:
        verdicts = store.verdict()
        print(format_resets(store.reset_log(), verdicts), end="")
    return EXIT_OK if all(v.ok for v in verdicts) else EXIT_FAILED


def _periods(args: argparse.Namespace) -> int:
    if args.db is not None:
        db, config = Path(args.db), None
    else:
        config = load_config(args.config, purpose="run")
        db = Path(config.gateway.state_dir) / "gateway.db"
    with Store.open_readonly(db) as store:
        closed = store.periods(args.channel)
        if args.csv:
            write_periods_csv(closed, sys.stdout)
            return EXIT_OK
        if config is not None:
            import_ids = {c.id: c.import_id for c in config.channels}
            units = {c.id: c.rules.unit for c in config.channels}
            zone: ZoneInfo | None = config.gateway.zone
        else:  # as the config that wrote the database said
            saved = store.load()
            import_ids, timezone = store.identity()
            units = {
                cid: entry.rules.unit for cid, entry in (saved.channels if saved else {}).items()
            }
            zone = ZoneInfo(timezone) if timezone else None
    names = {cid: (unit.consumption, unit.demand) for cid, unit in units.items()}
    print(format_periods(closed, import_ids=import_ids, units=names, zone=zone), end="")
    return EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with contextlib.ExitStack() as stack:
        store = None
        if args.db is not None:
            # opened (and locked) before reading a row, so a bad --db fails before any work
            db = Path(args.db)
            store = stack.enter_context(Store.open(db.parent, db.name))
            if store.load() is not None or store.reset_log():
                raise ReplayError(f"{db} already holds state: replay --db writes a new database")
        if args.events == "-":
            events, name = sys.stdin, "<stdin>"
        else:
            try:
                events = stack.enter_context(open(args.events, encoding="utf-8", newline=""))
            except OSError as exc:
                raise ReplayError(f"{args.events}: cannot read: {exc.strerror}") from None
            name = args.events
        resets: ResetLog = []
        intervals: list[IntervalRecord] = []
        try:
            engine = replay(
                config,
                events,
                sys.stdout,
                start=args.start,
                end=args.end,
                name=name,
                resets=resets if store else None,
                intervals=intervals if store else None,
            )
        except UnicodeDecodeError:
            raise ReplayError(f"{name}: not UTF-8 text") from None
        if store is not None and engine is not None:
            for source, outcomes, states in resets:
                store.record_resets(outcomes, source, states)
            store.checkpoint(
                {cid: (c.rules, c.state()) for cid, c in engine.channels.items()},
                engine.now,
                intervals=intervals,
            )
            store.describe({c.id: c.import_id for c in config.channels}, config.timezone)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
