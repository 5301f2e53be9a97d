"""The state store: channel state, checkpoints and the reset audit in one SQLite file.

Theory of operation (docs/reference/state-and-resets.md)
--------------------------------------------------------
``{state_dir}/gateway.db`` holds what must survive a crash or a power cut: every channel's
rules and ``ChannelState``, the instant of the last checkpoint, and the append-only log of every
reset attempt. One process owns a state directory: ``Store.open`` takes an exclusive
``flock`` on ``{state_dir}/gateway.lock`` (released by the kernel when the process dies, so a
crash never leaves a stale lock) and refuses when another process holds it.

Durability: WAL with ``synchronous=FULL``, so a transaction is on disk when ``commit`` returns.
A reset is acknowledged only after ``record_reset`` returns, and its audit row and the channel's
new state are written in one transaction: after a crash the restored state and the audit agree,
so a reset is never lost and never applied twice.

Exactness: floats are stored as 8-byte IEEE doubles in columns with no declared type. A REAL
column would store a float with an integral value as an integer, which turns -0.0 into 0.0;
``CHECK (typeof(x) = 'real')`` keeps every value a double. A NaN cannot be stored (SQLite makes
it NULL), so it is refused rather than silently changed.

Safety: a file that is not a database, fails ``PRAGMA quick_check``, belongs to another
application or was written by a newer schema raises ``StoreError``; it is never reset to zero
and never written to. Migrations are an ordered list; all pending ones run in one transaction.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Literal, Self

from gateway import __version__
from gateway.core import (
    UNITS,
    ChannelRules,
    ChannelState,
    DemandError,
    Instant,
    IntervalMark,
    IntervalRecord,
    ResetOutcome,
    Saved,
    Totals,
)
from gateway.core.checksum import ChannelVerdict, Ledger, judge, ledgers

DB_NAME = "gateway.db"
LOCK_NAME = "gateway.lock"
APPLICATION_ID = 0x50474757  # "PGGW" in the file header: tells our databases from others
BASELINE_READINGS = "baseline_readings"  # meta key: what each saved baseline was read from
TIMEZONE = "timezone"  # meta key: the gateway's IANA timezone, as its config said


class StoreError(Exception):
    """The state store cannot be used; the message names the file and what to do."""


def _real(name: str) -> str:
    return f"{name} NOT NULL CHECK (typeof({name}) = 'real')"


def _real_or_null(name: str) -> str:
    return f"{name} CHECK ({name} IS NULL OR typeof({name}) = 'real')"


_TOTALS = ("peak", "previous_peak", "cumulative")

# Migration k (1-based) brings user_version from k-1 to k. Never edit a released migration:
# append a new one, so every database takes the same path to the current schema.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # rules as columns so the service can tell a channel whose config changed on restart;
        # audit_from: resets with a larger id belong to this life of the channel (a channel
        # forgotten and configured again starts a new checksum, the old audit rows stay)
        f"""CREATE TABLE channels (
            id TEXT PRIMARY KEY, unit TEXT NOT NULL, {_real("scale_factor")},
            window_us INTEGER NOT NULL, slide_us INTEGER NOT NULL, {_real("initial_reading")},
            reset_lockout_us INTEGER NOT NULL, audit_from INTEGER NOT NULL)""",
        f"""CREATE TABLE channel_state (
            channel TEXT PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
            pulses_total INTEGER NOT NULL, {_real("consumption_base")},
            pulses_at_base INTEGER NOT NULL, {_real("scale_factor")},
            window_intervals TEXT NOT NULL, open_interval INTEGER NOT NULL,
            next_boundary INTEGER NOT NULL, valid_from INTEGER NOT NULL, offline_since INTEGER,
            now INTEGER NOT NULL, {_real_or_null("demand")}, {_real_or_null("last_valid_demand")},
            {_real("peak_demand")}, peak_time INTEGER, {_real("previous_peak_demand")},
            {_real("cumulative_demand")}, reset_count INTEGER NOT NULL, last_reset INTEGER,
            rejected_resets INTEGER NOT NULL)""",
        # one row: the instant of the last checkpoint, the gateway's last sign of life
        """CREATE TABLE checkpoint (
            id INTEGER PRIMARY KEY CHECK (id = 1), saved_at INTEGER NOT NULL)""",
        # no foreign key on channel: the audit outlives a channel removed from the config
        f"""CREATE TABLE resets (
            id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, time_us INTEGER NOT NULL,
            source TEXT NOT NULL, accepted INTEGER NOT NULL CHECK (accepted IN (0, 1)),
            reason TEXT NOT NULL,
            {", ".join(_real(f"{m}_{s}") for s in ("before", "after") for m in _TOTALS)},
            reset_count_before INTEGER NOT NULL, reset_count_after INTEGER NOT NULL)""",
        "CREATE INDEX resets_by_channel ON resets (channel, id)",
        # the audit is the checksum's evidence: a stray DELETE or UPDATE must fail loudly
        """CREATE TRIGGER resets_no_update BEFORE UPDATE ON resets
            BEGIN SELECT RAISE(ABORT, 'the reset audit is append-only'); END""",
        """CREATE TRIGGER resets_no_delete BEFORE DELETE ON resets
            BEGIN SELECT RAISE(ABORT, 'the reset audit is append-only'); END""",
        f"PRAGMA application_id = {APPLICATION_ID}",
    ),
    (
        # 2: a source's raw reading per channel (a Modbus counter's value) that the saved
        # pulses_total goes up to; saved with the state, so a device's counts while the gateway
        # was down come back as catch-up. Kept as text: a u64 counter exceeds SQLite's int64.
        """CREATE TABLE source_baseline (
            channel TEXT PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
            value TEXT NOT NULL)""",
    ),
    (
        # 3: interval records (docs/reference/export-formats.md), written with the checkpoint at
        # each interval end.
        # No foreign key: like the reset audit, interval data outlives a removed channel.
        f"""CREATE TABLE intervals (
            channel TEXT NOT NULL, end_us INTEGER NOT NULL, start_us INTEGER NOT NULL,
            pulses INTEGER NOT NULL, {_real("consumption")}, {_real("average_demand")},
            estimated INTEGER NOT NULL CHECK (estimated IN (0, 1)),
            pulses_total INTEGER NOT NULL, {_real("consumption_total")},
            PRIMARY KEY (end_us, channel)) WITHOUT ROWID""",
        "CREATE INDEX intervals_by_channel ON intervals (channel, end_us)",
        # where each channel's next record starts (IntervalMark), saved with every checkpoint
        f"""CREATE TABLE interval_mark (
            channel TEXT PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
            end_us INTEGER NOT NULL, pulses_total INTEGER NOT NULL,
            {_real("consumption_total")})""",
    ),
    (
        # 4: what the billing data is booked to: each channel's EnergyCAP ImportID as the
        # config that wrote the database said (the timezone goes into meta), so an export or a
        # periods listing from the database alone labels rows as the config would. No foreign
        # key: like the interval data it labels, it outlives a removed channel.
        "CREATE TABLE channel_identity (channel TEXT PRIMARY KEY, import_id TEXT NOT NULL)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_STATE_FIELDS = ChannelState._fields
# the float fields (annotations are strings: demand.py uses `from __future__ import annotations`)
_STATE_REALS = frozenset(
    name for name, kind in ChannelState.__annotations__.items() if "float" in str(kind)
)
# positions in a state row, for the checkpoint's hot path (2,000 rows a second)
_REAL_AT = tuple(i for i, name in enumerate(_STATE_FIELDS) if name in _STATE_REALS)
_WINDOW_AT = _STATE_FIELDS.index("window_intervals")
_RULES_COLUMNS = (
    "unit, scale_factor, window_us, slide_us, initial_reading, reset_lockout_us, audit_from"
)
_RESET_COLUMNS = (
    "channel, time_us, source, accepted, reason, peak_before, previous_peak_before, "
    "cumulative_before, reset_count_before, peak_after, previous_peak_after, cumulative_after, "
    "reset_count_after"
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
class SavedChannel:
    """One channel as saved: ``Channel.restore(rules, state)`` continues it exactly."""

    rules: ChannelRules  # compare with the configured rules to see a changed channel
    state: ChannelState


@dataclass(frozen=True, slots=True)
class SavedState:
    """What ``load`` finds: the last checkpoint instant and every saved channel (by id)."""

    # The last checkpoint instant. Before the first checkpoint (a crash just after a reset),
    # the earliest ``now`` of the saved channels: no channel is taken to have been alive
    # longer than its saved state proves, so the downtime outage is never too short.
    saved_at: Instant
    channels: dict[str, SavedChannel]
    # per channel, the source's raw reading the saved counts go up to (Source.baselines)
    baselines: dict[str, int | float] = field(default_factory=dict)


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


class Store:
    """The SQLite state store of one gateway; use ``Store.open`` or ``Store.open_readonly``.

    Calls are short and serialised by an internal lock, so the service may call them from
    the event loop or from ``asyncio.to_thread``.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, lock_fd: int | None) -> None:
        """Internal: use ``open`` or ``open_readonly``."""
        self.path = path
        self.readonly = lock_fd is None
        self._conn: sqlite3.Connection | None = conn
        self._lock_fd = lock_fd
        # re-entrant: a write holds it from before its transaction until its cache update
        self._mutex = threading.RLock()
        # rows this store committed last, per table and channel: checkpoint writes only changes
        self._written: dict[str, dict[str, tuple | str]] = {
            "rules": {},
            "state": {},
            "mark": {},
            "baseline": {},
        }
        # Bumped by every write of channel state outside a checkpoint (a reset, a refusal);
        # per channel, the generation of its last such write. A checkpoint taken before it
        # must not overwrite it: see ``generation`` and ``checkpoint(taken=...)``.
        self._generation = 0
        self._saved_in: dict[str, int] = {}

    # -- opening and closing ------------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: Path, db_name: str = DB_NAME) -> Store:
        """Lock ``state_dir`` for this process and open (or create) its database.

        ``db_name`` other than gateway.db (``replay --db PATH``) gets a lock of its own name.
        """
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the state directory {state_dir}: {exc.strerror}; "
                "create it or set gateway.state_dir to a writable directory"
            ) from None
        lock_name = LOCK_NAME if db_name == DB_NAME else f"{db_name}.lock"
        lock_fd = _lock(state_dir / lock_name)
        path = state_dir / db_name
        try:
            conn = sqlite3.connect(path, autocommit=True, check_same_thread=False)
        except sqlite3.Error as exc:
            os.close(lock_fd)
            raise StoreError(f"cannot open the database {path}: {exc}") from None
        try:
            _prepare(conn, path, _check(conn, path))
        except BaseException:
            conn.close()
            os.close(lock_fd)
            raise
        return cls(conn, path, lock_fd)

    @classmethod
    def open_readonly(cls, db_path: Path) -> Store:
        """Open a database to read (``resets --db``): no lock, no change, same checks."""
        if not db_path.is_file():
            raise StoreError(f"no database at {db_path}: give the path of a gateway.db")
        uri = db_path.resolve().as_uri() + "?mode=ro"  # read-only: never creates or writes
        try:
            conn = sqlite3.connect(uri, uri=True, autocommit=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {db_path}: {exc}") from None
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            version = _check(conn, db_path)
            if version == 0:
                raise StoreError(f"{db_path} holds no gateway state yet")
            if version < SCHEMA_VERSION:
                raise StoreError(
                    f"{db_path} has schema version {version}, this pulse-gateway reads "
                    f"{SCHEMA_VERSION}: run the gateway on it once to upgrade it"
                )
        except BaseException:
            conn.close()
            raise
        return cls(conn, db_path, None)

    def close(self) -> None:
        """Close the database and release the state directory; closing twice is harmless."""
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One durable transaction; any SQLite failure rolls it back and becomes StoreError."""
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only")
        with self._mutex:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"cannot write {self.path}: {exc}; nothing was saved") from exc
                raise

    @property
    def generation(self) -> int:
        """Read it when taking the states for a checkpoint and pass it as ``taken``."""
        return self._generation

    def checkpoint(
        self,
        states: Mapping[str, Saved],
        at: Instant,
        baselines: Mapping[str, int | float] | None = None,
        intervals: Sequence[IntervalRecord] = (),
        marks: Mapping[str, IntervalMark] | None = None,
        taken: int | None = None,
    ) -> None:
        """Save every given channel's rules and state, the sources' ``baselines`` (per channel),
        new interval records with the log's ``marks``, and ``at`` as the checkpoint instant, in
        one transaction.

        Channels not in ``states`` keep their saved rows: removing one is ``forget_channel``.
        ``taken`` is the ``generation`` read when ``states`` were taken: the service writes
        them from a worker thread, so a reset may have been saved in between; such a channel
        keeps its newer rows (state, rules, baseline) and goes in the next checkpoint.
        """
        with self._mutex:  # until the cache says what was committed
            with self._write() as conn:
                # Inside the lock: the cache and the generations change only under it.
                if taken is not None and taken < self._generation:
                    newer = {c for c, g in self._saved_in.items() if g > taken}
                    states = {c: s for c, s in states.items() if c not in newer}
                    baselines = {c: v for c, v in (baselines or {}).items() if c not in newer}
                changed = self._changes(states, baselines, marks)
                # the channel rows first: channel_state and the others refer to them
                conn.executemany(_CHANNEL_UPSERT, [(c, *r) for c, r in changed["rules"].items()])
                conn.executemany(_STATE_REPLACE, [(c, *r) for c, r in changed["state"].items()])
                self._save_intervals(conn, intervals)
                if changed["mark"]:  # (an empty executemany still needs the table to exist)
                    conn.executemany(
                        "INSERT OR REPLACE INTO interval_mark"
                        " (channel, end_us, pulses_total, consumption_total) VALUES (?, ?, ?, ?)",
                        [(c, *row) for c, row in changed["mark"].items()],
                    )
                self._save_baselines(conn, changed["baseline"])
                conn.execute(
                    "INSERT INTO checkpoint (id, saved_at) VALUES (1, ?)"
                    " ON CONFLICT (id) DO UPDATE SET saved_at = excluded.saved_at",
                    (at,),
                )
            for name, rows in changed.items():
                self._written[name].update(rows)

    def _changes(
        self,
        states: Mapping[str, Saved],
        baselines: Mapping[str, int | float] | None,
        marks: Mapping[str, IntervalMark] | None,
    ) -> dict[str, dict[str, tuple | str]]:
        """Per table, the rows that differ from what this store committed last.

        2,000 unchanged rules rows a second are ~8,000 statements for nothing; the cache is
        updated only after a commit, and this process is the database's only writer (lock).
        """
        rows: dict[str, dict[str, tuple | str]] = {
            "rules": {c: _rules_row(rules) for c, (rules, _) in states.items()},
            "state": {c: _state_row(state) for c, (_, state) in states.items()},
            "mark": {
                c: (m.end, m.pulses_total, float(m.consumption_total))
                for c, m in (marks or {}).items()
                if c in states
            },
            "baseline": {c: repr(v) for c, v in (baselines or {}).items() if c in states},
        }
        written = self._written
        return {
            name: {c: row for c, row in table.items() if written[name].get(c) != row}
            for name, table in rows.items()
        }

    @staticmethod
    def _save_intervals(conn: sqlite3.Connection, records: Sequence[IntervalRecord]) -> None:
        if records:
            conn.executemany(
                "INSERT OR REPLACE INTO intervals (channel, end_us, start_us, pulses,"
                " consumption, average_demand, estimated, pulses_total, consumption_total)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.channel,
                        r.end,
                        r.start,
                        r.pulses,
                        float(r.consumption),
                        _float("average_demand", r.average_demand),
                        int(r.estimated),
                        r.pulses_total,
                        float(r.consumption_total),
                    )
                    for r in records
                ],
            )

    @staticmethod
    def _save_baselines(conn: sqlite3.Connection, rows: Mapping[str, tuple | str]) -> None:
        if rows:  # (an empty executemany still needs the table to exist)
            conn.executemany(
                "INSERT INTO source_baseline (channel, value) VALUES (?, ?)"
                " ON CONFLICT (channel) DO UPDATE SET value = excluded.value",
                list(rows.items()),
            )

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
        if not source:
            raise ValueError("a reset needs a source, such as 'replay' or a BACnet address")
        missing = [c for c, o in outcomes.items() if o.accepted and c not in states]
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
                for channel, outcome in outcomes.items():
                    row = (channel, outcome.time, source, outcome.accepted, outcome.reason)
                    row += (*_totals_row(outcome.before), *_totals_row(outcome.after))
                    conn.execute(
                        f"INSERT INTO resets ({_RESET_COLUMNS}) VALUES ({', '.join('?' * 13)})", row
                    )
                self._save_baselines(conn, baseline_rows)
                # Under the lock, before the commit: a failed commit only delays these channels'
                # next checkpoint row by one checkpoint.
                self._generation += 1
                for channel in states:
                    self._saved_in[channel] = self._generation
            self._written["rules"].update(rules_rows)
            self._written["state"].update(rows)
            self._written["baseline"].update(baseline_rows)

    def bind_baselines(self, readings: Mapping[str, str]) -> list[str]:
        """Record what each channel's baseline is read from now (``readings``: channel ->
        its device and register, as text; channels without a baseline-keeping source left
        out) and delete the baselines saved for something else; the channels whose baselines
        were deleted, by id. One transaction.

        A channel moved to another register or device while the gateway was down would
        otherwise take the difference between two registers for pulses. A baseline with no
        record (saved before the gateway kept them) is kept: its reading cannot be checked.
        """
        with self._mutex:  # until the cache says what was committed
            with self._write() as conn:
                row = conn.execute(
                    "SELECT value FROM meta WHERE key = ?", (BASELINE_READINGS,)
                ).fetchone()
                recorded: dict[str, str] = json.loads(row[0]) if row else {}
                saved = [c for (c,) in conn.execute("SELECT channel FROM source_baseline")]
                dropped = sorted(
                    c for c in saved if c in recorded and recorded[c] != readings.get(c)
                )
                conn.executemany(
                    "DELETE FROM source_baseline WHERE channel = ?", [(c,) for c in dropped]
                )
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (BASELINE_READINGS, json.dumps(dict(sorted(readings.items())))),
                )
                if dropped:  # a checkpoint taken before this must not write them back
                    self._generation += 1
                    for channel in dropped:
                        self._saved_in[channel] = self._generation
            for channel in dropped:
                self._written["baseline"].pop(channel, None)
        return dropped

    def forget_channel(self, channel: str) -> bool:
        """Drop a channel's rules and state (gone from the config); its reset audit stays.

        Returns whether anything was saved for it. Configured again later, the channel starts
        from zero with a new checksum.
        """
        with self._write() as conn:
            gone = conn.execute("DELETE FROM channels WHERE id = ?", (channel,)).rowcount > 0
        for rows in self._written.values():
            rows.pop(channel, None)
        return gone

    # -- reading -------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path} is closed")
        return self._conn

    def _query(self, *queries: str) -> list[list[tuple]]:
        """The rows of each query, all read from one snapshot of the database."""
        with self._mutex:
            conn = self._connection()
            try:
                conn.execute("BEGIN")  # a writer in another process cannot split the snapshot
                try:
                    return [conn.execute(sql).fetchall() for sql in queries]
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read {self.path}: {exc}") from exc

    def load(self) -> SavedState | None:
        """The saved state, or None for a database that holds none yet."""
        saved_at, rules_rows, state_rows, baseline_rows = self._query(
            "SELECT saved_at FROM checkpoint",
            f"SELECT id, {_RULES_COLUMNS} FROM channels ORDER BY id",
            f"SELECT channel, {', '.join(_STATE_FIELDS)} FROM channel_state",
            "SELECT channel, value FROM source_baseline",
        )
        baselines = {channel: _number(channel, text) for channel, text in baseline_rows}
        states = {row[0]: row[1:] for row in state_rows}
        if not saved_at and not rules_rows:
            return None
        channels = {}
        for channel_id, unit, scale, window, slide, initial, lockout, _ in rules_rows:
            try:
                rules = ChannelRules(UNITS[unit], scale, window, slide, initial, lockout)
                values = dict(zip(_STATE_FIELDS, states[channel_id], strict=True))
                values["window_intervals"] = _intervals(values["window_intervals"])
                state = ChannelState(**values)
            except (KeyError, ValueError, DemandError) as exc:
                raise StoreError(
                    f"{self.path}: the saved channel {channel_id!r} cannot be read ({exc}); "
                    "restore the file from a backup"
                ) from None
            channels[channel_id] = SavedChannel(rules, state)
        if saved_at:
            return SavedState(saved_at[0][0], channels, baselines)
        return SavedState(min(saved.state.now for saved in channels.values()), channels, baselines)

    def interval_marks(self) -> dict[str, IntervalMark]:
        """Per channel, where its next interval record starts (saved with the checkpoint)."""
        (rows,) = self._query(
            "SELECT channel, end_us, pulses_total, consumption_total FROM interval_mark"
        )
        return {channel: IntervalMark(end, pulses, total) for channel, end, pulses, total in rows}

    def intervals(
        self, since: Instant, until: Instant, channels: Sequence[str] | None = None
    ) -> Iterator[IntervalRecord]:
        """Records with since < end <= until, by end then channel id, read as a stream."""
        rows = self._interval_rows(
            "channel, end_us, start_us, pulses, consumption, average_demand, estimated,"
            " pulses_total, consumption_total",
            since,
            until,
            channels,
        )
        make = IntervalRecord._make  # a tuple built in C
        for row in rows:
            yield make((*row[:6], row[6] == 1, row[7], row[8]))

    def interval_values(
        self,
        since: Instant,
        until: Instant,
        column: Literal["consumption", "average_demand"],
        channels: Sequence[str] | None = None,
    ) -> Iterator[tuple[str, Instant, float, int]]:
        """``(channel, end, column, estimated)`` of the records ``intervals`` reads, a stream.

        ``column`` is ``consumption`` or ``average_demand``; ``estimated`` is 0 or 1. The export's
        reader: a year of 100 channels is 3.5 M records, and four columns straight from SQLite
        cost half of what nine columns made into an ``IntervalRecord`` each do.
        """
        if column not in ("consumption", "average_demand"):
            raise ValueError(f"interval_values reads consumption or average_demand: {column!r}")
        return self._interval_rows(f"channel, end_us, {column}, estimated", since, until, channels)

    def _interval_rows(
        self, columns: str, since: Instant, until: Instant, channels: Sequence[str] | None
    ) -> Iterator[tuple]:
        """The ``columns`` of the records with since < end <= until, by end then channel id."""
        query = f"SELECT {columns} FROM intervals WHERE end_us > :since AND end_us <= :until"
        args: dict[str, object] = {"since": since, "until": until}
        if channels is not None:
            names = [f":c{k}" for k in range(len(channels))]
            args |= zip((name[1:] for name in names), channels, strict=True)
            query += _CHANNEL_FILTER.format(channels=", ".join(names))
        # chain: rows are handed on in C, no Python frame per row; the query runs on first read
        return chain.from_iterable(self._batches(query + " ORDER BY end_us, channel", args))

    def _batches(self, query: str, args: Mapping[str, object]) -> Iterator[list[tuple]]:
        cursor = self._connection().execute(query, args)
        try:
            while rows := cursor.fetchmany(1000):
                yield rows
        finally:
            cursor.close()

    def prune_intervals(self, before: Instant, limit: int = 5000) -> int:
        """Delete up to ``limit`` records that ended before ``before``; the number deleted.

        Small batches, so a year of expired records never holds the write lock for long.
        """
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM intervals WHERE (end_us, channel) IN (SELECT end_us, channel"
                " FROM intervals WHERE end_us < ? ORDER BY end_us LIMIT ?)",
                (before, limit),
            )
            return cursor.rowcount

    def meta(self, key: str) -> str | None:
        """A value the gateway keeps about itself (e.g. the last day the export dropped)."""
        with self._mutex:
            try:
                row = (
                    self._connection()
                    .execute("SELECT value FROM meta WHERE key = ?", (key,))
                    .fetchone()
                )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read {self.path}: {exc}") from exc
        return None if row is None else row[0]

    def describe(self, import_ids: Mapping[str, str], timezone: str) -> None:
        """Record each channel's ImportID and the gateway's timezone, as the config writing
        to this database says (at start, on reload, by ``replay --db``); one transaction."""
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO channel_identity (channel, import_id) VALUES (?, ?)"
                " ON CONFLICT (channel) DO UPDATE SET import_id = excluded.import_id",
                list(import_ids.items()),
            )
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (TIMEZONE, timezone)
            )

    def identity(self) -> tuple[dict[str, str], str | None]:
        """The ImportIDs per channel and the timezone recorded by ``describe`` (empty and None
        in a database no config has described yet)."""
        rows, zone = self._query(
            "SELECT channel, import_id FROM channel_identity",
            f"SELECT value FROM meta WHERE key = '{TIMEZONE}'",
        )
        return dict(rows), (zone[0][0] if zone else None)

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

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


# -- helpers ----------------------------------------------------------------------------------


def _lock(path: Path) -> int:
    """An exclusive flock on ``path`` holding our pid, or StoreError naming the holder."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open the lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreError(
            f"the state directory {path.parent} is in use by another pulse-gateway "
            f"(pid {holder} holds {path}): stop that process first, or give this one "
            "another gateway.state_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _check(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of a sound database of ours (0: empty), or StoreError. Reads only."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        objects = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
        check = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise StoreError(_damaged(path, str(exc))) from None
    if check != ["ok"]:
        raise StoreError(_damaged(path, "; ".join(check[:3])))
    if app_id != APPLICATION_ID and (app_id or version or objects):
        raise StoreError(
            f"{path} is an SQLite database of another application: it was left untouched; "
            "point gateway.state_dir at a directory of its own"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than this pulse-gateway knows "
            f"({SCHEMA_VERSION}): it was left untouched; run the newer pulse-gateway"
        )
    return version


