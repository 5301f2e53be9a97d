"""The GPIO source: meter pulse outputs wired to Linux GPIO lines, read through libgpiod v2.

``gpiod`` is the optional extra ``gpio`` and is imported only when a GPIO source is built. One
line request per source (one chip) holds every channel's line, configured as an input with
(docs/design/sources.md, "libgpiod v2"):

- ``edge``: the counted logical edge, ``rising`` | ``falling`` | ``both``. ``both`` is 3-wire KYZ
  (Form C) use: every transition K-Y and K-Z is one pulse, so the meter's pulse value must be the
  one per transition, twice the 2-wire rate for the same energy (docs/commissioning.md).
  ``active_low`` swaps rising and falling, since libgpiod edges are on the logical value;
- ``debounce``: done by the kernel (or the GPIO controller), so a bouncing contact yields one
  event; pick it below the shortest pulse and the shortest gap (S0: 30 ms, docs/commissioning.md);
- ``bias``: ``as_is`` (default: leave the board's resistors alone) | ``pull_up`` | ``pull_down`` |
  ``disabled``; a dry contact needs a pull-up;
- events stamped by the kernel on CLOCK_MONOTONIC.

Events are read on the asyncio loop: the request's file descriptor is registered with
``loop.add_reader`` and each wake-up reads what the kernel has queued. Two cases are not timed
pulses, and both go to the sink as **catch-up** (a zero-length outage: ``source_down`` then
``source_up`` with the pulses), so they count in consumption but in no demand window, exactly like
the pulses a Modbus counter kept through an outage (docs/reference/demand-rules.md):

- **lost edges**: the kernel buffer keeps ``event_buffer_size`` events and discards the oldest on
  overflow; each line's ``line_seqno`` goes up by one per event from 1, so a gap of N is N edges
  the meter did make and we did not see. A lost edge is a lost pulse: it is counted (in
  ``lost_edges`` and in consumption), but its time is unknown, so it fills no window;
- **late edges**: an event older than ``max_event_delay`` (1 s) plus the debounce when read (the
  loop was stalled, by a slow disk say) would be stamped by the service far from its instant,
  possibly in the next window, which could make a false peak (``late_edges``).

A failed request or read (chip missing, permission denied, device unplugged) is an outage: the
source is down and requests again with backoff; edges while no request exists are not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping
from datetime import timedelta
from types import ModuleType
from typing import Any, Protocol

from gateway.config_sources import GpioPoint
from gateway.config_sources import GpioSource as GpioSourceConfig
from gateway.logging import get_logger
from gateway.sources import PulseSink, SourceError

MAX_EVENT_DELAY_S = 1.0  # a slide is at least 1 s: later than this, the window may be wrong
DEFAULT_BUFFER = 256  # events; the kernel's default is only 16 per line (docs/design/sources.md)
KERNEL_BUFFER_MAX = 1024  # the kernel caps a request's buffer at 16 x 64 lines
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
_EDGES = {"rising": "RISING", "falling": "FALLING", "both": "BOTH"}
_BIASES = {"as_is": "AS_IS", "pull_up": "PULL_UP", "pull_down": "PULL_DOWN", "disabled": "DISABLED"}
MISSING_GPIOD = "install the gpio extra: pip install 'pulse-gateway[gpio]'"

log = get_logger("gpio")


class EdgeEvent(Protocol):
    """What the source reads of a ``gpiod.EdgeEvent``."""

    line_offset: int
    timestamp_ns: int
    line_seqno: int
    global_seqno: int


class LineRequest(Protocol):
    """The narrow seam to libgpiod: ``gpiod.LineRequest`` satisfies it, and so does the fake."""

    def fileno(self) -> int: ...

    def read_edge_events(self, max_events: int | None = None) -> list[Any]: ...

    def release(self) -> None: ...


def import_gpiod() -> ModuleType:
    """libgpiod's Python bindings, or a SourceError saying how to install them."""
    try:
        import gpiod
    except ImportError:
        raise SourceError(
            f"a gpio source needs libgpiod's Python bindings: {MISSING_GPIOD}"
        ) from None
    return gpiod


def line_settings(gpiod: Any, point: GpioPoint) -> Any:
    """The ``gpiod.LineSettings`` of a channel's line (see the module docstring)."""
    line = gpiod.line
    bias = str(getattr(point, "bias", "as_is")).replace("-", "_")
    return gpiod.LineSettings(
        direction=line.Direction.INPUT,
        edge_detection=getattr(line.Edge, _EDGES[point.edge]),
        bias=getattr(line.Bias, _BIASES[bias]),
        active_low=bool(getattr(point, "active_low", False)),
        debounce_period=timedelta(microseconds=point.debounce),
        event_clock=line.Clock.MONOTONIC,
    )


def _fileno(request: Any) -> int:
    """The request's file descriptor: ``fileno()``, or ``fd`` (a property on gpiod 2)."""
    if callable(getattr(request, "fileno", None)):
        return int(request.fileno())
    fd = request.fd
    return int(fd() if callable(fd) else fd)


