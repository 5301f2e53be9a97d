"""Trend logs over the interval records, read by an independent client (bac-py) with ReadRange.

The state database is written before the gateway starts, in two lives of the store (a
restart), with estimated records, a record written twice, pruning, and the night Europe/Berlin
leaves summer time (2025-10-26, 03:00 CEST -> 02:00 CET: local 02:00-02:59 happens twice).
Every answer is compared with a table worked out by hand below. docs/reference/bacnet.md,
"Trend logs", is the contract.
"""

from __future__ import annotations

import sqlite3
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bac_py.services.errors import BACnetError, BACnetRejectError
from bac_py.services.read_range import (
    RangeByPosition,
    RangeBySequenceNumber,
    RangeByTime,
)
from bac_py.types.enums import ErrorCode, ObjectType, PropertyIdentifier, RejectReason
from bac_py.types.primitives import BACnetDate, BACnetTime, ObjectIdentifier

from gateway.core import IntervalRecord
from gateway.store import Store
from gateway.store_intervals import IntervalLog
from tests.bacnet_support import Rig, rig

pytestmark = pytest.mark.asyncio

BERLIN = "Europe/Berlin"
MINUTE = 60_000_000


def at(text: str) -> int:
    """A UTC instant in µs from 'YYYY-MM-DD HH:MM'."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000


# e's records: (sequence number, end in UTC, estimated). Consumption reading 1000 + 2.5 x seq,
# average demand 10 x seq + 0.5 (both exact as REALs).
E_RECORDS = [
    (1, "2025-10-25 23:30", False),
    (2, "2025-10-25 23:45", False),
    (3, "2025-10-26 00:00", True),  # counting began inside it
    (4, "2025-10-26 00:15", False),
    (5, "2025-10-26 00:30", False),
    (6, "2025-10-26 00:45", False),
    # the store is closed and opened again here: a restart
    (7, "2025-10-26 01:00", False),
    (8, "2025-10-26 01:15", False),
    (9, "2025-10-26 01:45", True),  # a lump after a 30-minute gap
    (10, "2025-10-26 02:00", False),
    (11, "2025-10-26 02:15", False),
    (12, "2025-10-26 02:30", False),
]
PRUNED_BEFORE = "2025-10-26 00:15"  # records 1-3 are pruned; 4-12 stay, numbered as they were
REWRITTEN_DEMAND = 99.5  # record 10 is written again with this demand: it keeps number 10

# What the consumption log (trend-log 101) holds, by hand: Berlin local wall time (CEST, UTC+2,
# until 01:00 UTC; CET, UTC+1, after), the reading, fault for an estimated record.
HELD = {
    4: ("2025-10-26 02:15", 1010.0, False),
    5: ("2025-10-26 02:30", 1012.5, False),
    6: ("2025-10-26 02:45", 1015.0, False),
    7: ("2025-10-26 02:00", 1017.5, False),  # the repeated hour, in CET
    8: ("2025-10-26 02:15", 1020.0, False),
    9: ("2025-10-26 02:45", 1022.5, True),
    10: ("2025-10-26 03:00", 1025.0, False),
    11: ("2025-10-26 03:15", 1027.5, False),
    12: ("2025-10-26 03:30", 1030.0, False),
}
W_ENDS = ["2025-10-25 22:00", "2025-10-25 22:15", "2025-10-25 22:30"]  # all pruned later


def record(channel: str, seq: int, end: str, estimated: bool, demand: float | None = None) -> Any:
    end_us = at(end)
    return IntervalRecord(
        channel,
        end_us,
        end_us - 15 * MINUTE,
        5,
        2.5,
        10 * seq + 0.5 if demand is None else demand,
        estimated,
        5 * seq,
        1000 + 2.5 * seq,
    )


def save(state: Path, records: list[Any]) -> None:
    """Write records as the checkpoint does (``IntervalLog._save_intervals``), in one life."""
    store = Store.open(state)
    store.close()
    conn = sqlite3.connect(state / "gateway.db")
    with conn:
        IntervalLog._save_intervals(conn, records)
    conn.close()


def write_history(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    first = [record("e", s, end, est) for s, end, est in E_RECORDS[:6]]
    first += [record("w", k + 1, end, False) for k, end in enumerate(W_ENDS)]
    save(state, first)
    save(state, [record("e", s, end, est) for s, end, est in E_RECORDS[6:]])
    store = Store.open(state)
    assert store.prune_intervals(at(PRUNED_BEFORE)) == 3 + 3
    store.close()
    s, end, est = E_RECORDS[9]
    save(state, [record("e", s, end, est, demand=REWRITTEN_DEMAND)])


def log_id(instance: int) -> ObjectIdentifier:
    return ObjectIdentifier(ObjectType.TREND_LOG, instance)


def decode_records(data: bytes) -> list[tuple[str, float, bool]]:
    """(local time 'YYYY-MM-DD HH:MM', value, fault) of each BACnetLogRecord in item data."""
    found = []
    k = 0
    while k < len(data):
        assert data[k] == 0x0E and data[k + 1] == 0xA4 and data[k + 6] == 0xB4, data[k:].hex()
        year, month, day, weekday = data[k + 2 : k + 6]
        hour, minute, second, hundredths = data[k + 7 : k + 11]
        stamp = datetime(year + 1900, month, day, hour, minute, second)
        assert weekday == stamp.isoweekday() and second == hundredths == 0
        assert data[k + 11 : k + 14] == b"\x0f\x1e\x2c"
        (value,) = struct.unpack(">f", data[k + 14 : k + 18])
        assert data[k + 18 : k + 21] == b"\x1f\x2a\x04"
        flags = data[k + 21]
        assert flags in (0x00, 0x40)
        found.append((stamp.strftime("%Y-%m-%d %H:%M"), value, flags == 0x40))
        k += 22
    return found


async def read_range(r: Rig, instance: int, qualifier: Any = None) -> Any:
    return await r.client.read_range(
        r.address, log_id(instance), PropertyIdentifier.LOG_BUFFER, range_qualifier=qualifier
    )


def flags(ack: Any) -> tuple[bool, bool, bool]:
    f = ack.result_flags
    return (f.first_item, f.last_item, f.more_items)


def expected(seqs: range | list[int]) -> list[tuple[str, float, bool]]:
    return [HELD[s] for s in seqs]


def by_time(local: str, count: int) -> RangeByTime:
    moment = datetime.fromisoformat(local)
    return RangeByTime(
        reference_date=BACnetDate(moment.year, moment.month, moment.day, moment.isoweekday()),
        reference_time=BACnetTime(moment.hour, moment.minute, 0, 0),
        count=count,
    )


async def test_every_readrange_form_answers_the_records_worked_out_by_hand(
    tmp_path: Path,
) -> None:
    """Positions, sequence numbers and times, both count signs and no range, over a log with
    pruned records, a restart, E records, a rewritten record and the autumn DST change."""
    write_history(tmp_path)
    async with rig(tmp_path, timezone=BERLIN) as r:
        assert await r.read("trend-log,101", "record-count") == 9
        assert await r.read("trend-log,101", "total-record-count") == 12
        assert await r.read("trend-log,102", "total-record-count") == 12
        assert await r.read("trend-log,201", "record-count") == 0  # w: all pruned
        assert await r.read("trend-log,201", "total-record-count") == 3

        cases: list[tuple[Any, list[int], tuple[bool, bool, bool], int | None]] = [
            (None, list(range(4, 13)), (True, True, False), None),
            (RangeByPosition(1, 3), [4, 5, 6], (True, False, False), None),
            (RangeByPosition(9, -2), [11, 12], (False, True, False), None),
            (RangeByPosition(5, 100), [8, 9, 10, 11, 12], (False, True, False), None),
            (RangeByPosition(20, 5), [], (False, False, False), None),
            (RangeBySequenceNumber(10, 10), [10, 11, 12], (False, True, False), 10),
            (RangeBySequenceNumber(13, 10), [], (False, False, False), None),  # nothing new
            (RangeBySequenceNumber(2, 3), [4], (True, False, False), 4),  # 2 and 3 are pruned
            (RangeBySequenceNumber(6, -3), [4, 5, 6], (True, False, False), 4),
            (RangeBySequenceNumber(1, -5), [], (False, False, False), None),
            # 02:15 is taken at its first occurrence (CEST, 00:15Z); strictly newer: 00:30Z on
            (by_time("2025-10-26 02:15", 3), [5, 6, 7], (False, False, False), 5),
            # strictly older than 02:20 CEST (00:20Z): record 4, the oldest held
            (by_time("2025-10-26 02:20", -2), [4], (True, False, False), 4),
            # 03:10 happens once (CET, 02:10Z): the three records ending before it
            (by_time("2025-10-26 03:10", -3), [8, 9, 10], (False, False, False), 8),
            (by_time("2025-10-27 00:00", 5), [], (False, False, False), None),
            (by_time("2025-10-27 00:00", -1), [12], (False, True, False), 12),
        ]
        for qualifier, seqs, want_flags, first in cases:
            ack = await read_range(r, 101, qualifier)
            assert decode_records(ack.item_data) == expected(seqs), qualifier
            assert ack.item_count == len(seqs), qualifier
            assert flags(ack) == want_flags, qualifier
            assert ack.first_sequence_number == first, qualifier

        # the demand log: the average demand over each interval; 10 was rewritten, kept its number
        ack = await read_range(r, 102, RangeBySequenceNumber(9, 2))
        assert decode_records(ack.item_data) == [
            ("2025-10-26 02:45", 90.5, True),
            ("2025-10-26 03:00", REWRITTEN_DEMAND, False),
        ]
        assert ack.first_sequence_number == 9

        empty = await read_range(r, 201, None)
        assert empty.item_count == 0 and flags(empty) == (False, False, False)


async def test_the_trend_log_properties(tmp_path: Path) -> None:
    """The standard's required properties, and the logged object and interval of the contract."""
    write_history(tmp_path)
    async with rig(tmp_path, timezone=BERLIN) as r:
        assert await r.read("trend-log,101", "object-name") == "e.consumption_log"
        assert await r.read("trend-log,102", "object-name") == "e.demand_log"
        assert await r.read("trend-log,101", "log-interval") == 90_000  # 15 min in 1/100 s
        assert await r.read("trend-log,101", "enable") is True
        assert await r.read("trend-log,101", "stop-when-full") is False
        assert await r.read("trend-log,101", "logging-type") == 0  # polled
        assert await r.read("trend-log,101", "event-state") == 0  # normal
        assert await r.read("trend-log,101", "buffer-size") == 400 * 96  # 400 days retention
        flags_ = await r.read("trend-log,101", "status-flags")
        assert [int(flags_[i]) for i in range(4)] == [0, 0, 0, 0]
        ack = await r.client.read_property(
            r.address, log_id(102), PropertyIdentifier.LOG_DEVICE_OBJECT_PROPERTY
        )
        # [0] analog-input 102, [1] present-value (85): a reference to a property of this device
        assert bytes(ack.property_value) == b"\x0c" + struct.pack(">I", 0 << 22 | 102) + b"\x19\x55"
        listed = set(await r.read("trend-log,101", "property-list"))
        for prop in (
            PropertyIdentifier.LOG_ENABLE,  # enable (133)
            PropertyIdentifier.STATUS_FLAGS,
            PropertyIdentifier.EVENT_STATE,
            PropertyIdentifier.STOP_WHEN_FULL,
            PropertyIdentifier.BUFFER_SIZE,
            PropertyIdentifier.LOG_BUFFER,
            PropertyIdentifier.RECORD_COUNT,
            PropertyIdentifier.TOTAL_RECORD_COUNT,
            PropertyIdentifier.LOGGING_TYPE,
            PropertyIdentifier.LOG_INTERVAL,
            PropertyIdentifier.LOG_DEVICE_OBJECT_PROPERTY,
            PropertyIdentifier.RELIABILITY,
        ):
            assert prop in listed, prop
        with pytest.raises(BACnetError) as caught:
            await r.read("trend-log,101", "log-buffer")
        assert caught.value.error_code == ErrorCode.READ_ACCESS_DENIED
        device_types = await r.read("device,1001", "protocol-object-types-supported")
        assert device_types[20]  # trend-log
        services = await r.read("device,1001", "protocol-services-supported")
        assert services[35]  # readRange


