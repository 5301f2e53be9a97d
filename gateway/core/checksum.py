"""The B6070 checksum: cumulative demand and the reset count against the reset audit.

Cumulative demand measures nothing by itself; it exists so the log of resets can be checked
(docs/reference/state-and-resets.md). For every channel the accepted resets of its current
life, in log order, must add up to its ``cumulative_demand`` (each adds the peak it moved to
previous peak) and their number must equal its ``reset_count``. A double, premature or
unlogged reset breaks one of the two.

A ``Ledger`` is what the audit says, kept as a running sum: one pass over the audit builds
every channel's ledger, and each new accepted reset extends one ledger in O(1), so a reset
never rescans the audit. The sum is taken in log order, starting from 0.0, exactly as the
channel added the same numbers, so an intact channel matches to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# How close cumulative demand and the logged sum must be: the two are the same additions in
# the same order, so only a value that went through text (an old database) can differ at all.
_REL_TOL = 1e-9
_ABS_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class Ledger:
    """One channel's accepted resets in the audit: how many, and the sum of the previous
    peaks they logged, in log order."""

    accepted_resets: int = 0
    logged_sum: float = 0.0

    def with_reset(self, previous_peak_demand: float) -> Ledger:
        """The ledger after one more accepted reset that logged ``previous_peak_demand``."""
        return Ledger(self.accepted_resets + 1, self.logged_sum + previous_peak_demand)


def ledgers(accepted: Iterable[tuple[str, float]]) -> dict[str, Ledger]:
    """Every channel's ledger from its accepted audit rows ``(channel, previous_peak_after)``
    in log order: one pass."""
    counts: dict[str, int] = {}
    sums: dict[str, float] = {}
    for channel, previous_peak in accepted:
        counts[channel] = counts.get(channel, 0) + 1
        sums[channel] = sums.get(channel, 0.0) + previous_peak
    return {channel: Ledger(counts[channel], sums[channel]) for channel in counts}


@dataclass(frozen=True, slots=True)
class ChannelVerdict:
    """The checksum of one channel: its totals against its ledger."""

    channel: str
    status: Literal["ok", "broken", "removed"]  # removed: audit rows, no saved state
    accepted_resets: int  # accepted resets logged in this life of the channel
    logged_sum: float  # sum of their previous_peak_demand, in log order
    cumulative_demand: float | None
    reset_count: int | None
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status != "broken"

    def line(self) -> str:
        """One line for ``pulse-gateway resets``."""
        if self.status == "ok":
            return (
                f"{self.channel}: OK ({self.accepted_resets} resets, "
                f"cumulative {self.cumulative_demand!r})"
            )
        if self.status == "removed":
            return (
                f"{self.channel}: NOT CHECKED: no saved state (removed from the configuration); "
                f"{self.accepted_resets} accepted resets logged"
            )
        return f"{self.channel}: CHECKSUM BROKEN: {'; '.join(self.problems)}"


def judge(
    channel: str, ledger: Ledger, cumulative_demand: float | None, reset_count: int | None
) -> ChannelVerdict:
    """The verdict on one channel whose totals are ``cumulative_demand`` and ``reset_count``
    (both None for a channel with no saved state: not checked)."""
    if cumulative_demand is None or reset_count is None:
        return ChannelVerdict(
            channel, "removed", ledger.accepted_resets, ledger.logged_sum, None, None
        )
    problems = []
    if not math.isclose(cumulative_demand, ledger.logged_sum, rel_tol=_REL_TOL, abs_tol=_ABS_TOL):
        problems.append(
            f"cumulative_demand {cumulative_demand!r} != sum of previous peaks "
            f"{ledger.logged_sum!r}"
        )
    if reset_count != ledger.accepted_resets:
        problems.append(
            f"reset_count {reset_count} != accepted resets logged {ledger.accepted_resets}"
        )
    return ChannelVerdict(
        channel,
        "broken" if problems else "ok",
        ledger.accepted_resets,
        ledger.logged_sum,
        cumulative_demand,
        reset_count,
        (*problems,),
    )
