"""The configured sources while the gateway runs: started, kept running, stopped.

Each source runs as a supervised task (gateway/supervisor.py) around a keeper loop: a source
that fails (a device error, a bug in a driver) is logged, its channels go offline and it is
started again after a pause, since one bad meter must not stop the others. Only a failure of
the keeper itself ends the gateway.

The runner also keeps every channel's *baseline*, the raw device reading its counted pulses
go up to (``Source.baselines``): collected for each checkpoint and reset, handed to the next
sources after a reload or a restart so a Modbus counter's pulses counted meanwhile arrive as
catch-up, together with how old they are (a jump larger than ``max_rate`` allows in that time
is a glitch, not pulses).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping

from gateway.config import Config
from gateway.logging import get_logger
from gateway.sources import Baseline, PulseSink, Source, baseline_readings, build_sources
from gateway.store import Store
from gateway.supervisor import Supervisor

RESTART_S = 5.0  # pause before a failed source is started again

log = get_logger("service")


class RunningSources:
    """The sources of one running gateway and their channels' baselines."""

    def __init__(self, supervisor: Supervisor, baselines: Mapping[str, Baseline]) -> None:
        """``baselines``: as saved with the last checkpoint (empty on a first start)."""
        self._supervisor = supervisor
        self._sources: dict[str, Source] = {}
        self._baselines: dict[str, Baseline] = dict(baselines)
        self._stopped_at: float | None = None  # monotonic seconds, while none is running

    def start(
        self, config: Config, sink: PulseSink, baseline_age: float | None = None
    ) -> list[str]:
        """Build and start one source per configured source with channels, reporting to
        ``sink``; their ids.

        ``baseline_age``: how many seconds ago the baselines were true, when the caller knows
        (the downtime before a start); after ``stop`` the runner knows it itself. Raises
        ``SourceError`` before starting any if one cannot be built.
        """
        if baseline_age is None and self._stopped_at is not None:
            baseline_age = time.monotonic() - self._stopped_at
        sources = build_sources(config, self._baselines, baseline_age)
        for source in sources:
            self._sources[source.id] = source
            self._supervisor.start(f"source:{source.id}", self._keep_running(source, sink))
        self._stopped_at = None
        return [source.id for source in sources]

    async def _keep_running(self, source: Source, sink: PulseSink) -> None:
        """Run a source; if it fails, mark it down and start it again after a pause."""
        while True:
            try:
                await source.run(sink)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a source bug or device error must not stop the gateway
                log.error("source_failed", source=source.id, error=repr(exc))
                sink.source_down(source.id)
                await asyncio.sleep(RESTART_S)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop every source; their last baselines are kept for the next ones."""
        await self._supervisor.cancel(*(f"source:{sid}" for sid in self._sources), timeout=timeout)
        self.baselines()  # the new sources resume where these stopped
        self._sources.clear()
        self._stopped_at = time.monotonic()

    def baselines(self) -> dict[str, Baseline]:
        """Every channel's baseline as of now (the running sources' latest)."""
        for source in self._sources.values():
            self._baselines.update(source.baselines())
        return self._baselines

    def bind(self, store: Store, config: Config) -> None:
        """Record in ``store`` what each baseline is read from under ``config`` and drop the
        saved baselines that were read from another device or register
        (``Store.bind_baselines``)."""
        dropped = store.bind_baselines(baseline_readings(config))
        self.drop_baselines(dropped)
        for channel_id in dropped:
            log.warning(
                "source_baseline_dropped",
                channel=channel_id,
                detail="its saved baseline was read from another device or register: pulses"
                " counted while the gateway was down are not caught up for it",
            )

    def drop_baselines(self, channels: Iterable[str]) -> None:
        """Forget these channels' baselines: they are read from another device or register
        now, and the difference between two registers is no pulse count."""
        for channel in channels:
            self._baselines.pop(channel, None)

    def counters(self) -> dict[str, dict[str, int]]:
        """Every source's counters (``Source.counters``), merged per counter name."""
        merged: dict[str, dict[str, int]] = {}
        for source in self._sources.values():
            for name, per_channel in source.counters().items():
                merged.setdefault(name, {}).update(per_channel)
        return merged
