"""Reload planning: what a new config changes in a running gateway, decided before anything is.

``plan_reload(old, new)`` is pure: two validated configs in, a ``ReloadPlan`` out. The service
refuses a plan that says ``refused`` and otherwise carries it out; keeping the decision apart
from the doing makes every rule below testable without starting a gateway.

- Channels are kept (same rules: counts, windows and peaks untouched), changed (new rules:
  ``Channel.reconfigure`` keeps counts, peaks and resets), added or removed, by id.
- Sources restart only when a source or a channel's point changed; then every channel goes
  offline until its source reports again, and a channel now read from another device or
  register drops its saved baseline (the difference between two registers is no pulse count).
- The metrics endpoint, the BACnet server and the daily drop restart only when their sections
  changed (BACnet objects of added and removed channels follow without a restart).
- ``gateway.state_dir`` cannot change while running: the database is locked and open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config, RunConfig
from gateway.sources import baseline_readings


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does; ``refused`` is a reason to keep the running config."""

    kept: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    sources_changed: bool = False
    baselines_dropped: tuple[str, ...] = ()  # channels whose device or register changed
    metrics_changed: bool = False
    bacnet_changed: bool = False
    export_changed: bool = False
    refused: str | None = None


def plan_reload(old: RunConfig, new: RunConfig) -> ReloadPlan:
    """What applying ``new`` to a gateway running ``old`` changes."""
    if Path(new.gateway.state_dir) != Path(old.gateway.state_dir):
        return ReloadPlan(
            refused="gateway.state_dir cannot change while running: restart the gateway"
        )
    running = {channel.id: channel.rules for channel in old.channels}
    kept, changed, added = [], [], []
    for channel in new.channels:
        rules = running.get(channel.id)
        if rules is None:
            added.append(channel.id)
        elif rules != channel.rules:
            changed.append(channel.id)
        else:
            kept.append(channel.id)
    wanted = {channel.id for channel in new.channels}
    removed = [channel.id for channel in old.channels if channel.id not in wanted]
    sources_changed = (old.sources, _points(old)) != (new.sources, _points(new))
    dropped: list[str] = []
    if sources_changed:
        before, after = baseline_readings(old), baseline_readings(new)
        dropped = [cid for cid, reading in before.items() if after.get(cid) != reading]
    return ReloadPlan(
        kept=tuple(kept),
        changed=tuple(changed),
        added=tuple(added),
        removed=tuple(removed),
        sources_changed=sources_changed,
        baselines_dropped=tuple(dropped),
        metrics_changed=old.metrics != new.metrics,
        bacnet_changed=old.bacnet != new.bacnet,
        export_changed=old.export != new.export,
    )


def _points(config: Config) -> list[tuple[str, object]]:
    return [(channel.id, channel.source) for channel in config.channels]
