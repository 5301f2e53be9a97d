"""The BACnet/IP server seen from an independent client (bac-py) and raw UDP, on 127.0.0.1.

docs/reference/bacnet.md is the contract: the object map, units, live values, resets from where
they are allowed, COV, and a server that survives whatever arrives on its port.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
from bac_py.encoding.primitives import (
    decode_all_application_values,
    decode_object_identifier,
    decode_real,
    decode_unsigned,
)
from bac_py.encoding.tags import decode_tag
from bac_py.services.errors import BACnetError
from bac_py.services.read_property_multiple import PropertyReference, ReadAccessSpecification
from bac_py.types.enums import ErrorCode, PropertyIdentifier

from gateway.bacnet.server import COV_BATCH
from gateway.bacnet.startup import default_gateway, dns_servers
from gateway.readings import projected
from tests.bacnet_support import (
    APP_NULL,
    VERSION,
    WAIT_S,
    Raw,
    Reply,
    Rig,
    app_enumerated,
    app_real,
    confirmed,
    loopback_client,
    read_property,
    rig,
    write_property,
)
from tests.helpers import free_port

AI, BV, TREND_LOG = 0, 5, 20
PRESENT_VALUE = 85
OBJECT, PROPERTY = 1, 2  # error classes
WRITE_ACCESS_DENIED, VALUE_OUT_OF_RANGE, INVALID_DATA_TYPE = 40, 37, 9
NOT_AN_ARRAY, UNKNOWN_OBJECT, UNKNOWN_PROPERTY = 50, 31, 32
MEASURES = (
    "consumption",
    "demand",
    "peak_demand",
    "previous_peak_demand",
    "cumulative_demand",
    "reset_count",
    "period_consumption",
    "previous_period_consumption",
    "projected_demand",
)
# the objects of one channel: an analog input per measure, the reset binary-value and the two
# trend logs
PER_CHANNEL = len(MEASURES) + 1 + 2
KWH, KW, GAL, GPM, NO_UNITS = 19, 48, 83, 89, 95  # BACnetEngineeringUnits
UNITS = {
    "e": [KWH, KW, KW, KW, KW, NO_UNITS, KWH, KWH, KW],
    "w": [GAL, GPM, GPM, GPM, GPM, NO_UNITS, GAL, GAL, GPM],
}
BASES = {"e": 100, "w": 200}


def f32(value: float) -> float:
    """``value`` as a BACnet REAL carries it (IEEE single precision)."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def bits(value: Any) -> str:
    """A bac-py BitString as '0100' (status-flags: in-alarm, fault, overridden, out-of-service)."""
    return "".join(str(int(value[i])) for i in range(len(value)))


def engine_values(rig_: Rig, channel_id: str) -> list[float]:
    channel = rig_.gateway.engine.channels[channel_id]
    demand = channel.last_valid_demand
    return [
        channel.consumption,
        0.0 if demand is None else demand,
        channel.peak_demand,
        channel.previous_peak_demand,
        channel.cumulative_demand,
        float(channel.reset_count),
        channel.period_consumption,
        channel.previous_period,
        projected(channel, rig_.gateway.latest_time()) or 0.0,  # 0 while not available
    ]


async def read_values(rig_: Rig, channel_id: str) -> list[float]:
    base = BASES[channel_id]
    return [await rig_.read(f"ai,{base + k}", "pv") for k in range(1, len(MEASURES) + 1)]


async def expect_error(awaitable: Any, code: ErrorCode) -> None:
    with pytest.raises(BACnetError) as caught:
        await awaitable
    assert caught.value.error_code == code


# -- discovery ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_directed_who_is_gets_an_i_am_with_the_configured_device(tmp_path: Path) -> None:
    """A Who-Is sent to the server's address is answered by an I-Am for the configured device."""
    async with rig(tmp_path) as r:
        iams = await r.client.who_is(destination=r.address, timeout=WAIT_S, expected_count=1)
        assert len(iams) == 1
        assert iams[0].object_identifier.instance_number == 1001
        assert iams[0].vendor_id == 999
        assert iams[0].max_apdu_length == 1476


@pytest.mark.asyncio
async def test_who_has_by_object_name_finds_the_reset_object(tmp_path: Path) -> None:
    """A Who-Has for ``e.reset`` is answered by an I-Have naming binary-value 101."""
    async with rig(tmp_path) as r:
        ihaves = await r.client.who_has(
            object_name="e.reset", destination=r.address, timeout=WAIT_S, expected_count=1
        )
        assert len(ihaves) == 1
        assert ihaves[0].object_identifier.instance_number == 101
        assert ihaves[0].object_name == "e.reset"


@pytest.mark.asyncio
async def test_the_device_object_describes_the_gateway(tmp_path: Path) -> None:
    """Device: name, vendor, model, version, location, services and object types supported."""
    async with rig(tmp_path, location="Plant room 2", description="Main meters") as r:
        device = "device,1001"
        assert await r.read(device, "object-name") == "Test Gateway"
        assert await r.read(device, "vendor-name") == "pulse-gateway"
        assert await r.read(device, "vendor-identifier") == 999
        assert await r.read(device, "model-name") == "pulse-gateway"
        assert await r.read(device, "firmware-revision") == VERSION
        assert await r.read(device, "application-software-version") == VERSION
        assert await r.read(device, "location") == "Plant room 2"
        assert await r.read(device, "description") == "Main meters"
        services = bits(await r.read(device, "protocol-services-supported"))
        # 21 BACnetServicesSupported: confirmed-COV-notification 1, subscribe-COV 5, RP 12,
        # RPM 14, WP 15, WPM 16, I-Am 26, I-Have 27, unconfirmed-COV-notification 28,
        # Who-Has 33, Who-Is 34, ReadRange 35
        offered = {1, 5, 12, 14, 15, 16, 26, 27, 28, 33, 34, 35}
        assert {i for i, bit in enumerate(services) if bit == "1"} == offered
        types = bits(await r.read(device, "protocol-object-types-supported"))
        # analog-input 0, binary-value 5, device 8, trend-log 20, network-port 56
        assert {i for i, bit in enumerate(types) if bit == "1"} == {0, 5, 8, 20, 56}
        assert await r.read("device,4194303", "object-name") == "Test Gateway"  # wildcard


