"""ReadRange (135 clause 15.8) over a trend log's records: which records, and the answer's bytes.

Pure: no bacpypes3 objects, no I/O. ``gateway.bacnet.trendlog`` reads the records from SQLite
and ``GatewayApplication.do_ReadRangeRequest`` (``app.py``) sends the answer.

Every form comes down to a window of sequence numbers. A log holds the contiguous numbers
``first..last`` (``gateway.store_intervals.LogExtent``), so:

- **by position** ``(index, count)``: position p is number ``first + p - 1``;
- **by sequence number** ``(number, count)``: as given;
- **by time** ``(time, count)``: count > 0 starts at the oldest record newer than the time,
  count < 0 ends at the newest record older than it (both strictly, 15.8.1.1.4.1.3); the
  caller finds that record's number;
- **no range**: every record, as by position from 1.

Then ``count > 0`` asks for ``count`` records from the reference on, ``count < 0`` for ``-count``
records up to and including it, both cut to what the log holds. A window with nothing in it is
answered with no items (flags all false, no first-sequence-number): that is how a client
polling by sequence number learns that nothing new has come. When the records asked for do not
all fit the client's max-APDU, the answer keeps those nearest the reference (the first ones for
a positive count, the last ones for a negative count) and sets more-items, so a client reading
backwards continues from the first number it got.

A record (BACnetLogRecord, 12.25.15) is encoded as its timestamp (local date and time), its
datum as a REAL, and its status flags (fault for an estimated record): 22 octets, always, which
is what lets the answer be sized by arithmetic instead of by trial.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime

READ_RANGE = 26  # BACnetConfirmedServiceChoice readRange
LOG_BUFFER = 131  # BACnetPropertyIdentifier log-buffer
RECORD_OCTETS = 22  # one encoded log record (see encode_record)
# the ACK without its items and counts: object id (5), property id log-buffer (2), result
# flags (3), item-data open and close (2); then item count (2-4) and, by sequence number or by
# time, the first sequence number (2-5, counted at its largest)
ACK_FIXED = 5 + 2 + 3 + 2
SEQUENCE_NUMBER_OCTETS = 5

_REAL = struct.Struct(">f")


@dataclass(frozen=True, slots=True)
class Window:
    """Sequence numbers ``low..high`` to answer (none when low > high) and the result flags."""

    low: int
    high: int
    first_item: bool  # the answer holds the log's oldest record
    last_item: bool  # ... its newest record
    more_items: bool  # records that matched the request were left out to fit the APDU

    @property
    def count(self) -> int:
        return max(0, self.high - self.low + 1)


def window(reference: int, count: int, first: int, last: int, room: int) -> Window:
    """The records ``count`` asks for from ``reference`` (a sequence number) of a log that holds
    ``first..last``, at most ``room`` of them (module docstring). ``count`` is never 0."""
    if count > 0:
        low, high = max(reference, first), min(reference + count - 1, last)
    else:
        low, high = max(reference + count + 1, first), min(reference, last)
    if low > high:
        return Window(1, 0, False, False, False)
    more = high - low + 1 > room
    if more:
        if count > 0:
            high = low + room - 1
        else:
            low = high - room + 1
    if low > high:  # no room at all: nothing fits, but something matched
        return Window(1, 0, False, False, True)
    return Window(low, high, low == first, high == last, more)


def room_for(capacity: int, numbered: bool) -> int:
    """How many records fit in an ACK of ``capacity`` service-data octets (``numbered``: it
    carries a first-sequence-number)."""
    fixed = ACK_FIXED + (SEQUENCE_NUMBER_OCTETS if numbered else 0)
    room = max(0, (capacity - fixed - 2) // RECORD_OCTETS)
    while room and fixed + len(_context_unsigned(4, room)) + room * RECORD_OCTETS > capacity:
        room -= 1
    return room


def encode_record(local: datetime, value: float, fault: bool) -> bytes:
    """One BACnetLogRecord: [0] date-time, [1] real-value (choice [2]), [2] status-flags."""
    stamp = bytes(
        (
            0x0E,  # [0] open: BACnetDateTime
            0xA4,  # Date (application tag 10, 4 octets): year - 1900, month, day, weekday
            local.year - 1900,
            local.month,
            local.day,
            local.isoweekday(),  # 1 = Monday ... 7 = Sunday, as BACnet counts
            0xB4,  # Time (application tag 11, 4 octets): hour, minute, second, hundredths
            local.hour,
            local.minute,
            local.second,
            local.microsecond // 10_000,
            0x0F,  # [0] close
            0x1E,  # [1] open: the log datum
            0x2C,  # [2] real-value, 4 octets
        )
    )
    # [1] close; [2] status-flags: a bit string of 4 bits (4 unused), fault is the second
    flags = b"\x1f\x2a\x04\x40" if fault else b"\x1f\x2a\x04\x00"
    return stamp + _REAL.pack(value) + flags


def _context_unsigned(tag: int, value: int) -> bytes:
    data = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return bytes((tag << 4 | 0x08 | len(data),)) + data


def encode_ack(
    object_type: int,
    instance: int,
    result: Window,
    items: bytes,
    first_sequence: int | None,
) -> bytes:
    """The ReadRange-ACK service data (15.8.1.2) for the log-buffer of a trend log."""
    flags = result.first_item << 7 | result.last_item << 6 | result.more_items << 5
    data = (
        b"\x0c"
        + struct.pack(">I", object_type << 22 | instance)
        + _context_unsigned(1, LOG_BUFFER)
        + bytes((0x3A, 0x05, flags))  # [3] result-flags: 3 bits, 5 unused
        + _context_unsigned(4, result.count)
        + b"\x5e"
        + items
        + b"\x5f"
    )
    if first_sequence is not None and result.count:
        data += _context_unsigned(6, first_sequence)
    return data
