"""The ReadProperty/RPM fast path: its codec against bacpypes3 and bac-py, its fall-backs, and
the hook on a live bacpypes3 server read by bac-py over loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from bacpypes3.apdu import (
    APDU,
    APCISequence,
    ReadAccessSpecification,
    ReadPropertyMultipleRequest,
    ReadPropertyRequest,
    WritePropertyRequest,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import PropertyReference, StatusFlags
from bacpypes3.constructeddata import Any
from bacpypes3.ipv4.bvll import LPCI, OriginalUnicastNPDU
from bacpypes3.local.analog import AnalogInputObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.npdu import NPDU
from bacpypes3.pdu import PDU, Address
from bacpypes3.primitivedata import (
    BitString,
    Boolean,
    CharacterString,
    Enumerated,
    ObjectIdentifier,
    Real,
    Tag,
    TagList,
    Unsigned,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bacnet.fastpath import (
    READ_PROPERTY,
    READ_PROPERTY_MULTIPLE,
    AccessSpec,
    FastPath,
    Lookup,
    Request,
    answer,
    decode_request,
    encode_ack,
    encode_bit_string,
    encode_boolean,
    encode_character_string,
    encode_enumerated,
    encode_object_identifier,
    encode_real,
    encode_status_flags,
    encode_unsigned,
    install,
)
from tests.helpers import free_port

AI = 0  # analog-input
PRESENT_VALUE = 85
STATUS_FLAGS = 111
OBJECT_NAME = 77
UNITS = 117
DESCRIPTION = 28
SERVER = Address("127.0.0.1:47808")  # only a destination for bacpypes3's encoders
WAIT = 5.0  # seconds: the bound of every network wait


# --------------------------------------------------------------------------------------------
# Helpers: bacpypes3 as the reference encoder/decoder
# --------------------------------------------------------------------------------------------


def to_wire(
    request: APCISequence,
    invoke_id: int = 7,
    max_apdu_code: int = 5,
    priority: int = 0,
) -> bytes:
    """Encode a bacpypes3 confirmed request the way its stack puts it on the wire."""
    request.apduInvokeID = invoke_id
    request.apduMaxResp = max_apdu_code
    request.apduMaxSegs = 0
    request.apduSA = 0
    request.apduSeg = 0
    request.apduMor = 0
    npdu = NPDU(request.encode().encode().pduData)
    npdu.pduExpectingReply = True
    npdu.pduNetworkPriority = priority
    return bytes(OriginalUnicastNPDU(npdu.encode().pduData).encode().pduData)


def from_wire(datagram: bytes) -> tuple[NPDU, APCISequence]:
    """Decode a datagram with bacpypes3's own BVLL, NPDU and APDU decoders."""
    pdu = PDU(datagram)
    lpci = LPCI.decode(pdu)
    assert (lpci.bvlciFunction, lpci.bvlciLength) == (0x0A, len(datagram))
    npdu = NPDU.decode(pdu)
    return npdu, APCISequence.decode(APDU.decode(npdu))


def rp(object_id: str, prop: str | int, index: int | None = None) -> ReadPropertyRequest:
    """A bacpypes3 ReadProperty request."""
    request = ReadPropertyRequest(
        objectIdentifier=ObjectIdentifier(object_id), propertyIdentifier=prop, destination=SERVER
    )
    if index is not None:
        request.propertyArrayIndex = index
    return request


def rpm(*specs: tuple[str, list[str | int]]) -> ReadPropertyMultipleRequest:
    """A bacpypes3 ReadPropertyMultiple request: (object, [properties]) per spec."""
    return ReadPropertyMultipleRequest(
        listOfReadAccessSpecs=[
            ReadAccessSpecification(
                objectIdentifier=ObjectIdentifier(obj),
                listOfPropertyReferences=[PropertyReference(propertyIdentifier=p) for p in props],
            )
            for obj, props in specs
        ],
        destination=SERVER,
    )


def reference_bytes(value: object) -> bytes:
    """bacpypes3's application-tagged encoding of one value."""
    encoded = value.encode()  # type: ignore[attr-defined]
    tags = TagList([encoded]) if isinstance(encoded, Tag) else encoded
    return bytes(tags.encode().pduData)


def serve(values: dict[tuple[int, int, int], bytes]) -> Lookup:
    """A lookup answering from a dict keyed by (type, instance, property); no array indexes."""

    def lookup(object_type: int, instance: int, prop: int, index: int | None) -> bytes | None:
        return None if index is not None else values.get((object_type, instance, prop))

    return lookup