def _damaged(path: Path, detail: str) -> str:
    return (
        f"{path} is damaged or not a database ({detail}): it was left untouched; "
        "restore it from a backup, or move it aside to start from zero "
        "(counts, peaks and the reset audit would be lost)"
    )


def _prepare(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Set WAL and durability, then apply every pending migration in one transaction."""
    try:
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            raise StoreError(f"{path}: its file system does not support SQLite's WAL mode")
        conn.execute("PRAGMA synchronous = FULL")  # a reset is on disk before its ack
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")  # `resets --db` readers may hold the WAL
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        if version == 0:
            created = datetime.now(UTC).isoformat(timespec="seconds")
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("created_at", created), ("created_by", f"pulse-gateway {__version__}")],
            )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StoreError(
            f"cannot set up {path} (schema {SCHEMA_VERSION}): {exc}; "
            "check that the file and its directory are writable by this user"
        ) from None


# The channel filter of the interval readers. "+channel": filter, but walk the primary key
# (end_us, channel), already in the order asked for; the per-channel index would make SQLite sort
# the whole range. The filter costs a lookup per row (0.4 s of a year x 100 channels), so it is
# skipped when no other channel has records in the range, which is the usual export of every
# channel: the NOT EXISTS is computed once per query, by walking the channels of
# intervals_by_channel (a min() seek per channel) and seeking each unwanted one's range; being
# in the same statement, it sees the same snapshot as the rows.
_CHANNEL_FILTER = """ AND (NOT EXISTS (
    WITH RECURSIVE recorded (channel) AS (
        SELECT min(channel) FROM intervals
        UNION ALL
        SELECT (SELECT min(channel) FROM intervals WHERE channel > recorded.channel)
        FROM recorded WHERE recorded.channel IS NOT NULL)
    SELECT 1 FROM recorded WHERE recorded.channel NOT IN ({channels}) AND EXISTS (
        SELECT 1 FROM intervals AS other WHERE other.channel = recorded.channel
        AND other.end_us > :since AND other.end_us <= :until))
    OR +channel IN ({channels}))"""

_CHANNEL_UPSERT = (
    f"INSERT INTO channels (id, {_RULES_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?,"
    " (SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'resets'))"
    " ON CONFLICT (id) DO UPDATE SET unit = excluded.unit,"
    " scale_factor = excluded.scale_factor, window_us = excluded.window_us,"
    " slide_us = excluded.slide_us, initial_reading = excluded.initial_reading,"
    " reset_lockout_us = excluded.reset_lockout_us"
)
_STATE_REPLACE = (
    f"INSERT OR REPLACE INTO channel_state (channel, {', '.join(_STATE_FIELDS)})"
    f" VALUES (?{', ?' * len(_STATE_FIELDS)})"
)


def _rules_row(rules: ChannelRules) -> tuple:
    """The rules' column values (ChannelRules holds no NaN)."""
    return (
        rules.unit.name,
        float(rules.scale_factor),
        rules.window,
        rules.slide,
        float(rules.initial_reading),
        rules.reset_lockout,
    )


def _state_row(state: ChannelState) -> tuple:
    """The state's column values; floats as floats (never ints), intervals as JSON."""
    values: list[object] = list(state)
    for at in _REAL_AT:
        value = state[at]
        if isinstance(value, int | float):  # None stays NULL
            values[at] = _float(_STATE_FIELDS[at], value)
    # the same text as json.dumps of the list of ints, without its per-call overhead
    values[_WINDOW_AT] = "[" + ", ".join([str(int(c)) for c in state.window_intervals]) + "]"
    return tuple(values)


def _record(row: tuple) -> ResetRecord:
    totals_before, totals_after = Totals(*row[6:10]), Totals(*row[10:14])
    record_id, channel, time_us, source, accepted, reason = row[:6]
    return ResetRecord(
        record_id, channel, time_us, source, bool(accepted), reason, totals_before, totals_after
    )


def _totals_row(totals: Totals) -> tuple:
    reals = (totals.peak_demand, totals.previous_peak_demand, totals.cumulative_demand)
    return (*(_float("a reset total", value) for value in reals), totals.reset_count)


def _float(name: str, value: float) -> float:
    value = float(value)
    if math.isnan(value):  # SQLite would store NULL: refuse rather than change the value
        raise ValueError(f"{name} is NaN and cannot be saved")
    return value


def _number(channel: str, text: str) -> int | float:
    """A saved baseline: an int (a counter) or a float (a meter total), exactly as written."""
    try:
        return int(text) if text.lstrip("-").isdigit() else float(text)
    except ValueError:
        raise StoreError(f"the saved baseline of channel {channel!r} is not a number") from None


def _intervals(text: str) -> tuple[int, ...]:
    counts = json.loads(text)
    if not isinstance(counts, list) or not all(type(c) is int for c in counts):
        raise ValueError("window_intervals is not a list of counts")
    return tuple(counts)


def _iso(instant: Instant) -> str:
    """An instant in UTC, with its fraction of a second only when it has one."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=instant)
    spec = "seconds" if not instant % 10**6 else "milliseconds" if not instant % 1000 else "auto"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")
