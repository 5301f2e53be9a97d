"""Live facts about a running gateway that are not demand state, for metrics and systemd.

One ``Status`` per running gateway; each field has one writer: the feed (sources up,
boundary lag), the reset desk (refusals, checksum verdicts), the checkpoints (the last one
written) and the sources' sink (last pulses, source transitions). Readers (metrics, BACnet, the
status line, the web pages) only read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core import Instant


@dataclass
class Status:
    """See the module docstring; every field is per gateway, never saved."""

    sources_up: dict[str, bool] = field(default_factory=dict)
    boundary_lag_s: float = 0.0
    rejections: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, reason)
    checksums: dict[str, bool] = field(default_factory=dict)  # per channel: the verdict is ok
    last_checkpoint: Instant = 0  # the instant of the last checkpoint written
    # for the status page, written where the sources report (views.py): per channel its last
    # live pulse, per source when it last went up or down (since this start)
    last_pulse: dict[str, Instant] = field(default_factory=dict)
    source_since: dict[str, Instant] = field(default_factory=dict)