PV_2_5: Lookup = serve({(AI, 1, PRESENT_VALUE): encode_real(2.5)})


# --------------------------------------------------------------------------------------------
# Value encoders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        (encode_real(2.5), Real(2.5)),
        (encode_real(-1234.5), Real(-1234.5)),
        (encode_unsigned(0), Unsigned(0)),
        (encode_unsigned(255), Unsigned(255)),
        (encode_unsigned(256), Unsigned(256)),
        (encode_unsigned(2**32 - 1), Unsigned(2**32 - 1)),
        (encode_enumerated(0), Enumerated(0)),
        (encode_enumerated(19), Enumerated(19)),
        (encode_enumerated(300), Enumerated(300)),
        (encode_boolean(True), Boolean(True)),
        (encode_boolean(False), Boolean(False)),
        (encode_character_string(""), CharacterString("")),
        (encode_character_string("c1.demand"), CharacterString("c1.demand")),
        (encode_character_string("Zähler €"), CharacterString("Zähler €")),
        (encode_character_string("x" * 252), CharacterString("x" * 252)),
        (encode_character_string("x" * 253), CharacterString("x" * 253)),
        (encode_character_string("x" * 400), CharacterString("x" * 400)),
        (encode_bit_string([True, False, True]), BitString([1, 0, 1])),
        (encode_bit_string([False] * 9), BitString([0] * 9)),
        (encode_status_flags(), StatusFlags([0, 0, 0, 0])),
        (encode_status_flags(fault=True), StatusFlags([0, 1, 0, 0])),
        (encode_status_flags(in_alarm=True, out_of_service=True), StatusFlags([1, 0, 0, 1])),
        (encode_object_identifier(8, 599), ObjectIdentifier("device,599")),
        (encode_object_identifier(0, 0x3FFFFF), ObjectIdentifier((0, 0x3FFFFF))),
    ],
    # bacpypes3's CharacterString is a str whose encode() pytest cannot call to make an id.
    ids=lambda value: value[:6].hex() if isinstance(value, bytes) else type(value).__name__,
)
def test_value_encoders_match_bacpypes3(ours: bytes, reference: object) -> None:
    """Each encoder produces exactly bacpypes3's application-tagged bytes for the same value."""
    assert ours == reference_bytes(reference)


def test_value_encoders_refuse_values_bacnet_cannot_carry() -> None:
    """Negative unsigned values and out-of-range object identifiers raise ValueError."""
    with pytest.raises(ValueError):
        encode_unsigned(-1)
    with pytest.raises(ValueError):
        encode_object_identifier(1024, 1)
    with pytest.raises(ValueError):
        encode_object_identifier(0, 0x400000)


# --------------------------------------------------------------------------------------------
# Decoding requests encoded by bacpypes3
# --------------------------------------------------------------------------------------------


def test_decodes_a_bacpypes3_read_property_request() -> None:
    """A ReadProperty encoded by bacpypes3 decodes to its object, property, invoke id and limits."""
    request = decode_request(to_wire(rp("analog-input,201", "presentValue"), invoke_id=200))
    assert request == Request(
        service=READ_PROPERTY,
        invoke_id=200,
        max_apdu=1476,
        priority=0,
        specs=(AccessSpec(AI, 201, ((PRESENT_VALUE, None),)),),
    )


def test_decodes_array_index_priority_and_max_apdu() -> None:
    """The optional array index, the network priority and each max-APDU code are decoded."""
    for code, size in enumerate((50, 128, 206, 480, 1024, 1476)):
        wire = to_wire(rp("device,599", "objectList", index=3), max_apdu_code=code, priority=2)
        request = decode_request(wire)
        assert request is not None
        assert (request.max_apdu, request.priority) == (size, 2)
        assert request.specs == (AccessSpec(8, 599, ((76, 3),)),)


def test_decodes_a_bacpypes3_read_property_multiple_request() -> None:
    """Every spec and property reference of a bacpypes3 RPM request survives decoding, in order."""
    request_pdu = rpm(
        ("analog-input,101", ["presentValue", "statusFlags"]),
        ("binary-value,101", ["presentValue"]),
        ("analog-input,101", ["objectName"]),
    )
    spec = request_pdu.listOfReadAccessSpecs[0]
    spec.listOfPropertyReferences.append(
        PropertyReference(propertyIdentifier="priorityArray", propertyArrayIndex=16)
    )
    request = decode_request(to_wire(request_pdu))
    assert request is not None
    assert request.service == READ_PROPERTY_MULTIPLE
    assert request.specs == (
        AccessSpec(AI, 101, ((PRESENT_VALUE, None), (STATUS_FLAGS, None), (87, 16))),
        AccessSpec(5, 101, ((PRESENT_VALUE, None),)),
        AccessSpec(AI, 101, ((OBJECT_NAME, None),)),
    )


