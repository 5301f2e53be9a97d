"""The reset desk: every reset attempt, from whoever sends it, made durable or refused.

A Reset is billing evidence (docs/reference/state-and-resets.md), so the desk holds to three
rules:

- **Durable before acknowledged.** The engine applies the reset, then the audit row, the
  channel's state after it and its source's baseline are committed in one transaction; only
  then does the caller (a BACnet WriteProperty, later a schedule or the HTTP API) answer. If
  the write fails, every channel is put back as it was and the error goes to the caller: the
  reset did not happen.
- **Refusals are audited too.** A writer that is not allowed or sends a bad value never
  reaches the engine, but its attempt is logged with its source, and counted for the metrics.
- **The checksum is kept per reset.** Each accepted reset extends its channel's ``Ledger`` in
  O(1) and the channel's verdict is judged again against its live totals; the whole audit is
  read only at start, after a reload and on the hourly check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from gateway.core import (
    ChannelState,
    ChannelVerdict,
    Engine,
    Instant,
    Ledger,
    ResetAttempt,
    ResetOutcome,
    judge,
)
from gateway.logging import get_logger
from gateway.status import Status
from gateway.store import Store

log = get_logger("service")

SCHEDULE = "schedule"  # the audit source of a reset a channel's reset_schedule made


class ResetDesk:
    """Resets and their audit for one running gateway."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        status: Status,
        *,
        now: Callable[[], Instant],
        baselines: Callable[[], Mapping[str, int | float]],
    ) -> None:
        """``now`` is the gateway's time (closing the boundaries due first), ``baselines``
        the sources' raw readings as of now."""
        self.store = store
        self.engine = engine
        self._now = now
        self._baselines = baselines
        self.status = status  # its rejections and checksums are written here
        self._ledgers: dict[str, Ledger] = {}

    # -- resets ---------------------------------------------------------------------------

    def reset(self, channel_id: str, origin: str) -> ResetOutcome:
        """Reset one channel; durable on disk before this returns."""
        t = self._now()
        before = {channel_id: self.engine.channels[channel_id].state()}
        outcome = self.engine.reset(channel_id, t)
        self._record([ResetAttempt(channel_id, outcome)], before, origin)
        return outcome

    def reset_all(self, origin: str) -> dict[str, ResetOutcome]:
        """Reset every channel at one instant, each under its own lockout; one transaction."""
        t = self._now()
        before = {cid: channel.state() for cid, channel in self.engine.channels.items()}
        outcomes = self.engine.reset_all(t)
        self._record([ResetAttempt(cid, o) for cid, o in outcomes.items()], before, origin)
        return outcomes

    def fire(self) -> list[ResetAttempt]:
        """The scheduled resets due at the engine's ``next_fire`` (its boundaries closed),
        applied and made durable (source ``schedule``), or put back and the error raised."""
        engine = self.engine
        due = engine.next_fire
        before = {
            cid: channel.state()
            for cid, channel in engine.channels.items()
            if channel.schedule_next == due
        }
        fired = engine.fire()
        self._record(fired, before, SCHEDULE)
        return fired

    def record_missed(self, fired: list[ResetAttempt]) -> None:
        """The scheduled resets a start-up applied for the downtime, all in one transaction
        with the states after them: written together or not at all (then the next start
        applies them again), so none is applied twice or lost."""
        if not fired:
            return
        channels = self.engine.channels
        touched = dict.fromkeys(item.channel for item in fired)
        baselines = self._baselines()
        self.store.record_scheduled(
            fired,
            {cid: (channels[cid].rules, channels[cid].state()) for cid in touched},
            {cid: baselines[cid] for cid in touched if cid in baselines},
        )
        log.info("missed_resets_applied", count=len(fired), channels=len(touched))
        if len(fired) <= 100:  # a year of daily resets on every channel is one line above
            for item in fired:
                self._log_attempt(item, SCHEDULE)
        # the checksum: start-up reads the whole audit next (``check``)

    def _record(
        self,
        attempts: list[ResetAttempt],
        before: Mapping[str, ChannelState],
        origin: str,
    ) -> None:
        channels = self.engine.channels
        baselines = self._baselines()
        touched = dict.fromkeys(item.channel for item in attempts)
        try:
            self.store.record_resets(
                {item.channel: item.outcome for item in attempts},
                origin,
                {cid: (channels[cid].rules, channels[cid].state()) for cid in touched},
                {cid: baselines[cid] for cid in touched if cid in baselines},
            )
        except Exception:
            # not durable, so not done: put every channel back as it was
            for cid, state in before.items():
                self.engine.put_back(cid, state)
            log.error("reset_not_recorded", channels=list(touched), origin=origin)
            raise
        self._audited(attempts, origin)

    def _audited(self, attempts: list[ResetAttempt], origin: str) -> None:
        """After the audit rows are durable: the log lines and the checksum ledgers."""
        for item in attempts:
            self._log_attempt(item, origin)
            if item.outcome.accepted:
                ledger = self._ledgers.get(item.channel, Ledger())
                self._ledgers[item.channel] = ledger.with_reset(
                    item.outcome.after.previous_peak_demand
                )
                self._judge(item.channel)

    @staticmethod
    def _log_attempt(item: ResetAttempt, origin: str) -> None:
        outcome = item.outcome
        event = "reset_accepted" if outcome.accepted else "reset_refused"
        log.info(event, channel=item.channel, origin=origin, reason=outcome.reason)

    # -- refusals that never reached the engine -------------------------------------------

    def count_rejection(self, channel_id: str, reason: str) -> None:
        """A reset refused before it reached the engine (not allowed, bad value): for metrics."""
        key = (channel_id, reason)
        rejections = self.status.rejections
        rejections[key] = rejections.get(key, 0) + 1

    def audit_refusals(self, channel_ids: Iterable[str], reason: str, origin: str) -> None:
        """Put refused resets that never reached the engine into the reset audit, in one
        transaction (a refused reset_all is one per channel)."""
        t = self._now()
        channels = self.engine.channels
        outcomes, states = {}, {}
        for channel_id in channel_ids:
            channel = channels[channel_id]
            totals = channel.totals()
            outcomes[channel_id] = ResetOutcome(t, False, reason, totals, totals)
            states[channel_id] = (channel.rules, channel.state())
        baselines = self._baselines()
        saved = {cid: baselines[cid] for cid in outcomes if cid in baselines}
        self.store.record_resets(outcomes, origin, states, saved)
        for channel_id in outcomes:
            log.info("reset_refused", channel=channel_id, origin=origin, reason=reason)

    # -- the checksum -----------------------------------------------------------------------

    def check(self) -> None:
        """Judge every channel from the whole audit, on the loop (start, reload)."""
        try:
            verdicts = self.store.verdict()
        except Exception as exc:  # the verdict can wait; counting cannot
            log.error("checksum_check_failed", error=repr(exc))
            return
        self._take(verdicts)

    async def check_in_background(self) -> None:
        """``check`` with the audit read by a worker thread (the hourly check): a long audit
        must not hold the loop. A reset written meanwhile makes the reading stale, so it is
        read again."""
        for _ in range(3):
            generation = self.store.generation
            try:
                verdicts = await asyncio.to_thread(self.store.verdict)
            except Exception as exc:
                log.error("checksum_check_failed", error=repr(exc))
                return
            if self.store.generation == generation:
                self._take(verdicts)
                return
        log.warning("checksum_check_skipped", reason="resets kept arriving; next hour")

    def _take(self, verdicts: list[ChannelVerdict]) -> None:
        """Verdicts from the whole audit become the ledgers the next resets extend."""
        self._ledgers = {v.channel: Ledger(v.accepted_resets, v.logged_sum) for v in verdicts}
        self.status.checksums = {v.channel: v.ok for v in verdicts if v.status != "removed"}
        for verdict in verdicts:
            if verdict.status == "broken":
                log.error("checksum_broken", channel=verdict.channel, detail=verdict.line())
        for channel_id in self.engine.channels:
            if channel_id not in self.status.checksums:  # new, nothing saved yet: no resets
                self._judge(channel_id)

    def _judge(self, channel_id: str) -> None:
        """One channel's verdict against its live totals, after a reset was recorded."""
        channel = self.engine.channels[channel_id]
        verdict = judge(
            channel_id,
            self._ledgers.get(channel_id, Ledger()),
            channel.cumulative_demand,
            channel.reset_count,
        )
        self.status.checksums[channel_id] = verdict.ok
        if not verdict.ok:
            log.error("checksum_broken", channel=channel_id, detail=verdict.line())
