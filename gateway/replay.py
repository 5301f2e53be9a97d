"""``pulse-gateway replay``: recompute the demand rules offline from an event log.

Input and output formats are a contract (docs/reference/commands.md): other tools parse them.

Decisions the formats leave open (also in docs/reference/commands.md):

- Rows are checked strictly: a ``value`` on a ``reset``, ``reset_all`` or ``offline`` row, a
  channel on ``reset_all``, a pulse count that is not a whole number >= 1, an unknown channel or
  event, or a row earlier than the one before it is an error naming its line.
- ``--start`` is when counting began; a row earlier than it contradicts that and is an error.
  Rows after ``--end`` are not read (they cannot change any output row).
- A channel's ``reset_schedule`` applies as in the gateway: each scheduled reset at its
  instant, after that instant's boundary and before that instant's rows (source ``schedule``).
- ``--db PATH`` writes the resets (source ``replay``) and the channels' final state into a new
  database, only after the whole log was good; one that already holds state is refused, so a
  replay can never overwrite a gateway's own state. The interval records go in with them.
- The input is read as a stream, so a year of per-second pulses runs in bounded memory. The
  output goes to a spooled temporary file first and is copied out only when the whole log was
  good: a bad row prints one error and no partial table.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from collections.abc import Callable, Iterable
from typing import IO, TextIO

from gateway.config import Config
from gateway.core import (
    ChannelReading,
    ChannelRules,
    ChannelState,
    DemandError,
    Engine,
    Instant,
    IntervalLog,
    IntervalMark,
    IntervalRecord,
    ResetOutcome,
    TimeSyntaxError,
    format_instant,
    parse_instant,
)

HEADER = ("time", "channel", "event", "value")
OUTPUT_HEADER = (
    "time,channel,pulses_total,consumption,demand,peak_demand,"
    "previous_peak_demand,cumulative_demand,reset_count"
)
EVENTS = ("pulses", "reset", "reset_all", "offline", "online")
_SPOOL_BYTES = 8 * 1024 * 1024


class ReplayError(Exception):
    """A bad event log; the message names the file and line."""


# every reset attempt in order: its source ("replay" for a row, "schedule"), the outcomes by
# channel and the states after them
type ResetLog = list[
    tuple[str, dict[str, ResetOutcome], dict[str, tuple[ChannelRules, ChannelState]]]
]


def replay(
    config: Config,
    events: Iterable[str],
    out: TextIO,
    *,
    start: Instant | None = None,
    end: Instant | None = None,
    name: str = "EVENTS",
    resets: ResetLog | None = None,
    intervals: list[IntervalRecord] | None = None,
) -> Engine | None:
    """Read the event log ``events`` (lines of CSV) and write the boundary table to ``out``.

    Returns the engine as the log left it (None for an empty log without --start). When
    ``resets`` is given, every reset attempt is appended to it with the states after it, for
    ``replay --db``, which writes them only once the whole log was good; likewise every
    interval record (docs/reference/export-formats.md) into ``intervals``.
    """
    if start is not None and end is not None and end < start:
        raise ReplayError("--end is earlier than --start")
    with tempfile.SpooledTemporaryFile(_SPOOL_BYTES, mode="w+", newline="") as spool:
        spool.write(OUTPUT_HEADER + "\n")
        engine = _run(config, events, spool, start, end, name, resets, intervals)
        spool.seek(0)
        shutil.copyfileobj(spool, out)
    return engine


def _run(
    config: Config,
    events: Iterable[str],
    out: IO[str],  # the spool, which is an IO[str] but not a TextIO
    start: Instant | None,
    end: Instant | None,
    name: str,
    resets: ResetLog | None,
    intervals: list[IntervalRecord] | None,
) -> Engine | None:
    rows = csv.reader(events)
    header = next(rows, None)
    if header is None:
        raise ReplayError(f"{name}:1: empty file: expected the header {','.join(HEADER)}")
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    if tuple(field.strip() for field in header) != HEADER:
        raise ReplayError(
            f"{name}:1: expected the header {','.join(HEADER)}, found {','.join(header)}"
        )

    engine: Engine | None = None if start is None else Engine(config.rules(), start)
    write = _Writer(out.write, config, intervals, engine)
    channels = set(config.rules())
    last_text = ""
    t: Instant = start if start is not None else 0  # the previous row's time
    line = 1
    for row in rows:
        line = rows.line_num
        if not row:
            continue
        try:
            if len(row) == 4:
                time_text, channel, event, value = row
            elif len(row) == 3:
                time_text, channel, event = row
                value = ""
            else:
                raise ReplayError(f"expected 4 fields (time,channel,event,value), found {len(row)}")
            if time_text != last_text:
                now = parse_instant(time_text)
                if engine is None:
                    engine = Engine(config.rules(), now)
                    write.engine = engine
                elif start is not None and now < start:
                    raise ReplayError(f"time {time_text} is before --start")
                elif now < t:
                    raise ReplayError(
                        f"time {time_text} is earlier than the row before it: rows must be in "
                        "time order"
                    )
                if end is not None and now > end:
                    break
                t = now
                last_text = time_text
                if t >= engine.next_due or t >= engine.next_fire:
                    _advance(engine, t, write, resets)
            assert engine is not None
            if event == "pulses":
                # the hot path: straight to the channel, which still refuses an event that is
                # out of order or past an unclosed boundary
                count = int(value) if value.isdigit() and value.isascii() else 0
                if count < 1:
                    count = _count(value, minimum=1)
                # (through the engine for a virtual channel's term: it passes them on)
                engine.feeds[_known(channel, channels)](t, count)
            elif event == "reset":
                _empty(value, event)
                channel = _known(channel, channels)
                outcome = engine.reset(channel, t)
                if resets is not None:
                    resets.append(("replay", {channel: outcome}, _states(engine, [channel])))
            elif event == "offline":
                _empty(value, event)
                engine.offline(_known(channel, channels), t)
            elif event == "online":
                engine.online(
                    _known(channel, channels), t, _count(value, minimum=0) if value else 0
                )
            elif event == "reset_all":
                _empty(value, event)
                if channel:
                    raise ReplayError(
                        f"reset_all resets every channel: leave channel empty, not {channel!r}"
                    )
                outcomes = engine.reset_all(t)
                if resets is not None:
                    resets.append(("replay", outcomes, _states(engine, list(outcomes))))
            else:
                raise ReplayError(f"unknown event {event!r}: expected one of {', '.join(EVENTS)}")
        except (ReplayError, DemandError, TimeSyntaxError) as exc:
            raise ReplayError(f"{name}:{line}: {exc}") from None

    if engine is None:
        return None  # no rows and no --start: no boundary to show
    # end = --end, or the last row's time; rows after --end were not read
    _advance(engine, end if end is not None else t, write, resets)
    return engine


def _advance(
    engine: Engine,
    t: Instant,
    write: Callable[[list[ChannelReading]], None],
    resets: ResetLog | None,
) -> None:
    """Boundaries and scheduled resets up to ``t``, in time order, as the live gateway does:
    a scheduled reset comes after the boundary at its instant and before the rows at it."""
    while engine.next_fire <= t:
        write(engine.advance(engine.next_fire))
        fired = engine.fire()
        if resets is not None and fired:
            outcomes = {item.channel: item.outcome for item in fired}
            resets.append(("schedule", outcomes, _states(engine, list(outcomes))))
    write(engine.advance(t))


def _states(engine: Engine, channels: list[str]) -> dict[str, tuple[ChannelRules, ChannelState]]:
    return {c: (engine.channels[c].rules, engine.channels[c].state()) for c in channels}


def _known(channel: str, channels: set[str]) -> str:
    if channel not in channels:
        if not channel:
            raise ReplayError("channel is empty")
        raise ReplayError(
            f"unknown channel {channel!r}: the config has {', '.join(sorted(channels))}"
        )
    return channel


def _count(value: str, *, minimum: int) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise ReplayError(f"value {value!r} is not a whole number of pulses")
    count = int(text)
    if count < minimum:
        raise ReplayError(f"value {count} must be at least {minimum}")
    return count


def _empty(value: str, event: str) -> None:
    if value.strip():
        raise ReplayError(f"a {event} row takes no value, found {value!r}")


class _Writer:
    """Writes boundary readings as output rows, formatting each boundary instant once; with
    ``records``, also collects the interval records the readings complete."""

    def __init__(
        self,
        write: Callable[[str], object],
        config: Config,
        records: list[IntervalRecord] | None,
        engine: Engine | None = None,
    ) -> None:
        self._write = write
        self._instant = -1
        self._stamp = ""
        self._config = config
        self._records = records
        self._log: IntervalLog | None = None
        self.engine = engine

    def __call__(self, readings: list[ChannelReading]) -> None:
        if self._records is not None and readings and self.engine is not None:
            if self._log is None:  # counting began at the engine's start
                self._log = IntervalLog(
                    {c.id: c.interval for c in self._config.channels},
                    {
                        c.id: IntervalMark(self.engine.start, 0, c.rules.initial_reading)
                        for c in self._config.channels
                    },
                )
            self._records += self._log.observe(readings, self.engine.channels)
        for item in readings:
            r = item.reading
            if r.time != self._instant:
                self._instant, self._stamp = r.time, format_instant(r.time)
            self._write(
                f"{self._stamp},{item.channel},{'' if r.pulses_total is None else r.pulses_total},"
                f"{r.consumption!r},"
                f"{'' if r.demand is None else repr(r.demand)},{r.peak_demand!r},"
                f"{r.previous_peak_demand!r},{r.cumulative_demand!r},{r.reset_count}\n"
            )