async def test_bad_readrange_requests_get_an_error_or_a_reject(tmp_path: Path) -> None:
    """Unknown object, wrong object or property, count 0, position 0, array index."""
    write_history(tmp_path)
    async with rig(tmp_path, timezone=BERLIN) as r:

        async def error(objid: Any, prop: PropertyIdentifier, **kw: Any) -> ErrorCode:
            with pytest.raises(BACnetError) as caught:
                await r.client.read_range(r.address, objid, prop, **kw)
            return caught.value.error_code

        async def reject(qualifier: Any) -> RejectReason:
            with pytest.raises(BACnetRejectError) as caught:
                await read_range(r, 101, qualifier)
            return caught.value.reason

        logbuf = PropertyIdentifier.LOG_BUFFER
        assert await error(log_id(999), logbuf) == ErrorCode.UNKNOWN_OBJECT
        ai = ObjectIdentifier(ObjectType.ANALOG_INPUT, 101)
        assert await error(ai, logbuf) == ErrorCode.UNKNOWN_PROPERTY  # wrong object type
        pv = PropertyIdentifier.PRESENT_VALUE
        assert await error(ai, pv) == ErrorCode.PROPERTY_IS_NOT_A_LIST
        device = ObjectIdentifier(ObjectType.DEVICE, 1001)
        assert await error(device, PropertyIdentifier.OBJECT_LIST) == (
            ErrorCode.PROPERTY_IS_NOT_A_LIST
        )
        assert await error(log_id(101), PropertyIdentifier.RECORD_COUNT) == (
            ErrorCode.PROPERTY_IS_NOT_A_LIST
        )
        assert await error(log_id(101), logbuf, array_index=1) == (
            ErrorCode.PROPERTY_IS_NOT_AN_ARRAY
        )
        assert await reject(RangeByPosition(1, 0)) == RejectReason.PARAMETER_OUT_OF_RANGE
        assert await reject(RangeBySequenceNumber(5, 0)) == RejectReason.PARAMETER_OUT_OF_RANGE
        assert await reject(by_time("2025-10-26 03:10", 0)) == (RejectReason.PARAMETER_OUT_OF_RANGE)
        assert await reject(RangeByPosition(0, 5)) == RejectReason.PARAMETER_OUT_OF_RANGE
        # the server still answers after all that
        assert (await read_range(r, 101, RangeByPosition(1, 1))).item_count == 1


