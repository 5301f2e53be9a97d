"""The gateway's lifecycle: start, reload and stop, on one asyncio loop.

Data flows one way: sources -> engine -> (store, metrics, and BACnet from issue 4). This module
is the only place that wires them:

- **start**: open the state store (which locks the state dir), restore every channel exactly,
  count the downtime as an outage (PRODUCT.md §2), start the metrics endpoint, the sources and
  the boundary tick.
- **run**: sources report to this object (it is their ``PulseSink``); each report is stamped
  with the timeline and fed to the engine after every boundary before it is closed. The tick
  closes boundaries at wall-clock multiples of each slide and checkpoints every second and at
  every boundary.
- **reload** (SIGHUP): a new config is validated first; an invalid one is refused and logged and
  the running config stays. Unchanged channels keep everything; changed ones are reconfigured
  (gateway.core.Channel.reconfigure); sources and the metrics endpoint restart only if theirs
  changed.
- **stop** (SIGTERM/SIGINT): stop the sources, close the boundaries due, write a final
  checkpoint, release the state dir. A second signal exits at once.

Signal handlers only set flags (events); the work happens in ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import ssl
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from gateway import __version__
from gateway.clock import Step, Timeline
from gateway.config import ChannelConfig, Config, ConfigError, load_config
from gateway.core import (
    Channel,
    ChannelReading,
    Engine,
    Instant,
    IntervalLog,
    IntervalMark,
    IntervalRecord,
    ResetOutcome,
    Unit,
)
from gateway.export import (
    VALUE_FIELDS,
    ExportChannel,
    day_span,
    drop_file,
    local_time,
    write_values,
)
from gateway.logging import get_logger
from gateway.metrics import Metrics, serve_metrics
from gateway.notify import Notifier, status_line
from gateway.sources import Source, SourceError, baseline_readings, build_sources
from gateway.store import Saved, Store, StoreError

CHECKPOINT_EVERY_US = 1_000_000
PRUNE_EVERY_US = 3600 * 1_000_000  # expired interval records are deleted hourly, in batches
PRUNE_BATCH = 5000
EXPORT_RETRY_S = 3600.0  # a failed daily drop is tried again an hour later
LAST_EXPORT_DAY = "last_export_day"
STOP_TIMEOUT_S = 4.0  # the whole stop must fit in 5 s (issue 3)
SOURCE_RESTART_S = 5.0

if TYPE_CHECKING:
    from gateway.bacnet.server import BacnetServer

log = get_logger("service")


class GatewayError(Exception):
    """A condition that stops the gateway from starting; the message says what to do."""


@dataclass
class _Status:
    """Live facts about the running gateway that are not demand state."""

    sources_up: dict[str, bool] = field(default_factory=dict)
    rejections: dict[tuple[str, str], int] = field(default_factory=dict)
    boundary_lag_s: float = 0.0
    checksums: dict[str, bool] = field(default_factory=dict)  # per channel: verdict ok
    last_checkpoint: Instant = 0  # the instant of the last checkpoint saved


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One checkpoint's content, taken on the loop and written by a worker thread."""

    at: Instant
    states: dict[str, Saved]
    baselines: dict[str, int | float]
    intervals: list[IntervalRecord]
    marks: dict[str, IntervalMark]
    taken: int  # the store's generation when taken (Store.checkpoint)


