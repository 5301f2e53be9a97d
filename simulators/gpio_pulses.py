"""A fake libgpiod chip and meter pulse trains, for the GPIO source without GPIO hardware.

gpio-sim needs root, configfs and a kernel module, rarely there in CI or containers
(docs/design/sources.md), so the GPIO source is tested at its narrowest seam: the line request.
``FakeGpiod`` stands in for the ``gpiod`` module (``LineSettings``, ``line.*`` enums,
``request_lines``); pass the real module as ``real`` to build real ``gpiod.LineSettings``. Its
``FakeLineRequest`` behaves like the kernel's:

- its file descriptor (an ``os.pipe()``) is readable while events are queued, so
  ``loop.add_reader`` works as with a real request;
- lines have a physical level; ``active_low``, the configured edge and the debounce period
  decide which transitions become events (an edge is reported once the line was stable for the
  period, stamped then);
- a bounded buffer that **drops the oldest** event on overflow, with ``line_seqno`` (per line)
  and ``global_seqno`` (per request) counting from 1, so losses show as gaps.

``pulse_train`` drives meter pulses (with optional contact bounce) in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any


class Direction(enum.Enum):
    AS_IS = 1
    INPUT = 2
    OUTPUT = 3


class Edge(enum.Enum):
    NONE = 1
    RISING = 2
    FALLING = 3
    BOTH = 4


class Bias(enum.Enum):
    AS_IS = 1
    UNKNOWN = 2
    DISABLED = 3
    PULL_UP = 4
    PULL_DOWN = 5


class Clock(enum.Enum):
    MONOTONIC = 1
    REALTIME = 2
    HTE = 3


class EventType(enum.Enum):
    RISING_EDGE = 1
    FALLING_EDGE = 2


@dataclass
class LineSettings:
    """Stand-in for ``gpiod.LineSettings`` (same field names and defaults)."""

    direction: Direction = Direction.AS_IS
    edge_detection: Edge = Edge.NONE
    bias: Bias = Bias.AS_IS
    active_low: bool = False
    debounce_period: timedelta = field(default_factory=timedelta)
    event_clock: Clock = Clock.MONOTONIC


@dataclass(frozen=True, slots=True)
class FakeEdgeEvent:
    """Same attributes as ``gpiod.EdgeEvent``."""

    event_type: EventType
    timestamp_ns: int
    line_offset: int
    global_seqno: int
    line_seqno: int


class FakeLineRequest:
    """A line request on a chip that does not exist (see the module docstring)."""

    READ_MAX = 64  # events per read_edge_events() call by default, like libgpiod's buffer

    def __init__(self, chip: str, config: dict[Any, Any], buffer_size: int | None) -> None:
        self.chip = chip
        self.settings: dict[int, Any] = {}
        for key, settings in config.items():
            for offset in key if isinstance(key, tuple) else (key,):
                self.settings[int(offset)] = settings
        self.capacity = buffer_size or 16 * len(self.settings)
        self.discarded = 0  # events dropped on overflow: what the reader should find as gaps
        self.released = False
        self._events: deque[FakeEdgeEvent] = deque()
        self._global = 0
        self._line_seqno = dict.fromkeys(self.settings, 0)
        self._raw = dict.fromkeys(self.settings, False)  # physical level now
        self._since = dict.fromkeys(self.settings, 0)  # when it last changed
        self._stable = dict.fromkeys(self.settings, False)  # the debounced physical level
        self._failure: Exception | None = None
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._signalled = False

    def fileno(self) -> int:
        return self._read_fd

    @property
    def fd(self) -> int:
        return self._read_fd

    def set_level(self, offset: int, high: bool, timestamp_ns: int | None = None) -> None:
        """The physical level of a line changes at ``timestamp_ns`` (default: now)."""
        now = time.monotonic_ns() if timestamp_ns is None else timestamp_ns
        self._commit(offset, now)
        if high != self._raw[offset]:
            self._raw[offset], self._since[offset] = high, now
            self._commit(offset, now)

    def settle(self, now_ns: int | None = None) -> None:
        """Report the edges whose line has been stable for the debounce period by ``now_ns``."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        for offset in self.settings:
            self._commit(offset, now)

    def fail(self, error: Exception) -> None:
        """The next read raises ``error`` (the chip went away)."""
        self._failure = error
        self._signal()

    def read_edge_events(self, max_events: int | None = None) -> list[FakeEdgeEvent]:
        if self.released:
            raise OSError("request released")
        if self._failure is not None:
            raise self._failure
        with contextlib.suppress(BlockingIOError):
            os.read(self._read_fd, 4096)
        self._signalled = False
        count = min(len(self._events), max_events or self.READ_MAX)
        events = [self._events.popleft() for _ in range(count)]
        if self._events:
            self._signal()  # still readable, like the kernel's fd
        return events

    def release(self) -> None:
        if not self.released:
            self.released = True
            os.close(self._read_fd)
            os.close(self._write_fd)

    def __enter__(self) -> FakeLineRequest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _commit(self, offset: int, now: int) -> None:
        settings = self.settings[offset]
        period = int(settings.debounce_period / timedelta(microseconds=1)) * 1000
        raw = self._raw[offset]
        if raw == self._stable[offset] or now - self._since[offset] < period:
            return
        self._stable[offset] = raw
        rising = raw != bool(settings.active_low)  # edges are on the logical value
        wanted = settings.edge_detection.name
        if wanted == "BOTH" or wanted == ("RISING" if rising else "FALLING"):
            self._emit(offset, rising, self._since[offset] + period)

    def _emit(self, offset: int, rising: bool, timestamp_ns: int) -> None:
        self._global += 1
        self._line_seqno[offset] += 1
        kind = EventType.RISING_EDGE if rising else EventType.FALLING_EDGE
        event = FakeEdgeEvent(kind, timestamp_ns, offset, self._global, self._line_seqno[offset])
        if len(self._events) >= self.capacity:
            self._events.popleft()  # the kernel discards the oldest (docs/design/sources.md)
            self.discarded += 1
        self._events.append(event)
        self._signal()

    def _signal(self) -> None:
        if not self._signalled and not self.released:
            os.write(self._write_fd, b"x")
            self._signalled = True