async def test_a_replayed_history_is_the_state_a_new_gateway_starts_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``replay --db`` into the state directory, then a gateway on it: the replayed records are
    in the trend logs (numbered from 1), in the export, and the gateway goes on from there."""
    from gateway.cli import main

    case = Path(__file__).parent / "golden" / "shared-replay-edges"
    state = tmp_path / "state"
    state.mkdir()
    db = state / "gateway.db"
    argv = ["replay", "-c", str(case / "config.yaml"), str(case / "events.csv"), "--db", str(db)]
    assert main(argv) == 0
    capsys.readouterr()
    channels = (
        "  - {id: main, unit: kWh, scale_factor: 0.5, demand_window: 10min, demand_slide: 5min,\n"
        "     initial_reading: 1000, reset_lockout: 15min,\n"
        "     source: {id: sim, rate: 0.001, mode: constant}}\n"
    )
    # the gateway starts two hours after the log's end: an outage, as after any stop
    async with rig(tmp_path, channels=channels, wall_us=at("2026-03-01 03:00")) as r:
        assert await r.read("trend-log,101", "record-count") == 3
        assert await r.read("trend-log,101", "total-record-count") == 3
        ack = await read_range(r, 101, RangeBySequenceNumber(1, 10))
        # worked by hand in tests/test_replay_cli.py: 12.5, 1.5 and 23 kWh from 1000 kWh
        assert decode_records(ack.item_data) == [
            ("2026-03-01 00:15", 1012.5, False),
            ("2026-03-01 00:30", 1014.0, True),
            ("2026-03-01 00:45", 1037.0, True),
        ]
        assert flags(ack) == (True, True, False) and ack.first_sequence_number == 1
        demand = await read_range(r, 102, None)
        assert [v for _, v, _ in decode_records(demand.item_data)] == [50.0, 6.0, 92.0]
    export = [
        "export", "--db", str(db), "--format", "energycap3", "--value", "consumption",
        "--from", "2026-03-01", "--to", "2026-03-01",
    ]  # fmt: skip
    capsys.readouterr()
    assert main(export) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 1 + 3  # the header and the three replayed records


CONFIG = """\
gateway: {name: site, state_dir: /tmp/site-state}
bacnet: {address: 127.0.0.1/8, port: 47808, device_instance: 7}
sources:
  - {id: sim, type: simulated}
