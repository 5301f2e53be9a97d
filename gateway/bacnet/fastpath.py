"""A fast responder for ReadProperty and ReadPropertyMultiple, in front of bacpypes3 0.0.110.

bacpypes3 spends about 1 ms of CPU on each ReadProperty (PDU objects at every layer, a task per
datagram, a server transaction state machine, tag lists, object attribute lookups), which caps a
bare server at ~900 requests/s on the project's machine while asyncio itself moves ~15,000
datagrams/s. Building-management front-ends mostly poll present-value and status-flags, so this
module answers exactly that common case straight from the datagram and hands everything else to
bacpypes3, untouched.

Two layers:

- a pure codec (bytes in, bytes out, no I/O): :func:`decode_request`, :func:`encode_ack`,
  :func:`answer` and the ``encode_*`` value helpers;
- a thin hook, :func:`install`, that puts :func:`answer` in front of a running bacpypes3
  application's UDP socket.

What the fast path answers: a BVLC Original-Unicast-NPDU (J.2.11) carrying a version-1 NPDU with
no network-layer message and no DNET/SNET (6.2.2), whose APDU is an unsegmented Confirmed-Request
(20.1.2) for ReadProperty (15.5) or ReadPropertyMultiple (15.7), every requested property of
which the ``lookup`` callback knows, and whose ComplexACK (20.1.5) fits the max-APDU the client
declared. Anything else (other services, segmented or routed requests, ALL/REQUIRED/OPTIONAL,
the wildcard instance, a property the lookup does not know, a reply too big, and any byte the
decoder is not sure about) goes to bacpypes3 exactly as it arrived, so for those requests the
server behaves exactly as bacpypes3 does. Error, Reject, Abort and segmented replies are always
bacpypes3's, sized against the client's max-APDU by ``gateway.bacnet.segmentation``.

The lookup is the single source of truth for the values it serves: whatever it returns is what
clients read, without passing through bacpypes3 objects or their ``read_property`` overrides.
It must therefore return exactly what bacpypes3 would answer for that property, or None.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.logging import get_logger

if TYPE_CHECKING:
    from bacpypes3.ipv4 import IPv4DatagramServer

__all__ = [
    "READ_PROPERTY",
    "READ_PROPERTY_MULTIPLE",
    "TESTED_BACPYPES3",
    "AccessSpec",
    "FastPath",
    "Lookup",
    "Request",
    "answer",
    "decode_request",
    "encode_ack",
    "encode_bit_string",
    "encode_boolean",
    "encode_character_string",
    "encode_enumerated",
    "encode_object_identifier",
    "encode_real",
    "encode_status_flags",
    "encode_unsigned",
    "install",
]

log = get_logger("bacnet.fastpath")

type Lookup = Callable[[int, int, int, int | None], bytes | None]
"""(object_type, instance, property_identifier, array_index) -> the property value encoded as
BACnet application-tagged bytes (one or more tagged values, e.g. :func:`encode_real`), or None
when the fast path must leave this property to bacpypes3."""

# Datagrams read at once after the one asyncio hands over (see _receiver), and the size
# asyncio's selector datagram transport reads with (its max_size).
DRAIN_MAX = 32
MAX_DATAGRAM = 256 * 1024

# The bacpypes3 release whose internals the hook was written against and tested with.
TESTED_BACPYPES3 = "0.0.110"

# Confirmed service choices (21, BACnetConfirmedServiceChoice).
READ_PROPERTY = 12
READ_PROPERTY_MULTIPLE = 14

# Max-APDU-length-accepted codes of a Confirmed-Request (20.1.2.5); codes 6-15 are reserved.
_MAX_APDU = (50, 128, 206, 480, 1024, 1476)

# Property identifiers that stand for a set of properties in RPM (15.7.3.1.1); bacpypes3 expands
# them, the fast path never does.
_SPECIAL_PROPERTIES = frozenset({8, 80, 105})  # all, optional, required

# The instance number 4194303 is the "unknown/wildcard" instance (12.11.1, 15.5.1.1.1): the reply
# must name the real object, which only the application knows.
_WILDCARD_INSTANCE = 0x3FFFFF


# --------------------------------------------------------------------------------------------
# Application-tagged value encoders (20.2). Each returns one complete application-tagged value.
# --------------------------------------------------------------------------------------------


def _tagged(tag: int, payload: bytes) -> bytes:
    """Application tag ``tag`` (20.2.1.1) followed by ``payload``, with the length coded per
    20.2.1.3.1: up to 4 octets in the tag's L/V/T field, else the extended length octets."""
    length = len(payload)
    if length <= 4:
        return bytes((tag << 4 | length,)) + payload
    if length <= 253:
        return bytes((tag << 4 | 5, length)) + payload
    if length <= 0xFFFF:
        return bytes((tag << 4 | 5, 254)) + length.to_bytes(2, "big") + payload
    return bytes((tag << 4 | 5, 255)) + length.to_bytes(4, "big") + payload


