"""Checkpoints: every channel's state saved every second and at every boundary.

A checkpoint is taken on the event loop, between two events, and written by a worker thread:
at 2,000 channels the SQLite transaction and its fsync take tens of milliseconds, which BACnet
requests must not wait for. One write at a time, in the order taken; asked again while one is
being written, the next starts when it ends, with the states of then. A failed write is
logged and tried again a second later, and the interval records it carried wait in memory for
the next one, in order: nothing is lost while the disk is full.

A reset is written by the reset desk in its own transaction meanwhile (it must be durable
before it is acknowledged). The store bumps a generation on every reset write and a
checkpoint passes the generation it was taken at, so a checkpoint taken before a reset never
overwrites the reset's rows (``Store.checkpoint``).

Start, reload and stop write synchronously (``save_now``), after the write in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.core import Engine, Instant, IntervalLog, IntervalMark, IntervalRecord, Saved
from gateway.logging import get_logger
from gateway.status import Status
from gateway.store import Store

EVERY_US = 1_000_000  # a power cut loses at most this much of the pulses counted

log = get_logger("service")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One checkpoint's content, taken on the loop and written by a worker thread."""

    at: Instant
    states: dict[str, Saved]
    baselines: dict[str, int | float]
    intervals: list[IntervalRecord]
    marks: dict[str, IntervalMark]
    taken: int  # the store's generation when taken (Store.checkpoint)


class Checkpoints:
    """Takes and writes the checkpoints of one running gateway; ``run`` is its writer task."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        intervals: IntervalLog,
        status: Status,
        *,
        baselines: Callable[[], Mapping[str, int | float]],
        observe: Callable[[float], None],
    ) -> None:
        """``baselines`` reads the sources' raw readings as of now; ``observe`` takes each
        write's duration (for the metrics)."""
        self.store = store
        self.engine = engine
        self.intervals = intervals
        self._baselines = baselines
        self._observe = observe
        self.pending: list[IntervalRecord] = []  # interval records not yet written
        self.status = status  # its last_checkpoint is written here
        self.asked: Instant = 0  # when the last one was asked for (paces the tick)
        self._wanted = asyncio.Event()
        self._writing = asyncio.Lock()  # one write at a time, in the order taken

    @property
    def due(self) -> Instant:
        """When the next periodic checkpoint is due."""
        return self.asked + EVERY_US

    def add(self, records: list[IntervalRecord]) -> None:
        """Interval records to write with the next checkpoint."""
        self.pending += records

    def request(self, t: Instant) -> None:
        """Save every channel's state as of ``t`` in the background (see the module
        docstring); asked again during a write, the next write follows it."""
        self.asked = t
        self._wanted.set()

    async def run(self) -> None:
        """Write the checkpoints asked for, one at a time, until cancelled."""
        while True:
            await self._wanted.wait()
            async with self._writing:
                self._wanted.clear()
                snapshot = self._take(self.asked)
                write = asyncio.ensure_future(asyncio.to_thread(self._write, snapshot))
                try:
                    ok = await asyncio.shield(write)
                except asyncio.CancelledError:
                    # finish the write in flight first: an older state must never land after
                    # the final checkpoint that follows a cancel
                    self._done(snapshot, await write)
                    raise
                self._done(snapshot, ok)

    async def save_now(self, t: Instant, also: Mapping[str, Saved] | None = None) -> bool:
        """Save every channel's state at ``t`` and wait for it (start, reload, stop): after
        the one being written, if any, so the newest state is the last one saved. ``also``:
        states of channels the engine no longer has (removed by a reload), saved with it."""
        async with self._writing:
            self._wanted.clear()
            self.asked = t
            snapshot = self._take(t)  # no await from here on: nothing can come between
            snapshot.states.update(also or {})
            ok = self._write(snapshot)
            self._done(snapshot, ok)
        return ok

    def _take(self, t: Instant) -> Snapshot:
        """Everything a checkpoint writes, copied: the loop goes on changing the originals."""
        records, self.pending = self.pending, []
        return Snapshot(
            at=t,
            states={cid: (c.rules, c.state()) for cid, c in self.engine.channels.items()},
            baselines=dict(self._baselines()),
            intervals=records,
            marks=dict(self.intervals.marks),
            taken=self.store.generation,
        )

    def _write(self, snapshot: Snapshot) -> bool:
        """Write one checkpoint (from any thread); whether it was saved."""
        began = time.perf_counter()
        try:
            self.store.checkpoint(
                snapshot.states,
                snapshot.at,
                snapshot.baselines,
                snapshot.intervals,
                snapshot.marks,
                taken=snapshot.taken,
            )
        except Exception as exc:  # disk full, I/O error: keep counting in memory, retry
            log.error(
                "checkpoint_failed", error=repr(exc), pending_intervals=len(snapshot.intervals)
            )
            return False
        finally:
            self._observe(time.perf_counter() - began)
        return True

    def _done(self, snapshot: Snapshot, ok: bool) -> None:
        if ok:
            self.status.last_checkpoint = snapshot.at
        else:
            self.pending[:0] = snapshot.intervals  # in the next one, in order
