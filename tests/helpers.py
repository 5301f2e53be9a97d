"""Small shared helpers for tests: readable instants, channel rules, free ports, the checkout."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from gateway.core import UNITS, ChannelRules, Instant, parse_duration, parse_instant

DAY = "2026-01-01"
ROOT = Path(__file__).resolve().parent.parent  # the checkout
DEMO_CONFIG = ROOT / "config" / "demo.yaml"  # what `pulse-gateway run` runs without -c


def free_port() -> int:
    """A port on 127.0.0.1 that was free for both TCP and UDP a moment ago.

    The one helper for every test: a gateway listens with TCP (metrics, Modbus) and UDP
    (BACnet/IP), and a port free for both fits either use.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:  # taken for UDP: another try
                    continue
                return port
    raise RuntimeError("no port on 127.0.0.1 is free for both TCP and UDP")


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


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait, yielding to the loop, until ``condition()`` holds; fail naming ``what``."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


class TimedEvent(Protocol):
    kind: str
    t: Instant


def outage_spans(events: Iterable[TimedEvent]) -> list[tuple[Instant, Instant | None]]:
    """The outages in a time-ordered event list, for the naive demand oracles: [off, on) per
    outage, on None while still offline; an "online" without an "offline" before it is an
    outage of zero length at its instant (it still voids the window it falls in)."""
    spans: list[tuple[Instant, Instant | None]] = []
    off = None
    for e in events:
        if e.kind == "offline" and off is None:
            off = e.t
        elif e.kind == "online":
            spans.append((off if off is not None else e.t, e.t))
            off = None
    if off is not None:
        spans.append((off, None))
    return spans