class FakeGpiod:
    """Stands in for the ``gpiod`` module; ``chips`` are the paths that exist."""

    def __init__(self, real: Any = None, chips: tuple[str, ...] = ("/dev/gpiochip0",)) -> None:
        self.LineSettings = real.LineSettings if real is not None else LineSettings
        self.line = (
            real.line
            if real is not None
            else SimpleNamespace(Direction=Direction, Edge=Edge, Bias=Bias, Clock=Clock)
        )
        self.chips = set(chips)
        self.requests: list[FakeLineRequest] = []

    def request_lines(
        self,
        path: str,
        config: dict[Any, Any],
        consumer: str | None = None,
        event_buffer_size: int | None = None,
        output_values: dict[Any, Any] | None = None,
    ) -> FakeLineRequest:
        if path not in self.chips:
            raise FileNotFoundError(2, "No such file or directory", path)
        request = FakeLineRequest(path, config, event_buffer_size)
        self.requests.append(request)
        return request


def press(request: FakeLineRequest, offset: int, at_ns: int, width_ns: int, bounce: int = 0) -> int:
    """One meter pulse: the logical level active for ``width_ns`` from ``at_ns``.

    ``bounce`` extra contact chatters (0.2 ms apart) follow each transition, as a reed switch
    does; the debounce period should hide them. Returns when the pulse ends.
    """
    active_low = bool(request.settings[offset].active_low)
    for start, logical in ((at_ns, True), (at_ns + width_ns, False)):
        level = logical != active_low
        request.set_level(offset, level, start)
        for i in range(bounce):
            request.set_level(offset, not level, start + (2 * i + 1) * 200_000)
            request.set_level(offset, level, start + (2 * i + 2) * 200_000)
    return at_ns + width_ns


async def pulse_train(
    request: FakeLineRequest,
    offset: int,
    *,
    rate: float,
    count: int,
    width: float | None = None,
    bounce: int = 0,
    tick: float = 0.005,
) -> None:
    """``count`` pulses at ``rate`` per second on a line, in real time (kernel-stamped now)."""
    period_ns = int(1e9 / rate)
    width_ns = int(width * 1e9) if width is not None else period_ns // 2
    start = time.monotonic_ns()
    sent = 0
    while sent < count:
        due = min(count, (time.monotonic_ns() - start) // period_ns + 1)
        while sent < due:
            press(request, offset, start + sent * period_ns, width_ns, bounce)
            sent += 1
        await asyncio.sleep(tick)
    request.settle(start + count * period_ns + 10**9)
