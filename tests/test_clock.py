"""The timeline never goes backwards and reports wall-clock steps instead of hiding them."""

from __future__ import annotations

from gateway.clock import Timeline
from tests.helpers import FakeClocks

S = 1_000_000


def timeline() -> tuple[Timeline, FakeClocks]:
    clocks = FakeClocks()
    return Timeline(clocks.wall, clocks.mono, tolerance=2 * S), clocks


def test_time_follows_the_wall_clock_while_both_clocks_agree() -> None:
    """Normal running: the instant is the wall clock, no step reported."""
    line, clocks = timeline()
    clocks.elapse(10)
    assert line.read() == (clocks.wall_us, None)


def test_small_slew_is_not_a_step_and_never_goes_backwards() -> None:
    """A wall clock that drifts back by less than the tolerance is clamped, not reported."""
    line, clocks = timeline()
    clocks.elapse(1)
    first, _ = line.read()
    clocks.wall_us -= S  # 1 s back: NTP slewing, within tolerance
    clocks.mono_us += 100
    second, step = line.read()
    assert step is None and second == first


def test_a_backward_step_holds_the_timeline_until_the_wall_clock_catches_up() -> None:
    """After a step back the instant stays put (held) and resumes once the wall passes it."""
    line, clocks = timeline()
    clocks.elapse(60)
    before, _ = line.read()
    clocks.wall_us -= 3600 * S
    held, step = line.read()
    assert step is not None and not step.forwards
    assert held == before and line.held
    clocks.elapse(1800)
    assert line.read() == (before, None) and line.held
    clocks.elapse(1801)
    later, step = line.read()
    assert step is None and not line.held and later == clocks.wall_us > before


def test_a_forward_step_is_reported_with_both_ends() -> None:
    """A jump ahead is a step from the last instant to the new wall time."""
    line, clocks = timeline()
    clocks.elapse(5)
    last, _ = line.read()
    clocks.wall_us += 86400 * S
    clocks.mono_us += S
    now, step = line.read()
    assert step is not None and step.forwards
    assert (step.last, step.wall, now) == (last, clocks.wall_us, clocks.wall_us)


def test_a_saved_state_from_the_future_holds_the_start() -> None:
    """Restoring state stamped later than the wall clock starts held at that instant."""
    line, clocks = timeline()
    ahead = clocks.wall_us + 600 * S
    assert line.hold_until(ahead) == ahead and line.held
    clocks.elapse(601)
    assert line.read()[0] == clocks.wall_us and not line.held