# -- the object map --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_every_channel_object_has_its_name_units_value_and_flags(tmp_path: Path) -> None:
    """Each analog input and reset object reads back the §5 name, the unit table and a value."""
    async with rig(tmp_path) as r:
        for channel_id, base in BASES.items():
            values = engine_values(r, channel_id)
            for k, measure in enumerate(MEASURES, start=1):
                objid = f"ai,{base + k}"
                assert await r.read(objid, "object-name") == f"{channel_id}.{measure}"
                assert await r.read(objid, "units") == UNITS[channel_id][k - 1]
                assert await r.read(objid, "pv") == f32(values[k - 1])
                assert len(bits(await r.read(objid, "status-flags"))) == 4
            assert await r.read(f"bv,{base + 1}", "object-name") == f"{channel_id}.reset"
            assert await r.read(f"bv,{base + 1}", "pv") == 0  # inactive
            assert bits(await r.read(f"bv,{base + 1}", "status-flags")) == "0000"
        assert await r.read("bv,1", "object-name") == "reset_all"
        assert await r.read("bv,1", "pv") == 0
        listed = set(await r.read("ai,101", "property-list"))
        assert {85, 111, 103, 117, 22, 36, 81} <= listed  # pv, flags, reliability, units...
        assert not listed & {75, 77, 79, 371}  # never the identifier, name, type or the list


@pytest.mark.asyncio
async def test_read_property_multiple_of_every_object_in_chunks(tmp_path: Path) -> None:
    """RPM ALL over the whole object-list (in chunks) returns every object with no error."""
    async with rig(tmp_path) as r:
        objects = await asyncio.wait_for(
            r.client.get_object_list(r.address, 1001, timeout=WAIT_S), WAIT_S
        )
        # device, network port, channels, reset_all
        assert len(objects) == 1 + 1 + PER_CHANNEL * 2 + 1
        names = {}
        for start in range(0, len(objects), 6):
            chunk = objects[start : start + 6]
            specs = [
                ReadAccessSpecification(
                    object_identifier=oid,
                    list_of_property_references=[PropertyReference(PropertyIdentifier.ALL)],
                )
                for oid in chunk
            ]
            ack = await asyncio.wait_for(r.client.read_property_multiple(r.address, specs), WAIT_S)
            for result in ack.list_of_read_access_results:
                props = {}
                for element in result.list_of_results:
                    assert element.property_access_error is None, (result, element)
                    props[element.property_identifier] = element.property_value
                oid = result.object_identifier
                name = decode_all_application_values(props[PropertyIdentifier.OBJECT_NAME])[0]
                names[(oid.object_type.value, oid.instance_number)] = name
                assert PropertyIdentifier.OBJECT_IDENTIFIER in props
                if oid.object_type.value in (AI, BV):
                    assert PropertyIdentifier.PRESENT_VALUE in props
                    assert PropertyIdentifier.STATUS_FLAGS in props
                    assert PropertyIdentifier.RELIABILITY in props
        assert len(names) == len(objects)
        assert names[(AI, 101)] == "e.consumption"
        assert names[(AI, 206)] == "w.reset_count"
        assert names[(BV, 1)] == "reset_all"
        assert names[(8, 1001)] == "Test Gateway"


@pytest.mark.asyncio
async def test_values_follow_the_engine_after_pulses_and_boundaries(tmp_path: Path) -> None:
    """After pulses and closed windows every present-value equals the engine's value."""
    async with rig(tmp_path) as r:
        r.steady(4)
        values = engine_values(r, "e")
        assert values[1] == 36000.0  # 40 pulses x 0.5 kWh x 3600 / 2 s
        assert await read_values(r, "e") == [f32(v) for v in values]
        r.steady(2, count=20)
        values = engine_values(r, "e")
        assert values[1] == 63000.0  # 3 x 20 + 10 pulses: the pulses at b are in the next window
        assert await read_values(r, "e") == [f32(v) for v in values]


@pytest.mark.asyncio
async def test_status_shows_offline_and_demand_not_available(tmp_path: Path) -> None:
    """Demand not yet valid: fault + unreliable-other on .demand; offline: comm-failure on all."""
    async with rig(tmp_path) as r:
        r.clocks.elapse(0.5)
        r.gateway.pulses("e", 1)
        assert r.gateway.engine.channels["e"].demand is None
        assert bits(await r.read("ai,102", "status-flags")) == "0100"
        assert await r.read("ai,102", "reliability") == 7  # unreliable-other
        assert bits(await r.read("ai,101", "status-flags")) == "0000"
        r.steady(3)
        assert bits(await r.read("ai,102", "status-flags")) == "0000"
        assert await r.read("ai,102", "reliability") == 0
        r.gateway.source_down("sim")
        for objid in ("ai,101", "ai,102", "ai,106", "bv,101", "ai,201"):
            assert bits(await r.read(objid, "status-flags")) == "0100", objid
            assert await r.read(objid, "reliability") == 12, objid  # communication-failure
        assert await r.read("ai,102", "pv") == 36000.0  # the last valid demand stays
        assert bits(await r.read("bv,1", "status-flags")) == "0000"


@pytest.mark.asyncio
async def test_writes_to_read_only_properties_are_denied_and_change_nothing(
    tmp_path: Path,
) -> None:
    """Every property but the reset objects' present-value answers write-access-denied."""
    async with rig(tmp_path) as r:
        before = await r.read("ai,101", "pv")
        denied = ErrorCode.WRITE_ACCESS_DENIED
        await expect_error(r.write("ai,101", "pv", 5.0), denied)
        await expect_error(r.write("ai,101", "pv", 5.0, priority=8), denied)
        await expect_error(r.write("ai,101", "object-name", "x"), denied)
        await expect_error(r.write("ai,101", "cov-increment", 9.0), denied)
        await expect_error(r.write("bv,101", "object-name", "x"), denied)
        await expect_error(r.write("device,1001", "object-name", "x"), denied)
        await expect_error(r.write("network-port,1", "bacnet-ip-udp-port", 1), denied)
        raw = Raw(r.server.port)
        try:
            unknown = write_property(AI, 101, 600, app_real(1.0))  # a property AIs do not have
            assert await raw.ask(unknown) == Reply("error", (PROPERTY, UNKNOWN_PROPERTY))
            missing = write_property(AI, 999, PRESENT_VALUE, app_real(1.0))
            assert await raw.ask(missing) == Reply("error", (OBJECT, UNKNOWN_OBJECT))
            wildcard = write_property(8, 4194303, 77, b"\x75\x02\x00x")  # device name "x"
            assert await raw.ask(wildcard) == Reply("error", (PROPERTY, WRITE_ACCESS_DENIED))
        finally:
            raw.close()
        assert await r.read("ai,101", "pv") == before
        assert await r.read("ai,101", "object-name") == "e.consumption"
        assert await r.read("device,1001", "object-name") == "Test Gateway"


