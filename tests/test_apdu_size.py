"""Every reply fits the max-APDU the client declared: whole, in segments, or an Abort.

A raw-UDP client on 127.0.0.1 builds its confirmed requests octet by octet (20.1.2) and
declares a max-APDU of 50, 128, 206, 480, 1024 or 1476 octets, with or without
segmented-response-accepted (SA) and a max-segments. The limit counts the whole APDU, header
included (ComplexACK: 3 octets whole, 5 in a segment). The client acknowledges segments as a
standard client does (5.4.4: after the first, after each window, after the last) and measures
every APDU the gateway sends against what it declared.

Served by a real gateway and its BACnet server (``tests.bacnet_support.rig``): the fast path for
channel objects' common properties, bacpypes3 for the rest (the Device, anything too large).
"""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from bacpypes3.apdu import IAmRequest
from bacpypes3.pdu import Address

from tests.bacnet_support import WAIT_S, rig
from tests.helpers import free_port

pytestmark = pytest.mark.asyncio

LIMITS = (50, 128, 206, 480, 1024, 1476)  # max-APDU codes 0-5 (20.1.2.5)
DEVICE = 8  # BACnetObjectType device
ANALOG_INPUT = 0
READ_PROPERTY, READ_PROPERTY_MULTIPLE = 12, 14
OBJECT_LIST, OBJECT_NAME, DESCRIPTION, ALL = 76, 77, 28, 8
PRESENT_VALUE, STATUS_FLAGS, UNITS, OUT_OF_SERVICE = 85, 111, 117, 81
SEGMENTATION_NOT_SUPPORTED, BUFFER_OVERFLOW = 4, 1  # BACnetAbortReason
WINDOW = 16  # the client's window; the gateway proposes a smaller one
MOST_SEGMENTS = 1000  # far more than any answer here needs: a server looping would exceed it


def many_channels(count: int) -> str:
    """``count`` simulated channels (analog inputs and a reset value each)."""
    return "".join(
        f"  - {{id: c{k}, unit: kWh, scale_factor: 0.5, demand_window: 2s, demand_slide: 1s,\n"
        "     source: {id: sim, rate: 0.001, mode: constant}}\n"
        for k in range(count)
    )


# --------------------------------------------------------------------------------------------
# Requests, by hand
# --------------------------------------------------------------------------------------------


def oid(object_type: int, instance: int) -> bytes:
    return struct.pack(">I", object_type << 22 | instance)