# --------------------------------------------------------------------------------------------
# Encoding answers, checked by bacpypes3 and bac-py
# --------------------------------------------------------------------------------------------


def test_read_property_ack_decodes_in_bacpypes3() -> None:
    """The ComplexACK for a ReadProperty is a bacpypes3 ReadPropertyACK with the served value."""
    reply = answer(to_wire(rp("analog-input,1", "presentValue"), invoke_id=42, priority=3), PV_2_5)
    assert reply is not None
    npdu, ack = from_wire(reply)
    assert type(ack).__name__ == "ReadPropertyACK"
    assert (ack.apduType, ack.apduInvokeID, ack.apduService) == (3, 42, READ_PROPERTY)
    assert (npdu.pduNetworkPriority, npdu.pduExpectingReply) == (3, False)
    assert ack.objectIdentifier == ObjectIdentifier("analog-input,1")
    assert ack.propertyIdentifier == PRESENT_VALUE
    assert ack.propertyArrayIndex is None
    assert ack.propertyValue.cast_out(Real) == 2.5


def test_read_property_ack_echoes_the_array_index() -> None:
    """A value served for an array index comes back with that index in the ACK."""

    def lookup(object_type: int, instance: int, prop: int, index: int | None) -> bytes | None:
        return encode_unsigned(3) if (object_type, prop, index) == (8, 76, 0) else None

    reply = answer(to_wire(rp("device,599", "objectList", index=0)), lookup)
    assert reply is not None
    _, ack = from_wire(reply)
    assert (ack.propertyIdentifier, ack.propertyArrayIndex) == (76, 0)
    assert ack.propertyValue.cast_out(Unsigned) == 3


def test_read_property_multiple_ack_decodes_in_bacpypes3() -> None:
    """The RPM ComplexACK lists every spec and value in request order, per bacpypes3."""
    names = {1: "c1.consumption", 2: "c1.demand"}
    lookup = serve(
        {
            **{(AI, i, PRESENT_VALUE): encode_real(i * 1.5) for i in names},
            **{(AI, i, OBJECT_NAME): encode_character_string(n) for i, n in names.items()},
            (AI, 2, STATUS_FLAGS): encode_status_flags(fault=True),
        }
    )
    wire = to_wire(
        rpm(
            ("analog-input,1", ["presentValue", "objectName"]),
            ("analog-input,2", ["statusFlags", "presentValue", "objectName"]),
        ),
        invoke_id=9,
    )
    reply = answer(wire, lookup)
    assert reply is not None
    _, ack = from_wire(reply)
    assert type(ack).__name__ == "ReadPropertyMultipleACK"
    assert ack.apduInvokeID == 9
    results = [
        (
            result.objectIdentifier,
            [(element.propertyIdentifier, element.readResult.propertyValue) for element in items],
        )
        for result in ack.listOfReadAccessResults
        for items in [result.listOfResults]
    ]
    assert [oid for oid, _ in results] == [
        ObjectIdentifier("analog-input,1"),
        ObjectIdentifier("analog-input,2"),
    ]
    first, second = (values for _, values in results)
    assert [p for p, _ in first] == [PRESENT_VALUE, OBJECT_NAME]
    assert first[0][1].cast_out(Real) == 1.5
    assert first[1][1].cast_out(CharacterString) == "c1.consumption"
    assert [p for p, _ in second] == [STATUS_FLAGS, PRESENT_VALUE, OBJECT_NAME]
    assert list(second[0][1].cast_out(StatusFlags)) == [0, 1, 0, 0]
    assert second[1][1].cast_out(Real) == 3.0
    assert second[2][1].cast_out(CharacterString) == "c1.demand"


