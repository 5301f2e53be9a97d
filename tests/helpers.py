"""Small shared helpers for tests: readable instants and channel rules."""

from __future__ import annotations

from gateway.core import UNITS, ChannelRules, Instant, parse_duration, parse_instant

DAY = "2026-01-01"


def at(clock: str, day: str = DAY) -> Instant:
    """The instant ``clock`` (``HH:MM:SS[.ffffff]``) on ``day``, UTC."""
    return parse_instant(f"{day}T{clock}Z")


def rules(
    unit: str = "kWh",
    scale: float = 1.0,
    window: str = "1min",
    slide: str = "1min",
    initial: float = 0.0,
    lockout: str = "0s",
) -> ChannelRules:
    return ChannelRules(
        UNITS[unit],
        scale,
        parse_duration(window),
        parse_duration(slide),
        initial,
        parse_duration(lockout),
    )


class FakeClocks:
    """A wall clock and a monotonic clock that tests move by hand."""

    def __init__(self) -> None:
        self.wall_us = 1_767_225_600_000_000
        self.mono_us = 5_000_000

    def wall(self) -> int:
        return self.wall_us

    def mono(self) -> int:
        return self.mono_us

    def elapse(self, seconds: float) -> None:
        self.wall_us += int(seconds * 1_000_000)
        self.mono_us += int(seconds * 1_000_000)
