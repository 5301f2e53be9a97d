"""The SQLite state store (docs/reference/state-and-resets.md): exact state, one owner, a durable
and checked audit.

Every test uses a real SQLite file under tmp_path; nothing is mocked.
"""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import store as store_module
from gateway.core import Channel, ChannelState, Reading, ResetOutcome
from gateway.core.demand import NEVER, TermState
from gateway.store import (
    APPLICATION_ID,
    DB_NAME,
    SCHEMA_VERSION,
    Store,
    StoreError,
    format_resets,
)
from tests.helpers import at, rules

ROOT = Path(__file__).resolve().parent.parent
MAIN = rules("kWh", scale=0.5, window="10min", slide="5min", initial=1000.0, lockout="15min")
GAS = rules("cubic_feet", scale=10.0, window="1h", slide="15min")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as opened:
        yield opened


_raw_connections: list[sqlite3.Connection] = []


@pytest.fixture(autouse=True)
def _close_raw_connections() -> Iterator[None]:
    """Every ``raw`` connection a test opened is closed after it (warnings are errors)."""
    yield
    while _raw_connections:
        _raw_connections.pop().close()


def raw(tmp_path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection to the store's file, as an operator's tool would open it."""
    conn = sqlite3.connect(tmp_path / DB_NAME, autocommit=True)
    _raw_connections.append(conn)
    return conn


def run_to(channel: Channel, t: int) -> list[Reading]:
    readings = []
    while channel.next_boundary <= t:
        readings.append(channel.close())
    return readings


def main_with_peak() -> Channel:
    """A channel with a 60 kW peak at 00:15 (docs/reference/demand-rules.md's worked example)."""
    channel = Channel(MAIN, at("00:00:00"))
    for clock, count in [("00:00:00", 1), ("00:02:30", 4), ("00:09:59.999", 2)]:
        run_to(channel, at(clock))
        channel.pulses(at(clock), count)
    for clock, count in [("00:10:00", 6), ("00:13:00", 12)]:
        run_to(channel, at(clock))
        channel.pulses(at(clock), count)
    run_to(channel, at("00:20:00"))
    assert channel.peak_demand == 60.0
    return channel


def reset(store: Store, channel_id: str, channel: Channel, clock: str) -> ResetOutcome:
    """Reset ``channel`` at ``clock`` and record it, as the service does before its ack."""
    run_to(channel, at(clock))
    outcome = channel.reset(at(clock))
    store.record_reset(channel_id, outcome, "replay", (channel.rules, channel.state()))
    return outcome


EDGE_STATE = ChannelState(
    pulses_total=2**62,
    consumption_base=-0.0,
    pulses_at_base=7,
    scale_factor=1 / 3,
    window_intervals=(0, 2**40, 3),
    open_interval=5,
    next_boundary=at("00:15:00"),
    valid_from=at("00:00:00.000001"),
    offline_since=None,
    now=at("00:14:59.999999"),
    demand=0.1 + 0.2,
    last_valid_demand=1e308,
    peak_demand=5e-324,
    peak_time=None,
    previous_peak_demand=2.0**60,
    cumulative_demand=float("inf"),
    reset_count=3,
    last_reset=None,
    rejected_resets=2,
)


# -- schema and migrations ----------------------------------------------------------------------


def test_a_fresh_state_dir_gets_a_wal_database_at_the_current_schema(tmp_path: Path) -> None:
    """Opening an empty state dir creates it, the lock and a WAL database holding no state."""
    state_dir = tmp_path / "deep" / "state"
    with Store.open(state_dir) as store:
        assert store.load() is None
        assert store.reset_log() == []
        assert store.verdict() == []
        conn = raw(state_dir)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert set(meta) == {"created_at", "created_by"}
        assert (state_dir / "gateway.lock").read_text() == f"{os.getpid()}\n"


def test_reopening_runs_no_migration_twice_and_keeps_everything(tmp_path: Path) -> None:
    """A second open of a current database changes neither schema, meta nor data."""
    channel = main_with_peak()
    with Store.open(tmp_path) as store:
        store.checkpoint({"main": (MAIN, channel.state())}, at("00:20:00"))
    before = raw(tmp_path).execute("SELECT * FROM meta ORDER BY key").fetchall()
    with Store.open(tmp_path) as store:
        saved = store.load()
    conn = raw(tmp_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT * FROM meta ORDER BY key").fetchall() == before
    assert saved is not None and saved.channels["main"].state == channel.state()


def test_pending_migrations_run_in_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a later migration fails, the earlier pending ones are rolled back with it."""
    Store.open(tmp_path).close()
    broken = (("CREATE TABLE later (channel TEXT)",), ("CREATE TABLE oops (",))
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS + broken)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    with pytest.raises(StoreError, match=f"cannot set up {tmp_path / DB_NAME}"):
        Store.open(tmp_path)
    conn = raw(tmp_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT name FROM sqlite_schema WHERE name = 'later'").fetchall() == []


# -- exact round trips --------------------------------------------------------------------------


def test_edge_floats_and_nones_come_back_bit_for_bit(tmp_path: Path) -> None:
    """-0.0, 0.1+0.2, 1/3, 1e308, a subnormal, inf and None survive a close and reopen."""
    rules_in = rules(scale=0.1 + 0.2, initial=-0.0)
    with Store.open(tmp_path) as store:
        store.checkpoint({"edge": (rules_in, EDGE_STATE)}, at("00:14:59.999999"))
    with Store.open(tmp_path) as store:
        saved = store.load()
    assert saved is not None and saved.saved_at == at("00:14:59.999999")
    rules_out, state = saved.channels["edge"].rules, saved.channels["edge"].state
    assert state == EDGE_STATE and rules_out == rules_in
    assert math.copysign(1.0, state.consumption_base) == -1.0
    assert math.copysign(1.0, rules_out.initial_reading) == -1.0
    assert state.peak_demand == 5e-324 and state.demand == 0.30000000000000004
    assert all(
        type(getattr(state, name)) is float
        for name in ("consumption_base", "scale_factor", "previous_peak_demand")
    )


def test_integral_floats_are_saved_as_floats_not_integers(tmp_path: Path) -> None:
    """A float with no fraction (2**60, 0.0) is stored as an SQLite real, never an integer."""
    with Store.open(tmp_path) as store:
        store.checkpoint({"edge": (MAIN, EDGE_STATE)}, at("00:00:00"))
    kinds = raw(tmp_path).execute(
        "SELECT typeof(previous_peak_demand), typeof(consumption_base) FROM channel_state"
    )
    assert kinds.fetchone() == ("real", "real")


def test_a_nan_is_refused_rather_than_saved_as_null(store: Store) -> None:
    """A NaN would come back as NULL, so saving one raises and writes nothing."""
    state = EDGE_STATE._replace(demand=math.nan)
    with pytest.raises(ValueError, match="demand is NaN"):
        store.checkpoint({"edge": (MAIN, state)}, at("00:00:00"))
    assert store.load() is None


finite_or_not = st.floats(allow_nan=False)
instants = st.integers(-(2**62), 2**62)
counts = st.integers(0, 2**62)
states = st.builds(
    ChannelState,
    pulses_total=counts,
    consumption_base=finite_or_not,
    pulses_at_base=counts,
    scale_factor=finite_or_not,
    window_intervals=st.lists(counts, max_size=24).map(tuple),
    open_interval=counts,
    next_boundary=instants,
    valid_from=instants,
    offline_since=st.none() | instants,
    now=instants,
    demand=st.none() | finite_or_not,
    last_valid_demand=st.none() | finite_or_not,
    peak_demand=finite_or_not,
    peak_time=st.none() | instants,
    previous_peak_demand=finite_or_not,
    cumulative_demand=finite_or_not,
    reset_count=counts,
    last_reset=st.none() | instants,
    rejected_resets=counts,
    period_start=instants,
    period_base=finite_or_not,
    previous_period=finite_or_not,
    schedule_next=instants | st.just(NEVER),
    # a virtual channel's further terms (scale factors are finite: the config checks them)
    more_terms=st.lists(
        st.builds(
            TermState,
            scale_factor=st.floats(allow_nan=False, allow_infinity=False),
            pulses_total=counts,
            pulses_at_base=counts,
            window_intervals=st.lists(counts, max_size=24).map(tuple),
            open_interval=counts,
            offline_since=st.none() | instants,
        ),
        max_size=3,
    ).map(tuple),
)


def test_any_channel_state_round_trips_exactly(tmp_path: Path) -> None:
    """Every ChannelState a channel can hold is loaded back equal, float bits included."""
    with Store.open(tmp_path) as store:

        @settings(max_examples=150, deadline=None)
        @given(state=states)
        def check(state: ChannelState) -> None:
            store.checkpoint({"c": (MAIN, state)}, state.now)
            saved = store.load()
            assert saved is not None
            loaded = saved.channels["c"].state
            assert loaded == state
            for name in ("consumption_base", "demand", "peak_demand", "cumulative_demand"):
                value, back = getattr(state, name), getattr(loaded, name)
                assert value is None or math.copysign(1.0, value) == math.copysign(1.0, back)

        check()


@pytest.mark.parametrize("seed", range(5))
def test_a_channel_restored_after_a_restart_goes_on_exactly_as_one_never_stopped(
    tmp_path: Path, seed: int
) -> None:
    """Checkpoint, close, reopen and restore: the readings that follow are identical."""
    rng = random.Random(seed)
    rules_in = rules("us_gallons", scale=0.1, window="15min", slide="5min", lockout="10min")
    t0 = at("00:00:00")
    events = sorted(
        (t0 + rng.randrange(0, 4 * 3600) * 1_000_000, rng.choice("ppppprfo"), rng.randint(1, 30))
        for _ in range(200)
    )

    def feed(channel: Channel, part: list[tuple[int, str, int]]) -> list[Reading]:
        readings = []
        for t, kind, n in part:
            readings += run_to(channel, t)
            if kind == "p":
                channel.pulses(t, n)
            elif kind == "r":
                channel.reset(t)
            elif kind == "f":
                channel.offline(t)
            else:
                channel.online(t, n)
        return readings + run_to(channel, t0 + 5 * 3600 * 1_000_000)

    original = Channel(rules_in, t0)
    feed(original, events[:100])
    with Store.open(tmp_path) as store:
        store.checkpoint({"water": (rules_in, original.state())}, original.now)
    with Store.open(tmp_path) as store:
        saved = store.load()
    assert saved is not None
    restored = Channel.restore(saved.channels["water"].rules, saved.channels["water"].state)
    assert feed(restored, events[100:]) == feed(original, events[100:])
    assert restored.state() == original.state()


def test_saved_rules_compare_equal_to_unchanged_config_and_unequal_to_changed(
    store: Store,
) -> None:
    """load() returns ChannelRules, so the service can tell which channels changed."""
    store.checkpoint(
        {"main": (MAIN, main_with_peak().state()), "gas": (GAS, Channel(GAS, 0).state())}, 0
    )
    saved = store.load()
    assert saved is not None and list(saved.channels) == ["gas", "main"]
    assert saved.channels["main"].rules == MAIN
    assert saved.channels["gas"].rules == GAS
    changed = rules("cubic_feet", scale=5.0, window="1h", slide="15min")
    assert saved.channels["gas"].rules != changed


# -- one owner per state dir --------------------------------------------------------------------


def test_a_second_open_in_the_same_process_is_refused_naming_dir_and_pid(tmp_path: Path) -> None:
    """While one Store holds the dir, another open fails with the dir and the holder's pid."""
    with Store.open(tmp_path), pytest.raises(StoreError) as refused:
        Store.open(tmp_path)
    assert str(tmp_path) in str(refused.value)
    assert f"pid {os.getpid()}" in str(refused.value)


def test_the_lock_is_released_by_close_and_by_the_context_manager(tmp_path: Path) -> None:
    """After close() (or leaving the with block) the dir can be opened again."""
    first = Store.open(tmp_path)
    first.close()
    first.close()
    with Store.open(tmp_path):
        pass
    Store.open(tmp_path).close()


OPEN_IN_CHILD = """
import sys
from pathlib import Path
from gateway.store import Store, StoreError
try:
    store = Store.open(Path(sys.argv[1]))
except StoreError as exc:
    print(exc)
    sys.exit(2)
print("opened", flush=True)
sys.stdin.read()  # hold the store until the parent closes stdin or kills us
"""


def test_a_second_process_on_the_same_state_dir_refuses_to_start(tmp_path: Path) -> None:
    """Another process cannot open a state dir this one holds; it is told who holds it."""
    with Store.open(tmp_path):
        child = subprocess.run(
            [sys.executable, "-c", OPEN_IN_CHILD, str(tmp_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            input="",
        )
    assert child.returncode == 2, child.stderr
    assert f"the state directory {tmp_path} is in use" in child.stdout
    assert f"pid {os.getpid()}" in child.stdout
    assert "Traceback" not in child.stderr


def test_a_killed_owner_leaves_no_stale_lock(tmp_path: Path) -> None:
    """The kernel drops the lock of a crashed process, so the next start succeeds."""
    with subprocess.Popen(  # leaving the block closes the pipes and waits for the child
        [sys.executable, "-c", OPEN_IN_CHILD, str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "opened\n"
            with pytest.raises(StoreError, match=f"pid {child.pid} "):
                Store.open(tmp_path)
        finally:
            child.kill()
    Store.open(tmp_path).close()


# -- damaged and foreign files --------------------------------------------------------------------


def assert_refused_untouched(tmp_path: Path, match: str) -> None:
    path = tmp_path / DB_NAME
    before = path.read_bytes()
    with pytest.raises(StoreError, match=match) as refused:
        Store.open(tmp_path)
    assert str(path) in str(refused.value)
    assert path.read_bytes() == before
    with pytest.raises(StoreError, match=match):
        Store.open_readonly(path)
    assert path.read_bytes() == before
    Store.open(tmp_path / "other").close()  # the failed open released the lock...
    with pytest.raises(StoreError, match=match):
        Store.open(tmp_path)  # ...and refuses again, never starting from zero


def test_a_file_of_random_bytes_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A gateway.db that is not a database raises StoreError and is never overwritten."""
    (tmp_path / DB_NAME).write_bytes(random.Random(1).randbytes(20_000))
    assert_refused_untouched(tmp_path, "damaged or not a database")


def test_a_truncated_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A real gateway.db cut short (a bad copy, a full disk) fails the check, not a restart."""
    channel = main_with_peak()
    with Store.open(tmp_path) as store:
        for minute in range(20, 620, 15):
            reset(store, "main", channel, f"{minute // 60:02d}:{minute % 60:02d}:00")
        store.checkpoint({"main": (MAIN, channel.state())}, channel.now)
    path = tmp_path / DB_NAME
    data = path.read_bytes()
    assert len(data) >= 4 * 4096
    path.write_bytes(data[: len(data) // 2])
    assert_refused_untouched(tmp_path, "damaged or not a database")


def test_a_database_from_a_newer_gateway_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A user_version this code does not know means a newer schema: refuse, do not guess."""
    Store.open(tmp_path).close()
    raw(tmp_path).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    assert_refused_untouched(tmp_path, f"schema version {SCHEMA_VERSION + 1}, newer")


def test_a_database_of_another_application_is_refused(tmp_path: Path) -> None:
    """An SQLite file that is not ours (tables, no application id) is not taken over."""
    raw(tmp_path).execute("CREATE TABLE invoices (id INTEGER)")
    assert_refused_untouched(tmp_path, "another application")


def test_an_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    """A state_dir that is a file gives StoreError naming it, not an OSError traceback."""
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match=f"cannot create the state directory {tmp_path}/file"):
        Store.open(tmp_path / "file")


# -- resets: durable, atomic, audited -------------------------------------------------------------


def test_a_recorded_reset_is_visible_to_another_connection_before_close(
    store: Store, tmp_path: Path
) -> None:
    """record_reset commits the audit row and the new state together, durably."""
    outcome = reset(store, "main", main_with_peak(), "00:20:00")
    conn = raw(tmp_path)
    rows = conn.execute(
        "SELECT channel, time_us, source, accepted, peak_before, previous_peak_after,"
        " cumulative_after, reset_count_after FROM resets"
    ).fetchall()
    assert rows == [("main", at("00:20:00"), "replay", 1, 60.0, 60.0, 60.0, 1)]
    state = conn.execute("SELECT cumulative_demand, reset_count FROM channel_state").fetchone()
    assert state == (60.0, 1)
    assert store.reset_log()[0].after == outcome.after


def test_a_reset_acked_just_before_a_crash_is_neither_lost_nor_doubled(tmp_path: Path) -> None:
    """A process killed right after record_reset returns leaves state and audit in step."""
    script = """
import sys
from pathlib import Path
from gateway.store import Store
from tests.test_store import main_with_peak, reset
store = Store.open(Path(sys.argv[1]))
reset(store, "main", main_with_peak(), "00:20:00")
print("acked", flush=True)
sys.stdin.read()
"""
    with subprocess.Popen(  # leaving the block closes the pipes and waits for the child
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "acked\n"
        finally:
            child.kill()
    with Store.open(tmp_path) as store:
        saved = store.load()
        assert saved is not None and saved.saved_at == at("00:20:00")  # no checkpoint yet
        assert saved.channels["main"].state.reset_count == 1
        assert [r.id for r in store.reset_log()] == [1]
        assert [v.line() for v in store.verdict()] == ["main: OK (1 resets, cumulative 60.0)"]


def test_a_refused_reset_is_logged_and_changes_no_totals(store: Store) -> None:
    """A reset inside the lockout is an audit row with accepted false and equal totals."""
    channel = main_with_peak()
    reset(store, "main", channel, "00:20:00")
    refused = reset(store, "main", channel, "00:24:00")
    record = store.reset_log()[-1]
    assert not refused.accepted and not record.accepted
    assert record.reason == "lockout" and record.before == record.after == refused.after
    saved = store.load()
    assert saved is not None and saved.channels["main"].state.rejected_resets == 1


def test_an_accepted_reset_without_its_state_is_refused_before_writing(store: Store) -> None:
    """The audit row and the state go together: an accepted reset alone is a caller bug."""
    channel = main_with_peak()
    outcome = channel.reset(at("00:20:00"))
    with pytest.raises(ValueError, match="need the channel state: main"):
        store.record_reset("main", outcome, "replay", None)
    assert store.reset_log() == []


def test_reset_all_is_one_transaction_over_every_channel(store: Store, tmp_path: Path) -> None:
    """record_resets writes every channel's row and state, or (on a bad value) none."""
    main, gas = main_with_peak(), Channel(GAS, at("00:00:00"))
    run_to(gas, at("00:20:00"))
    outcomes = {"main": main.reset(at("00:20:00")), "gas": gas.reset(at("00:20:00"))}
    states = {"main": (MAIN, main.state()), "gas": (GAS, gas.state())}
    bad = {**states, "gas": (GAS, gas.state()._replace(cumulative_demand=math.nan))}
    with pytest.raises(ValueError):
        store.record_resets(outcomes, "bacnet:192.168.1.20:47808", bad)
    assert store.reset_log() == [] and store.load() is None
    store.record_resets(outcomes, "bacnet:192.168.1.20:47808", states)
    log = store.reset_log()
    assert [(r.channel, r.source, r.accepted) for r in log] == [
        ("main", "bacnet:192.168.1.20:47808", True),
        ("gas", "bacnet:192.168.1.20:47808", True),
    ]
    assert [v.ok for v in store.verdict()] == [True, True]


def test_the_audit_is_append_only(store: Store, tmp_path: Path) -> None:
    """A stray DELETE or UPDATE on the reset log fails instead of erasing evidence."""
    reset(store, "main", main_with_peak(), "00:20:00")
    conn = raw(tmp_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM resets")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE resets SET accepted = 0")
    assert len(store.reset_log()) == 1


def test_forgetting_a_channel_keeps_its_audit_and_a_new_life_starts_a_new_checksum(
    store: Store,
) -> None:
    """forget_channel drops state only; a channel configured again is checked from zero."""
    channel = main_with_peak()
    reset(store, "main", channel, "00:20:00")
    assert store.forget_channel("main") is True
    assert store.forget_channel("main") is False
    assert store.load() is None
    assert len(store.reset_log()) == 1
    (verdict,) = store.verdict()
    assert verdict.status == "removed" and verdict.ok
    assert verdict.line() == (
        "main: NOT CHECKED: no saved state (removed from the configuration); "
        "1 accepted resets logged"
    )
    again = main_with_peak()
    store.checkpoint({"main": (MAIN, again.state())}, at("00:20:00"))
    assert store.verdict()[0].line() == "main: OK (0 resets, cumulative 0.0)"
    reset(store, "main", again, "00:20:00")
    assert store.verdict()[0].line() == "main: OK (1 resets, cumulative 60.0)"
    assert len(store.reset_log()) == 2


# -- the checksum verdict ------------------------------------------------------------------------


def test_the_verdict_detects_a_tampered_cumulative_demand(store: Store, tmp_path: Path) -> None:
    """A cumulative_demand that is not the sum of the logged previous peaks breaks the check."""
    channel = main_with_peak()
    reset(store, "main", channel, "00:20:00")
    store.checkpoint({"main": (MAIN, channel.state())}, at("00:20:00"))
    raw(tmp_path).execute("UPDATE channel_state SET cumulative_demand = 72.0")
    (verdict,) = store.verdict()
    assert not verdict.ok and verdict.status == "broken"
    assert verdict.line() == (
        "main: CHECKSUM BROKEN: cumulative_demand 72.0 != sum of previous peaks 60.0"
    )


def test_the_verdict_detects_a_missing_reset_row(store: Store, tmp_path: Path) -> None:
    """A deleted audit row breaks both the cumulative and the reset_count check."""
    channel = main_with_peak()
    reset(store, "main", channel, "00:20:00")
    run_to(channel, at("00:40:00"))
    channel.pulses(at("00:40:00"), 20)
    reset(store, "main", channel, "00:50:00")
    assert store.verdict()[0].line() == "main: OK (2 resets, cumulative 120.0)"
    conn = raw(tmp_path)
    conn.execute("DROP TRIGGER resets_no_delete")  # a deliberate tamperer can do this much
    conn.execute("DELETE FROM resets WHERE id = 1")
    (verdict,) = store.verdict()
    assert verdict.problems == (
        "cumulative_demand 120.0 != sum of previous peaks 60.0",
        "reset_count 2 != accepted resets logged 1",
    )


def test_the_sum_is_compared_with_a_relative_tolerance(store: Store, tmp_path: Path) -> None:
    """Rounding at the 1e-12 level is not a broken checksum; a real difference is."""
    channel = main_with_peak()
    reset(store, "main", channel, "00:20:00")
    conn = raw(tmp_path)
    conn.execute("UPDATE channel_state SET cumulative_demand = 60.0000000000001")
    assert store.verdict()[0].ok
    conn.execute("UPDATE channel_state SET cumulative_demand = 60.001")
    assert not store.verdict()[0].ok


def test_the_resets_report_is_a_table_then_one_verdict_per_channel(store: Store) -> None:
    """format_resets prints every attempt with its result, then the checksum lines."""
    channel = main_with_peak()
    reset(store, "main", channel, "00:20:00")
    reset(store, "main", channel, "00:24:00.5")
    store.checkpoint({"gas": (GAS, Channel(GAS, 0).state())}, at("00:25:00"))
    assert format_resets(store.reset_log(), store.verdict()) == (
        "id  time                      channel  source  result             peak_before"
        "  previous_peak  cumulative  reset_count\n"
        "1   2026-01-01T00:20:00Z      main     replay  accepted           60.0"
        "         60.0           60.0        1\n"
        "2   2026-01-01T00:24:00.500Z  main     replay  refused (lockout)  0.0"
        "          60.0           60.0        1\n"
        "\n"
        "gas: OK (0 resets, cumulative 0.0)\n"
        "main: OK (1 resets, cumulative 60.0)\n"
    )


def test_an_empty_report_says_so() -> None:
    """With no resets and no channels the report says that rather than printing nothing."""
    assert format_resets([], []) == "no reset attempts logged\n\nno channels saved\n"


# -- read-only use (`pulse-gateway resets --db`) ------------------------------------------------


def test_a_read_only_open_reads_a_store_in_use_and_cannot_write(tmp_path: Path) -> None:
    """open_readonly needs no lock, sees committed resets and refuses every write."""
    with Store.open(tmp_path) as owner:
        reset(owner, "main", main_with_peak(), "00:20:00")
        with Store.open_readonly(tmp_path / DB_NAME) as reader:
            assert [r.channel for r in reader.reset_log()] == ["main"]
            assert reader.verdict()[0].ok
            saved = reader.load()
            assert saved is not None and saved.channels["main"].rules == MAIN
            with pytest.raises(StoreError, match="read-only"):
                reader.forget_channel("main")


def test_a_read_only_open_of_a_missing_or_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    """A wrong --db path names the file instead of creating an empty database."""
    missing = tmp_path / "nope.db"
    with pytest.raises(StoreError, match=f"no database at {missing}"):
        Store.open_readonly(missing)
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(StoreError, match="holds no gateway state"):
        Store.open_readonly(empty)


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    """Using a Store after close() is a StoreError, not a sqlite3 ProgrammingError."""
    store = Store.open(tmp_path)
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.load()
    with pytest.raises(StoreError, match="is closed"):
        store.checkpoint({}, 0)


def test_without_a_checkpoint_saved_at_is_the_earliest_channel_time(store: Store) -> None:
    """Channels saved only by resets report the earliest of their times as saved_at."""
    reset(store, "main", main_with_peak(), "00:30:00")
    gas = Channel(GAS, at("00:00:00"))
    reset(store, "gas", gas, "00:20:00")
    saved = store.load()
    assert saved is not None and saved.saved_at == at("00:20:00")
    store.checkpoint({"gas": (GAS, gas.state())}, at("00:40:00"))
    saved = store.load()
    assert saved is not None and saved.saved_at == at("00:40:00")


def test_source_baselines_are_saved_with_the_state_exactly(tmp_path: Path) -> None:
    """A u64 counter and a float meter total come back exactly, with the checkpoint."""
    channel = main_with_peak()
    with Store.open(tmp_path) as store:
        store.checkpoint(
            {"main": (channel.rules, channel.state()), "gas": (channel.rules, channel.state())},
            at("00:10:00"),
            {"main": 2**64 - 1, "gas": 1234567.75, "gone": 5},  # "gone" has no state: ignored
        )
    with Store.open(tmp_path) as store:
        saved = store.load()
    assert saved is not None
    assert saved.baselines == {"main": 2**64 - 1, "gas": 1234567.75}
    assert isinstance(saved.baselines["main"], int) and isinstance(saved.baselines["gas"], float)


def test_a_version_1_database_is_upgraded_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database written before source baselines and billing periods existed opens, upgrades
    and keeps its state; its open period starts at its last event, from today's consumption."""
    channel = main_with_peak()
    state = channel.state()
    with monkeypatch.context() as old:
        old.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
        old.setattr(store_module, "SCHEMA_VERSION", 1)
        with Store.open(tmp_path):
            pass
    # the rows as version 1 wrote them: the state's first 19 columns
    conn = raw(tmp_path)
    v1_fields = ChannelState._fields[:19]
    with conn:
        conn.execute(
            "INSERT INTO channels VALUES ('main', 'kWh', ?, ?, ?, ?, ?, 0)",
            (
                channel.rules.scale_factor,
                channel.rules.window,
                channel.rules.slide,
                float(channel.rules.initial_reading),
                channel.rules.reset_lockout,
            ),
        )
        row = [getattr(state, name) for name in v1_fields]
        row[v1_fields.index("window_intervals")] = json.dumps(list(state.window_intervals))
        conn.execute(
            f"INSERT INTO channel_state (channel, {', '.join(v1_fields)})"
            f" VALUES ('main'{', ?' * len(v1_fields)})",
            row,
        )
        conn.execute("INSERT INTO checkpoint VALUES (1, ?)", (at("00:10:00"),))
    conn.close()
    assert raw(tmp_path).execute("PRAGMA user_version").fetchone()[0] == 1
    with Store.open(tmp_path) as store:
        saved = store.load()
    expected = state._replace(
        period_start=state.now if state.last_reset is None else state.last_reset,
        period_base=channel.consumption,
        previous_period=0.0,
        schedule_next=NEVER,
    )
    assert saved is not None and saved.channels["main"].state == expected
    assert saved.baselines == {}
    assert raw(tmp_path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_checkpoint_writes_only_what_changed_since_the_last(tmp_path: Path) -> None:
    """Unchanged channels cost no statement; a changed one is written and read back exactly."""
    channel = main_with_peak()
    other = main_with_peak()
    with Store.open(tmp_path) as store:
        states = {"a": (channel.rules, channel.state()), "b": (other.rules, other.state())}
        store.checkpoint(states, at("00:10:00"), {"a": 7})
        conn = store._connection()
        before = conn.total_changes
        store.checkpoint(states, at("00:10:01"), {"a": 7})
        assert conn.total_changes - before == 1  # the checkpoint instant only
        other.pulses(other.now, 1)
        store.checkpoint({**states, "b": (other.rules, other.state())}, at("00:11:00"), {"a": 8})
        assert conn.total_changes - before == 1 + 3  # b's state, a's baseline, the instant
    with Store.open(tmp_path) as store:
        saved = store.load()
    assert saved is not None and saved.channels["b"].state == other.state()
    assert saved.baselines == {"a": 8}


def test_a_checkpoint_taken_before_a_reset_never_overwrites_it(tmp_path: Path) -> None:
    """The service takes a checkpoint on the loop and writes it from a thread: a reset saved
    in between stays saved (state and baseline), and the other channels are written."""
    channel, other = main_with_peak(), main_with_peak()
    with Store.open(tmp_path) as store:
        taken = store.generation
        stale = {"main": (channel.rules, channel.state()), "b": (other.rules, other.state())}
        run_to(channel, at("00:20:00"))
        outcome = channel.reset(at("00:20:00"))
        store.record_reset("main", outcome, "bms", (channel.rules, channel.state()), {"main": 41})
        other.pulses(other.now, 3)
        newer_b = (other.rules, other.state())
        store.checkpoint({**stale, "b": newer_b}, at("00:20:00"), {"main": 40, "b": 9}, taken=taken)
        saved = store.load()
        assert saved is not None
        assert saved.channels["main"].state == channel.state()  # the reset, not the stale one
        assert saved.channels["main"].state.reset_count == 1
        assert saved.channels["b"].state == newer_b[1]
        assert saved.baselines == {"main": 41, "b": 9}
        # taken after the reset, the next checkpoint writes the channel as usual
        channel.pulses(channel.now, 2)
        store.checkpoint(
            {"main": (channel.rules, channel.state())},
            at("00:20:01"),
            {"main": 43},
            taken=store.generation,
        )
        saved = store.load()
        assert saved is not None and saved.channels["main"].state == channel.state()
        assert saved.baselines["main"] == 43


def test_a_reset_saves_the_channels_baselines_with_their_state(tmp_path: Path) -> None:
    """The state saved by a reset counts every pulse up to it; an older baseline left beside
    it would count the pulses since the last checkpoint a second time after a crash."""
    channel = main_with_peak()
    with Store.open(tmp_path) as store:
        store.checkpoint({"main": (channel.rules, channel.state())}, at("00:20:00"), {"main": 10})
        channel.pulses(at("00:20:00"), 4)
        outcome = channel.reset(at("00:20:00"))
        store.record_reset(
            "main", outcome, "bms", (channel.rules, channel.state()), {"main": 14, "x": 1}
        )
    with Store.open(tmp_path) as store:
        saved = store.load()
    assert saved is not None
    assert saved.channels["main"].state.pulses_total == channel.pulses_total
    assert saved.baselines == {"main": 14}  # "x" has no state here: not saved


def test_baselines_read_from_another_register_are_dropped_in_one_step(tmp_path: Path) -> None:
    """bind_baselines keeps a baseline whose reading is unchanged or was never recorded, and
    deletes one recorded for another device or register; a checkpoint taken before the
    binding never writes the deleted one back."""
    channel = main_with_peak()
    state = (channel.rules, channel.state())
    same, moved = "tcp 127.0.0.1:502 socket unit 1 holding 0 u32 big counter", "holding 2"
    with Store.open(tmp_path) as store:
        store.checkpoint({c: state for c in "abcd"}, at("00:20:00"), {"a": 1, "b": 2, "c": 3})
        assert store.bind_baselines({"a": same, "b": same}) == []  # c: no reading now, no record
        taken = store.generation
        assert store.bind_baselines({"a": same, "b": moved, "d": same}) == ["b"]
        assert store.load().baselines == {"a": 1, "c": 3}  # type: ignore[union-attr]
        store.checkpoint({c: state for c in "abcd"}, at("00:20:01"), {"a": 1, "b": 2}, taken=taken)
        assert store.load().baselines == {"a": 1, "c": 3}  # type: ignore[union-attr]
        store.checkpoint({"b": state}, at("00:20:02"), {"b": 7}, taken=store.generation)
        assert store.bind_baselines({"a": same, "b": moved}) == []
    with Store.open(tmp_path) as store:
        assert store.load().baselines == {"a": 1, "b": 7, "c": 3}  # type: ignore[union-attr]
        assert store.bind_baselines({}) == ["a", "b"]  # c was never recorded: kept