def test_acks_decode_in_bac_py() -> None:
    """bac-py, an independent stack, decodes the RP and RPM ACKs to the served values."""
    pytest.importorskip("bac_py")
    from bac_py.encoding.apdu import ComplexAckPDU, decode_apdu
    from bac_py.encoding.primitives import decode_all_application_values
    from bac_py.network.npdu import decode_npdu
    from bac_py.services.read_property import ReadPropertyACK
    from bac_py.services.read_property_multiple import ReadPropertyMultipleACK
    from bac_py.transport.bvll import decode_bvll

    def service_ack(reply: bytes) -> ComplexAckPDU:
        apdu = decode_apdu(decode_npdu(decode_bvll(reply).data).apdu)
        assert isinstance(apdu, ComplexAckPDU)
        return apdu

    lookup = serve(
        {
            (AI, 1, PRESENT_VALUE): encode_real(12.25),
            (AI, 1, STATUS_FLAGS): encode_status_flags(),
            (AI, 2, PRESENT_VALUE): encode_real(-3.5),
        }
    )
    reply = answer(to_wire(rp("analog-input,1", "presentValue"), invoke_id=77), lookup)
    assert reply is not None
    apdu = service_ack(reply)
    assert (apdu.invoke_id, apdu.service_choice, apdu.segmented) == (77, READ_PROPERTY, False)
    ack = ReadPropertyACK.decode(apdu.service_ack)
    assert (int(ack.object_identifier.object_type), ack.object_identifier.instance_number) == (0, 1)
    assert decode_all_application_values(ack.property_value) == [12.25]

    wire = to_wire(
        rpm(("analog-input,1", ["presentValue", "statusFlags"]), ("analog-input,2", [85])),
        invoke_id=78,
    )
    reply = answer(wire, lookup)
    assert reply is not None
    multiple = ReadPropertyMultipleACK.decode(service_ack(reply).service_ack)
    served = [
        (result.object_identifier.instance_number, int(element.property_identifier))
        for result in multiple.list_of_read_access_results
        for element in result.list_of_results
    ]
    assert served == [(1, PRESENT_VALUE), (1, STATUS_FLAGS), (2, PRESENT_VALUE)]
    first = multiple.list_of_read_access_results[0].list_of_results[0]
    assert decode_all_application_values(first.property_value) == [12.25]


property_refs = st.tuples(
    st.integers(0, 0x3FFFFF).filter(lambda p: p not in (8, 80, 105)),  # not ALL/OPTIONAL/REQUIRED
    st.none() | st.integers(0, 2**32 - 1),
)
access_specs = st.tuples(
    st.integers(0, 1023), st.integers(0, 0x3FFFFE), st.lists(property_refs, min_size=1, max_size=4)
)


@given(specs=st.lists(access_specs, min_size=1, max_size=4), invoke_id=st.integers(0, 255))
@settings(max_examples=200, deadline=None)
def test_any_rpm_round_trips_through_bacpypes3(
    specs: list[tuple[int, int, list[tuple[int, int | None]]]], invoke_id: int
) -> None:
    """Any RPM bacpypes3 encodes decodes intact, and its ACK decodes in bacpypes3 to the values."""
    request = ReadPropertyMultipleRequest(
        listOfReadAccessSpecs=[
            ReadAccessSpecification(
                objectIdentifier=ObjectIdentifier((object_type, instance)),
                listOfPropertyReferences=[
                    PropertyReference(propertyIdentifier=prop, propertyArrayIndex=index)
                    if index is not None
                    else PropertyReference(propertyIdentifier=prop)
                    for prop, index in refs
                ],
            )
            for object_type, instance, refs in specs
        ],
        destination=SERVER,
    )
    wire = to_wire(request, invoke_id=invoke_id)
    decoded = decode_request(wire)
    assert decoded is not None
    assert [(s.object_type, s.instance, list(s.properties)) for s in decoded.specs] == specs

    def lookup(object_type: int, instance: int, prop: int, index: int | None) -> bytes:
        return encode_unsigned((object_type + instance + prop + (index or 0)) % 1000)

    reply = answer(wire, lookup)
    assert reply is not None
    _, ack = from_wire(reply)
    assert ack.apduInvokeID == invoke_id
    seen = [
        (
            int(result.objectIdentifier[0]),
            result.objectIdentifier[1],
            [
                (
                    int(element.propertyIdentifier),
                    element.propertyArrayIndex,
                    element.readResult.propertyValue.cast_out(Unsigned),
                )
                for element in result.listOfResults
            ],
        )
        for result in ack.listOfReadAccessResults
    ]
    assert seen == [
        (t, i, [(p, x, (t + i + p + (x or 0)) % 1000) for p, x in refs]) for t, i, refs in specs
    ]


# --------------------------------------------------------------------------------------------
# Fall-backs: everything the fast path is not sure about goes to bacpypes3
# --------------------------------------------------------------------------------------------


def patched(wire: bytes, offset: int, value: int) -> bytes:
    """``wire`` with one octet replaced."""
    return wire[:offset] + bytes((value,)) + wire[offset + 1 :]


def with_length(body: bytes) -> bytes:
    """A BVLC Original-Unicast-NPDU whose length field matches ``body`` plus the header."""
    return b"\x81\x0a" + (len(body) + 4).to_bytes(2, "big") + body