def _octets(value: int) -> bytes:
    """The fewest big-endian octets holding the unsigned ``value`` (20.2.4; zero is one octet)."""
    if value < 0:
        raise ValueError(f"unsigned value must be >= 0, got {value}")
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def encode_boolean(value: bool) -> bytes:
    """BOOLEAN, application tag 1: the value sits in the L/V/T field, no contents (20.2.3)."""
    return b"\x11" if value else b"\x10"


def encode_unsigned(value: int) -> bytes:
    """Unsigned Integer, application tag 2, in the fewest octets (20.2.4)."""
    return _tagged(2, _octets(value))


def encode_real(value: float) -> bytes:
    """REAL, application tag 4: IEEE-754 single precision, big-endian (20.2.6).

    Raises OverflowError for a finite value beyond single precision, like ``struct`` does.
    """
    return b"\x44" + struct.pack(">f", value)


def encode_character_string(text: str) -> bytes:
    """CharacterString, application tag 7: character set 0 (ISO 10646 UTF-8), then the
    UTF-8 octets (20.2.9)."""
    return _tagged(7, b"\x00" + text.encode("utf-8"))


def encode_bit_string(bits: Sequence[bool]) -> bytes:
    """BIT STRING, application tag 8: the count of unused bits in the last octet, then the bits,
    first bit in the most significant position (20.2.10)."""
    packed = bytearray((len(bits) + 7) // 8)
    for position, bit in enumerate(bits):
        if bit:
            packed[position // 8] |= 0x80 >> (position % 8)
    unused = -len(bits) % 8
    return _tagged(8, bytes((unused,)) + bytes(packed))


def encode_status_flags(
    *,
    in_alarm: bool = False,
    fault: bool = False,
    overridden: bool = False,
    out_of_service: bool = False,
) -> bytes:
    """BACnetStatusFlags, a four-bit BIT STRING in the order of 21 (in-alarm, fault, overridden,
    out-of-service): e.g. ``82 04 40`` for fault alone."""
    return encode_bit_string((in_alarm, fault, overridden, out_of_service))


def encode_enumerated(value: int) -> bytes:
    """ENUMERATED, application tag 9, in the fewest octets (20.2.11)."""
    return _tagged(9, _octets(value))


def encode_object_identifier(object_type: int, instance: int) -> bytes:
    """BACnetObjectIdentifier, application tag 12: 10 bits of object type, 22 bits of instance
    (20.2.14)."""
    if not (0 <= object_type <= 0x3FF and 0 <= instance <= 0x3FFFFF):
        raise ValueError(f"object identifier out of range: ({object_type}, {instance})")
    return b"\xc4" + (object_type << 22 | instance).to_bytes(4, "big")


# --------------------------------------------------------------------------------------------
# Request decoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessSpec:
    """One object and the properties read from it: (property_identifier, array_index) pairs."""

    object_type: int
    instance: int
    properties: tuple[tuple[int, int | None], ...]


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded ReadProperty or ReadPropertyMultiple request the fast path may answer."""

    service: int  # READ_PROPERTY or READ_PROPERTY_MULTIPLE
    invoke_id: int
    max_apdu: int  # octets the client accepts in one APDU (20.1.2.5)
    priority: int  # NPDU network priority (6.2.2), echoed in the reply as bacpypes3 does
    specs: tuple[AccessSpec, ...]  # ReadProperty: exactly one spec with one property


def _context_unsigned(data: bytes, pos: int, tag: int) -> tuple[int, int] | None:
    """Decode a context-tagged unsigned (or enumerated) of 1-4 octets at ``pos`` (20.2.1.2).

    Returns (value, position after it), or None when the octet at ``pos`` is not context tag
    ``tag`` with a 1-4 octet length: an extended tag number or length is never used for these
    small fields, so it is treated as doubt.
    """
    if pos >= len(data):
        return None
    octet = data[pos]
    length = octet & 0x07
    if octet & 0xF8 != (tag << 4 | 0x08) or not 1 <= length <= 4:
        return None
    end = pos + 1 + length
    if end > len(data):
        return None
    return int.from_bytes(data[pos + 1 : end], "big"), end


def _context_object_identifier(data: bytes, pos: int, tag: int) -> tuple[int, int, int] | None:
    """Decode a context-tagged BACnetObjectIdentifier (always 4 octets, 20.2.14) at ``pos``.

    Returns (object_type, instance, position after it) or None.
    """
    end = pos + 5
    if end > len(data) or data[pos] != (tag << 4 | 0x08 | 4):
        return None
    value = int.from_bytes(data[pos + 1 : end], "big")
    return value >> 22, value & 0x3FFFFF, end


def _read_property(data: bytes, pos: int) -> tuple[AccessSpec, ...] | None:
    """ReadProperty-Request (15.5.1.1): [0] object, [1] property, [2] index OPTIONAL, and
    nothing after."""
    oid = _context_object_identifier(data, pos, 0)
    if oid is None:
        return None
    object_type, instance, pos = oid
    prop = _context_unsigned(data, pos, 1)
    if prop is None:
        return None
    property_id, pos = prop
    index: int | None = None
    if pos < len(data):
        decoded = _context_unsigned(data, pos, 2)
        if decoded is None:
            return None
        index, pos = decoded
    if pos != len(data):
        return None
    return (AccessSpec(object_type, instance, ((property_id, index),)),)


def _read_property_multiple(data: bytes, pos: int) -> tuple[AccessSpec, ...] | None:
    """ReadPropertyMultiple-Request (15.7.1.1): one or more ReadAccessSpecifications, each
    [0] object then [1] an opening tag, one or more BACnetPropertyReference ([0] property,
    [1] index OPTIONAL), and the closing tag."""
    specs: list[AccessSpec] = []
    while pos < len(data):
        oid = _context_object_identifier(data, pos, 0)
        if oid is None or oid[2] >= len(data) or data[oid[2]] != 0x1E:  # opening tag [1]
            return None
        object_type, instance, pos = oid
        pos += 1
        properties: list[tuple[int, int | None]] = []
        while pos < len(data) and data[pos] != 0x1F:  # closing tag [1]
            prop = _context_unsigned(data, pos, 0)
            if prop is None:
                return None
            property_id, pos = prop
            index: int | None = None
            # An optional [1] index: context tag 1 with a primitive length (0x18-0x1D); 0x1F
            # (closing tag 1) ends the list instead.
            if pos < len(data) and 0x18 <= data[pos] <= 0x1D:
                decoded = _context_unsigned(data, pos, 1)
                if decoded is None:
                    return None
                index, pos = decoded
            properties.append((property_id, index))
        if pos >= len(data) or not properties:  # no closing tag, or an empty list
            return None
        pos += 1
        specs.append(AccessSpec(object_type, instance, tuple(properties)))
    return tuple(specs) if specs else None


def decode_request(datagram: bytes) -> Request | None:
    """Decode a BACnet/IP datagram into a :class:`Request`, or None when the fast path must
    not answer it (anything but a plain, local, unsegmented ReadProperty or
    ReadPropertyMultiple; any malformed or doubtful octet). Never raises on any input."""
    data = bytes(datagram)
    # BVLC (J.2): type 0x81, function Original-Unicast-NPDU 0x0A, length = the whole datagram.
    # Broadcasts and Forwarded-NPDUs (BBMD) are left to bacpypes3.
    if len(data) < 12 or data[0] != 0x81 or data[1] != 0x0A:
        return None
    if int.from_bytes(data[2:4], "big") != len(data):
        return None
    # NPDU (6.2): version 1; control octet with no network-layer message (bit 7), no DNET
    # (bit 5), no SNET (bit 3) and the reserved bits 6 and 4 clear. Bit 2 (expecting reply)
    # may be either; bits 1-0 are the network priority.
    control = data[5]
    if data[4] != 0x01 or control & 0xF8:
        return None
    # Confirmed-Request header (20.1.2): octet 0 is PDU type 0 in the high nibble, then SEG,
    # MOR, SA and a reserved bit. A segmented request (SEG or MOR) goes to bacpypes3. SA only
    # matters for segmented replies, which the fast path never sends.
    if data[6] & 0xFD:
        return None
    # Octet 1: reserved bit 7, max-segments (bits 6-4, irrelevant unsegmented), max-APDU
    # (bits 3-0; codes 6-15 are reserved).
    limits = data[7]
    if limits & 0x80 or (limits & 0x0F) >= len(_MAX_APDU):
        return None
    invoke_id = data[8]
    service = data[9]
    try:
        if service == READ_PROPERTY:
            specs = _read_property(data, 10)
        elif service == READ_PROPERTY_MULTIPLE:
            specs = _read_property_multiple(data, 10)
        else:
            return None
    except (IndexError, ValueError):  # belt and braces: the decoders check every bound
        return None
    if specs is None:
        return None
    for spec in specs:
        if spec.instance == _WILDCARD_INSTANCE:
            return None
        for property_id, _ in spec.properties:
            if property_id in _SPECIAL_PROPERTIES:
                return None
    return Request(
        service=service,
        invoke_id=invoke_id,
        max_apdu=_MAX_APDU[limits & 0x0F],
        priority=control & 0x03,
        specs=specs,
    )


# --------------------------------------------------------------------------------------------
# ComplexACK encoding
# --------------------------------------------------------------------------------------------


def _context(tag: int, value: int) -> bytes:
    """A context-tagged unsigned/enumerated in the fewest octets (20.2.1.2, 20.2.4)."""
    octets = _octets(value)
    return bytes((tag << 4 | 0x08 | len(octets),)) + octets


def _context_oid(tag: int, object_type: int, instance: int) -> bytes:
    """A context-tagged BACnetObjectIdentifier (20.2.14)."""
    return bytes((tag << 4 | 0x08 | 4,)) + (object_type << 22 | instance).to_bytes(4, "big")


def encode_ack(request: Request, values: Sequence[Sequence[bytes]]) -> bytes | None:
    """The whole BACnet/IP datagram answering ``request`` with ``values`` (one sequence of
    encoded values per access spec, one value per property, in request order), or None when the
    APDU would exceed the client's max-APDU (bacpypes3 then segments or aborts)."""
    parts: list[bytes] = []
    if request.service == READ_PROPERTY:
        # ReadProperty-ACK (15.5.1.3.1): [0] object, [1] property, [2] index OPTIONAL,
        # [3] { value }.
        spec = request.specs[0]
        property_id, index = spec.properties[0]
        parts.append(_context_oid(0, spec.object_type, spec.instance))
        parts.append(_context(1, property_id))
        if index is not None:
            parts.append(_context(2, index))
        parts += (b"\x3e", values[0][0], b"\x3f")
    else:
        # ReadPropertyMultiple-ACK (15.7.1.3.1): per spec, [0] object, [1] { per property
        # [2] property, [3] index OPTIONAL, [4] { value } }.
        for spec, spec_values in zip(request.specs, values, strict=True):
            parts.append(_context_oid(0, spec.object_type, spec.instance))
            parts.append(b"\x1e")
            for (property_id, index), value in zip(spec.properties, spec_values, strict=True):
                parts.append(_context(2, property_id))
                if index is not None:
                    parts.append(_context(3, index))
                parts += (b"\x4e", value, b"\x4f")
            parts.append(b"\x1f")
    # ComplexACK header (20.1.5): PDU type 3, unsegmented; the request's invoke id; the service
    # choice of the request.
    apdu = b"".join((bytes((0x30, request.invoke_id, request.service)), *parts))
    if len(apdu) > request.max_apdu:
        return None
    # NPDU: version 1, control = the request's priority, no expecting-reply (what bacpypes3's
    # APDU.set_context produces), then BVLC Original-Unicast-NPDU with the total length.
    length = 6 + len(apdu)
    if length > 0xFFFF:  # unreachable with max-APDU <= 1476; keeps the BVLC length honest
        return None
    return b"\x81\x0a" + length.to_bytes(2, "big") + bytes((0x01, request.priority)) + apdu


def answer(datagram: bytes, lookup: Lookup) -> bytes | None:
    """The reply datagram for ``datagram`` if the fast path can give it on its own, else None.

    ``lookup`` is asked for every requested property, in order, and the first None stops it:
    one unknown property sends the whole request to bacpypes3. Exceptions raised by ``lookup``
    propagate (the hook of :func:`install` treats them as None); the decoding never raises.
    """
    request = decode_request(datagram)
    if request is None:
        return None
    values: list[list[bytes]] = []
    budget = request.max_apdu
    for spec in request.specs:
        spec_values: list[bytes] = []
        for property_id, index in spec.properties:
            value = lookup(spec.object_type, spec.instance, property_id, index)
            if value is None:
                return None
            # Stop asking early when the values alone cannot fit any more (a huge RPM).
            budget -= len(value)
            if budget < 0:
                return None
            spec_values.append(value)
        values.append(spec_values)
    return encode_ack(request, values)


# --------------------------------------------------------------------------------------------
# The hook into bacpypes3 0.0.110
# --------------------------------------------------------------------------------------------
#
# Seam: bacpypes3.ipv4.IPv4DatagramProtocol.datagram_received(data, addr), which 0.0.110
# implements as `asyncio.ensure_future(self.server.confirmation(PDU(data, ...)))`. asyncio's
# selector datagram transport calls `self._protocol.datagram_received(...)` by attribute lookup
# on every datagram, so an instance attribute on the one protocol object shadows the class
# method for that socket only. The hook answers what it can with `transport.sendto` and calls
# the original bound method for everything else, before any bacpypes3 PDU or task exists.
#
# It relies on these 0.0.110 internals (pin bacpypes3==0.0.110; re-check on any upgrade):
# - Application.link_layers: dict of link layers built by Application.from_object_list;
# - each IPv4 link layer (Normal/Foreign/BBMDLinkLayer) or ipv4.app.*Application has `.server`,
#   an IPv4DatagramServer;
# - IPv4DatagramServer.local_protocol / local_transport / local_address, set when the endpoint
#   task completes, and the asyncio.Event `_local_transport_ready` set at that moment;
# - IPv4DatagramServer.confirmation drops datagrams whose source is local_address (reflected
#   traffic): the hook skips those too, so bacpypes3 sees them as before.
# - asyncio's selector datagram transport (CPython 3.12, 3.13) keeps its socket as `_sock` and
#   reads it with `recvfrom(max_size)` when the selector says it is readable; the hook reads
#   more from the same non-blocking socket the same way (without it, it does not drain).
# Only the unicast socket is hooked: a confirmed request sent to the broadcast address is
# bacpypes3's (on Windows bacpypes3 uses one socket for both; Original-Broadcast-NPDUs are BVLC
# function 0x0B and are never answered by the fast path anyway).


@dataclass(slots=True)
class _Hook:
    """The fast path on one IPv4DatagramServer's unicast socket."""

    protocol: Any
    transport: asyncio.DatagramTransport
    local_address: tuple[str, int]
    original: Callable[[bytes, tuple[str, int]], None]
    installed: Callable[[bytes, tuple[str, int]], None] | None = None


class FastPath:
    """The installed fast path: counters for metrics and tests, and :meth:`uninstall`."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.answered = 0  # requests answered by the fast path
        self.passed = 0  # datagrams handed to bacpypes3
        self.lookup_errors = 0  # lookups that raised (the request went to bacpypes3)
        self.drained = 0  # datagrams read by the hook after the one asyncio handed it
        self._hooks: list[_Hook] = []

    def _attach(self, server: IPv4DatagramServer) -> None:
        """Shadow ``datagram_received`` on the server's unicast protocol object."""
        protocol = server.local_protocol
        transport = server.local_transport
        if protocol is None or transport is None:
            raise RuntimeError("bacpypes3 IPv4DatagramServer has no local transport yet")
        if "datagram_received" in vars(protocol):
            raise RuntimeError("datagram_received is already hooked on this socket")
        hook = _Hook(protocol, transport, tuple(server.local_address), protocol.datagram_received)
        hook.installed = self._receiver(hook)
        protocol.datagram_received = hook.installed
        self._hooks.append(hook)

    def _receiver(self, hook: _Hook) -> Callable[[bytes, tuple[str, int]], None]:
        """The datagram_received replacement for one socket."""
        lookup = self.lookup
        original = hook.original
        transport = hook.transport
        local = hook.local_address
        sock = getattr(transport, "_sock", None)  # asyncio's selector transport (see above)

        def one(data: bytes, addr: tuple[str, int]) -> None:
            reply = None
            if addr != local:  # an AF_INET socket always gives (host, port)
                try:
                    reply = answer(data, lookup)
                except Exception:
                    # A lookup bug must cost a slow answer, never the server: bacpypes3 answers.
                    # Logged at the 1st, 2nd, 4th, 8th... failure: a broken lookup under a
                    # poll storm must not flood the log.
                    self.lookup_errors += 1
                    if self.lookup_errors & (self.lookup_errors - 1) == 0:
                        log.exception(
                            "fastpath_lookup_failed",
                            source=f"{addr[0]}:{addr[1]}",
                            failures=self.lookup_errors,
                        )
                    reply = None
            if reply is None:
                self.passed += 1
                original(data, addr)
                return
            self.answered += 1
            transport.sendto(reply, addr)

        def datagram_received(data: bytes, addr: tuple[str, int]) -> None:
            one(data, addr)
            if sock is None:
                return
            # asyncio reads one datagram per socket per turn of the loop; when a turn is long
            # (a burst of COV notifications and their acks) requests queue in the socket for
            # tens of milliseconds. Read what is already waiting now, up to DRAIN_MAX.
            for _ in range(DRAIN_MAX):
                if transport.is_closing():
                    return
                try:
                    data, addr = sock.recvfrom(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    return  # nothing more waiting
                except OSError as exc:
                    hook.protocol.error_received(exc)  # what the transport itself does
                    return
                self.drained += 1
                one(data, addr)

        return datagram_received

    def uninstall(self) -> None:
        """Give every hooked socket back to bacpypes3 alone."""
        for hook in self._hooks:
            if vars(hook.protocol).get("datagram_received") is hook.installed:
                del hook.protocol.datagram_received
        self._hooks.clear()


def _datagram_servers(target: object) -> list[IPv4DatagramServer]:
    """The IPv4DatagramServers behind ``target``: an IPv4DatagramServer, an IPv4 link layer or
    ipv4 application (``.server``), a bacpypes3 Application (``.link_layers``), or any object
    holding one of those as ``.app``."""
    from bacpypes3.ipv4 import IPv4DatagramServer

    if isinstance(target, IPv4DatagramServer):
        return [target]
    found: list[IPv4DatagramServer] = []
    server = getattr(target, "server", None)
    if isinstance(server, IPv4DatagramServer):
        found.append(server)
    link_layers: Iterable[object] = (getattr(target, "link_layers", None) or {}).values()
    for link_layer in link_layers:
        server = getattr(link_layer, "server", None)
        if isinstance(server, IPv4DatagramServer) and server not in found:
            found.append(server)
    if not found and getattr(target, "app", None) is not None:
        return _datagram_servers(target.app)  # type: ignore[attr-defined]
    return found


async def install(target: object, lookup: Lookup, *, timeout: float = 5.0) -> FastPath:
    """Put the fast path in front of every IPv4 socket of a running bacpypes3 application.

    ``target`` is a bacpypes3 ``Application`` (or an object with it as ``.app``), an IPv4 link
    layer, or an ``IPv4DatagramServer``. Call it inside the loop that runs the application; it
    waits (at most ``timeout`` seconds, then TimeoutError) for bacpypes3 to bind its socket,
    which happens in a task after ``Application.from_object_list`` returns. Raises ValueError
    when ``target`` has no IPv4 socket.
    """
    import bacpypes3

    if bacpypes3.__version__ != TESTED_BACPYPES3:
        # The hook relies on internals (see the comment above _Hook): say so loudly, but keep
        # serving; a missing attribute still fails below rather than misbehaving.
        log.warning(
            "fastpath_bacpypes3_version_untested",
            version=bacpypes3.__version__,
            tested=TESTED_BACPYPES3,
        )
    servers = _datagram_servers(target)
    if not servers:
        raise ValueError(f"no bacpypes3 IPv4DatagramServer found in {target!r}")
    async with asyncio.timeout(timeout):
        for server in servers:
            await server._local_transport_ready.wait()
    fast_path = FastPath(lookup)
    try:
        for server in servers:
            fast_path._attach(server)
    except BaseException:
        fast_path.uninstall()
        raise
    return fast_path