@pytest.mark.asyncio
async def test_a_failing_write_property_multiple_is_answered(tmp_path: Path) -> None:
    """A WPM to a read-only property gets an Error answer, not bacpypes3's silence."""
    async with rig(tmp_path) as r:
        # WriteAccessSpecification: [0] ai,101, [1] { [0] present-value, [2] {REAL 1.0} }
        body = (
            b"\x0c"
            + struct.pack(">I", AI << 22 | 101)
            + b"\x1e\x09\x55\x2e"
            + app_real(1.0)
            + b"\x2f\x1f"
        )
        raw = Raw(r.server.port)
        try:
            raw.send(confirmed(16, body))
            answer = await raw.receive()
        finally:
            raw.close()
        assert answer is not None
        apdu = answer[6:]  # after the BVLC and a 2-octet NPDU
        assert apdu[:3] == bytes((0x50, 1, 16))  # Error PDU, invoke id 1, WritePropertyMultiple
        # WPM-Error (16.10.1.3.1): [0] {error-class property, error-code write-access-denied},
        # then [1] the first failed write: ai,101 present-value
        assert apdu[3:9] == bytes.fromhex("0e910291280f")
        assert apdu[9:] == b"\x1e\x0c" + struct.pack(">I", AI << 22 | 101) + b"\x19\x55\x1f"


# -- resets ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_reset_from_an_allowed_address_moves_the_totals(tmp_path: Path) -> None:
    """active@8 resets: previous peak = peak, cumulative += peak, count + 1, reads inactive."""
    async with rig(tmp_path) as r:
        r.steady(4)
        peak = r.gateway.engine.channels["e"].peak_demand
        assert peak == 36000.0
        await r.write("bv,101", "pv", 1, priority=8)
        channel = r.gateway.engine.channels["e"]
        assert (channel.peak_demand, channel.previous_peak_demand) == (0.0, peak)
        assert (channel.cumulative_demand, channel.reset_count) == (peak, 1)
        assert await r.read("bv,101", "pv") == 0  # momentary: inactive again
        assert await r.read("ai,103", "pv") == 0.0
        assert await r.read("ai,104", "pv") == peak
        assert await r.read("ai,105", "pv") == peak
        assert await r.read("ai,106", "pv") == 1.0
        await r.write("bv,101", "pv", 1, priority=16)  # any priority does it
        assert r.gateway.engine.channels["e"].reset_count == 2
        log = r.gateway.store.reset_log()
        assert [(x.channel, x.accepted) for x in log] == [("e", True), ("e", True)]
        assert log[0].source.startswith("bacnet:127.0.0.1:")


@pytest.mark.asyncio
async def test_a_reset_from_outside_reset_allowed_from_is_refused(tmp_path: Path) -> None:
    """A writer outside the allowed networks gets write-access-denied; it is counted and audited."""
    async with rig(tmp_path, allowed=(IPv4Network("127.0.0.2/32"),)) as r:
        r.steady(4)
        await expect_error(r.write("bv,101", "pv", 1, priority=8), ErrorCode.WRITE_ACCESS_DENIED)
        await expect_error(r.write("bv,1", "pv", 1), ErrorCode.WRITE_ACCESS_DENIED)
        channel = r.gateway.engine.channels["e"]
        assert (channel.reset_count, channel.peak_demand) == (0, 36000.0)
        assert r.gateway.status.rejections[("e", "not_allowed")] == 2  # its own and reset_all
        assert r.gateway.status.rejections[("w", "not_allowed")] == 1
        log = r.gateway.store.reset_log()
        assert {(x.channel, x.reason, x.accepted) for x in log} == {
            ("e", "not_allowed", False),
            ("w", "not_allowed", False),
        }
        assert all(x.source.startswith("bacnet:127.0.0.1:") for x in log)


@pytest.mark.asyncio
async def test_nobody_may_reset_when_reset_allowed_from_is_empty(tmp_path: Path) -> None:
    """An empty reset_allowed_from allows nobody, loopback included."""
    async with rig(tmp_path, allowed=()) as r:
        await expect_error(r.write("bv,101", "pv", 1, priority=8), ErrorCode.WRITE_ACCESS_DENIED)
        assert r.gateway.engine.channels["e"].reset_count == 0


@pytest.mark.asyncio
async def test_a_reset_inside_the_lockout_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """The second reset within w's one-hour lockout answers service-request-denied."""
    async with rig(tmp_path) as r:
        r.steady(3, channel="w")
        await r.write("bv,201", "pv", 1, priority=8)
        r.steady(3, channel="w")
        before = r.gateway.engine.channels["w"].totals()
        assert before.peak_demand > 0
        await expect_error(r.write("bv,201", "pv", 1, priority=8), ErrorCode.SERVICE_REQUEST_DENIED)
        assert r.gateway.engine.channels["w"].totals() == before
        log = r.gateway.store.reset_log()
        assert [(x.channel, x.accepted, x.reason) for x in log][-1] == ("w", False, "lockout")
        assert ("w", "not_allowed") not in r.gateway.status.rejections