RP_WIRE = to_wire(rp("analog-input,1", "presentValue"))  # 81 0a 00 11 | 01 04 | 00 05 07 0c ...


@pytest.mark.parametrize(
    ("case", "wire"),
    [
        ("segmented request (SEG)", patched(RP_WIRE, 6, 0x08)),
        ("more-follows without SEG", patched(RP_WIRE, 6, 0x04)),
        ("reserved APCI bit", patched(RP_WIRE, 6, 0x01)),
        ("reserved max-APDU code", patched(RP_WIRE, 7, 0x06)),
        ("reserved bit in the max-segments octet", patched(RP_WIRE, 7, 0x85)),
        ("unconfirmed request PDU type", patched(RP_WIRE, 6, 0x10)),
        ("other service (ReadRange)", patched(RP_WIRE, 9, 26)),
        ("network-layer message", patched(RP_WIRE, 5, 0x80)),
        ("DNET present (routed)", with_length(b"\x01\x24\x00\x05\x01\x09\xff" + RP_WIRE[6:])),
        ("SNET present (routed)", with_length(b"\x01\x0c\x00\x05\x01\x09" + RP_WIRE[6:])),
        ("NPDU version 2", patched(RP_WIRE, 4, 0x02)),
        ("Original-Broadcast-NPDU", patched(RP_WIRE, 1, 0x0B)),
        ("Forwarded-NPDU", b"\x81\x04\x00\x17" + b"\x7f\x00\x00\x01\xba\xc0" + RP_WIRE[4:]),
        ("BVLC length too long", patched(RP_WIRE, 3, 0x12)),
        ("BVLC length too short", patched(RP_WIRE, 3, 0x10)),
        ("not BACnet/IP", patched(RP_WIRE, 0, 0x82)),
        ("trailing octet", with_length(RP_WIRE[4:] + b"\x00")),
        ("object identifier of 3 octets", with_length(RP_WIRE[4:10] + b"\x0b\x00\x00\x01\x19\x55")),
        ("extended-length property", with_length(RP_WIRE[4:15] + b"\x1d\x01\x55")),
        ("opening tag instead of index", with_length(RP_WIRE[4:] + b"\x2e\x21\x01\x2f")),
        (
            "wildcard device instance",
            to_wire(rp("device,4194303", "objectName")),
        ),
        ("empty", b""),
        ("header only", b"\x81\x0a\x00\x04"),
    ],
)
def test_doubtful_requests_are_left_to_bacpypes3(case: str, wire: bytes) -> None:
    """A request the fast path does not fully understand decodes to None and is not answered."""
    everything: Lookup = lambda *_: encode_real(1.0)  # noqa: E731 - a lookup that knows all
    assert decode_request(wire) is None, case
    assert answer(wire, everything) is None, case


def test_the_patched_fixtures_are_otherwise_valid() -> None:
    """The unpatched request of the fall-back cases is answered: each case tests one doubt."""
    assert answer(RP_WIRE, PV_2_5) is not None
    assert answer(with_length(RP_WIRE[4:]), PV_2_5) == answer(RP_WIRE, PV_2_5)


@pytest.mark.parametrize("special", ["all", "required", "optional"])
def test_rpm_all_required_optional_go_to_bacpypes3_without_asking(special: str) -> None:
    """RPM for ALL/REQUIRED/OPTIONAL is bacpypes3's, and the lookup is never asked."""
    asked: list[tuple[int, int, int, int | None]] = []

    def lookup(*key: int | None) -> bytes:
        asked.append(key)  # type: ignore[arg-type]
        return encode_real(1.0)

    wire = to_wire(rpm(("analog-input,1", ["presentValue", special])))
    assert answer(wire, lookup) is None
    assert asked == []


def test_unknown_property_goes_to_bacpypes3() -> None:
    """A property the lookup does not know is not answered, nor is an RPM that includes it."""
    assert answer(to_wire(rp("analog-input,1", "description")), PV_2_5) is None
    assert answer(to_wire(rp("analog-input,2", "presentValue")), PV_2_5) is None
    mixed = rpm(("analog-input,1", ["presentValue"]), ("analog-input,1", ["description"]))
    assert answer(to_wire(mixed), PV_2_5) is None


def test_array_index_is_the_lookups_call() -> None:
    """An array index reaches the lookup; a lookup that ignores indexes leaves it to bacpypes3."""
    asked: list[tuple[int, int, int, int | None]] = []

    def lookup(object_type: int, instance: int, prop: int, index: int | None) -> bytes | None:
        asked.append((object_type, instance, prop, index))
        return None

    assert answer(to_wire(rp("analog-input,1", "presentValue", index=1)), lookup) is None
    assert answer(to_wire(rp("analog-input,1", "presentValue", index=1)), PV_2_5) is None
    assert asked == [(AI, 1, PRESENT_VALUE, 1)]