def ctx_unsigned(tag: int, value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return bytes((tag << 4 | 0x08 | len(raw),)) + raw


def read_property(object_type: int, instance: int, prop: int) -> tuple[int, bytes]:
    """ReadProperty-Request (15.5.1.1): [0] object, [1] property."""
    return READ_PROPERTY, b"\x0c" + oid(object_type, instance) + ctx_unsigned(1, prop)


def read_multiple(specs: Sequence[tuple[int, int, Sequence[int]]]) -> tuple[int, bytes]:
    """ReadPropertyMultiple-Request (15.7.1.1): per object [0] object, [1] { [0] property... }."""
    body = b"".join(
        b"\x0c" + oid(t, i) + b"\x1e" + b"".join(ctx_unsigned(0, p) for p in props) + b"\x1f"
        for t, i, props in specs
    )
    return READ_PROPERTY_MULTIPLE, body


def datagram(apdu: bytes, *, expecting_reply: bool) -> bytes:
    """BVLC Original-Unicast-NPDU (J.2.11), NPDU version 1, no addresses (6.2)."""
    npdu = bytes((0x01, 0x04 if expecting_reply else 0x00)) + apdu
    return b"\x81\x0a" + (4 + len(npdu)).to_bytes(2, "big") + npdu


def confirmed(
    request: tuple[int, bytes],
    *,
    limit: int,
    sa: bool,
    max_segments_code: int = 7,
    invoke_id: int = 1,
) -> bytes:
    """Confirmed-Request-PDU (20.1.2), unsegmented: SA, max-segments, max-APDU, invoke ID."""
    service, body = request
    header = bytes(
        (0x02 if sa else 0x00, max_segments_code << 4 | LIMITS.index(limit), invoke_id, service)
    )
    return datagram(header + body, expecting_reply=True)


# --------------------------------------------------------------------------------------------
# The exchange
# --------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What came back: ``kind`` whole | segmented | abort | error | reject."""

    kind: str
    apdus: list[bytes] = field(default_factory=list)  # every APDU received, in order
    data: bytes = b""  # the service data (reassembled), or the abort/reject reason octet
    segments: int = 0

    @property
    def reason(self) -> int:
        assert self.kind in ("abort", "reject"), self
        return self.data[0]

    @property
    def largest(self) -> int:
        return max(len(apdu) for apdu in self.apdus)


class RawClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)

    def send(self, data: bytes, server: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, server)

    async def apdu(self) -> bytes:
        """The APDU of the next datagram: BVLC unicast, NPDU version 1 without addresses."""
        data = await asyncio.wait_for(self.queue.get(), WAIT_S)
        assert data[:2] == b"\x81\x0a" and int.from_bytes(data[2:4], "big") == len(data)
        assert data[4] == 0x01 and data[5] & 0xA8 == 0, data[:8].hex()  # no message, DNET, SNET
        return data[6:]

    async def ask(
        self, wire: bytes, server: tuple[str, int], limit: int, *, lose_first_ack: bool = False
    ) -> Reply:
        """Send one confirmed request (invoke ID in ``wire``) and read the whole answer,
        acknowledging segments; asserts that every APDU is within ``limit``. With
        ``lose_first_ack``, the first segment is acknowledged only when it comes again."""
        invoke_id = wire[8]
        self.send(wire, server)
        reply = Reply("?")
        parts: list[bytes] = []
        window = 0
        since_ack = 0
        while True:
            apdu = await self.apdu()
            reply.apdus.append(apdu)
            assert len(apdu) <= limit, f"{len(apdu)}-octet APDU to a {limit}-octet client"
            kind = apdu[0] >> 4
            assert apdu[1] == invoke_id
            if kind in (5, 6, 7):  # Error, Reject, Abort
                reply.kind = {5: "error", 6: "reject", 7: "abort"}[kind]
                reply.data = apdu[2:]
                if kind == 7:
                    assert apdu[0] & 0x01, "an Abort from the server has SRV set (20.1.9)"
                return reply
            assert kind == 3, apdu.hex()  # ComplexACK
            if not apdu[0] & 0x08:  # not segmented
                reply.kind, reply.data = "whole", apdu[3:]
                return reply
            seq, proposed, more = apdu[2], apdu[3], bool(apdu[0] & 0x04)
            assert seq == len(parts) % 256, "segments arrive in order on loopback"
            assert len(parts) < MOST_SEGMENTS, "the answer never ends"
            if not parts:
                window = min(WINDOW, proposed)
                if lose_first_ack:
                    lose_first_ack = False
                    again = await self.apdu()  # after the segment timeout (5.4.5.4)
                    assert again == apdu
                    reply.apdus.append(again)
            parts.append(apdu[5:])
            since_ack += 1
            if len(parts) == 1 or not more or since_ack >= window:
                self.send(
                    datagram(bytes((0x40, invoke_id, seq, window)), expecting_reply=False), server
                )
                since_ack = 0
            if not more:
                reply.kind, reply.data, reply.segments = "segmented", b"".join(parts), len(parts)
                return reply


@pytest_asyncio.fixture
async def client() -> AsyncIterator[RawClient]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        RawClient, local_addr=("127.0.0.1", free_port())
    )
    try:
        yield protocol
    finally:
        transport.close()


# --------------------------------------------------------------------------------------------
# Decoding the answers, by hand
# --------------------------------------------------------------------------------------------


