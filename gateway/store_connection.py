"""The state store's one SQLite connection: its lock, transactions and snapshot reads.

``StoreConnection`` is the base the store's query families (the reset audit, the interval
records, the ``Store`` itself) build on: one connection serialised by a re-entrant lock, durable
write transactions that turn SQLite failures into ``StoreError``, reads from one snapshot, and
the cache of rows last committed that lets a checkpoint write only what changed. Separate so
each family can live in a module of its own without importing the ``Store``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from gateway.store_schema import StoreError


class StoreConnection:
    """The connection and write cache of one store; use ``Store.open`` or ``open_readonly``."""

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

    @staticmethod
    def _save_baselines(conn: sqlite3.Connection, rows: Mapping[str, tuple | str]) -> None:
        if rows:  # (an empty executemany still needs the table to exist)
            conn.executemany(
                "INSERT INTO source_baseline (channel, value) VALUES (?, ?)"
                " ON CONFLICT (channel) DO UPDATE SET value = excluded.value",
                list(rows.items()),
            )

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