def test_a_reply_larger_than_the_clients_max_apdu_goes_to_bacpypes3() -> None:
    """An ACK over the client's max-APDU is not sent (bacpypes3 segments or aborts instead)."""
    long_name = serve({(AI, 1, OBJECT_NAME): encode_character_string("n" * 60)})
    small = to_wire(rp("analog-input,1", "objectName"), max_apdu_code=0)  # 50 octets
    large = to_wire(rp("analog-input,1", "objectName"), max_apdu_code=1)  # 128 octets
    assert answer(small, long_name) is None
    assert answer(large, long_name) is not None
    # Exactly at the limit is allowed: header 3 + [0] 5 + [1] 2 + {} 2 + value 38 = 50 octets.
    fits = serve({(AI, 1, OBJECT_NAME): encode_character_string("n" * 35)})
    reply = answer(small, fits)
    assert reply is not None and len(reply) - 6 == 50
    many = rpm(*[("analog-input,1", ["objectName"]) for _ in range(30)])
    assert answer(to_wire(many, max_apdu_code=5), long_name) is None  # 30 x ~72 > 1476


def test_encode_ack_refuses_an_oversized_apdu() -> None:
    """encode_ack returns None rather than an APDU bigger than the request allows."""
    request = decode_request(to_wire(rp("analog-input,1", "objectName"), max_apdu_code=0))
    assert request is not None
    assert encode_ack(request, [[encode_character_string("n" * 35)]]) is not None
    assert encode_ack(request, [[encode_character_string("n" * 36)]]) is None


def test_other_confirmed_services_go_to_bacpypes3() -> None:
    """A WriteProperty (or any service but RP/RPM) is never answered by the fast path."""
    write = WritePropertyRequest(
        objectIdentifier=ObjectIdentifier("binary-value,101"),
        propertyIdentifier="presentValue",
        propertyValue=Any(Enumerated(1)),
        priority=8,
        destination=SERVER,
    )
    assert answer(to_wire(write), lambda *_: encode_enumerated(1)) is None


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_random_bytes_never_raise(tail: bytes) -> None:
    """Any bytes after a plausible header decode to a Request or None, never an exception."""
    everything: Lookup = lambda *_: encode_real(1.0)  # noqa: E731
    for service in (READ_PROPERTY, READ_PROPERTY_MULTIPLE):
        wire = with_length(b"\x01\x04\x00\x05\x01" + bytes((service,)) + tail)
        decode_request(wire)
        answer(wire, everything)
    decode_request(tail)


def test_every_truncation_is_refused_or_still_well_formed() -> None:
    """Each prefix of RP/RPM requests never raises; with its true length it is never answered."""
    requests = [
        to_wire(rp("analog-input,1", "presentValue", index=2)),
        to_wire(rpm(("analog-input,1", ["presentValue", "statusFlags"]), ("device,1", [77]))),
    ]
    everything: Lookup = lambda *_: encode_real(1.0)  # noqa: E731
    for wire in requests:
        for cut in range(len(wire)):
            assert answer(wire[:cut], everything) is None  # the BVLC length no longer matches
            relabelled = with_length(wire[4:cut]) if cut >= 4 else wire[:cut]
            request = decode_request(relabelled)  # may be a shorter valid request, or None
            if request is not None:
                assert answer(relabelled, everything) is not None


# --------------------------------------------------------------------------------------------
# The hook, on fakes (no sockets)
# --------------------------------------------------------------------------------------------


class FakeProtocol:
    """Stands in for bacpypes3's IPv4DatagramProtocol: records what it is handed."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))


class FakeTransport:
    """Stands in for the asyncio datagram transport: records what is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def hooked(lookup: Lookup) -> tuple[FastPath, FakeProtocol, FakeTransport]:
    """A FastPath attached to a fake IPv4DatagramServer at 127.0.0.1:47808."""
    protocol, transport = FakeProtocol(), FakeTransport()
    server = SimpleNamespace(
        local_protocol=protocol, local_transport=transport, local_address=("127.0.0.1", 47808)
    )
    fast_path = FastPath(lookup)
    fast_path._attach(server)  # type: ignore[arg-type]
    return fast_path, protocol, transport