@pytest.mark.asyncio
async def test_bad_reset_writes_are_refused_and_relinquish_is_harmless(tmp_path: Path) -> None:
    """Wrong value, datatype, priority or array index: an Error, counted; NULL/inactive: ACK."""
    async with rig(tmp_path) as r:
        raw = Raw(r.server.port)
        try:
            bad = [
                (write_property(BV, 101, PRESENT_VALUE, app_enumerated(2)), VALUE_OUT_OF_RANGE),
                (write_property(BV, 101, PRESENT_VALUE, app_enumerated(7)), VALUE_OUT_OF_RANGE),
                (write_property(BV, 101, PRESENT_VALUE, app_real(1.0)), INVALID_DATA_TYPE),
                (
                    write_property(BV, 101, PRESENT_VALUE, app_enumerated(1), priority=17),
                    VALUE_OUT_OF_RANGE,
                ),
                (
                    write_property(BV, 101, PRESENT_VALUE, app_enumerated(1), priority=0),
                    VALUE_OUT_OF_RANGE,
                ),
                (write_property(BV, 101, PRESENT_VALUE, app_enumerated(1), index=1), NOT_AN_ARRAY),
            ]
            for invoke_id, (request, code) in enumerate(bad, start=1):
                reply = await raw.ask(request[:6] + bytes((invoke_id,)) + request[7:])
                assert reply == Reply("error", (PROPERTY, code)), (invoke_id, reply)
            harmless = [
                write_property(BV, 101, PRESENT_VALUE, APP_NULL, priority=8),
                write_property(BV, 101, PRESENT_VALUE, app_enumerated(0), priority=8),
                write_property(BV, 101, PRESENT_VALUE, app_enumerated(0)),
            ]
            for request in harmless:
                assert await raw.ask(request) == Reply("simple-ack")
        finally:
            raw.close()
        assert r.gateway.engine.channels["e"].reset_count == 0
        assert r.gateway.status.rejections[("e", "bad_value")] == len(bad)
        log = r.gateway.store.reset_log()
        assert [(x.channel, x.reason) for x in log] == [("e", "bad_value")] * len(bad)


@pytest.mark.asyncio
async def test_reset_all_resets_every_channel_at_one_instant(tmp_path: Path) -> None:
    """active to reset_all resets e and w together; a second one is still accepted by e."""
    async with rig(tmp_path) as r:
        r.steady(3)
        r.steady(3, channel="w")
        await r.write("bv,1", "pv", 1, priority=8)
        e, w = (r.gateway.engine.channels[c] for c in ("e", "w"))
        assert (e.reset_count, w.reset_count) == (1, 1)
        assert e.last_reset == w.last_reset
        assert await r.read("bv,1", "pv") == 0
        await r.write("bv,1", "pv", 1, priority=8)  # e accepts (no lockout): ACK
        assert (e.reset_count, w.reset_count) == (2, 1)


@pytest.mark.asyncio
async def test_a_write_property_multiple_can_reset(tmp_path: Path) -> None:
    """A WPM writing active to e.reset performs the reset and is acknowledged."""
    async with rig(tmp_path) as r:
        body = (
            b"\x0c"
            + struct.pack(">I", BV << 22 | 101)
            + b"\x1e\x09\x55\x2e"
            + app_enumerated(1)
            + b"\x2f\x39\x08\x1f"
        )
        raw = Raw(r.server.port)
        try:
            assert await raw.ask(confirmed(16, body)) == Reply("simple-ack")
        finally:
            raw.close()
        assert r.gateway.engine.channels["e"].reset_count == 1


# -- COV -----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cov_notifies_consumption_after_pulses(tmp_path: Path) -> None:
    """A confirmed subscription gets the current value, then a notification after pulses."""
    async with rig(tmp_path) as r:
        await r.subscribe("ai,101", process_id=11, confirmed=True, lifetime=60)
        first = await r.notification()
        assert first["PRESENT_VALUE"] == f32(r.gateway.engine.channels["e"].consumption)
        assert 0 < first["time_remaining"] <= 60
        r.clocks.elapse(0.5)
        r.gateway.pulses("e", 1)  # 0.5 kWh: below the 1 kWh increment, no notification
        r.server.refresh()
        await asyncio.sleep(0.2)
        assert r.notifications.empty()
        r.clocks.elapse(0.5)
        r.gateway.pulses("e", 1)  # now 1 kWh from the last reported value
        r.server.refresh()
        second = await r.notification()
        assert second["PRESENT_VALUE"] == first["PRESENT_VALUE"] + 1.0
        assert bits(second["STATUS_FLAGS"]) == "0000"


@pytest.mark.asyncio
async def test_the_network_port_has_what_a_bip_port_must_show(tmp_path: Path) -> None:
    """apdu-length (a device of protocol revision below 24 must show it), ip-default-gateway
    and ip-dns-server (an IPv4 port's): a loopback port has no gateway and no DNS server."""
    async with rig(tmp_path) as r:
        assert await r.read("network-port,1", "apdu-length") == 1476
        assert await r.read("network-port,1", "ip-default-gateway") == b"\x00\x00\x00\x00"
        listed = await r.read("network-port,1", "property-list")
        names = {int(p) for p in listed}
        wanted = {
            PropertyIdentifier.APDU_LENGTH,
            PropertyIdentifier.IP_DEFAULT_GATEWAY,
            PropertyIdentifier.IP_DNS_SERVER,
        }
        assert wanted <= names
        ack = await r.client.read_property(r.address, "network-port,1", "ip-dns-server")
        assert ack.property_value == b""  # an empty array


def test_the_default_gateway_and_dns_servers_are_read_from_the_host() -> None:
    """The first default route's gateway (little-endian hex in /proc/net/route) and the IPv4
    nameservers of resolv.conf; none of either gives 0.0.0.0 and an empty list."""
    table = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\n"
    )
    assert default_gateway(table) == "192.168.1.1"
    assert default_gateway(table.splitlines()[0] + "\n") == "0.0.0.0"
    resolv = "# comment\nsearch site\nnameserver 10.0.0.2\nnameserver fe80::1\nnameserver 9.9.9.9\n"
    assert dns_servers(resolv) == ["10.0.0.2", "9.9.9.9"]
    assert dns_servers("") == []


def constructed(data: bytes, offset: int = 0) -> tuple[list[tuple[int, Any]], int]:
    """Context-tagged BACnet data as nested (tag number, bytes or list) items."""
    items: list[tuple[int, Any]] = []
    while offset < len(data):
        tag, offset = decode_tag(data, offset)
        if tag.is_closing:
            return items, offset
        if tag.is_opening:
            inner, offset = constructed(data, offset)
            items.append((tag.number, inner))
        else:
            items.append((tag.number, data[offset : offset + tag.length]))
            offset += tag.length
    return items, offset