def rp_value(data: bytes, object_type: int, instance: int, prop: int) -> bytes:
    """The value octets of a ReadProperty-ACK (15.5.1.3.1) for that object and property."""
    head = b"\x0c" + oid(object_type, instance) + ctx_unsigned(1, prop) + b"\x3e"
    assert data.startswith(head) and data.endswith(b"\x3f"), data[:16].hex()
    return data[len(head) : -1]


def object_ids(value: bytes) -> list[tuple[int, int]]:
    """A list of application-tagged BACnetObjectIdentifiers (20.2.14)."""
    assert len(value) % 5 == 0
    found = []
    for pos in range(0, len(value), 5):
        assert value[pos] == 0xC4
        raw = int.from_bytes(value[pos + 1 : pos + 5], "big")
        found.append((raw >> 22, raw & 0x3FFFFF))
    return found


def served_ids(app: object) -> set[tuple[int, int]]:
    return {(int(t), int(i)) for t, i in app.objectIdentifier}  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# A large ReadProperty: the Device's object-list
# --------------------------------------------------------------------------------------------


async def test_object_list_fits_every_max_apdu_and_reassembles(
    tmp_path: Path, client: RawClient
) -> None:
    """400 channels (thousands of objects, over 14 kB of object-list): every declared max-APDU
    gets segments within it (at 50 octets more than 256 of them, so the sequence numbers wrap),
    all reassembling to the same list; without SA the answer is Abort
    segmentation-not-supported."""
    async with rig(tmp_path, channels=many_channels(400)) as r:
        server = ("127.0.0.1", r.server.port)
        instance = r.server.settings.device_instance
        request = read_property(DEVICE, instance, OBJECT_LIST)
        bodies = set()
        for invoke_id, limit in enumerate(LIMITS):
            reply = await client.ask(
                confirmed(request, limit=limit, sa=True, invoke_id=invoke_id), server, limit
            )
            assert reply.kind == "segmented"
            # every segment but the last is full: limit - 5 octets of service data
            assert [len(a) for a in reply.apdus[:-1]] == [limit] * (reply.segments - 1)
            assert limit > 50 or reply.segments > 256
            bodies.add(reply.data)

            refused = await client.ask(
                confirmed(request, limit=limit, sa=False, invoke_id=invoke_id), server, limit
            )
            assert (refused.kind, refused.reason) == ("abort", SEGMENTATION_NOT_SUPPORTED)
        assert len(bodies) == 1
        listed = object_ids(rp_value(bodies.pop(), DEVICE, instance, OBJECT_LIST))
        assert len(listed) == len(set(listed)) == r.server.object_count > 400 * 7
        assert set(listed) == served_ids(r.server.app)
        assert listed[0] == (DEVICE, instance)