def test_hook_answers_known_reads_and_passes_the_rest_on() -> None:
    """Known reads are sent straight back to the source; everything else reaches bacpypes3."""
    fast_path, protocol, transport = hooked(PV_2_5)
    client = ("127.0.0.1", 50000)
    unknown = to_wire(rp("analog-input,1", "description"))
    protocol.datagram_received(RP_WIRE, client)
    protocol.datagram_received(unknown, client)
    assert transport.sent == [(answer(RP_WIRE, PV_2_5), client)]
    assert protocol.received == [(unknown, client)]
    assert (fast_path.answered, fast_path.passed, fast_path.lookup_errors) == (1, 1, 0)


def test_hook_falls_back_when_the_lookup_raises() -> None:
    """A lookup that raises costs a bacpypes3 answer, not the server."""

    def broken(*_: int | None) -> bytes | None:
        raise KeyError("engine not ready")

    fast_path, protocol, transport = hooked(broken)
    protocol.datagram_received(RP_WIRE, ("127.0.0.1", 50000))
    assert transport.sent == []
    assert protocol.received == [(RP_WIRE, ("127.0.0.1", 50000))]
    assert fast_path.lookup_errors == 1


def test_hook_leaves_reflected_datagrams_and_uninstalls_cleanly() -> None:
    """Datagrams from our own address go to bacpypes3 (it drops them); uninstall restores it."""
    fast_path, protocol, transport = hooked(PV_2_5)
    protocol.datagram_received(RP_WIRE, ("127.0.0.1", 47808))
    assert transport.sent == [] and len(protocol.received) == 1
    with pytest.raises(RuntimeError):
        fast_path._attach(  # a second hook on the same socket is refused
            SimpleNamespace(
                local_protocol=protocol,
                local_transport=transport,
                local_address=("127.0.0.1", 47808),
            )  # type: ignore[arg-type]
        )
    fast_path.uninstall()
    assert "datagram_received" not in vars(protocol)
    protocol.datagram_received(RP_WIRE, ("127.0.0.1", 50000))
    assert transport.sent == [] and len(protocol.received) == 2


@pytest.mark.asyncio
async def test_install_refuses_a_target_without_an_ipv4_socket() -> None:
    """install() on something that is not a bacpypes3 IPv4 application raises ValueError."""
    with pytest.raises(ValueError):
        await install(object(), PV_2_5)


# --------------------------------------------------------------------------------------------
# End to end: a bare bacpypes3 server on 127.0.0.1, the fast path installed
# --------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bacpypes3_server(port: int, count: int = 3) -> AsyncIterator[Application]:
    """A bare bacpypes3 Application with ``count`` analog inputs at 127.0.0.1:``port``."""
    device = DeviceObject(
        objectIdentifier=("device", 599),
        objectName="fastpath-test",
        vendorIdentifier=999,
        vendorName="Example",
        modelName="fastpath",
    )
    network_port = NetworkPortObject(
        f"127.0.0.1/8:{port}", objectIdentifier=("network-port", 1), objectName="NP1"
    )
    inputs = [
        AnalogInputObject(
            objectIdentifier=("analog-input", i),
            objectName=f"ai{i}",
            presentValue=float(i),
            units="kilowatts",
            covIncrement=1.0,
            eventState="normal",
            outOfService=False,
            reliability="noFaultDetected",
            description=f"input {i} from bacpypes3",
        )
        for i in range(1, count + 1)
    ]
    app = Application.from_object_list([device, network_port, *inputs])
    try:
        yield app
    finally:
        app.close()
        await asyncio.sleep(0)