def cov_subscriptions(data: bytes) -> list[dict[str, Any]]:
    """A BACnetLIST of BACnetCOVSubscription (135 21), decoded field by field."""
    items, _ = constructed(data)
    found: list[dict[str, Any]] = []
    for number, value in items:
        if number == 0:  # recipient: [0] recipient (a choice), [1] process identifier
            recipient = dict(value)
            # [1] address: the network number and the MAC, application-tagged
            (_, network), (_, mac) = dict(recipient[0])[1]
            found.append(
                {
                    "network": decode_unsigned(network),
                    "mac": bytes(mac),
                    "process": decode_unsigned(recipient[1]),
                }
            )
        elif number == 1:  # monitored property reference: [0] object, [1] property
            reference = dict(value)
            found[-1]["object"] = decode_object_identifier(reference[0])
            found[-1]["property"] = decode_unsigned(reference[1])
        elif number == 2:
            found[-1]["confirmed"] = bool(value[0])
        elif number == 3:
            found[-1]["remaining"] = decode_unsigned(value)
        elif number == 4:
            found[-1]["increment"] = decode_real(value)
    return found


@pytest.mark.asyncio
async def test_the_device_lists_its_active_cov_subscriptions(tmp_path: Path) -> None:
    """active-cov-subscriptions (12.11.38) names every live subscription: who, which object,
    confirmed or not, the time left (0 for an indefinite one) and the COV increment of an
    analog input; an ended subscription leaves the list."""
    async with rig(tmp_path) as r:
        ack = await r.client.read_property(r.address, "device,1001", "active-cov-subscriptions")
        assert cov_subscriptions(ack.property_value) == []
        await r.subscribe("ai,101", process_id=11, confirmed=True, lifetime=60)
        await r.subscribe("bv,101", process_id=12, confirmed=False, lifetime=None)
        ack = await r.client.read_property(r.address, "device,1001", "active-cov-subscriptions")
        listed = sorted(cov_subscriptions(ack.property_value), key=lambda s: s["process"])
        # the subscriber's B/IP address: 127.0.0.1 and its UDP port, on the local network (0)
        assert [(s["network"], s["mac"][:4], len(s["mac"])) for s in listed] == [
            (0, socket.inet_aton("127.0.0.1"), 6)
        ] * 2
        first, second = listed
        assert (first["process"], first["object"], first["property"]) == (11, (0, 101), 85)
        assert first["confirmed"] and 0 < first["remaining"] <= 60
        assert first["increment"] == 1.0
        assert (second["process"], second["object"], second["confirmed"]) == (12, (5, 101), False)
        assert second["remaining"] == 0 and "increment" not in second
        await r.client.unsubscribe_cov_ex(r.address, "ai,101", process_id=11)
        ack = await r.client.read_property(r.address, "device,1001", "active-cov-subscriptions")
        assert [s["process"] for s in cov_subscriptions(ack.property_value)] == [12]


@pytest.mark.asyncio
async def test_cov_unconfirmed_with_the_lifetime_omitted_works(tmp_path: Path) -> None:
    """An unconfirmed subscription without a lifetime (indefinite) is accepted and notified."""
    async with rig(tmp_path) as r:
        await r.subscribe("ai,106", process_id=12, confirmed=False, lifetime=None)
        first = await r.notification()
        assert first["PRESENT_VALUE"] == 0.0 and first["time_remaining"] == 0
        await r.write("bv,101", "pv", 1, priority=8)
        second = await r.notification()
        assert second["PRESENT_VALUE"] == 1.0


@pytest.mark.asyncio
async def test_cov_notifies_the_totals_after_a_reset(tmp_path: Path) -> None:
    """previous_peak_demand and cumulative_demand subscribers hear about a reset."""
    async with rig(tmp_path) as r:
        r.steady(4)
        await r.subscribe("ai,104", process_id=21)
        await r.subscribe("ai,105", process_id=22)
        initial = {(await r.notification())["PRESENT_VALUE"] for _ in range(2)}
        assert initial == {0.0}
        await r.write("bv,101", "pv", 1, priority=8)
        after = [await r.notification() for _ in range(2)]
        assert {n["object"].instance_number for n in after} == {104, 105}
        assert {n["PRESENT_VALUE"] for n in after} == {36000.0}


@pytest.mark.asyncio
async def test_cov_notifies_going_offline_on_analog_and_reset_objects(tmp_path: Path) -> None:
    """A source going down sends status-flags fault to subscribers of the channel's objects."""
    async with rig(tmp_path) as r:
        await r.subscribe("ai,101", process_id=31)
        await r.subscribe("bv,101", process_id=32, confirmed=False)
        for _ in range(2):
            assert bits((await r.notification())["STATUS_FLAGS"]) == "0000"
        r.gateway.source_down("sim")
        r.server.refresh()
        after = [await r.notification() for _ in range(2)]
        assert {n["object"].instance_number for n in after} == {101}
        assert all(bits(n["STATUS_FLAGS"]) == "0100" for n in after)


@pytest.mark.asyncio
async def test_cov_refuses_objects_without_cov_and_ends_with_the_lifetime(tmp_path: Path) -> None:
    """The Device has no COV; a 1 s subscription ends and is no longer notified."""
    async with rig(tmp_path) as r:
        with pytest.raises(BACnetError):
            await r.subscribe("device,1001", process_id=41)
        await r.subscribe("ai,101", process_id=42, lifetime=1)
        await r.notification()
        app = r.server.app
        assert app is not None and app.subscription_count() == 1
        for _ in range(40):
            if app.subscription_count() == 0:
                break
            await asyncio.sleep(0.1)
        assert app.subscription_count() == 0


# -- robustness ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_malformed_and_truncated_packets_leave_the_server_serving(tmp_path: Path) -> None:
    """Garbage, truncated BVLC/NPDU/APDU and bad tags are answered or dropped; reads still work."""
    async with rig(tmp_path) as r:
        good = read_property(AI, 101, PRESENT_VALUE)
        junk = [
            b"",
            b"\x00",
            b"hello, world",
            bytes(range(256)),
            b"\x81",  # BVLC type only
            b"\x81\x0a\x00",  # BVLC cut inside the length
            b"\x81\x0a\x00\x40\x01\x04",  # length says 64, datagram is 6
            b"\x81\x0a\x00\x05\x01",  # NPDU cut after the version
            b"\x81\x0a\x00\x06\x02\x04",  # NPDU version 2
            b"\x81\x0a\x00\x0a\x01\x20\x00\x01\x00\x00",  # DNET with a cut DADR
            good[:-3],  # APDU cut inside the object identifier
            good[:8],  # APDU header only
            confirmed(12, b"\x0c\x00\x40\x00\x65\x19"),  # property identifier without its octet
            confirmed(12, b"\x3e\x3e\x3e"),  # opening tags, never closed
            confirmed(99, b"\x00"),  # an unknown service
            confirmed(15, b"\x0c\x01\x40\x00\x65\x19\x55\x3e\x91\x01"),  # WP value never closed
            b"\x81\x0b\x00\x08\x01\x00\x10\x08",  # a broadcast Who-Is over unicast: answered
            b"\x81\x04\x00\x0a" + bytes(6),  # Forwarded-NPDU with no NPDU
            b"\x81\x05\x00\x06\x00\x3c",  # Register-Foreign-Device: NAKed in normal mode
        ]
        raw = Raw(r.server.port)
        try:
            for datagram in junk:
                raw.send(datagram)
            await asyncio.sleep(0.5)
            while await raw.receive(timeout=0.2) is not None:
                pass  # answers (Reject, Abort, I-Am, NAK) are fine; so is silence
            assert await raw.ask(good) == Reply("complex-ack")
        finally:
            raw.close()
        assert await r.read("ai,101", "object-name") == "e.consumption"


