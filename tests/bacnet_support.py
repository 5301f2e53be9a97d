"""Helpers for the BACnet tests: a real gateway with its BACnet server, a bac-py client, raw UDP.

Everything runs on 127.0.0.1. The client always uses a port other than the server's: bacpypes3
treats any 127.x destination on its own port as itself (docs/design/bacpypes3.md). Every wait
is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from bac_py import Client
from bac_py.encoding.primitives import decode_all_application_values

from gateway.bacnet.server import BacnetServer
from gateway.clock import Timeline
from gateway.config import load_config
from gateway.service import Gateway
from tests.daemon import write_config
from tests.helpers import FakeClocks, free_port

WAIT_S = 5.0  # the bound of every wait for an answer
VERSION = "9.8.7-test"
LOOPBACK = (IPv4Network("127.0.0.0/8"),)

# e: kWh, 0.5 kWh per pulse, W = 2 s, S = 1 s, COV increment 1 kWh, base 100
# w: US gallons, 1 gal per pulse, W = S = 1 s, a one-hour reset lockout, base 200
CHANNELS = (
    "  - {id: e, unit: kWh, scale_factor: 0.5, demand_window: 2s, demand_slide: 1s,\n"
    "     cov_increment: 1, source: {id: sim, rate: 0.001, mode: constant}}\n"
    "  - {id: w, unit: us_gallons, scale_factor: 1, demand_window: 1s, demand_slide: 1s,\n"
    "     reset_lockout: 1h, source: {id: sim, rate: 0.001, mode: constant}}\n"
)


def loopback_client(instance: int) -> Client:
    """A bac-py client (a BMS front end) on a free port of 127.0.0.1."""
    return Client(
        instance_number=instance,
        interface="127.0.0.1",
        port=free_port(),
        broadcast_address="127.255.255.255",
    )


@dataclass
class Rig:
    """A running gateway, its BACnet server and a bac-py client on another port."""

    gateway: Gateway
    clocks: FakeClocks
    server: BacnetServer
    client: Client
    notifications: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def read(self, objid: str, prop: str) -> Any:
        return await asyncio.wait_for(self.client.read(self.address, objid, prop), WAIT_S)

    async def write(self, objid: str, prop: str, value: Any, priority: int | None = None) -> None:
        await asyncio.wait_for(
            self.client.write(self.address, objid, prop, value, priority=priority), WAIT_S
        )

    def steady(self, seconds: float, channel: str = "e", count: int = 10) -> None:
        """``count`` pulses every half second on ``channel`` for ``seconds`` of fake time."""
        for _ in range(int(seconds * 2)):
            self.clocks.elapse(0.5)
            self.gateway.pulses(channel, count)
        self.server.refresh()

    async def subscribe(
        self, objid: str, process_id: int, *, confirmed: bool = True, lifetime: int | None = 60
    ) -> None:
        """Subscribe to COV; notifications land in ``notifications`` as {property: value}."""

        def on_cov(notification: Any, source: Any) -> None:
            values = {
                v.property_identifier.name: decode_all_application_values(v.value)[0]
                for v in notification.list_of_values
            }
            values["object"] = notification.monitored_object_identifier
            values["time_remaining"] = notification.time_remaining
            self.notifications.put_nowait(values)

        await asyncio.wait_for(
            self.client.subscribe_cov_ex(
                self.address,
                objid,
                process_id=process_id,
                confirmed=confirmed,
                lifetime=lifetime,
                callback=on_cov,
            ),
            WAIT_S,
        )

    async def notification(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.notifications.get(), WAIT_S)


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path,
    *,
    allowed: Sequence[IPv4Network] = LOOPBACK,
    channels: str = CHANNELS,
    fast_path: bool = True,
    timezone: str | None = None,
    wall_us: int | None = None,
    **settings: Any,
) -> AsyncIterator[Rig]:
    """A real Gateway on fake clocks, a BacnetServer over it, and a connected bac-py client.

    State in ``tmp_path / "state"``; ``timezone`` sets ``gateway.timezone``, ``wall_us`` the
    fake wall clock's start."""
    clocks = FakeClocks()
    if wall_us is not None:
        clocks.wall_us = wall_us
    path = write_config(tmp_path, channels=channels)
    if timezone is not None:
        text = path.read_text().replace(
            "state_dir: state}", f"state_dir: state, timezone: {timezone}}}"
        )
        path.write_text(text)
    config = load_config(path, purpose="run")
    gateway = Gateway(config, timeline=Timeline(clocks.wall, clocks.mono))
    await gateway.start()
    try:
        for _ in range(100):  # the simulated source reports itself up on its first run
            if gateway.status.sources_up.get("sim"):
                break
            await asyncio.sleep(0.01)
        assert config.bacnet is not None
        bacnet = dataclasses.replace(
            config.bacnet,
            port=free_port(),
            reset_allowed_from=tuple(allowed),
            **settings,
        )
        server = BacnetServer(
            gateway, bacnet, config.channels, version=VERSION, fast_path=fast_path
        )
        await server.start()
        try:
            async with loopback_client(4001) as client:
                yield Rig(gateway, clocks, server, client)
        finally:
            await server.stop()
    finally:
        await gateway.stop()


