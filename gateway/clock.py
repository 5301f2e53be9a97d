"""The gateway's timeline: wall-clock instants that never go backwards and never jump unseen.

Boundaries are wall-clock multiples of the slide (utilities bill on clock-aligned intervals), so
events are stamped with wall time. But the wall clock can be stepped (NTP after a cold start, a
technician fixing the date), and a step must not corrupt demand:

- **backwards**: stamping with the stepped-back time would reorder events, and clamping to the
  last instant would pile the pulses of the whole step into one interval (a false peak). So a
  backward step *holds* the timeline at its last instant and reports it; the service takes the
  channels offline until the wall clock is past that instant again. Pulses keep counting (the
  outage rules put them in pulses_total and no valid window).
- **forwards**: closing every boundary the jump spans would invent a burst of windows that were
  never observed. A forward step is reported; the service treats the gap as an outage and skips
  the spanned boundaries without readings.

A step is a disagreement between wall and monotonic elapsed time larger than ``tolerance``
(NTP slews well below that). Both clocks are injected, so tests step them at will.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.core import Instant

DEFAULT_TOLERANCE_US = 2_000_000


def _wall_us() -> Instant:
    return time.time_ns() // 1000


def _monotonic_us() -> int:
    return time.monotonic_ns() // 1000


@dataclass(frozen=True, slots=True)
class Step:
    """A wall-clock step seen by ``Timeline.read``: from the last instant to ``wall``."""

    last: Instant
    wall: Instant

    @property
    def forwards(self) -> bool:
        return self.wall > self.last


class Timeline:
    """Reads the time for the service; see the module docstring for steps."""

    def __init__(
        self,
        wall: Callable[[], Instant] = _wall_us,
        monotonic: Callable[[], int] = _monotonic_us,
        tolerance: int = DEFAULT_TOLERANCE_US,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._tolerance = tolerance
        self._last_wall = wall()
        self._last_mono = monotonic()
        self.now: Instant = self._last_wall
        self.held = False  # True after a backward step, until the wall clock passes ``now``

    def read(self) -> tuple[Instant, Step | None]:
        """The current instant (never earlier than the last) and a step, if one just happened."""
        wall, mono = self._wall(), self._monotonic()
        expected = self._last_wall + (mono - self._last_mono)
        self._last_wall, self._last_mono = wall, mono
        step = None
        if wall - expected > self._tolerance:
            step = Step(self.now, wall)
            self.held = False
        elif expected - wall > self._tolerance:
            step = Step(self.now, wall)
            self.held = True
        if self.held:
            if wall <= self.now:
                return self.now, step
            self.held = False
        self.now = max(self.now, wall)
        return self.now, step

    def hold_until(self, instant: Instant) -> Instant:
        """Never run earlier than ``instant`` (saved state written by a clock that was ahead).

        If the wall clock is behind it, the timeline holds, exactly as after a backward step.
        """
        if instant > self.now:
            self.now = instant
            self.held = True
        return self.now

    def seconds_until(self, instant: Instant) -> float:
        """How long to sleep (on the monotonic clock) until the wall clock reaches ``instant``."""
        return max(0.0, (instant - self._wall()) / 1_000_000)
