"""The ``pulse-gateway`` command line: the only place that maps errors to exit codes.

Exit codes: 0 success, 2 bad input (a config, an event log, an argument). A user mistake prints
one line per problem on stderr, never a traceback (PRODUCT.md §3).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.config import ConfigError, load_config
from gateway.core import Instant, TimeSyntaxError, parse_instant
from gateway.replay import ReplayError, replay

EXIT_OK = 0
EXIT_BAD_INPUT = 2


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "replay":
            return _replay(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD_INPUT
    except ReplayError as exc:
        print(f"pulse-gateway replay: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # `replay ... | head` is normal use
        sys.stderr.close()
        return EXIT_OK
    raise AssertionError(f"unhandled command {args.command}")  # argparse allows no other


def _replay(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.events == "-":
        replay(config, sys.stdin, sys.stdout, start=args.start, end=args.end, name="<stdin>")
        return EXIT_OK
    try:
        events = open(args.events, encoding="utf-8", newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ReplayError(f"{args.events}: cannot read: {exc.strerror}") from None
    with events:
        try:
            replay(config, events, sys.stdout, start=args.start, end=args.end, name=args.events)
        except UnicodeDecodeError:
            raise ReplayError(f"{args.events}: not UTF-8 text") from None
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