class RawClient(asyncio.DatagramProtocol):
    """A raw UDP client: one request, one reply, bounded wait."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies.put_nowait(data)

    async def ask(self, wire: bytes, server: tuple[str, int]) -> bytes:
        assert self.transport is not None
        self.transport.sendto(wire, server)
        return await asyncio.wait_for(self.replies.get(), WAIT)


@contextlib.asynccontextmanager
async def hooked_server(
    lookup: Lookup,
) -> AsyncIterator[tuple[FastPath, RawClient, asyncio.DatagramTransport, tuple[str, int]]]:
    """A bare bacpypes3 server with the fast path installed over ``lookup``, and a raw client:
    (the fast path, the client, its transport, the server's address)."""
    port = free_port()
    loop = asyncio.get_running_loop()
    async with bacpypes3_server(port) as app:
        transport, client = await loop.create_datagram_endpoint(
            RawClient, local_addr=("127.0.0.1", free_port())
        )
        try:
            fast_path = await install(app, lookup)
            yield fast_path, client, transport, ("127.0.0.1", port)
        finally:
            transport.close()


@pytest.mark.asyncio
async def test_fast_path_replies_are_byte_identical_to_bacpypes3() -> None:
    """With a lookup that tells the truth, the fast path sends the very bytes bacpypes3 sends."""
    truth = serve(
        {
            **{(AI, i, PRESENT_VALUE): encode_real(float(i)) for i in (1, 2, 3)},
            **{(AI, i, STATUS_FLAGS): encode_status_flags() for i in (1, 2, 3)},
            **{(AI, i, OBJECT_NAME): encode_character_string(f"ai{i}") for i in (1, 2, 3)},
            **{(AI, i, UNITS): encode_enumerated(48) for i in (1, 2, 3)},  # kilowatts
        }
    )
    requests = [
        to_wire(rp("analog-input,1", "presentValue"), invoke_id=1),
        to_wire(rp("analog-input,2", "statusFlags"), invoke_id=2, priority=1),
        to_wire(rp("analog-input,3", "objectName"), invoke_id=3),
        to_wire(rp("analog-input,3", "units"), invoke_id=4),
        to_wire(
            rpm(
                ("analog-input,1", ["presentValue", "statusFlags"]),
                ("analog-input,2", ["objectName", "units", "presentValue"]),
            ),
            invoke_id=5,
        ),
    ]
    async with hooked_server(truth) as (fast_path, client, _, server):
        fast = [await client.ask(wire, server) for wire in requests]
        assert fast_path.answered == len(requests)
        fast_path.uninstall()
        slow = [await client.ask(wire, server) for wire in requests]
        assert fast_path.answered == len(requests)  # uninstalled: bacpypes3 answered these
    assert fast == slow


@pytest.mark.asyncio
async def test_requests_waiting_in_the_socket_are_answered_in_one_turn() -> None:
    """Requests that queued in the socket while the loop was busy are all read when it gets
    its turn, not one per turn of the loop; what the fast path does not answer still
    reaches bacpypes3."""
    values = serve({(AI, i, PRESENT_VALUE): encode_real(float(i)) for i in (1, 2, 3)})
    async with hooked_server(values) as (fast_path, client, transport, server):
        for invoke in range(10):  # all in the server's socket before its next turn
            transport.sendto(to_wire(rp("analog-input,1", "presentValue"), invoke), server)
        transport.sendto(to_wire(rp("analog-input,2", "objectName"), invoke_id=10), server)
        replies = [await asyncio.wait_for(client.replies.get(), WAIT) for _ in range(11)]
    assert fast_path.answered == 10 and fast_path.passed == 1
    assert fast_path.drained == 10  # one handed over by asyncio, ten read with it
    assert sorted(reply[7] for reply in replies) == list(range(11))  # every invoke id


@pytest.mark.asyncio
async def test_bac_py_reads_fast_path_values_and_bacpypes3_serves_the_rest() -> None:
    """bac-py reads the lookup's values via the fast path and everything else from bacpypes3."""
    pytest.importorskip("bac_py")
    from bac_py import Client

    # Marker values the bacpypes3 objects do not hold (they hold 1.0, 2.0, 3.0): reading one
    # proves the fast path answered.
    markers = serve({(AI, i, PRESENT_VALUE): encode_real(40.0 + i) for i in (1, 2, 3)})
    port = free_port()
    server = f"127.0.0.1:{port}"
    async with bacpypes3_server(port) as app:
        fast_path = await install(app, markers)
        async with (
            asyncio.timeout(4 * WAIT),
            Client(
                instance_number=4001,
                interface="127.0.0.1",
                port=free_port(),  # never the server's port on loopback (docs/design/bacpypes3.md)
                broadcast_address="127.255.255.255",
            ) as client,
        ):
            assert await client.read(server, "ai,1", "pv") == pytest.approx(41.0)
            assert fast_path.answered == 1
            many = await client.read_multiple(server, {f"ai,{i}": ["pv"] for i in (1, 2, 3)})
            assert [list(props.values()) for props in many.values()] == [[41.0], [42.0], [43.0]]
            assert fast_path.answered == 2

            passed = fast_path.passed
            assert await client.read(server, "ai,2", "description") == "input 2 from bacpypes3"
            assert fast_path.passed == passed + 1
            units = await client.read(server, "ai,2", "units")
            assert "KILOWATTS" in str(units).upper() or units == 48
            mixed = await client.read_multiple(server, {"ai,3": ["pv", "description"]})
            assert next(iter(mixed.values()))["description"] == "input 3 from bacpypes3"
            assert fast_path.answered == 2  # one unknown property: bacpypes3 answered it all
            assert fast_path.passed == passed + 3
