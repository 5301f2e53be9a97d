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

Modules: ``store_schema`` (the file format, its checks and migrations), ``store_connection``
(the connection, transactions, snapshot reads), ``store_rows`` (row encoding),
``store_resets`` (the reset audit), ``store_periods`` (billing periods) and
``store_intervals`` (interval records); ``Store`` puts
them together, and every name other modules import is importable from here.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.core import (
    UNITS,
    ChannelRules,
    ChannelState,
    DemandError,
    Instant,
    IntervalMark,
    IntervalRecord,
    Saved,
)
from gateway.store_connection import StoreConnection
from gateway.store_intervals import IntervalLog
from gateway.store_periods import BillingPeriods, PeriodRecord
from gateway.store_resets import ResetAudit, ResetRecord, format_resets
from gateway.store_rows import (
    _CHANNEL_UPSERT,
    _RULES_COLUMNS,
    _STATE_FIELDS,
    _STATE_REPLACE,
    _intervals,
    _number,
    _rules_row,
    _rules_terms,
    _state_row,
    _terms,
)
from gateway.store_schema import (
    APPLICATION_ID,
    DB_NAME,
    LOCK_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    StoreError,
    _check,
    _lock,
    _prepare,
)

# the names other modules import from here, wherever they are defined now
__all__ = [
    "APPLICATION_ID",
    "BASELINE_READINGS",
    "DB_NAME",
    "LOCK_NAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TIMEZONE",
    "PeriodRecord",
    "ResetRecord",
    "Saved",
    "SavedChannel",
    "SavedState",
    "Store",
    "StoreConnection",
    "StoreError",
    "format_resets",
]

BASELINE_READINGS = "baseline_readings"  # meta key: what each saved baseline was read from
TIMEZONE = "timezone"  # meta key: the gateway's IANA timezone, as its config said


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


class Store(ResetAudit, IntervalLog, BillingPeriods):
    """The SQLite state store of one gateway; use ``Store.open`` or ``Store.open_readonly``.

    Calls are short and serialised by an internal lock, so the service may call them from
    the event loop or from ``asyncio.to_thread``.
    """

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
            _prepare(conn, path, _check(conn, path, SCHEMA_VERSION), MIGRATIONS, SCHEMA_VERSION)
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
            version = _check(conn, db_path, SCHEMA_VERSION)
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
                # a virtual channel's mark counts no pulses: 0 (the column is NOT NULL)
                c: (m.end, m.pulses_total or 0, float(m.consumption_total))
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
        for channel_id, unit, scale, window, slide, initial, lockout, terms, _ in rules_rows:
            try:
                rules = ChannelRules(
                    UNITS[unit], scale, window, slide, initial, lockout, terms=_rules_terms(terms)
                )
                values = dict(zip(_STATE_FIELDS, states[channel_id], strict=True))
                values["window_intervals"] = _intervals(values["window_intervals"])
                values["more_terms"] = _terms(values["more_terms"])
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