async def test_max_segments_accepted_is_honoured(tmp_path: Path, client: RawClient) -> None:
    """An answer needing more segments than the client takes is Abort buffer-overflow
    (5.4.5.3); one within the count comes in no more segments than declared."""
    async with rig(tmp_path, channels=many_channels(60)) as r:
        server = ("127.0.0.1", r.server.port)
        request = read_property(DEVICE, r.server.settings.device_instance, OBJECT_LIST)
        # ReadProperty-ACK service data: [0] object 5, [1] property 2, {} 2, 5 per object
        data_length = 9 + 5 * r.server.object_count
        segments = -(-data_length // (480 - 5))
        assert 4 < segments <= 8  # 60 channels: more than 4 segments, at most 8
        for code in (1, 2):  # 2 and 4 segments
            reply = await client.ask(
                confirmed(request, limit=480, sa=True, max_segments_code=code), server, 480
            )
            assert (reply.kind, reply.reason) == ("abort", BUFFER_OVERFLOW)
        for code in (3, 0, 7):  # 8 segments, unspecified, more than 64
            reply = await client.ask(
                confirmed(request, limit=480, sa=True, max_segments_code=code), server, 480
            )
            assert reply.kind == "segmented" and reply.segments == segments
            assert len(reply.data) == data_length


async def test_a_cached_i_am_does_not_raise_the_limit(tmp_path: Path, client: RawClient) -> None:
    """A client whose I-Am (in bacpypes3's device-information cache, as after a Who-Is) says
    1476 octets but whose request declares 206 gets 206-octet segments: the request says what
    this transaction's path carries."""
    async with rig(tmp_path, channels=many_channels(20)) as r:
        server = ("127.0.0.1", r.server.port)
        assert r.server.app is not None and client.transport is not None
        host, port = client.transport.get_extra_info("sockname")[:2]
        i_am = IAmRequest(
            iAmDeviceIdentifier=("device", 4077),
            maxAPDULengthAccepted=1476,
            segmentationSupported="segmentedBoth",
            vendorID=7,
        )
        i_am.pduSource = Address(f"{host}:{port}")
        await r.server.app.device_info_cache.set_device_info(i_am)
        request = read_property(DEVICE, r.server.settings.device_instance, OBJECT_LIST)
        reply = await client.ask(confirmed(request, limit=206, sa=True), server, 206)
        assert reply.kind == "segmented" and reply.largest == 206


# --------------------------------------------------------------------------------------------
# Right at the edge, and large ReadPropertyMultiple
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "bacpypes3"])
async def test_rpm_at_the_limit_and_one_octet_over(
    tmp_path: Path, client: RawClient, fast_path: bool
) -> None:
    """A ReadPropertyMultiple-ACK of exactly 50 octets comes whole to a 50-octet client; one
    of 51 octets is Abort segmentation-not-supported without SA and 2 segments with it."""
    async with rig(tmp_path, fast_path=fast_path) as r:
        server = ("127.0.0.1", r.server.port)
        pv, sf, units, oos = PRESENT_VALUE, STATUS_FLAGS, UNITS, OUT_OF_SERVICE
        at_limit = read_multiple([(ANALOG_INPUT, 101, (pv, pv, pv, sf, units))])
        over = read_multiple([(ANALOG_INPUT, 101, (pv, pv, pv, pv, oos))])
        sizes = []
        for request in (at_limit, over):
            reply = await client.ask(confirmed(request, limit=1476, sa=True), server, 1476)
            assert reply.kind == "whole"
            sizes.append(len(reply.apdus[0]))
        assert sizes == [50, 51]  # the requests are built for exactly these sizes

        answered = r.server.fast_path.answered if r.server.fast_path else 0
        for sa in (False, True):
            reply = await client.ask(confirmed(at_limit, limit=50, sa=sa), server, 50)
            assert reply.kind == "whole" and len(reply.apdus[0]) == 50
        if fast_path:
            assert r.server.fast_path is not None
            assert r.server.fast_path.answered == answered + 2

        refused = await client.ask(confirmed(over, limit=50, sa=False), server, 50)
        assert (refused.kind, refused.reason) == ("abort", SEGMENTATION_NOT_SUPPORTED)
        whole = await client.ask(confirmed(over, limit=1476, sa=False), server, 1476)
        split = await client.ask(confirmed(over, limit=50, sa=True), server, 50)
        assert split.kind == "segmented" and split.segments == 2
        assert [len(a) for a in split.apdus] == [50, 5 + 48 - 45]  # 48 octets of data
        assert split.data == whole.data


async def test_device_description_at_the_limit_and_one_octet_over(
    tmp_path: Path, client: RawClient
) -> None:
    """ReadProperty of the Device (always bacpypes3): a 50-octet ACK comes whole, a 51-octet
    one is an Abort or two segments."""
    for length, size in ((35, 50), (36, 51)):
        folder = tmp_path / str(length)
        folder.mkdir()
        async with rig(folder, description="d" * length) as r:
            server = ("127.0.0.1", r.server.port)
            instance = r.server.settings.device_instance
            request = read_property(DEVICE, instance, DESCRIPTION)
            whole = await client.ask(confirmed(request, limit=1476, sa=False), server, 1476)
            assert whole.kind == "whole" and len(whole.apdus[0]) == size
            assert (
                rp_value(whole.data, DEVICE, instance, DESCRIPTION)
                == b"\x75" + bytes((length + 1,)) + b"\x00" + b"d" * length
            )
            small = await client.ask(confirmed(request, limit=50, sa=False), server, 50)
            segmented = await client.ask(confirmed(request, limit=50, sa=True), server, 50)
            if size <= 50:
                assert small.kind == segmented.kind == "whole"
                assert small.data == segmented.data == whole.data
            else:
                assert (small.kind, small.reason) == ("abort", SEGMENTATION_NOT_SUPPORTED)
                assert segmented.kind == "segmented" and segmented.data == whole.data