class GpioSource:
    """The lines of one GPIO chip and the channels counted on them.

    ``gpiod`` is the libgpiod module, or a stand-in with ``LineSettings``, ``line`` and
    ``request_lines`` (simulators/gpio_pulses.py); by default the real one is imported.
    """

    def __init__(
        self,
        source_id: str,
        chip: str,
        points: Mapping[str, GpioPoint],
        *,
        gpiod: Any = None,
        event_buffer_size: int | None = None,
        max_event_delay: float = MAX_EVENT_DELAY_S,
        consumer: str = "pulse-gateway",
    ) -> None:
        self.id = source_id
        self.chip = chip
        self.consumer = consumer
        self._gpiod = gpiod if gpiod is not None else import_gpiod()
        self._channels = {point.line: channel for channel, point in points.items()}
        self.settings = {point.line: line_settings(self._gpiod, point) for point in points.values()}
        default = max(DEFAULT_BUFFER, 16 * len(points))
        self.event_buffer_size = min(event_buffer_size or default, KERNEL_BUFFER_MAX)
        longest_debounce = max((point.debounce for point in points.values()), default=0)
        self._max_delay_ns = int(max_event_delay * 1e9) + longest_debounce * 1000
        self.edges = dict.fromkeys(points, 0)  # edges seen, per channel
        self.lost_edges = dict.fromkeys(points, 0)  # counted from seqno gaps
        self.late_edges = dict.fromkeys(points, 0)  # read too late to be timed
        self.up: bool | None = None
        self._next_seqno: dict[int, int] = {}
        self._next_global = 1

    def baselines(self) -> dict[str, int]:
        """GPIO edges leave no device count to resume from."""
        return {}

    def counters(self) -> dict[str, dict[str, int]]:
        """Edges whose time is unknown, per channel: lost by the kernel, or read too late."""
        return {"lost_edges": dict(self.lost_edges), "late_edges": dict(self.late_edges)}

    async def run(self, sink: PulseSink) -> None:
        """Request the lines, count their edges; request again after a failure; until cancelled."""
        loop = asyncio.get_running_loop()
        self.up = None  # a restart after a crash (the service marked it down) says up again
        failed = 0
        while True:
            try:
                request = self._gpiod.request_lines(
                    self.chip,
                    config=dict(self.settings),
                    consumer=self.consumer,
                    event_buffer_size=self.event_buffer_size,
                )
            except (OSError, ValueError) as exc:
                reason = f"cannot request lines of {self.chip}: {exc}"
            else:
                failed = 0
                reason = await self._serve(loop, request, sink)
            failed += 1
            self._went_down(sink, reason)
            ceiling = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(failed - 1, 10))
            await asyncio.sleep(ceiling / 2 + random.uniform(0, ceiling / 2))

    async def _serve(
        self, loop: asyncio.AbstractEventLoop, request: LineRequest, sink: PulseSink
    ) -> str:
        """Read events as they come until reading fails; the reason."""
        broken: asyncio.Future[str] = loop.create_future()
        fd = _fileno(request)
        self._next_seqno = {}  # seqnos start at 1 for every new request
        self._next_global = 1
        loop.add_reader(fd, self._on_readable, request, sink, broken)
        try:
            if not self.up:
                self.up = True
                log.info("gpio_source_up", source=self.id, chip=self.chip, lines=len(self.settings))
                sink.source_up(self.id, {})
            return await broken
        finally:
            loop.remove_reader(fd)
            with contextlib.suppress(Exception):
                request.release()

    def _on_readable(
        self, request: LineRequest, sink: PulseSink, broken: asyncio.Future[str]
    ) -> None:
        if broken.done():
            return
        try:
            events = request.read_edge_events()
        except Exception as exc:  # OSError, gpiod.RequestReleasedError...: the request is gone
            broken.set_result(f"reading events of {self.chip} failed: {exc!r}")
            return
        self.handle(events, sink)

    def handle(self, events: list[Any], sink: PulseSink, now_ns: int | None = None) -> None:
        """Count one batch of edge events and report them (timed, or as catch-up)."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        timed: dict[str, int] = {}
        caught: dict[str, int] = {}
        lost = late = global_gap = 0
        for event in events:
            if event.global_seqno > self._next_global:
                global_gap += event.global_seqno - self._next_global
            self._next_global = event.global_seqno + 1
            channel = self._channels.get(event.line_offset)
            if channel is None:
                continue
            gap = event.line_seqno - self._next_seqno.get(event.line_offset, 1)
            self._next_seqno[event.line_offset] = event.line_seqno + 1
            if gap > 0:  # the kernel dropped these (oldest first) when its buffer was full
                caught[channel] = caught.get(channel, 0) + gap
                self.lost_edges[channel] += gap
                lost += gap
            self.edges[channel] += 1
            if now_ns - event.timestamp_ns > self._max_delay_ns:
                caught[channel] = caught.get(channel, 0) + 1
                self.late_edges[channel] += 1
                late += 1
            else:
                timed[channel] = timed.get(channel, 0) + 1
        if caught:
            log.warning(
                "gpio_edges_caught_up",
                source=self.id,
                lost=lost,
                late=late,
                global_gap=global_gap,
                catch_up=caught,
            )
            sink.source_down(self.id)
            sink.source_up(self.id, caught)
        for channel, count in timed.items():
            sink.pulses(channel, count)

    def _went_down(self, sink: PulseSink, reason: str) -> None:
        if self.up is not False:
            log.warning("gpio_source_down", source=self.id, chip=self.chip, reason=reason)
            sink.source_down(self.id)
        self.up = False


def gpio_source(config: GpioSourceConfig, points: Mapping[str, GpioPoint]) -> GpioSource:
    """A ``GpioSource`` from a config entry; keys the config may not have yet use defaults."""
    return GpioSource(
        config.id,
        config.chip,
        points,
        event_buffer_size=getattr(config, "event_buffer_size", None),
    )