channels:
  - {id: a, unit: kWh, scale_factor: 1, demand_window: 15min, demand_slide: 5min,
     source: {id: sim, rate: 1}}
  - {id: b, unit: kWh, scale_factor: 1, demand_window: 15min, demand_slide: 5min,
     trend_log: TREND, source: {id: sim, rate: 1}}
"""


async def test_trend_log_false_leaves_the_channel_without_trend_logs() -> None:
    """``trend_log: false`` per channel: no trend-log points, a smaller count, said by check."""
    from gateway.bacnet.points import channel_points
    from gateway.config import ConfigError, parse_config

    config = parse_config(CONFIG.replace("TREND", "false"), purpose="run")
    a, b = config.channels
    assert a.trend_log and not b.trend_log
    assert [(p.object_type, p.instance, p.name) for p in channel_points(a)][-2:] == [
        ("trend-log", 101, "a.consumption_log"),
        ("trend-log", 102, "a.demand_log"),
    ]
    assert all(p.object_type != "trend-log" for p in channel_points(b))
    assert config.bacnet_object_count == 1 + 12 + 10 + 1 + 1
    summary = config.summary().splitlines()
    assert summary[0].startswith("OK <config>: 2 channels, 1 source, 25 BACnet objects")
    assert [line for line in summary if "no trend logs" in line] == [
        next(line for line in summary if line.startswith("  channel b:"))
    ]
    assert parse_config(CONFIG.replace("TREND", "true"), purpose="run").channels[1].trend_log
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.replace("TREND", "maybe"), purpose="run")
    assert "<config>:9:" in str(caught.value) and "expected true or false" in str(caught.value)


async def test_a_reload_adds_and_removes_the_trend_logs(tmp_path: Path) -> None:
    """trend_log false then true again, by reload: objects go and come, database-revision moves."""
    import dataclasses

    async with rig(tmp_path) as r:
        e = r.server.links["e"].config
        revision = await r.read("device,1001", "database-revision")
        await r.server.reconfigure([dataclasses.replace(e, trend_log=False)])
        with pytest.raises(BACnetError) as caught:
            await r.read("trend-log,101", "object-name")
        assert caught.value.error_code == ErrorCode.UNKNOWN_OBJECT
        assert await r.read("device,1001", "database-revision") == revision + 1
        await r.server.reconfigure([dataclasses.replace(e, interval=30 * MINUTE)])
        assert await r.read("trend-log,101", "log-interval") == 180_000
        assert await r.read("trend-log,102", "object-name") == "e.demand_log"