@pytest.mark.parametrize("limit", LIMITS)
async def test_small_answers_come_whole(tmp_path: Path, client: RawClient, limit: int) -> None:
    """A present-value (fast path) and the Device's name (bacpypes3) fit every limit whole."""
    async with rig(tmp_path) as r:
        server = ("127.0.0.1", r.server.port)
        instance = r.server.settings.device_instance
        for sa in (False, True):
            for request in (
                read_property(ANALOG_INPUT, 101, PRESENT_VALUE),
                read_property(DEVICE, instance, OBJECT_NAME),
                read_multiple([(ANALOG_INPUT, 101, (PRESENT_VALUE, STATUS_FLAGS))]),
            ):
                reply = await client.ask(confirmed(request, limit=limit, sa=sa), server, limit)
                assert reply.kind == "whole"


async def test_large_rpm_is_segmented_within_every_limit(tmp_path: Path, client: RawClient) -> None:
    """RPM of the names of every analog input of 12 channels (too large for the fast path)
    and RPM of the Device's ALL (bacpypes3's): whole or in segments within every limit, the same
    data at every size, and Abort segmentation-not-supported without SA when it does not fit."""
    async with rig(tmp_path, channels=many_channels(12)) as r:
        server = ("127.0.0.1", r.server.port)
        instance = r.server.settings.device_instance
        inputs = sorted(i for t, i in served_ids(r.server.app) if t == ANALOG_INPUT)
        assert len(inputs) >= 72
        names = read_multiple([(ANALOG_INPUT, i, (OBJECT_NAME,)) for i in inputs])
        everything = read_multiple([(DEVICE, instance, (ALL,))])
        for request in (names, everything):
            bodies = []
            for invoke_id, limit in enumerate(LIMITS):
                reply = await client.ask(
                    confirmed(request, limit=limit, sa=True, invoke_id=invoke_id), server, limit
                )
                assert reply.kind == ("whole" if len(reply.data) + 3 <= limit else "segmented")
                bodies.append(reply.data)
            if request is names:
                assert len(set(bodies)) == 1 and len(bodies[0]) > 1476
                assert b"c11.consumption" in bodies[0]
            else:  # local-time moves on between reads: same size, same object-list
                assert len({len(body) for body in bodies}) == 1 and len(bodies[0]) > 480
                assert len({body[body.index(b"\x29\x4c") :][:400] for body in bodies}) == 1
            refused = await client.ask(confirmed(request, limit=480, sa=False), server, 480)
            assert (refused.kind, refused.reason) == ("abort", SEGMENTATION_NOT_SUPPORTED)


async def test_an_unacknowledged_first_segment_is_sent_again(
    tmp_path: Path, client: RawClient
) -> None:
    """No SegmentACK for the first segment: after the segment timeout the gateway sends it
    again (bacpypes3 failed an assertion there), and the answer completes."""
    async with rig(tmp_path, channels=many_channels(20)) as r:
        server = ("127.0.0.1", r.server.port)
        request = read_property(DEVICE, r.server.settings.device_instance, OBJECT_LIST)
        wire = confirmed(request, limit=206, sa=True)
        normal = await client.ask(wire, server, 206)
        repeated = await client.ask(wire, server, 206, lose_first_ack=True)
        assert repeated.kind == "segmented" and repeated.data == normal.data
        assert len(repeated.apdus) == len(normal.apdus) + 1


# --------------------------------------------------------------------------------------------
# ReadRange: the server chooses how many records, so the answer fits
# --------------------------------------------------------------------------------------------

