"""Trend logs over the interval records: the objects, and ReadRange answered from SQLite.

Each channel (unless its config says ``trend_log: false``) has two trend-log objects
(docs/reference/bacnet.md, "Trend logs"): base+1 ``{id}.consumption_log`` (each record: the
consumption reading at an interval end) and base+2 ``{id}.demand_log`` (the average demand over
the interval). Their records are the channel's interval records
(``gateway.store_intervals``), numbered by the store once and for ever (schema migration 6),
and read from the database when a client asks: nothing of the history is kept in memory, and a
record the store writes is in the logs at once.

- record-count and total-record-count are read from the database on every read (two index
  seeks), like the analog inputs' values from the engine;
- log-buffer answers ReadProperty with Error property / read-access-denied: it is read with
  ReadRange only (12.25.15), which ``GatewayApplication.do_ReadRangeRequest`` serves through
  :meth:`TrendLogs.read_range`;
- a database that cannot be read shows as status-flags fault, reliability unreliable-other,
  and a ReadRange answers Error device / operational-problem.

Timestamps are the gateway's local wall-clock time (the timezone the database records, from
``gateway.timezone``), daylight saving included, as BACnet devices keep time: the autumn's
repeated hour shows twice. A by-time reference is a local time too; one that occurs twice is
taken at its first occurrence, one in the spring gap with the offset before the change
(``gateway.export.localtime``).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bacpypes3.basetypes import (
    DeviceObjectPropertyReference,
    LoggingType,
    PropertyIdentifier,
    Reliability,
)
from bacpypes3.errors import ExecutionError, ParameterOutOfRange, PropertyError
from bacpypes3.local.object import Object as LocalObject
from bacpypes3.object import TrendLogObject
from bacpypes3.primitivedata import CharacterString, ObjectIdentifier, ObjectType, Unsigned

from gateway.bacnet.objects import (
    NO_FAULT,
    UNRELIABLE_OTHER,
    ChannelLink,
    GatewayObject,
    LiveStatus,
    _template,
    identity,
)
from gateway.bacnet.points import Measure, Point
from gateway.bacnet.readrange import encode_ack, encode_record, room_for, window
from gateway.export.localtime import local_time, local_to_instant
from gateway.store_intervals import IntervalSequence, LogExtent
from gateway.store_schema import StoreError

if TYPE_CHECKING:
    from gateway.core import Span

TREND_LOG = 20  # BACnetObjectType trend-log
DEFAULT_RETENTION_US = 400 * 86_400 * 1_000_000  # gateway.interval_retention's default
_UNSIGNED32 = 2**32 - 1
_LOGS = {Measure.CONSUMPTION: "consumption", Measure.DEMAND: "demand"}
_EMPTY = LogExtent(1, 0, 0)


class TrendLogs:
    """What the trend-log objects share: the reader of the interval records, by number.

    ``records`` None (a server without a database, as the standalone benchmark server) gives
    logs that hold nothing.
    """

    def __init__(
        self, records: IntervalSequence | None, retention: Span = DEFAULT_RETENTION_US
    ) -> None:
        self.records = records
        self.retention = retention

    def close(self) -> None:
        if self.records is not None:
            self.records.close()

    def extent(self, channel: str) -> LogExtent:
        """The numbers the channel's log holds; StoreError if the database cannot be read."""
        if self.records is None:
            return _EMPTY
        return self.records.read(lambda conn: IntervalSequence.extent(conn, channel))

    def read_range(
        self,
        channel: str,
        measure: Measure,
        instance: int,
        form: str,
        reference: Any,
        count: int,
        capacity: int,
    ) -> bytes:
        """The ReadRange-ACK service data for the log-buffer of trend-log ``instance``, the log
        of ``measure`` over ``channel``'s records (``gateway.bacnet.readrange``).

        ``form`` is ``all``, ``position``, ``sequence`` or ``time`` (``reference`` a naive local
        datetime); ``count`` is not 0; ``capacity`` is the service-data octets the client takes.
        """
        column = _LOGS[measure]
        numbered = form in ("sequence", "time")
        room = room_for(capacity, numbered)

        def answer(conn: sqlite3.Connection) -> bytes:
            extent = IntervalSequence.extent(conn, channel)
            zone = _zone(conn)
            if form == "all":
                start, wanted = extent.first, max(extent.held, 1)
            elif form == "position":
                start, wanted = extent.first + reference - 1, count
            elif form == "sequence":
                start, wanted = reference, count
            else:
                instant = local_to_instant(reference, zone, dst=True)
                found = (
                    IntervalSequence.first_after(conn, channel, instant)
                    if count > 0
                    else IntervalSequence.last_before(conn, channel, instant)
                )
                start, wanted = (found, count) if found is not None else (extent.last + 1, 1)
            result = window(start, wanted, extent.first, extent.last, room)
            rows = (
                IntervalSequence.records(conn, channel, result.low, result.high, column)
                if result.count
                else []
            )
            if len(rows) != result.count:  # numbers are contiguous: never, unless damaged
                raise StoreError(f"the records {result.low}..{result.high} of {channel} are not")
            items = b"".join(
                encode_record(local_time(row.end, zone, dst=True), row.value, row.estimated == 1)
                for row in rows
            )
            return encode_ack(TREND_LOG, instance, result, items, result.low if numbered else None)

        if self.records is None:
            return encode_ack(TREND_LOG, instance, window(1, 1, 1, 0, room), b"", None)
        try:
            return self.records.read(answer)
        except StoreError:
            raise ExecutionError("device", "operationalProblem") from None


