"""The B6070 checksum: a ledger built in one pass equals one extended reset by reset."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.core import Channel, Ledger, judge, ledgers
from tests.helpers import rules

peaks = st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), peaks), max_size=60))
def test_one_pass_equals_reset_by_reset(rows: list[tuple[str, float]]) -> None:
    """Per channel, the ledger read from the whole audit in one pass is the one the desk gets
    by extending it at every accepted reset, to the last bit."""
    running: dict[str, Ledger] = {}
    for channel, peak in rows:
        running[channel] = running.get(channel, Ledger()).with_reset(peak)
    assert ledgers(rows) == running


@given(st.lists(st.tuples(st.integers(0, 500), st.booleans()), min_size=1, max_size=40))
def test_a_channel_that_was_only_reset_by_the_rules_always_checks_out(
    steps: list[tuple[int, bool]],
) -> None:
    """Pulses and resets through the engine's rules, each accepted reset logged: the verdict
    is ok, because cumulative demand adds the same peaks in the same order as the ledger."""
    channel = Channel(rules(scale=0.1, window="1min", slide="1min"), 0)
    ledger = Ledger()
    t = 0
    for count, reset in steps:
        t += 1_000_000
        if count:
            channel.pulses(t, count)
        t = channel.next_boundary
        channel.close()
        if reset:
            t += 1
            outcome = channel.reset(t)
            if outcome.accepted:
                ledger = ledger.with_reset(outcome.after.previous_peak_demand)
    verdict = judge("a", ledger, channel.cumulative_demand, channel.reset_count)
    assert verdict.status == "ok", verdict.line()


def test_an_unlogged_or_a_double_reset_breaks_the_checksum_and_says_how() -> None:
    """A reset missing from the audit shows in both numbers; the line names them."""
    ledger = Ledger().with_reset(40.0)
    verdict = judge("main", ledger, 100.0, 2)
    assert verdict.status == "broken" and not verdict.ok
    assert verdict.problems == (
        "cumulative_demand 100.0 != sum of previous peaks 40.0",
        "reset_count 2 != accepted resets logged 1",
    )
    assert verdict.line().startswith("main: CHECKSUM BROKEN: cumulative_demand 100.0")


def test_a_channel_with_no_saved_state_is_not_checked() -> None:
    """Audit rows of a channel removed from the configuration: reported, never broken."""
    verdict = judge("old", Ledger(3, 12.5), None, None)
    assert verdict.status == "removed" and verdict.ok
    assert "3 accepted resets logged" in verdict.line()
