"""The reset audit of the state store: logging reset attempts, reading them, the checksum.

Every reset attempt is appended to ``resets`` in the same transaction as the channel state
after it; ``verdict`` judges each channel's cumulative demand against that log, and
``format_resets`` prints both for ``pulse-gateway resets``. Separate from the ``Store`` because
the audit is its own domain with its own queries and report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.core import Instant, ResetAttempt, ResetOutcome, Saved, Totals
from gateway.core.checksum import ChannelVerdict, Ledger, judge, ledgers
from gateway.store_connection import StoreConnection
from gateway.store_rows import _CHANNEL_UPSERT, _STATE_REPLACE, _rules_row, _state_row

_RESET_COLUMNS = (
    "channel, time_us, source, accepted, reason, peak_before, previous_peak_before, "
    "cumulative_before, reset_count_before, peak_after, previous_peak_after, cumulative_after, "
    "reset_count_after"
)
_PERIOD_COLUMNS = "period_start, period_consumption, period_peak, period_peak_time"
_RESET_INSERT = (
    f"INSERT INTO resets (id, {_RESET_COLUMNS}, {_PERIOD_COLUMNS}) VALUES ({', '.join('?' * 18)})"
)
_LOG_QUERY = f"SELECT id, {_RESET_COLUMNS} FROM resets ORDER BY id"
# the accepted resets of each channel's current life (after its audit_from), in log order; a
# channel with no row in channels (removed and forgotten) counts all of its rows
_ACCEPTED_QUERY = (
    "SELECT r.channel, r.previous_peak_after FROM resets r LEFT JOIN channels c"
    " ON c.id = r.channel WHERE r.accepted = 1 AND r.id > coalesce(c.audit_from, 0)"
    " ORDER BY r.id"
)


@dataclass(frozen=True, slots=True)
class ResetRecord:
    """One logged reset attempt; a refused one has ``before == after``."""

    id: int
    channel: str
    time: Instant
    source: str  # e.g. "bacnet:192.168.1.20:47808" or "replay"
    accepted: bool
    reason: str
    before: Totals
    after: Totals


class ResetAudit(StoreConnection):
    """The store's reset audit: append-only, written with the state it changed."""

    def record_reset(
        self,
        channel: str,
        outcome: ResetOutcome,
        source: str,
        state: Saved | None,
        baselines: Mapping[str, int | float] | None = None,
    ) -> None:
        """Log one reset attempt and save the channel's state after it, in one transaction.

        ``state`` is required for an accepted reset; pass it for a refused one too, since
        the refusal counter is part of the state. Acknowledge the reset only after this returns.
        """
        states = {} if state is None else {channel: state}
        self.record_resets({channel: outcome}, source, states, baselines)

    def record_resets(
        self,
        outcomes: Mapping[str, ResetOutcome],
        source: str,
        states: Mapping[str, Saved],
        baselines: Mapping[str, int | float] | None = None,
    ) -> None:
        """``record_reset`` for several channels (a reset_all) in one transaction.

        ``baselines``: the sources' baselines of these channels as of ``states``. The saved
        state counts every pulse up to the reset, so its baseline must move with it: an older
        one would count the pulses in between again after a crash.
        """
        self._record_attempts(
            [(channel, outcome) for channel, outcome in outcomes.items()], source, states, baselines
        )

    def record_scheduled(
        self,
        fired: Sequence[ResetAttempt],
        states: Mapping[str, Saved],
        baselines: Mapping[str, int | float] | None = None,
    ) -> None:
        """Scheduled resets (source ``schedule``), in order, with the states after the last of
        them, in one transaction: the ones a start-up applies for a downtime are all written
        or none, so a crash never applies one twice nor skips one."""
        attempts = [(item.channel, item.outcome) for item in fired]
        self._record_attempts(attempts, "schedule", states, baselines)

    def _record_attempts(
        self,
        attempts: Sequence[tuple[str, ResetOutcome]],
        source: str,
        states: Mapping[str, Saved],
        baselines: Mapping[str, int | float] | None,
    ) -> None:
        if not source:
            raise ValueError("a reset needs a source, such as 'replay' or a BACnet address")
        missing = sorted({c for c, o in attempts if o.accepted and c not in states})
        if missing:
            raise ValueError(f"accepted resets need the channel state: {', '.join(missing)}")
        rows = {channel: _state_row(state) for channel, (_, state) in states.items()}
        rules_rows = {channel: _rules_row(rules) for channel, (rules, _) in states.items()}
        baseline_rows = {c: repr(v) for c, v in (baselines or {}).items() if c in states}
        with self._mutex:  # until the cache says what was committed
            with self._write() as conn:
                for channel in states:
                    # the channel row first, so a new channel's audit_from precedes its reset rows
                    conn.execute(_CHANNEL_UPSERT, (channel, *rules_rows[channel]))
                    conn.execute(_STATE_REPLACE, (channel, *rows[channel]))
                # one executemany (a start-up after a year down writes 730,000 rows)
                first = conn.execute(
                    "SELECT coalesce(max(seq), 0) + 1 FROM sqlite_sequence WHERE name = 'resets'"
                ).fetchone()[0]
                conn.executemany(_RESET_INSERT, _attempt_rows(attempts, source, first))
                self._save_baselines(conn, baseline_rows)
                # Under the lock, before the commit: a failed commit only delays these channels'
                # next checkpoint row by one checkpoint.
                self._generation += 1
                for channel in states:
                    self._saved_in[channel] = self._generation
            self._written["rules"].update(rules_rows)
            self._written["state"].update(rows)
            self._written["baseline"].update(baseline_rows)

    def reset_log(self) -> list[ResetRecord]:
        """Every logged reset attempt, oldest first."""
        (rows,) = self._query(_LOG_QUERY)
        return [_record(row) for row in rows]

    def verdict(self) -> list[ChannelVerdict]:
        """The checksum of every channel that has saved state or logged resets, by id."""
        accepted, saved_rows = self._query(
            _ACCEPTED_QUERY,
            "SELECT c.id, s.cumulative_demand, s.reset_count"
            " FROM channels c JOIN channel_state s ON s.channel = c.id",
        )
        logged = ledgers(accepted)
        everyone = sorted({c for c, *_ in saved_rows} | logged.keys())
        saved = {row[0]: row[1:] for row in saved_rows}
        return [
            judge(channel, logged.get(channel, Ledger()), *saved.get(channel, (None, None)))
            for channel in everyone
        ]


