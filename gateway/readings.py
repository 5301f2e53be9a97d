"""Values the outside world reads from a live channel that need the gateway's time.

Projected demand is computed on read (no timer per channel) at the time of the gateway's
last clock reading, which every event and tick takes after closing the boundaries due: so the
time is always between the channel's last boundary and its next. Should that not hold (the
clock held after a backward step, a reading between a boundary and its tick), the value is
"not available" rather than an error on a BMS read or a scrape. BACnet, the metrics and the
pages read it here, so they agree.
"""

from __future__ import annotations

from gateway.core import Channel, DemandError, Instant


def projected(channel: Channel, now: Instant) -> float | None:
    """The channel's projected demand at ``now``; None when not available."""
    try:
        return channel.projected(max(now, channel.now))
    except DemandError:
        return None