def _zone(conn: sqlite3.Connection) -> ZoneInfo | None:
    """The timezone the database records (None: UTC)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'timezone'").fetchone()
    if row is None or row[0] in ("UTC", "Etc/UTC"):
        return None
    try:
        return ZoneInfo(str(row[0]))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def reference_time(value: Any) -> datetime:
    """A by-time reference (BACnetDateTime) as a naive local datetime; Reject
    parameter-out-of-range for one with unspecified fields or no such date."""
    date, time = value.date, value.time
    year, month, day, _ = tuple(date)
    hour, minute, second, hundredths = tuple(time)
    if 255 in (year, month, day, hour, minute, second) or hundredths == 255:
        raise ParameterOutOfRange("a by-time reference needs a whole date and time")
    try:
        return datetime(year + 1900, month, day, hour, minute, second, hundredths * 10_000)
    except ValueError:
        raise ParameterOutOfRange("no such date or time") from None


class TrendLog(LiveStatus, GatewayObject, LocalObject, TrendLogObject):
    """``{id}.consumption_log`` and ``{id}.demand_log`` (module docstring).

    bacpypes3 has no local trend-log class: the local ``Object`` (identifier and name kept as
    its other local objects keep them, the application link) with the standard's properties,
    as ``bacpypes3.local.analog`` builds its classes.

    Per-object attributes, set by :func:`stamp_trend_log`: ``_link`` (ChannelLink),
    ``_measure`` (Measure: what is logged), ``_logs`` (TrendLogs).
    """

    def read_range(self, form: str, reference: Any, count: int, capacity: int) -> bytes:
        """The ReadRange-ACK service data for this log's log-buffer (TrendLogs.read_range)."""
        objid, _ = identity(self)
        channel = self._link.config.id
        return self._logs.read_range(
            channel, self._measure, int(objid[1]), form, reference, count, capacity
        )

    def live_extent(self) -> LogExtent | None:
        """What the log holds now; None when the database cannot be read."""
        try:
            return self._logs.extent(self._link.config.id)
        except StoreError:
            return None

    def live_reliability(self) -> Reliability:
        return NO_FAULT if self.live_extent() is not None else UNRELIABLE_OTHER

    @property
    def recordCount(self) -> Unsigned:
        extent = self.live_extent()
        return Unsigned(0 if extent is None else min(extent.held, _UNSIGNED32))

    @recordCount.setter
    def recordCount(self, value: Any) -> None:
        """Computed; assignments from the constructor are ignored."""

    @property
    def totalRecordCount(self) -> Unsigned:
        extent = self.live_extent()
        return Unsigned(0 if extent is None else min(extent.total, _UNSIGNED32))

    @totalRecordCount.setter
    def totalRecordCount(self, value: Any) -> None:
        """Computed; assignments from the constructor are ignored."""

    @property
    def logBuffer(self) -> Any:
        # 12.25.15: the log buffer is read with ReadRange only
        raise PropertyError("readAccessDenied")

    @logBuffer.setter
    def logBuffer(self, value: Any) -> None:
        """Computed; assignments from the constructor are ignored."""