def format_resets(log: Sequence[ResetRecord], verdicts: Sequence[ChannelVerdict]) -> str:
    """The ``pulse-gateway resets`` report: a table of attempts, then one verdict per channel.

    Totals in the table: ``peak_before`` is the peak the reset cleared, the rest are after it.
    """
    header: tuple[str, ...] = ("id", "time", "channel", "source", "result", "peak_before")
    header += ("previous_peak", "cumulative", "reset_count")
    rows = [header]
    for r in log:
        result = "accepted" if r.accepted else f"refused ({r.reason})"
        before, after = r.before, r.after
        cells = [str(r.id), _iso(r.time), r.channel, r.source, result, repr(before.peak_demand)]
        cells += [repr(after.previous_peak_demand), repr(after.cumulative_demand)]
        rows.append((*cells, str(after.reset_count)))
    lines = []
    if log:
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    else:
        lines.append("no reset attempts logged")
    lines.append("")
    lines += [verdict.line() for verdict in verdicts] or ["no channels saved"]
    return "\n".join(lines) + "\n"


def _attempt_rows(
    attempts: Sequence[tuple[str, ResetOutcome]], source: str, first_id: int
) -> list[tuple]:
    """The audit rows, ids from ``first_id``, with the billing period an accepted one closed.

    Lean on purpose: a start-up after a year down writes 730,000 of them."""
    rows: list[tuple] = []
    for reset_id, (channel, outcome) in enumerate(attempts, start=first_id):
        time, accepted, reason, before, after, period = outcome
        # NaN (SQLite would store NULL) makes the sum NaN; totals are finite otherwise
        total = before[0] + before[1] + before[2] + after[0] + after[1] + after[2]
        if period is None:
            closed: tuple = (None, None, None, None)
        else:
            # float(): a config's whole numbers (scale_factor: 10) can make consumption an int
            consumption = float(period.consumption)
            peak = None if period.peak_demand is None else float(period.peak_demand)
            closed = (period.start, consumption, peak, period.peak_time)
            total += consumption + (peak or 0.0)
        if total != total:
            raise ValueError(f"a reset total of {channel!r} is NaN and cannot be saved")
        rows.append((reset_id, channel, time, source, accepted, reason, *before, *after, *closed))
    return rows


def _record(row: tuple) -> ResetRecord:
    totals_before, totals_after = Totals(*row[6:10]), Totals(*row[10:14])
    record_id, channel, time_us, source, accepted, reason = row[:6]
    return ResetRecord(
        record_id, channel, time_us, source, bool(accepted), reason, totals_before, totals_after
    )


def _iso(instant: Instant) -> str:
    """An instant in UTC, with its fraction of a second only when it has one."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=instant)
    spec = "seconds" if not instant % 10**6 else "milliseconds" if not instant % 1000 else "auto"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")