class Gateway:
    """One running gateway."""

    def __init__(
        self,
        config: Config,
        *,
        timeline: Timeline | None = None,
        live: bool = False,
        notifier: Notifier | None = None,
    ):
        self.config = config
        # systemd's notification socket: only `pulse-gateway run` passes a live one
        self.notifier = notifier or Notifier.disabled()
        self.timeline = timeline or Timeline()
        self.live = live  # a person is watching: one compact line per channel each slide
        self.status = _Status()
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.metrics = Metrics(self)
        self.metrics_server: asyncio.Server | None = None
        self.bacnet: BacnetServer | None = None
        self._sources: dict[str, Source] = {}
        self._source_tasks: dict[str, asyncio.Task[None]] = {}
        # per channel, the raw device reading the saved counts go up to (Source.baselines)
        self._baselines: dict[str, int | float] = {}
        self._tick_task: asyncio.Task[None] | None = None
        self._export_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._held = False
        self.intervals = IntervalLog({}, {})
        self._pending: list[IntervalRecord] = []  # interval records not yet checkpointed
        self._next_prune: Instant = 0
        self._saving: asyncio.Task[None] | None = None  # the checkpoint being written
        self._save_again = False  # asked for while one was being written
        self._asked: Instant = 0  # when the last checkpoint was asked for (paces the tick)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open state, restore channels, start metrics, sources and the tick."""
        self.store = Store.open(self.config.gateway.state_dir)
        try:
            self.engine = self._restore()
            self._check_sums()
            self.intervals = IntervalLog(self._interval_spans(), self.store.interval_marks())
            self._mark_new_channels(self.engine.now)
            await self._checkpoint_now(self.engine.now)
            await self._start_metrics()
            await self._start_bacnet()
            if self.config.bacnet is not None and not self.config.bacnet.reset_allowed_from:
                # the safe default, but a site that expects monthly resets must hear about it
                log.warning("resets_disabled", reason="bacnet.reset_allowed_from is empty")
            self._start_sources()
        except BaseException:
            self.store.close()
            raise
        self._tick_task = asyncio.create_task(self._tick(), name="tick")
        self._start_export_schedule()
        log.info(
            "gateway_started",
            name=self.config.gateway.name,
            channels=len(self.config.channels),
            state_dir=str(self.config.gateway.state_dir),
            metrics_port=self.metrics_port,
        )

    async def run(self) -> None:
        """Start, serve until asked to stop (reloading on request), then stop."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        try:
            await self.start()
            _settle_memory()
            self.notifier.ready(self.summary())
            log.info("gateway_ready", metrics_port=self.metrics_port)
            while not self._stop.is_set():
                stop = asyncio.create_task(self._stop.wait())
                reload = asyncio.create_task(self._reload.wait())
                await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                reload.cancel()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    self.notifier.reloading()
                    reloaded = False
                    try:
                        reloaded = await self.reload()
                        _settle_memory()
                    finally:
                        refused = "" if reloaded else "; last reload refused (see the journal)"
                        self.notifier.ready(self.summary() + refused)
        finally:
            await self.stop()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    def request_stop(self) -> None:
        self._stop.set()

    def _on_stop_signal(self) -> None:
        if self._stop.is_set():  # a second signal: the operator means it
            log.warning("gateway_forced_exit")
            sys.exit(1)
        log.info("gateway_stopping")
        self._stop.set()

    async def stop(self) -> None:
        """Stop tasks, close the boundaries due, checkpoint, release the state dir."""
        self.notifier.stopping("stopping: final checkpoint")
        if self.store is None:
            return
        tasks = [
            *self._source_tasks.values(),
            *(task for task in (self._tick_task, self._export_task) if task is not None),
        ]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), timeout=STOP_TIMEOUT_S / 2
            )
        await self._stop_metrics()
        await self._stop_bacnet()  # no reset can arrive after this
        if self.engine is not None:
            await self._checkpoint_now(self._now())
        self.store.close()
        self.store = None
        log.info("gateway_stopped")

    # -- start-up ---------------------------------------------------------------------------

    def _restore(self) -> Engine:
        """Channels as saved (exactly), the downtime as an outage, new channels offline."""
        assert self.store is not None
        saved = self.store.load()
        self._baselines = dict(saved.baselines) if saved else {}
        self._bind_baselines(self.config)
        restored: dict[str, Channel] = {}
        if saved is not None:
            for channel_config in self.config.channels:
                entry = saved.channels.get(channel_config.id)
                if entry is not None:
                    restored[channel_config.id] = Channel.restore(entry.rules, entry.state)
        latest = max([saved.saved_at if saved else 0, *(c.now for c in restored.values())])
        now = self.timeline.hold_until(latest)
        self._held = self.timeline.held
        channels: dict[str, Channel] = {}
        for channel_config in self.config.channels:
            channel = restored.get(channel_config.id)
            if channel is None:
                channel = Channel(channel_config.rules, now)
                channel.offline(now)
            else:
                assert saved is not None
                # offline from the last moment the old process was alive (§2 outage rule)
                down = max(channel.now, min(saved.saved_at, channel.next_boundary - 1))
                channel.offline(down)
                channel.skip_to(now)
                channel.reconfigure(now, channel_config.rules)
                log.info(
                    "channel_restored",
                    channel=channel_config.id,
                    pulses_total=channel.pulses_total,
                    downtime_s=round((now - saved.saved_at) / 1e6, 3),
                )
            channels[channel_config.id] = channel
        return Engine.of(channels, now)

    async def _start_metrics(self) -> None:
        settings = self.config.metrics
        if settings is None:
            return  # no metrics section: nothing listens
        tls = credentials = None
        try:
            if settings.tls_cert is not None and settings.tls_key is not None:
                tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                tls.load_cert_chain(settings.tls_cert, settings.tls_key)
            if settings.username is not None and settings.password_file is not None:
                password = settings.password_file.read_text(encoding="utf-8").strip()
                if not password:
                    raise GatewayError(f"{settings.password_file} holds no password")
                credentials = (settings.username, password)
        except (OSError, ssl.SSLError) as exc:
            raise GatewayError(f"metrics TLS or password file: {exc}") from None
        self.metrics_server = await serve_metrics(
            self.metrics, settings.host, settings.port, tls=tls, credentials=credentials
        )

    async def _start_bacnet(self) -> None:
        if self.config.bacnet is None:
            return
        # imported here: bacpypes3 is only loaded by the daemon, not by replay or export
        from gateway.bacnet.server import BacnetError
        from gateway.bacnet.server import BacnetServer as Server

        server = Server(self, self.config.bacnet, self.config.channels, version=__version__)
        try:
            await server.start()
        except BacnetError as exc:
            raise GatewayError(str(exc)) from None
        self.bacnet = server

    async def _stop_bacnet(self) -> None:
        if self.bacnet is not None:
            await self.bacnet.stop()
            self.bacnet = None

    def _changed(self) -> None:
        """Something a BACnet subscriber may care about changed (cheap: folded per loop pass)."""
        if self.bacnet is not None:
            self.bacnet.refresh()

    async def _stop_metrics(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.metrics_server.wait_closed(), timeout=1.0)
            self.metrics_server = None

    def summary(self) -> str:
        """The gateway in one line, for systemd's STATUS= (shown by ``systemctl status``)."""
        bacnet, metrics = self.config.bacnet, self.config.metrics
        return status_line(
            channels=len(self.config.channels),
            sources_up=self.status.sources_up,
            bacnet=f"{bacnet.address.ip}:{bacnet.port}" if bacnet and self.bacnet else None,
            metrics=metrics.listen if metrics and self.metrics_server else None,
        )

    @property
    def metrics_port(self) -> int | None:
        if self.metrics_server is None or not self.metrics_server.sockets:
            return None
        return int(self.metrics_server.sockets[0].getsockname()[1])

    def _start_sources(self) -> None:
        try:
            sources = build_sources(self.config, self._baselines)
        except SourceError as exc:  # e.g. the gpio extra or pyserial is not installed
            raise GatewayError(str(exc)) from None
        for source in sources:
            self._sources[source.id] = source
            self.status.sources_up.setdefault(source.id, False)
            self._source_tasks[source.id] = asyncio.create_task(
                self._keep_running(source), name=f"source:{source.id}"
            )

    async def _keep_running(self, source: Source) -> None:
        """Run a source; if it fails, mark it down and start it again after a pause."""
        while True:
            try:
                await source.run(self)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a source bug or device error must not stop the gateway
                log.error("source_failed", source=source.id, error=repr(exc))
                self.source_down(source.id)
                await asyncio.sleep(SOURCE_RESTART_S)

    async def _stop_sources(self) -> None:
        tasks = list(self._source_tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._collect_baselines()  # the new sources resume where these stopped
        self._source_tasks.clear()
        self._sources.clear()

    def _bind_baselines(self, config: Config) -> None:
        """Drop the saved baselines that were read from another device or register than the
        config now says (see ``Store.bind_baselines``)."""
        assert self.store is not None
        for channel_id in self.store.bind_baselines(baseline_readings(config)):
            self._baselines.pop(channel_id, None)
            log.warning(
                "source_baseline_dropped",
                channel=channel_id,
                detail="its saved baseline was read from another device or register: pulses"
                " counted while the gateway was down are not caught up for it",
            )

    def _collect_baselines(self) -> dict[str, int | float]:
        for source in self._sources.values():
            self._baselines.update(source.baselines())
        return self._baselines

    # -- time and boundaries ----------------------------------------------------------------

    def _now(self) -> Instant:
        """The current instant, after closing every boundary up to it (and handling steps)."""
        assert self.engine is not None
        t, step = self.timeline.read()
        if step is not None:
            self._on_step(step, t)
        if t >= self.engine.next_due:
            self._on_readings(self.engine.advance(t), t)
        if self._held and not self.timeline.held:
            # after the boundaries up to t: the channels were offline through all of them
            self._held = False
            log.info("clock_hold_ended", at=t)
            self._channels_online(t)
            self._changed()
        return t

    def _on_step(self, step: Step, t: Instant) -> None:
        """A wall-clock step is an outage: no reordering, no burst of invented windows."""
        assert self.engine is not None
        log.warning("clock_step", last=step.last, wall=step.wall, forwards=step.forwards)
        # the boundaries before the step were observed: close them normally
        self._on_readings(self.engine.advance(step.last), step.last)
        for channel in self.engine.channels.values():
            channel.offline(step.last)
        if step.forwards:
            self.engine.skip_to(t)
            self._channels_online(t)
        else:
            self._held = True
        self._changed()

    def _channels_online(self, t: Instant) -> None:
        """Bring online every offline channel whose source is up."""
        assert self.engine is not None
        for channel_config in self.config.channels:
            source = channel_config.source.id if channel_config.source else None
            if source is not None and self.status.sources_up.get(source):
                channel = self.engine.channels[channel_config.id]
                if not channel.is_online:
                    channel.online(t, 0)

    async def _tick(self) -> None:
        """Close boundaries at their wall-clock instants; checkpoint every second."""
        assert self.engine is not None
        while True:
            due = min(self.engine.next_due, self._asked + CHECKPOINT_EVERY_US)
            # at most a second: a held clock (backward step) must not stop checkpoints and pings
            await asyncio.sleep(min(self.timeline.seconds_until(due), 1.0))
            now = self._now()
            if now >= self._asked + CHECKPOINT_EVERY_US:
                self._checkpoint(now)
            self.notifier.watchdog()  # paced inside: WATCHDOG=1 every WatchdogSec/2

    def _interval_spans(self) -> dict[str, int]:
        return {c.id: c.interval for c in self.config.channels}

    def _mark_new_channels(self, t: Instant) -> None:
        """Interval records of a channel with no mark yet start at ``t`` from its totals."""
        assert self.engine is not None
        for channel_id, channel in self.engine.channels.items():
            if channel_id not in self.intervals.marks:
                mark = IntervalMark(t, channel.pulses_total, channel.consumption)
                self.intervals.marks[channel_id] = mark

    def _on_readings(self, readings: list[ChannelReading], t: Instant) -> None:
        if not readings:
            return
        assert self.engine is not None
        self._pending += self.intervals.observe(readings, self.engine.channels)
        self._changed()
        self.status.boundary_lag_s = max(0.0, (t - readings[-1].reading.time) / 1e6)
        if self.live:
            for item in readings:
                r = item.reading
                unit = self.engine.channels[item.channel].rules.unit if self.engine else None
                demand_unit = unit.demand if unit else ""
                log.info(
                    "reading",
                    channel=item.channel,
                    consumption=f"{r.consumption:.3f} {unit.consumption if unit else ''}",
                    demand="n/a" if r.demand is None else f"{r.demand:.3f} {demand_unit}",
                    peak=f"{r.peak_demand:.3f} {demand_unit}",
                    resets=r.reset_count,
                )
        self._checkpoint(t)

    def _checkpoint(self, t: Instant) -> None:
        """Save every channel's state as of now, in the background.

        The states are taken here, on the loop, between two events; a worker thread writes
        them (at 2,000 channels the SQLite transaction and its fsync take tens of ms, which
        BACnet requests must not wait for). One write at a time, in the order taken: asked
        again while one runs, the next starts when it ends, with the states of then.
        A failure is logged and tried again a second later; nothing is lost from memory.
        """
        self._asked = t
        if self._saving is not None:
            self._save_again = True
            return
        snapshot = self._take_checkpoint(t)
        self._saving = asyncio.get_running_loop().create_task(
            self._save(snapshot), name="checkpoint"
        )

    async def _save(self, snapshot: _Snapshot) -> None:
        try:
            ok = await asyncio.to_thread(self._write_checkpoint, snapshot)
            self._checkpoint_done(snapshot, ok)
        finally:
            self._saving = None
        if self._save_again:
            self._save_again = False
            self._checkpoint(self._now())

    async def _checkpoint_now(self, t: Instant) -> None:
        """Save every channel's state at ``t`` and wait for it (start, reload, stop): after
        the one being written, if any, so the newest state is the last one saved."""
        self._save_again = False
        while self._saving is not None:
            await asyncio.wait({self._saving})
        self._asked = t
        snapshot = self._take_checkpoint(t)  # no await from here on: nothing can come between
        self._checkpoint_done(snapshot, self._write_checkpoint(snapshot))

    def _take_checkpoint(self, t: Instant) -> _Snapshot:
        """Everything a checkpoint writes, copied: the loop goes on changing the originals."""
        assert self.store is not None and self.engine is not None
        records, self._pending = self._pending, []
        return _Snapshot(
            at=t,
            states={cid: (c.rules, c.state()) for cid, c in self.engine.channels.items()},
            baselines=dict(self._collect_baselines()),
            intervals=records,
            marks=dict(self.intervals.marks),
            taken=self.store.generation,
        )

    def _write_checkpoint(self, snapshot: _Snapshot) -> bool:
        """Write one checkpoint (from any thread); whether it was saved."""
        assert self.store is not None
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
            self.metrics.checkpoint_duration.observe(time.perf_counter() - began)
        return True

    def _checkpoint_done(self, snapshot: _Snapshot, ok: bool) -> None:
        if not ok:
            self._pending[:0] = snapshot.intervals  # in the next one, in order
            return
        self.status.last_checkpoint = snapshot.at
        if snapshot.at >= self._next_prune:
            self._next_prune = snapshot.at + PRUNE_EVERY_US
            asyncio.get_running_loop().create_task(self._prune(snapshot.at), name="prune")

    async def _reload_bacnet(self, old: Config, new: Config) -> None:
        """New channels' objects on reload; new network or device settings restart the server."""
        if old.bacnet == new.bacnet and self.bacnet is not None:
            await self.bacnet.reconfigure(new.channels)
            return
        await self._stop_bacnet()
        try:
            await self._start_bacnet()
        except GatewayError as exc:  # e.g. the new port is taken: say so, keep counting
            log.error("bacnet_restart_failed", error=str(exc))

    # -- the daily EnergyCAP drop ------------------------------------------------------------

    def _start_export_schedule(self) -> None:
        if self._export_task is not None:
            self._export_task.cancel()
            self._export_task = None
        if self.config.export is not None:
            self._export_task = asyncio.create_task(self._export_schedule(), name="export")

    def _export_zone(self) -> ZoneInfo | None:
        schedule, gateway = self.config.export, self.config.gateway
        return None if schedule is None or schedule.utc else gateway.zone

    def due_export_days(self, now: Instant) -> list[date]:
        """The days whose drop is due at ``now``: after the last one made, through yesterday
        (once today's run time has passed), at most a retention's worth. The first run ever
        drops yesterday only, not the whole history."""
        assert self.config.export is not None and self.store is not None
        local = local_time(now, self._export_zone(), dst=True)
        hour, minute = self.config.export.at
        latest = local.date() - timedelta(
            days=1 if (local.hour, local.minute) >= (hour, minute) else 2
        )
        done = self.store.meta(LAST_EXPORT_DAY)
        first = date.fromisoformat(done) + timedelta(days=1) if done else latest
        assert self.config.gateway is not None
        oldest = latest - timedelta(days=self.config.gateway.interval_retention // 86_400_000_000)
        first = max(first, oldest)
        return [first + timedelta(days=n) for n in range((latest - first).days + 1)]

    async def _export_schedule(self) -> None:
        """Drop each due day's file; sleep until the next run time; catch up missed days."""
        schedule = self.config.export
        assert schedule is not None and self.store is not None
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
        assert schedule is not None and gateway is not None
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

    async def _prune(self, t: Instant) -> None:
        """Delete interval records past the retention, a batch at a time between other work."""
        assert self.config.gateway is not None
        before = t - self.config.gateway.interval_retention
        deleted = 0
        while self.store is not None:
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
        if self.store is not None:
            self._check_sums()

    # -- PulseSink: what sources report -----------------------------------------------------

    def pulses(self, channel: str, count: int) -> None:
        assert self.engine is not None
        t = self._now()
        target = self.engine.channels.get(channel)
        if target is not None:
            target.pulses(t, count)
            self._changed()

    def source_down(self, source: str) -> None:
        assert self.engine is not None
        t = self._now()
        was_up = self.status.sources_up.get(source)
        if was_up:
            log.warning("source_down", source=source)
        self.status.sources_up[source] = False
        if was_up:
            self.notifier.status(self.summary())
        for channel_id in self._channels_of(source):
            self.engine.channels[channel_id].offline(t)
        self._changed()

    def source_up(self, source: str, catch_up: Mapping[str, int]) -> None:
        assert self.engine is not None
        t = self._now()
        was_up = self.status.sources_up.get(source)
        if not was_up:
            log.info("source_up", source=source)
        self.status.sources_up[source] = True
        if not was_up:
            self.notifier.status(self.summary())
        for channel_id in self._channels_of(source):
            channel = self.engine.channels[channel_id]
            extra = catch_up.get(channel_id, 0)
            if self._held:  # stays offline until the clock hold ends; count the pulses now
                if extra:
                    channel.pulses(t, extra)
            else:
                channel.online(t, extra)
        self._changed()

    def _channels_of(self, source: str) -> list[str]:
        return [
            c.id
            for c in self.config.channels
            if c.source is not None
            and c.source.id == source
            and self.engine is not None
            and c.id in self.engine.channels
        ]

    # -- resets -----------------------------------------------------------------------------

    def reset(self, channel_id: str, origin: str) -> ResetOutcome:
        """Reset one channel; durable on disk before this returns (PRODUCT.md §5, §6)."""
        return self._durable_resets([channel_id], origin)[channel_id]

    def reset_all(self, origin: str) -> dict[str, ResetOutcome]:
        """Reset every channel at one instant, each under its own lockout; one transaction."""
        assert self.engine is not None
        return self._durable_resets(list(self.engine.channels), origin)

    def _durable_resets(self, channel_ids: list[str], origin: str) -> dict[str, ResetOutcome]:
        assert self.engine is not None and self.store is not None
        t = self._now()
        channels = {cid: self.engine.channels[cid] for cid in channel_ids}
        before = {cid: channel.state() for cid, channel in channels.items()}
        outcomes = {cid: channel.reset(t) for cid, channel in channels.items()}
        baselines = self._collect_baselines()
        try:
            self.store.record_resets(
                outcomes,
                origin,
                {cid: (c.rules, c.state()) for cid, c in channels.items()},
                {cid: baselines[cid] for cid in channel_ids if cid in baselines},
            )
        except Exception:
            # not durable, so not done: put every channel back as it was
            for cid, state in before.items():
                self.engine.channels[cid] = Channel.restore(channels[cid].rules, state)
            self.engine = Engine.of(self.engine.channels, t)
            if self.bacnet is not None:
                self.bacnet.resync()  # its objects read the restored channel objects
            log.error("reset_not_recorded", channels=channel_ids, origin=origin)
            raise
        for cid, outcome in outcomes.items():
            event = "reset_accepted" if outcome.accepted else "reset_refused"
            log.info(event, channel=cid, origin=origin, reason=outcome.reason)
        self._check_sums()
        return outcomes

    def _check_sums(self) -> None:
        """The B6070 checksum per channel (PRODUCT.md §6), for the checksum_ok metric: read
        from the audit at start, after resets and hourly, never per scrape."""
        assert self.store is not None
        try:
            verdicts = self.store.verdict()
        except Exception as exc:  # the verdict can wait; counting cannot
            log.error("checksum_check_failed", error=repr(exc))
            return
        self.status.checksums = {v.channel: v.ok for v in verdicts if v.status != "removed"}
        for verdict in verdicts:
            if verdict.status == "broken":
                log.error("checksum_broken", channel=verdict.channel, detail=verdict.line())

    def count_rejection(self, channel_id: str, reason: str) -> None:
        """A reset refused before it reached the engine (not allowed, bad value): for metrics."""
        key = (channel_id, reason)
        self.status.rejections[key] = self.status.rejections.get(key, 0) + 1

    def audit_refusal(self, channel_id: str, reason: str, origin: str) -> None:
        """Put a refused reset that never reached the engine into the reset audit (§6)."""
        self.audit_refusals([channel_id], reason, origin)

    def audit_refusals(self, channel_ids: list[str], reason: str, origin: str) -> None:
        """``audit_refusal`` for several channels (a refused reset_all) in one transaction."""
        assert self.engine is not None and self.store is not None
        t = self._now()
        outcomes, states = {}, {}
        for channel_id in channel_ids:
            channel = self.engine.channels[channel_id]
            totals = channel.totals()
            outcomes[channel_id] = ResetOutcome(t, False, reason, totals, totals)
            states[channel_id] = (channel.rules, channel.state())
        baselines = self._collect_baselines()
        saved = {cid: baselines[cid] for cid in channel_ids if cid in baselines}
        self.store.record_resets(outcomes, origin, states, saved)
        for channel_id in channel_ids:
            log.info("reset_refused", channel=channel_id, origin=origin, reason=reason)

    # -- reload -----------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Apply the config file again; an invalid one is refused and changes nothing."""
        path = self.config.path
        try:
            new = load_config(path, purpose="run")
        except ConfigError as exc:
            log.error("config_reload_refused", file=path, problems=[str(p) for p in exc.problems])
            return False
        if Path(new.gateway.state_dir) != Path(self.config.gateway.state_dir):
            log.error(
                "config_reload_refused",
                file=path,
                problems=["gateway.state_dir cannot change while running: restart the gateway"],
            )
            return False
        try:
            build_sources(new, {})
        except SourceError as exc:
            log.error("config_reload_refused", file=path, problems=[str(exc)])
            return False
        assert self.engine is not None
        t = self._now()
        old = self.config
        sources_changed = (old.sources, _points(old)) != (new.sources, _points(new))
        if sources_changed:
            await self._stop_sources()
            t = self._now()
            # a channel now read from another register must not resume from the old one's value
            before, after = baseline_readings(old), baseline_readings(new)
            for channel_id, reading in before.items():
                if after.get(channel_id) != reading:
                    self._baselines.pop(channel_id, None)
        kept, added, changed = [], [], []
        channels: dict[str, Channel] = {}
        for channel_config in new.channels:
            channel = self.engine.channels.get(channel_config.id)
            if channel is None:
                channel = Channel(channel_config.rules, t)
                channel.offline(t)
                added.append(channel_config.id)
            elif channel.rules != channel_config.rules:
                channel.reconfigure(t, channel_config.rules)
                changed.append(channel_config.id)
            else:
                kept.append(channel_config.id)
            if sources_changed:
                channel.offline(t)
            channels[channel_config.id] = channel
        removed = [cid for cid in self.engine.channels if cid not in channels]
        await self._checkpoint_now(t)  # removed channels' last state stays in the store
        if sources_changed:
            try:
                self._bind_baselines(new)
            except StoreError as exc:  # the next checkpoints still write the new baselines
                log.error("baseline_binding_failed", error=str(exc))
        self.engine = Engine.of(channels, t)
        self.config = new
        self.intervals.intervals = self._interval_spans()
        self._mark_new_channels(t)
        if old.export != new.export:
            self._start_export_schedule()
        if sources_changed:
            self.status.sources_up = {}
            self._start_sources()
        else:
            self._channels_online(t)
        if old.metrics != new.metrics:
            await self._stop_metrics()
            await self._start_metrics()
        await self._reload_bacnet(old, new)
        await self._checkpoint_now(t)
        log.info(
            "config_reloaded",
            file=path,
            kept=kept,
            changed=changed,
            added=added,
            removed=removed,
            sources_restarted=sources_changed,
        )
        return True

    # -- the read side for metrics (and BACnet) ---------------------------------------------

    def bacnet_channels(self) -> Iterator[tuple[ChannelConfig, Channel]]:
        """(config, live channel) in config order, for the BACnet objects."""
        if self.engine is None:
            return
        for channel_config in self.config.channels:
            channel = self.engine.channels.get(channel_config.id)
            if channel is not None:
                yield channel_config, channel

    def channel_readings(self) -> Iterator[tuple[str, Unit, Channel]]:
        if self.engine is None:
            return
        for channel_id, channel in self.engine.channels.items():
            yield channel_id, channel.rules.unit, channel

    def sources_up(self) -> Mapping[str, bool]:
        return self.status.sources_up

    def reset_rejections(self) -> Mapping[tuple[str, str], int]:
        return self.status.rejections

    def boundary_lag_seconds(self) -> float:
        return self.status.boundary_lag_s

    def checksum_ok(self) -> Mapping[str, bool]:
        return self.status.checksums

    def source_counters(self) -> Mapping[str, Mapping[str, int]]:
        counters: dict[str, dict[str, int]] = {}
        for source in self._sources.values():
            for name in ("glitches", "lost_edges", "late_edges"):
                per_channel = getattr(source, name, None)
                if isinstance(per_channel, Mapping):
                    counters.setdefault(name, {}).update(per_channel)
        return counters


def _settle_memory() -> None:
    """Put what start-up (or a reload) built out of the cyclic collector's way.

    The channels' BACnet objects and their properties are about a million Python objects at
    2,000 channels, alive until the process ends; every full collection walked them all and
    held the loop 50-65 ms. Frozen (``gc.freeze``), they are still freed when no longer
    referenced, but never scanned. Only ``run`` does this: it owns the process.
    """
    gc.unfreeze()  # a reload's leftovers among the frozen objects get collected here
    gc.collect()
    gc.freeze()


def _points(config: Config) -> list[tuple[str, object]]:
    return [(c.id, c.source) for c in config.channels]