@pytest.mark.asyncio
async def test_services_not_offered_are_rejected(tmp_path: Path) -> None:
    """ReinitializeDevice is not offered: it answers Reject, and the server goes on."""
    async with rig(tmp_path) as r:
        raw = Raw(r.server.port)
        try:
            body = b"\x09\x00"  # [0] reinitialized-state-of-device coldstart
            assert (await raw.ask(confirmed(20, body))).kind == "reject"  # ReinitializeDevice
            assert (await raw.ask(read_property(AI, 101, PRESENT_VALUE))).kind == "complex-ack"
        finally:
            raw.close()


# -- start-up --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_second_server_on_the_same_port_is_refused_clearly(tmp_path: Path) -> None:
    """The duplicate-port probe names address:port and says another process holds it."""
    from gateway.bacnet import BacnetError, BacnetServer

    async with rig(tmp_path) as r:
        second = BacnetServer(r.gateway, r.server.settings, [], version=VERSION)
        with pytest.raises(BacnetError) as refused:
            await second.start()
        assert f"127.0.0.1:{r.server.port} is in use" in str(refused.value)
        assert "another process holds it" in str(refused.value)
        assert await r.read("ai,101", "object-name") == "e.consumption"


@pytest.mark.asyncio
async def test_an_address_not_on_this_host_is_refused_at_once(tmp_path: Path) -> None:
    """192.0.2.1 (TEST-NET-1) is not on this host: BacnetError, no endless retry."""
    import dataclasses
    from ipaddress import IPv4Interface

    from gateway.bacnet import BacnetError, BacnetServer

    async with rig(tmp_path) as r:
        elsewhere = dataclasses.replace(r.server.settings, address=IPv4Interface("192.0.2.1/24"))
        server = BacnetServer(r.gateway, elsewhere, [], version=VERSION)
        with pytest.raises(BacnetError, match="not an address of this host"):
            await asyncio.wait_for(server.start(), WAIT_S)


def test_the_probe_refuses_a_port_held_without_reuseport() -> None:
    """A plain socket holding the port makes the probe fail with the in-use message."""
    from gateway.bacnet import BacnetError
    from gateway.bacnet.startup import probe

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with pytest.raises(BacnetError, match="another process holds it"):
            probe("127.0.0.1", port)


# -- scale, construction, the fast path ------------------------------------------------------


@pytest.mark.asyncio
async def test_two_thousand_channels_start_and_serve(tmp_path: Path) -> None:
    """A server with 2,000 channels (18,003 objects) starts and answers reads on any channel."""

    from gateway.bacnet.standalone import standalone_server

    running = await standalone_server(2000, free_port())
    server = running.server
    try:
        assert server.object_count == 1 + 1 + PER_CHANNEL * 2000 + 1
        address = f"127.0.0.1:{server.port}"
        async with loopback_client(4002) as client:

            async def read(objid: str, prop: str) -> Any:
                return await asyncio.wait_for(client.read(address, objid, prop), WAIT_S)

            assert (
                await asyncio.wait_for(client.read(address, "device,599", "object-list", 0), WAIT_S)
                == server.object_count
            )
            # whole (110 kB, segmented) and by index, trend logs included
            ack = await asyncio.wait_for(
                client.read_property(address, "device,599", "object-list"), 4 * WAIT_S
            )
            raw = bytes(ack.property_value)  # bac-py decodes at most 10,000 values: by hand
            assert len(raw) == 5 * server.object_count
            listed = [decode_object_identifier(raw[k + 1 : k + 5]) for k in range(0, len(raw), 5)]
            assert len(set(listed)) == server.object_count
            assert sum(1 for t, _ in listed if t == TREND_LOG) == 2 * 2000
            last = await asyncio.wait_for(
                client.read(address, "device,599", "object-list", server.object_count), WAIT_S
            )
            assert (int(last.object_type), last.instance_number) == listed[-1]
            assert await read("trend-log,200002", "object-name") == "ch2000.demand_log"
            assert await read("trend-log,200002", "record-count") == 0  # no database: empty
            for k in (1, 1000, 2000):
                assert await read(f"ai,{100 * k + 1}", "object-name") == f"ch{k}.consumption"
                assert await read(f"ai,{100 * k + 1}", "pv") == 0.0
                assert await read(f"ai,{100 * k + 6}", "units") == NO_UNITS
                assert await read(f"bv,{100 * k + 1}", "object-name") == f"ch{k}.reset"
            await asyncio.wait_for(client.write(address, "bv,200001", "pv", 1, priority=8), WAIT_S)
            assert await read("ai,200006", "pv") == 1.0
    finally:
        await running.close()