TREND_LOG, LOG_BUFFER, READ_RANGE = 20, 131, 26


def read_range_by_sequence(instance: int, reference: int, count: int) -> tuple[int, bytes]:
    """ReadRange-Request (15.8.1.1): [0] object, [1] log-buffer, [6] by sequence number."""
    signed = count.to_bytes(2, "big", signed=True)
    body = (
        b"\x0c"
        + oid(TREND_LOG, instance)
        + ctx_unsigned(1, LOG_BUFFER)
        + b"\x6e"
        + bytes((0x20 | len(reference.to_bytes(2, "big")),))
        + reference.to_bytes(2, "big")
        + b"\x32"
        + signed
        + b"\x6f"
    )
    return READ_RANGE, body


def range_ack(data: bytes, instance: int) -> tuple[int, int, int | None]:
    """(result flags as 3 bits first/last/more, item count, first-sequence-number) of a
    ReadRange-ACK (15.8.1.2) for trend-log ``instance``'s log-buffer."""
    head = b"\x0c" + oid(TREND_LOG, instance) + b"\x19\x83\x3a\x05"
    assert data.startswith(head), data[:16].hex()
    flags = data[len(head)] >> 5
    assert data[len(head) + 1] == 0x49  # [4] item count, one octet here
    count = data[len(head) + 2]
    assert data[len(head) + 3] == 0x5E
    items_end = len(head) + 4 + 22 * count
    assert data[items_end] == 0x5F
    tail = data[items_end + 1 :]
    first = int.from_bytes(tail[1:], "big") if tail else None
    return flags, count, first


async def test_read_range_answers_as_many_records_as_fit(tmp_path: Path, client: RawClient) -> None:
    """300 records asked of a 300-record log: without SA each max-APDU gets the records that
    fit whole (worked out below) and more-items; with SA and 4 segments of 480, 85 records."""
    from gateway.core import IntervalRecord
    from gateway.store import Store
    from gateway.store_intervals import IntervalLog

    state = tmp_path / "state"
    state.mkdir()
    Store.open(state).close()
    conn = sqlite3.connect(state / "gateway.db")
    with conn:
        step = 15 * 60 * 1_000_000
        start = 1_735_689_600_000_000  # 2025-01-01T00:00Z
        IntervalLog._save_intervals(
            conn,
            [
                IntervalRecord(
                    "c0", start + k * step, start + (k - 1) * step, 1, 0.5, 2.0, False, k, 0.5 * k
                )
                for k in range(1, 301)
            ],
        )
    conn.close()
    # Service data: 17 octets (object id 5, log-buffer 2, flags 3, item data open and close 2,
    # first-sequence-number counted as 5) + 2 (item count) + 22 per record, within limit - 3
    fits = {50: 1, 128: 4, 206: 8, 480: 20, 1024: 45, 1476: 66}
    async with rig(tmp_path, channels=many_channels(1)) as r:
        server = ("127.0.0.1", r.server.port)
        for limit, records in fits.items():
            wire = confirmed(read_range_by_sequence(101, 1, 300), limit=limit, sa=False)
            reply = await client.ask(wire, server, limit)
            assert reply.kind == "whole", (limit, reply)
            assert range_ack(reply.data, 101) == (0b101, records, 1), limit  # first, more
        # backwards from the newest: the records nearest the reference
        wire = confirmed(read_range_by_sequence(101, 300, -100), limit=206, sa=False)
        reply = await client.ask(wire, server, 206)
        assert range_ack(reply.data, 101) == (0b011, 8, 293)  # last, more
        # 4 segments of 480 (max-segments code 2): (4 x 475 - 19) // 22 = 85 records
        wire = confirmed(
            read_range_by_sequence(101, 1, 300), limit=480, sa=True, max_segments_code=2
        )
        reply = await client.ask(wire, server, 480)
        assert reply.kind == "segmented" and reply.segments <= 4, reply.kind
        assert range_ack(reply.data, 101) == (0b101, 85, 1)