# -- raw BACnet/IP, for what a well-behaved client library will not send ---------------------


def context_unsigned(tag: int, value: int) -> bytes:
    data = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return bytes((tag << 4 | 0x08 | len(data),)) + data


def context_object(tag: int, object_type: int, instance: int) -> bytes:
    return bytes((tag << 4 | 0x0C,)) + struct.pack(">I", object_type << 22 | instance)


def app_enumerated(value: int) -> bytes:
    data = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return bytes((0x90 | len(data),)) + data


def app_real(value: float) -> bytes:
    return b"\x44" + struct.pack(">f", value)


APP_NULL = b"\x00"


def confirmed(service: int, body: bytes, invoke_id: int = 1) -> bytes:
    """A BVLC Original-Unicast-NPDU carrying an unsegmented confirmed request."""
    apdu = bytes((0x00, 0x05, invoke_id, service)) + body
    npdu = b"\x01\x04" + apdu
    return b"\x81\x0a" + (4 + len(npdu)).to_bytes(2, "big") + npdu


def write_property(
    object_type: int,
    instance: int,
    prop: int,
    value: bytes,
    *,
    priority: int | None = None,
    index: int | None = None,
    invoke_id: int = 1,
) -> bytes:
    """A WriteProperty-Request (15.9) with an arbitrary application-tagged ``value``."""
    body = context_object(0, object_type, instance) + context_unsigned(1, prop)
    if index is not None:
        body += context_unsigned(2, index)
    body += b"\x3e" + value + b"\x3f"
    if priority is not None:
        body += context_unsigned(4, priority)
    return confirmed(15, body, invoke_id)


def read_property(object_type: int, instance: int, prop: int, invoke_id: int = 1) -> bytes:
    """A ReadProperty-Request (15.5)."""
    body = context_object(0, object_type, instance) + context_unsigned(1, prop)
    return confirmed(12, body, invoke_id)


@dataclass(frozen=True)
class Reply:
    """The APDU type of an answer and, for an Error, its class and code numbers."""

    kind: str  # "simple-ack", "complex-ack", "error", "reject", "abort"
    error: tuple[int, int] | None = None


def parse_reply(datagram: bytes) -> Reply:
    """Classify a reply from its BVLC/NPDU/APDU header (no network-layer routing info)."""
    assert datagram[0] == 0x81, datagram.hex()
    npdu = datagram[4:]
    control = npdu[1]
    apdu = npdu[2:]
    assert not control & 0x80 and not control & 0x08 and not control & 0x20, datagram.hex()
    kind = {2: "simple-ack", 3: "complex-ack", 5: "error", 6: "reject", 7: "abort"}[apdu[0] >> 4]
    if kind != "error":
        return Reply(kind)
    # Error PDU: type, invoke id, service, then error-class and error-code ENUMERATEDs
    body = apdu[3:]
    values = decode_all_application_values(body)
    return Reply(kind, (int(values[0]), int(values[1])))


class Raw:
    """A plain UDP socket on 127.0.0.1 talking to the server (never on the server's port)."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    def close(self) -> None:
        self.sock.close()

    def send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.target)

    async def receive(self, timeout: float = WAIT_S) -> bytes | None:
        """The next datagram from the server, or None after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.sock_recv(self.sock, 2048), timeout)
        except TimeoutError:
            return None

    async def ask(self, datagram: bytes) -> Reply:
        self.send(datagram)
        answer = await self.receive()
        assert answer is not None, "no answer"
        return parse_reply(answer)