@pytest.mark.asyncio
async def test_stamped_objects_read_like_constructed_ones(tmp_path: Path) -> None:
    """ObjectFactory's copies answer every property exactly as constructor-built objects do."""
    from bacpypes3.constructeddata import Any as AnyValue

    async def answer(obj: Any, name: str) -> bytes | str:
        """What a client would get: the encoded value, or unknown-property (which bacpypes3
        answers both for a missing attribute and for one that is None)."""
        try:
            value = await obj.read_property(name)
        except AttributeError:
            return "unknown-property"
        if value is None:
            return "unknown-property"
        return bytes(AnyValue(value).tagList.encode().pduData)

    from gateway.bacnet.objects import ChannelInput, ResetValue
    from gateway.bacnet.points import channel_points
    from gateway.bacnet.trendlog import TrendLog

    async with rig(tmp_path) as r:
        link = r.server.links["e"]
        config = link.config
        for point in channel_points(config):
            if point.object_type == "trend-log":
                assert point.measure is not None
                stamped = link.trends[point.measure]
                built = TrendLog(
                    objectIdentifier=(point.object_type, point.instance),
                    objectName=point.name,
                    description=point.description,
                    eventState="normal",
                    enable=True,
                    stopWhenFull=False,
                    bufferSize=stamped.bufferSize,
                    loggingType="polled",
                    logInterval=stamped.logInterval,
                    alignIntervals=True,
                    intervalOffset=0,
                    logDeviceObjectProperty=stamped.logDeviceObjectProperty,
                )
                for key in ("_measure", "_logs", "_link"):
                    built.__dict__[key] = stamped.__dict__[key]
                for name in type(stamped)._elements:
                    if name == "logBuffer":  # ReadRange only: both refuse the same way
                        continue
                    answers = [await answer(obj, name) for obj in (stamped, built)]
                    assert answers[0] == answers[1], (point.name, name)
                continue
            stamped = link.inputs[point.measure] if point.measure else link.reset
            common = {
                "objectIdentifier": (point.object_type, point.instance),
                "objectName": point.name,
                "description": point.description,
                "eventState": "normal",
                "outOfService": False,
            }
            if point.measure is None:
                built = ResetValue(activeText="reset", inactiveText="idle", **common)
            else:
                built = ChannelInput(units=point.units, covIncrement=point.cov_increment, **common)
                for key in ("_measure", "_read", "_increment"):
                    built.__dict__[key] = stamped.__dict__[key]
            built.__dict__["_link"] = link
            for name in type(stamped)._elements:
                answers = [await answer(obj, name) for obj in (stamped, built)]
                assert answers[0] == answers[1], (point.name, name)


@pytest.mark.asyncio
async def test_the_fast_path_lookup_encodes_exactly_what_bacpypes3_would(tmp_path: Path) -> None:
    """For every channel object, property and status, the lookup's bytes equal bacpypes3's."""
    from bacpypes3.constructeddata import Any as AnyValue

    from gateway.bacnet import lookup as fast

    properties = {
        fast.PRESENT_VALUE: "presentValue",
        fast.STATUS_FLAGS: "statusFlags",
        fast.RELIABILITY: "reliability",
        fast.OBJECT_NAME: "objectName",
        fast.UNITS: "units",
        fast.EVENT_STATE: "eventState",
        fast.OUT_OF_SERVICE: "outOfService",
        fast.COV_INCREMENT: "covIncrement",
    }

    async def compare() -> int:
        compared = 0
        for link in r.server.links.values():
            for obj in link.objects():
                objid = obj.objectIdentifier
                if int(objid[0]) == TREND_LOG:  # bacpypes3's to answer, never the fast path's
                    assert r.server.lookup(int(objid[0]), int(objid[1]), 77, None) is None
                    continue
                for number, name in properties.items():
                    mine = r.server.lookup(int(objid[0]), int(objid[1]), number, None)
                    if name in ("units", "covIncrement") and int(objid[0]) == BV:
                        assert mine is None
                        continue
                    value = await obj.read_property(name)
                    assert mine == bytes(AnyValue(value).tagList.encode().pduData), (objid, name)
                    compared += 1
                assert r.server.lookup(int(objid[0]), int(objid[1]), 85, 1) is None
        return compared

    async with rig(tmp_path) as r:
        r.clocks.elapse(0.5)
        r.gateway.pulses("e", 3)  # demand not available yet
        assert await compare() == 2 * (len(MEASURES) * 8 + 6)
        r.steady(4)
        r.steady(2, channel="w", count=7)
        await compare()
        r.gateway.source_down("sim")
        await compare()
        assert r.server.lookup(8, 1001, 77, None) is None  # the Device stays bacpypes3's


@pytest.mark.asyncio
async def test_reads_without_the_fast_path_match(tmp_path: Path) -> None:
    """With the fast path off, bacpypes3 itself answers the same names, units and values."""
    async with rig(tmp_path, fast_path=False) as r:
        assert r.server.fast_path is None
        r.steady(4)
        assert await read_values(r, "e") == [f32(v) for v in engine_values(r, "e")]
        assert await r.read("ai,102", "units") == KW
        assert await r.read("ai,101", "object-name") == "e.consumption"
        assert bits(await r.read("ai,102", "status-flags")) == "0000"


@pytest.mark.asyncio
async def test_cov_notifications_do_not_scan_the_objects(tmp_path: Path) -> None:
    """Sending a notification never walks the application's object table (O(1) per notification)."""

    class Watched(dict):  # type: ignore[type-arg]
        scans = 0

        def values(self) -> Any:
            Watched.scans += 1
            return super().values()

    async with rig(tmp_path) as r:
        app = r.server.app
        assert app is not None
        await r.subscribe("ai,101", process_id=51)
        await r.notification()
        app.objectIdentifier = Watched(app.objectIdentifier)
        r.steady(2)
        await r.notification()
        assert Watched.scans == 0


# -- reconfiguration, failures, networking ---------------------------------------------------


@pytest.mark.asyncio
async def test_reconfigure_adds_removes_and_rebuilds_channel_objects(tmp_path: Path) -> None:
    """A reload that moves e to base 300, drops w and changes e's increment is followed."""
    import dataclasses

    async with rig(tmp_path) as r:
        revision = await r.read("device,1001", "database-revision")
        e = r.server.links["e"].config
        await r.server.reconfigure([dataclasses.replace(e, bacnet_instance_base=300)])
        assert await r.read("ai,301", "object-name") == "e.consumption"
        await expect_error(r.read("ai,101", "object-name"), ErrorCode.UNKNOWN_OBJECT)
        await expect_error(r.read("ai,201", "object-name"), ErrorCode.UNKNOWN_OBJECT)
        assert await r.read("device,1001", "database-revision") == revision + 1
        assert r.server.object_count == 1 + 1 + PER_CHANNEL + 1
        await r.subscribe("ai,301", process_id=61)
        await r.notification()
        moved = r.server.links["e"].config
        await r.server.reconfigure([dataclasses.replace(moved, cov_increment=100.0)])
        assert await r.read("ai,301", "cov-increment") == 100.0
        assert await r.read("ai,306", "cov-increment") == 1.0  # a count: every reset notifies
        assert await r.read("device,1001", "database-revision") == revision + 1
        assert r.server.app is not None and r.server.app.subscription_count() == 1
        await r.server.reconfigure([moved, r.gateway.config.channels[1]])
        assert await r.read("ai,201", "object-name") == "w.consumption"
        assert await r.read("device,1001", "database-revision") == revision + 2


