"""The gateway's lifecycle: start, run, reload and stop, on one asyncio loop.

Data flows one way: sources -> feed -> engine -> (checkpoints, BACnet, metrics). This module
wires the parts and owns their order; each job lives in a module of its own:

    gateway/feed.py          what sources report, stamped with the time, into the engine
    gateway/checkpoints.py   the state saved every second by a worker thread
    gateway/reset_desk.py    durable resets, refusals, the audit and the checksum
    gateway/schedule.py      timed jobs: the daily file drop, pruning, the checksum check
    gateway/reload.py        what a new config changes (a pure plan)
    gateway/sources/running.py, gateway/supervisor.py   sources and tasks kept running

- **start**: open the state store (which locks the state dir), resume every channel exactly
  with the downtime as an outage, write a checkpoint, start metrics, BACnet, the sources, the
  tick and the timed jobs.
- **run**: serve until a signal. Signal handlers only set flags; the work happens here. A
  supervised task that fails stops the gateway the same way, and ``run`` then raises
  ``GatewayError`` (exit 1), so systemd restarts it.
- **reload** (SIGHUP): the new file is checked first; an invalid one is refused and the running
  config stays. Otherwise the plan is carried out (gateway/reload.py).
- **stop** (SIGTERM/SIGINT): stop the tasks, close the boundaries due, write a final checkpoint,
  release the state dir, within 5 s. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.checkpoints import Checkpoints
from gateway.clock import Timeline
from gateway.config import ConfigError, RunConfig, load_config
from gateway.core import Engine, IntervalLog
from gateway.feed import Feed
from gateway.listeners import ListenerError, Listeners
from gateway.logging import get_logger
from gateway.memory import collector_paused, settle
from gateway.metrics import Metrics
from gateway.notify import Notifier, status_line
from gateway.reload import ReloadPlan, plan_reload
from gateway.reset_desk import ResetDesk
from gateway.schedule import Schedule
from gateway.sources import SourceError, unbuildable
from gateway.sources.running import RunningSources
from gateway.status import Status
from gateway.store import Saved, Store, StoreError
from gateway.supervisor import Supervisor
from gateway.views import GatewayView

STOP_TIMEOUT_S = 4.0  # the whole stop must fit in systemd's 5 s

if TYPE_CHECKING:
    from gateway.bacnet.server import BacnetServer

log = get_logger("service")


class GatewayError(Exception):
    """A condition that stops the gateway from starting; the message says what to do."""


class Gateway(GatewayView):
    """One running gateway; what readers see of it is ``GatewayView``'s. The parts below
    ``store`` exist from ``start()`` on."""

    store: Store | None
    engine: Engine
    intervals: IntervalLog
    feed: Feed
    checkpoints: Checkpoints
    desk: ResetDesk
    schedule: Schedule
    sources: RunningSources

    def __init__(
        self,
        config: RunConfig,
        *,
        timeline: Timeline | None = None,
        live: bool = False,
        notifier: Notifier | None = None,
        reread: Callable[[], RunConfig] | None = None,
    ):
        """``reread`` reads the config again for a reload (default: its file, as ``run``
        does); the bundled demo passes one that applies its state directory again."""
        self.config = config
        self._reread = reread or (lambda: load_config(self.config.path, purpose="run"))
        # systemd's notification socket: only `pulse-gateway run` passes a live one
        self.notifier = notifier or Notifier.disabled()
        self.timeline = timeline or Timeline()
        self.live = live  # a person is watching: one compact line per channel each slide
        self.status = Status()
        self.metrics = Metrics(self)
        self.listeners = Listeners(self, self.metrics)
        self.endpoint = self.listeners.endpoint
        self.store = None
        self.tasks = Supervisor(self._task_failed)
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open state, resume channels, start metrics, BACnet, sources and the tasks."""
        self.store = store = Store.open(self.config.gateway.state_dir)
        try:
            saved_at = self._resume(store)
            self.desk.check()
            self.feed.mark_new_channels(self.engine.now)
            await self.checkpoints.save_now(self.engine.now)
            store.describe(self.config.import_ids(), self.config.timezone)
            try:
                await self.listeners.start_http(self.config)
                await self.listeners.start_bacnet(self.config)
            except ListenerError as exc:
                raise GatewayError(str(exc)) from None
            self._start_sources((self.engine.now - saved_at) / 1e6 if saved_at else None)
        except BaseException:
            store.close()
            self.store = None
            raise
        self.tasks.start("checkpoint", self.checkpoints.run())
        self.tasks.start("tick", self.feed.tick(self.notifier.watchdog))
        self.tasks.start("prune", self.schedule.prune_hourly())
        self._start_export_schedule()
        log.info(
            "gateway_started",
            name=self.config.gateway.name,
            channels=len(self.config.channels),
            state_dir=str(self.config.gateway.state_dir),
            metrics_port=self.metrics_port,
        )

    def _resume(self, store: Store) -> int:
        """The engine as saved, every part around it; the saved checkpoint instant (0: none)."""
        saved = store.load()
        entries: dict[str, Saved] = {}
        if saved is not None:
            configured = {c.id for c in self.config.channels}
            entries = {cid: (e.rules, e.state) for cid, e in saved.channels.items()}
            entries = {cid: entry for cid, entry in entries.items() if cid in configured}
        saved_at = saved.saved_at if saved else 0
        now = self.timeline.hold_until(Engine.resume_instant(entries, saved_at))
        with collector_paused():  # a year down can mean 730,000 missed resets to apply
            self.engine, missed = Engine.resume(self.config.rules(), entries, saved_at, now)
        downtime = round((now - saved_at) / 1e6, 3)
        for cid in entries:
            total = self.engine.channels[cid].pulses_total
            log.info("channel_restored", channel=cid, pulses_total=total, downtime_s=downtime)
        self.intervals = IntervalLog(self.config.intervals(), store.interval_marks())
        self.sources = RunningSources(self.tasks, saved.baselines if saved else {})
        self.sources.bind(store, self.config)
        self.checkpoints = Checkpoints(
            store,
            self.engine,
            self.intervals,
            self.status,
            baselines=self.sources.baselines,
            observe=self.metrics.checkpoint_duration.observe,
        )
        self.feed = Feed(
            self.config,
            self.engine,
            self.timeline,
            self.intervals,
            self.checkpoints,
            self.status,
            changed=self._changed,
            sources_changed=lambda: self.notifier.status(self.summary()),
            fire=lambda: self.desk.fire(),
            fire_failed=self._stop.set,
            live=self.live,
        )
        self.desk = ResetDesk(
            store, self.engine, self.status, now=self.feed.now, baselines=self.sources.baselines
        )
        self.schedule = Schedule(self.config, store, self.desk, self.feed.now)
        # before anything else happens to the channels: durable, or the start fails
        with collector_paused():
            self.desk.record_missed(missed)
        return saved_at

    async def run(self) -> None:
        """Start, serve until asked to stop (reloading on request), then stop."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        try:
            await self.start()
            settle()
            self.notifier.ready(self.summary())
            log.info("gateway_ready", metrics_port=self.metrics_port)
            while not self._stop.is_set():
                stop = asyncio.create_task(self._stop.wait())
                reload = asyncio.create_task(self._reload.wait())
                await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                reload.cancel()
                if self._reload.is_set() and not self._stop.is_set():
                    await self._reload_now()
        finally:
            await self.stop()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        if self.feed.frozen:
            raise GatewayError("a scheduled reset could not be stored (see the log)")
        if self.tasks.failed is not None:
            raise GatewayError(f"task {self.tasks.failed} failed (see task_failed in the log)")

    async def _reload_now(self) -> None:
        self._reload.clear()
        self.notifier.reloading()
        reloaded = False
        try:
            reloaded = await self.reload()
            settle()
        finally:
            refused = "" if reloaded else "; last reload refused (see the journal)"
            self.notifier.ready(self.summary() + refused)

    def request_stop(self) -> None:
        self._stop.set()

    def _on_stop_signal(self) -> None:
        if self._stop.is_set():  # a second signal: the operator means it
            log.warning("gateway_forced_exit")
            sys.exit(1)
        log.info("gateway_stopping")
        self._stop.set()

    def _task_failed(self, name: str) -> None:
        """A supervised task died: stop (with a final checkpoint) and exit 1."""
        self._stop.set()

    async def stop(self) -> None:
        """Stop tasks, close the boundaries due, checkpoint, release the state dir."""
        self.notifier.stopping("stopping: final checkpoint")
        store = self.store
        if store is None:
            return
        # the checkpoint writer last: it finishes a write in flight, and the final one follows
        await asyncio.gather(
            self.sources.stop(timeout=STOP_TIMEOUT_S / 2),
            self.tasks.cancel("tick", "prune", "export", timeout=STOP_TIMEOUT_S / 2),
        )
        await self.listeners.stop()  # no reset can arrive after this
        await self.checkpoints.save_now(self.feed.now())
        await self.tasks.cancel(timeout=STOP_TIMEOUT_S / 2)
        store.close()
        self.store = None
        log.info("gateway_stopped")

    # -- the parts that count --------------------------------------------------------------

    def _start_sources(self, baseline_age: float | None = None) -> None:
        try:
            # the view is the sink: it hands reports to the feed and notes them for the pages
            started = self.sources.start(self.config, self, baseline_age)
        except SourceError as exc:  # e.g. the gpio extra or pyserial is not installed
            raise GatewayError(str(exc)) from None
        for source_id in started:
            self.status.sources_up.setdefault(source_id, False)

    def _start_export_schedule(self) -> None:
        if self.config.export is not None:
            self.tasks.start("export", self.schedule.drop_daily())

    def _changed(self, channels: tuple[str, ...] | None) -> None:
        self.listeners.refresh(channels)

    @property
    def bacnet(self) -> BacnetServer | None:
        return self.listeners.bacnet

    # -- reload -----------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Apply the config file again; an invalid one is refused and changes nothing."""
        path = self.config.path
        try:
            new = self._reread()
        except ConfigError as exc:
            log.error("config_reload_refused", file=path, problems=[str(p) for p in exc.problems])
            return False
        plan = plan_reload(self.config, new)
        problems = [plan.refused] if plan.refused else unbuildable(new)
        if problems:
            log.error("config_reload_refused", file=path, problems=problems)
            return False
        await self._apply(new, plan)
        log.info(
            "config_reloaded",
            file=path,
            kept=list(plan.kept),
            changed=list(plan.changed),
            added=list(plan.added),
            removed=list(plan.removed),
            sources_restarted=plan.sources_changed,
        )
        return True

    async def _apply(self, new: RunConfig, plan: ReloadPlan) -> None:
        assert self.store is not None
        if plan.sources_changed:
            await self.sources.stop()
            self.sources.drop_baselines(plan.baselines_dropped)
        saved = self.store.load() if plan.added else None  # channels configured again
        t = self.feed.now()
        channels = self.engine.channels
        removed = {cid: (channels[cid].rules, channels[cid].state()) for cid in plan.removed}
        resumed = {cid: (e.rules, e.state) for cid, e in (saved.channels if saved else {}).items()}
        self.engine.update(t, new.rules(), resumed=resumed, offline=plan.sources_changed)
        self.config = self.feed.config = self.schedule.config = new
        self.intervals.intervals = new.intervals()
        self.feed.mark_new_channels(t)
        await self.checkpoints.save_now(t, also=removed)  # removed channels' last state stays
        self.store.describe(new.import_ids(), new.timezone)
        if plan.sources_changed:
            try:
                self.sources.bind(self.store, new)
            except StoreError as exc:  # the next checkpoints still write the new baselines
                log.error("baseline_binding_failed", error=str(exc))
        if plan.export_changed:
            await self.tasks.cancel("export")
            self._start_export_schedule()
        if plan.sources_changed:
            self.status.sources_up.clear()
            self._start_sources()
        else:
            self.feed.channels_online(t)
        await self.listeners.reload(new, plan)
        self.desk.check()  # channels configured again bring their audit back
        await self.checkpoints.save_now(self.feed.now())

    # -- systemd ----------------------------------------------------------------------------

    def summary(self) -> str:
        """The gateway in one line, for systemd's STATUS= (shown by ``systemctl status``)."""
        bacnet = self.config.bacnet
        return status_line(
            channels=len(self.config.channels),
            sources_up=self.status.sources_up,
            bacnet=f"{bacnet.address.ip}:{bacnet.port}" if bacnet and self.bacnet else None,
            metrics=self.endpoint.listen,
        )

    @property
    def metrics_port(self) -> int | None:
        return self.endpoint.port
