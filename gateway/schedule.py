"""Timed jobs: the daily EnergyCAP file drop, and the hourly pruning and checksum check.

Each job is a loop the service runs as a supervised task. A job reads the gateway's time
through ``now`` (never the clock directly), and a job that fails for a reason outside the
gateway (a full disk, a removed directory) logs it and tries again later: such a failure must
never stop the counting.

- **Daily drop** (``export.schedule``): at its ``at`` time each day the previous day's file is
  written into the directory (docs/reference/export-formats.md). Days missed while the gateway
  was down are dropped at start, at most a retention's worth; the first run ever drops
  yesterday only, not the whole history. The last day dropped is kept in the database.
- **Pruning**: interval records older than ``gateway.interval_retention`` are deleted hourly, a
  batch at a time in a worker thread, so BACnet reads never wait for a long delete.
- **Checksum check**: after each pruning the whole reset audit is judged again (the per-reset
  verdicts build on it), read in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.config import RunConfig
from gateway.core import Instant
from gateway.export import (
    VALUE_FIELDS,
    ExportChannel,
    day_span,
    drop_file,
    local_time,
    write_values,
)
from gateway.logging import get_logger
from gateway.reset_desk import ResetDesk
from gateway.store import Store

PRUNE_EVERY_S = 3600.0
PRUNE_BATCH = 5000
EXPORT_RETRY_S = 3600.0  # a failed daily drop is tried again an hour later
LAST_EXPORT_DAY = "last_export_day"

log = get_logger("service")


class Schedule:
    """The timed jobs of one running gateway."""

    def __init__(
        self, config: RunConfig, store: Store, desk: ResetDesk, now: Callable[[], Instant]
    ) -> None:
        self.config = config  # the service replaces it on reload
        self.store = store
        self.desk = desk
        self._now = now

    # -- the daily drop ---------------------------------------------------------------------

    def _export_zone(self) -> ZoneInfo | None:
        schedule, gateway = self.config.export, self.config.gateway
        return None if schedule is None or schedule.utc else gateway.zone

    def due_export_days(self, now: Instant) -> list[date]:
        """The days whose drop is due at ``now``: after the last one made, through yesterday
        (once today's run time has passed), at most a retention's worth. The first run ever
        drops yesterday only, not the whole history."""
        schedule, gateway = self.config.export, self.config.gateway
        assert schedule is not None
        local = local_time(now, self._export_zone(), dst=True)
        hour, minute = schedule.at
        latest = local.date() - timedelta(
            days=1 if (local.hour, local.minute) >= (hour, minute) else 2
        )
        done = self.store.meta(LAST_EXPORT_DAY)
        first = date.fromisoformat(done) + timedelta(days=1) if done else latest
        oldest = latest - timedelta(days=gateway.interval_retention // 86_400_000_000)
        first = max(first, oldest)
        return [first + timedelta(days=n) for n in range((latest - first).days + 1)]

    async def drop_daily(self) -> None:
        """Drop each due day's file; sleep until the next run time; catch up missed days."""
        schedule = self.config.export
        assert schedule is not None
        while True:
            delay = None
            for day in self.due_export_days(self._now()):
                try:
                    path = await asyncio.to_thread(self._drop_day, day)
                except Exception as exc:  # a full disk or a removed directory: try again later
                    log.error("export_drop_failed", day=day.isoformat(), error=repr(exc))
                    delay = EXPORT_RETRY_S
                    break
                self.store.set_meta(LAST_EXPORT_DAY, day.isoformat())
                log.info("export_dropped", day=day.isoformat(), file=str(path))
            if delay is None:
                local = local_time(self._now(), self._export_zone(), dst=True)
                hour, minute = schedule.at
                run = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
                if run <= local:
                    run += timedelta(days=1)
                delay = (run - local).total_seconds()
            await asyncio.sleep(delay)

    def _drop_day(self, day: date) -> Path:
        """Write one day's file (in a worker thread, on its own read-only connection)."""
        schedule, gateway = self.config.export, self.config.gateway
        assert schedule is not None
        zone = self._export_zone()
        channels = [ExportChannel.of(c) for c in self.config.channels]
        schedule.directory.mkdir(parents=True, exist_ok=True)
        with Store.open_readonly(Path(gateway.state_dir) / "gateway.db") as store:
            values = store.interval_values(
                *day_span(day, zone), VALUE_FIELDS[schedule.value], [c.id for c in channels]
            )
            return drop_file(
                schedule.directory,
                schedule.prefix,
                day,
                lambda out: write_values(
                    values,
                    channels,
                    out,
                    format=schedule.format,
                    value=schedule.value,
                    time_format=schedule.time_format,
                    zone=zone,
                    warn=lambda message: log.warning("export_warning", message=message),
                ),
            )

    # -- pruning and the checksum check -----------------------------------------------------

    async def prune_hourly(self) -> None:
        """Prune expired interval records now and every hour; check the checksums from the
        whole audit every hour (start-up has just judged them, so not again at once)."""
        while True:
            await self.prune(self._now())
            await asyncio.sleep(PRUNE_EVERY_S)
            await self.desk.check_in_background()

    async def prune(self, t: Instant) -> None:
        """Delete interval records past the retention, a batch at a time between other work."""
        before = t - self.config.gateway.interval_retention
        deleted = 0
        while True:
            try:
                batch = await asyncio.to_thread(self.store.prune_intervals, before, PRUNE_BATCH)
            except Exception as exc:  # pruning can wait for the next hour
                log.error("interval_prune_failed", error=repr(exc))
                return
            deleted += batch
            if batch < PRUNE_BATCH:
                break
        if deleted:
            log.info("intervals_pruned", deleted=deleted)