@pytest.mark.asyncio
async def test_a_reset_that_cannot_be_stored_answers_an_error_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the store fails, the writer gets operational-problem and the totals stay as they were."""
    from gateway.store import StoreError

    async with rig(tmp_path) as r:
        r.steady(4)
        before = r.gateway.engine.channels["e"].totals()

        def broken(*args: Any, **kwargs: Any) -> None:
            raise StoreError("disk full")

        monkeypatch.setattr(r.gateway.store, "record_resets", broken)
        await expect_error(r.write("bv,101", "pv", 1, priority=8), ErrorCode.OPERATIONAL_PROBLEM)
        assert r.gateway.engine.channels["e"].totals() == before
        assert await r.read("ai,103", "pv") == before.peak_demand
        assert await r.read("ai,106", "pv") == 0.0


@pytest.mark.asyncio
async def test_the_server_announces_itself_with_an_i_am_at_start(tmp_path: Path) -> None:
    """A global I-Am goes out on the subnet broadcast when the server starts."""
    import dataclasses

    from gateway.bacnet import BacnetServer

    async with rig(tmp_path) as r:
        port = free_port()
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.255.255.255", port))
        listener.setblocking(False)
        settings = dataclasses.replace(r.server.settings, port=port, device_instance=1002)
        server = BacnetServer(r.gateway, settings, [], version=VERSION)
        try:
            await server.start()
            loop = asyncio.get_running_loop()
            datagram = await asyncio.wait_for(loop.sock_recv(listener, 2048), WAIT_S)
        finally:
            await server.stop()
            listener.close()
        assert datagram[:2] == b"\x81\x0b"  # Original-Broadcast-NPDU
        assert b"\x10\x00\xc4" + struct.pack(">I", 8 << 22 | 1002) in datagram  # I-Am, device


@pytest.mark.asyncio
async def test_a_foreign_device_registers_with_its_bbmd(tmp_path: Path) -> None:
    """With bacnet.foreign_device set, the server sends Register-Foreign-Device with the TTL."""
    import dataclasses

    from gateway.bacnet import BacnetServer
    from gateway.config import ForeignDevice

    async with rig(tmp_path) as r:
        bbmd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        bbmd.bind(("127.0.0.1", 0))
        bbmd.setblocking(False)
        settings = dataclasses.replace(
            r.server.settings,
            port=free_port(),
            device_instance=1003,
            foreign_device=ForeignDevice("127.0.0.1", bbmd.getsockname()[1], 120),
        )
        server = BacnetServer(r.gateway, settings, [], version=VERSION)
        try:
            await server.start()
            loop = asyncio.get_running_loop()
            datagram = await asyncio.wait_for(loop.sock_recv(bbmd, 2048), WAIT_S)
        finally:
            await server.stop()
            bbmd.close()
        assert datagram == b"\x81\x05\x00\x06" + (120).to_bytes(2, "big")  # J.2.6


@pytest.mark.asyncio
async def test_confirmed_notifications_to_several_subscribers_are_all_delivered(
    tmp_path: Path,
) -> None:
    """Two BMS front ends, 150 notifications each within a few seconds: every one arrives.

    A receiver drops a confirmed request whose (source, invoke ID) it saw in the last few
    seconds as a retransmission (bac-py: 6 s). Numbered from one counter for both peers, each
    would see its IDs come back after 128 notifications; numbered per peer, after 256.
    """
    async with rig(tmp_path) as r, loopback_client(4002) as second:
        received: asyncio.Queue[float] = asyncio.Queue()

        def on_cov(notification: Any, source: Any) -> None:
            value = notification.list_of_values[0].value
            received.put_nowait(decode_all_application_values(value)[0])

        await asyncio.wait_for(
            second.subscribe_cov_ex(
                r.address, "ai,101", process_id=72, confirmed=True, lifetime=60, callback=on_cov
            ),
            WAIT_S,
        )
        await r.subscribe("ai,101", process_id=71, confirmed=True, lifetime=60)
        await r.notification()
        await asyncio.wait_for(received.get(), WAIT_S)
        for step in range(150):
            r.clocks.elapse(0.5)
            r.gateway.pulses("e", 2)  # 1 kWh: the object's COV increment
            r.server.refresh()
            expected = f32(r.gateway.engine.channels["e"].consumption)
            first_value = (await r.notification())["PRESENT_VALUE"]
            second_value = await asyncio.wait_for(received.get(), WAIT_S)
            assert (step, first_value, second_value) == (step, expected, expected)


@pytest.mark.asyncio
async def test_a_burst_of_notifications_is_sent_in_paced_turns_and_all_arrive(
    tmp_path: Path,
) -> None:
    """Forty subscriptions on two objects change at once: a turn of the event loop ends once
    COV_BATCH notifications have left (requests are answered in between), the rest a pace
    later; an object's subscribers are all notified in the same turn, however many; every
    subscriber gets the new value."""
    async with rig(tmp_path) as r:
        for process_id in range(1, 21):
            await r.subscribe("ai,101", process_id=process_id)  # e's consumption
            await r.subscribe("ai,201", process_id=100 + process_id)  # w's consumption
        for _ in range(40):
            await r.notification()  # the initial ones
        r.clocks.elapse(0.5)
        r.gateway.pulses("e", 2)
        r.gateway.pulses("w", 2)
        r.server.refresh()
        handle = r.server._refresh_handle
        assert handle is not None
        handle.cancel()  # run the first turn here, to see where it stops
        assert COV_BATCH < 20 and r.server._evaluate() == 20  # one object, all its subscribers
        assert isinstance(r.server._refresh_handle, asyncio.TimerHandle)  # the rest, paced
        values = [await r.notification() for _ in range(40)]
        instances = sorted(v["object"].instance_number for v in values)
        assert instances == [101] * 20 + [201] * 20
        e, w = (r.gateway.engine.channels[c].consumption for c in ("e", "w"))
        assert {v["PRESENT_VALUE"] for v in values} == {f32(e), f32(w)}
        await asyncio.sleep(0.2)
        assert r.notifications.empty()  # each subscriber once