def trend_log_template() -> dict[str, Any]:
    """The attribute dictionary every trend log is stamped from (needs a running loop)."""
    return _template(
        TrendLog,
        objectIdentifier=("trend-log", 1),
        objectName="prototype.log",
        description="prototype",
        eventState="normal",
        enable=True,
        stopWhenFull=False,
        bufferSize=1,
        loggingType=LoggingType("polled"),
        logInterval=90_000,
        alignIntervals=True,
        intervalOffset=0,
    )


def stamp_trend_log(
    template: dict[str, Any], point: Point, link: ChannelLink, logs: TrendLogs
) -> TrendLog:
    """The trend log for ``point`` (a channel's ``trend-log`` point)."""
    assert point.measure is not None and point.interval is not None
    obj = object.__new__(TrendLog)  # no __init__: the template holds what it would have set
    attributes = obj.__dict__
    attributes.update(template)
    attributes["_app"] = None
    attributes["_property_monitors"] = defaultdict(list)
    attributes["_Object__objectIdentifier"] = ObjectIdentifier(
        (ObjectType("trendLog"), point.instance)
    )
    attributes["_Object__objectName"] = CharacterString(point.name)
    attributes["_logs"] = logs
    update_trend_log(obj, point, link)
    return obj


def update_trend_log(obj: TrendLog, point: Point, link: ChannelLink) -> None:
    """Set what a reload may change: description, interval, buffer size, the logged object."""
    assert point.measure is not None and point.interval is not None
    attributes = obj.__dict__
    base = link.config.bacnet_instance_base
    attributes["description"] = CharacterString(point.description)
    attributes["logInterval"] = Unsigned(point.interval // 10_000)  # hundredths of a second
    # the records the retention keeps at this interval
    held = attributes["_logs"].retention // point.interval
    attributes["bufferSize"] = Unsigned(min(max(1, held), _UNSIGNED32))
    attributes["logDeviceObjectProperty"] = DeviceObjectPropertyReference(
        objectIdentifier=ObjectIdentifier((ObjectType("analogInput"), base + point.measure)),
        propertyIdentifier=PropertyIdentifier("presentValue"),
    )
    attributes["_link"] = link
    attributes["_measure"] = point.measure


def open_trend_logs(view: Any, database: Path | None, retention: Span | None) -> TrendLogs:
    """The trend logs' reader: over ``database`` if given, else over the database of the
    view's store (the gateway's ``store.path``); empty logs when there is neither."""
    if database is None:
        store = getattr(view, "store", None)
        database = getattr(store, "path", None)
    if retention is None:
        gateway = getattr(getattr(view, "config", None), "gateway", None)
        retention = getattr(gateway, "interval_retention", None) or DEFAULT_RETENTION_US
    records = IntervalSequence(Path(database)) if database is not None else None
    return TrendLogs(records, retention)


__all__ = [
    "TREND_LOG",
    "TrendLog",
    "TrendLogs",
    "open_trend_logs",
    "reference_time",
    "stamp_trend_log",
    "trend_log_template",
    "update_trend_log",
]
