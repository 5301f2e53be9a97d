"""The state store's schema and its migrations, and the checks before a database is used.

What a ``gateway.db`` is made of (tables, triggers, the application id) and how one is opened
safely: the ``flock`` on the state directory, the sanity checks that refuse a damaged, foreign
or newer file, and the migrations that bring an older one up to date. Separate from the
``Store`` because it is the file format, read once at opening, not the queries. ``Store.open``
passes the migrations and schema version it reads from ``gateway.store`` at call time.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from gateway import __version__

DB_NAME = "gateway.db"
LOCK_NAME = "gateway.lock"
APPLICATION_ID = 0x50474757  # "PGGW" in the file header: tells our databases from others


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
    (
        # 5: billing periods. A channel's state gains its open period (since when, from what
        # consumption), the consumption of its last closed one and its next scheduled reset.
        # A database from before has no record of when its period began: the period starts at
        # the last accepted reset, or at the channel's last event, with today's consumption.
        "ALTER TABLE channel_state ADD COLUMN period_start INTEGER NOT NULL DEFAULT 0",
        # (SQLite cannot add a column with a CHECK to a table that has rows; the store writes
        # these as doubles, like every float)
        "ALTER TABLE channel_state ADD COLUMN period_base NOT NULL DEFAULT 0.0",
        "ALTER TABLE channel_state ADD COLUMN previous_period NOT NULL DEFAULT 0.0",
        # 2**63 - 1: no scheduled reset due (the core's NEVER)
        "ALTER TABLE channel_state ADD COLUMN schedule_next INTEGER NOT NULL"
        " DEFAULT 9223372036854775807",
        """UPDATE channel_state SET period_start = coalesce(last_reset, now),
            period_base = consumption_base + (pulses_total - pulses_at_base) * scale_factor""",
        # The billing period an accepted reset closes is part of its audit row (kept as long,
        # never changed, one insert per reset): from period_start to the reset's time_us, its
        # consumption and the peak the reset moved. NULL on refusals, and on the resets of a
        # database from before, whose periods were never recorded.
        "ALTER TABLE resets ADD COLUMN period_start INTEGER",
        f"ALTER TABLE resets ADD COLUMN {_real_or_null('period_consumption')}",
        f"ALTER TABLE resets ADD COLUMN {_real_or_null('period_peak')}",
        "ALTER TABLE resets ADD COLUMN period_peak_time INTEGER",
    ),
    (
        # 6: a sequence number per interval record, for the BACnet trend logs: 1 for a
        # channel's first record ever, then one more per record; never reused, never changed,
        # pruning included. interval_seq keeps each channel's last number, so numbering goes on
        # after every record of a channel has been pruned. Existing records are numbered in end
        # order. A record inserted with seq 0 (the column's default: every writer, whoever it
        # is) is given its number by the trigger, in the insert's transaction.
        "ALTER TABLE intervals ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
        """UPDATE intervals SET seq = numbered.seq FROM (
            SELECT channel, end_us,
                row_number() OVER (PARTITION BY channel ORDER BY end_us) AS seq
            FROM intervals) AS numbered
            WHERE intervals.channel = numbered.channel AND intervals.end_us = numbered.end_us""",
        # no foreign key: like the records it numbers, it outlives a removed channel
        "CREATE TABLE interval_seq (channel TEXT PRIMARY KEY, last INTEGER NOT NULL)",
        "INSERT INTO interval_seq SELECT channel, max(seq) FROM intervals GROUP BY channel",
        "CREATE UNIQUE INDEX intervals_by_seq ON intervals (channel, seq)",
        """CREATE TRIGGER intervals_numbered AFTER INSERT ON intervals WHEN NEW.seq = 0
            BEGIN
                INSERT INTO interval_seq (channel, last) VALUES (NEW.channel, 1)
                    ON CONFLICT (channel) DO UPDATE SET last = last + 1;
                UPDATE intervals SET seq = (
                    SELECT last FROM interval_seq WHERE channel = NEW.channel)
                    WHERE channel = NEW.channel AND end_us = NEW.end_us;
            END""",
    ),
    (
        # 7: virtual channels. Their rules name their terms (JSON [[channel, +1 or -1], ...]),
        # and their state holds the terms after the first (TermState, JSON: a list of
        # [scale_factor, pulses_total, pulses_at_base, window_intervals, open_interval,
        # offline_since]); a physical channel has neither ('[]'). A virtual channel counts no
        # pulses of its own: its interval records and marks hold 0 in the pulse columns.
        "ALTER TABLE channels ADD COLUMN terms TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE channel_state ADD COLUMN more_terms TEXT NOT NULL DEFAULT '[]'",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


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


def _check(conn: sqlite3.Connection, path: Path, schema_version: int) -> int:
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
    if version > schema_version:
        raise StoreError(
            f"{path} has schema version {version}, newer than this pulse-gateway knows "
            f"({schema_version}): it was left untouched; run the newer pulse-gateway"
        )
    return version


def _damaged(path: Path, detail: str) -> str:
    return (
        f"{path} is damaged or not a database ({detail}): it was left untouched; "
        "restore it from a backup, or move it aside to start from zero "
        "(counts, peaks and the reset audit would be lost)"
    )


def _prepare(
    conn: sqlite3.Connection,
    path: Path,
    version: int,
    migrations: Sequence[Sequence[str]],
    schema_version: int,
) -> None:
    """Set WAL and durability, then apply every pending migration in one transaction."""
    try:
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            raise StoreError(f"{path}: its file system does not support SQLite's WAL mode")
        conn.execute("PRAGMA synchronous = FULL")  # a reset is on disk before its ack
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 5000")  # `resets --db` readers may hold the WAL
        if version == schema_version:
            return
        conn.execute("BEGIN IMMEDIATE")
        for statements in migrations[version:]:
            for statement in statements:
                conn.execute(statement)
        if version == 0:
            created = datetime.now(UTC).isoformat(timespec="seconds")
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("created_at", created), ("created_by", f"pulse-gateway {__version__}")],
            )
        conn.execute(f"PRAGMA user_version = {schema_version}")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise StoreError(
            f"cannot set up {path} (schema {schema_version}): {exc}; "
            "check that the file and its directory are writable by this user"
        ) from None
