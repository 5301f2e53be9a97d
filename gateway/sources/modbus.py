"""The Modbus source: pulse-counter modules and meter registers over Modbus TCP or RTU.

The gateway is usually a *second* master on a device that a SCADA or power-monitoring system
also reads, so it behaves like a good one (docs/design/sources.md, "A good second master"):

- **read-only**: only FC3/FC4 reads, never a write (clearing a shared counter would corrupt the
  other master's totals); deltas are computed from the raw register with wrap arithmetic;
- **one connection** per source, opened by our own loop: pymodbus never retries a failed first
  ``connect()`` and its own reconnect backs off to 300 s (docs/design/sources.md), so it is disabled
  (``reconnect_delay=0``) and we reconnect with capped exponential backoff and jitter, forever;
- **paced**: at least ``min_request_gap`` between the end of one request and the next, one poll
  cycle per ``poll_interval`` on a fixed grid, missed cycles skipped: never a burst after an
  outage;
- **coalesced**: the points of a source are read in as few requests as possible (at most 125
  registers each, nearby points merged across gaps of up to ``max_read_gap`` registers). A
  device that answers exception 2/3 to a merged read (holes in its map, a smaller request cap)
  gets that block split for good, so coalescing never costs a working point.

Pulses (``kind: counter``): ``(value - previous) mod rollover`` counts, ``rollover`` defaulting
to 2^bits. ``kind: total`` (the meter's own register, in its units): ``value - previous``, and
going backwards is never a wrap unless ``rollover`` is set. Either way the pulses are
``counts * pulses_per_count`` (pulses per one count of the register; fractions are carried, so
``f32`` kWh totals with 1000 pulses per kWh lose nothing to rounding).

A reading that is implausible (backwards beyond a wrap, more than ``max_rate`` pulses/s since
the last good reading, out of the register's range, NaN) is a **glitch**: logged, counted in
``glitches``, no pulses. If the next reading agrees with the old baseline the glitch was
transient and nothing is lost; if it agrees with the glitch value instead, the device was reset
or replaced and the baseline is resynced to it (the counts between the last good reading and
that value are unknowable and not invented). ``max_rate`` defaults to 1000 pulses/s: 20 times a
3-wire KYZ output's 50/s, yet far below any 32-bit reset jump.

Outages (timeout, exception response, refused or dropped connection): ``source_down`` once, then
on the first good poll ``source_up`` with the pulses counted through the outage as catch-up, so
they reach consumption but no demand window (docs/reference/demand-rules.md).

The register rules (read planning, decoding, the delta and glitch rules) are in
``gateway.sources.modbus_registers``; their names are importable from here as well.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from gateway.config_sources import ModbusPoint, ModbusRtuSource, ModbusTcpSource
from gateway.logging import get_logger
from gateway.sources import Baseline, PulseSink, SourceError
from gateway.sources.modbus_registers import (
    _SLACK_S,
    DEFAULT_MAX_RATE,
    DEFAULT_MAX_READ_GAP,
    MAX_READ_REGISTERS,
    ChannelDelta,
    ReadBlock,
    decode,
    plan_reads,
    rollover_of,
    split_block,
)

__all__ = [
    "DEFAULT_BACKOFF_MAX_S",
    "DEFAULT_GAP_RTU_S",
    "DEFAULT_GAP_TCP_S",
    "DEFAULT_MAX_RATE",
    "DEFAULT_MAX_READ_GAP",
    "DEFAULT_RETRIES",
    "MAX_READ_REGISTERS",
    "ChannelDelta",
    "Endpoint",
    "ModbusSource",
    "ReadBlock",
    "decode",
    "modbus_source",
    "plan_reads",
    "quiet_pymodbus",
    "rollover_of",
    "split_block",
]

DEFAULT_RETRIES = 1  # 0-1 retries: more only delays the outage flag (docs/design/sources.md)
DEFAULT_BACKOFF_MAX_S = 60.0
DEFAULT_GAP_TCP_S = 0.02
DEFAULT_GAP_RTU_S = 0.05  # RTU needs an idle line between frames (docs/design/sources.md)
_SPLIT_CODES = frozenset({2, 3})  # illegal address / illegal value: often a merged read's fault

log = get_logger("modbus")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How to reach a device: Modbus/TCP, RTU framing over TCP, or RTU on a serial line."""

    host: str = "127.0.0.1"
    port: int = 502
    rtu: bool = False  # RTU framing; over TCP unless ``device`` is set
    device: str | None = None  # a serial device: RTU on that line
    baudrate: int = 9600
    parity: str = "E"
    stopbits: int = 1

    def client(self, timeout: float) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        """A new, unconnected pymodbus client; pymodbus's own retries and reconnects are off."""
        if self.device is not None:
            return AsyncModbusSerialClient(
                self.device,
                framer=FramerType.RTU,
                baudrate=self.baudrate,
                bytesize=8,
                parity=self.parity,
                stopbits=self.stopbits,
                timeout=timeout,
                retries=0,
                reconnect_delay=0,
            )
        framer = FramerType.RTU if self.rtu else FramerType.SOCKET
        return AsyncModbusTcpClient(
            self.host, port=self.port, framer=framer, timeout=timeout, retries=0, reconnect_delay=0
        )

    def __str__(self) -> str:
        if self.device is not None:
            return f"{self.device} {self.baudrate} 8{self.parity}{self.stopbits}"
        return f"{self.host}:{self.port}" + (" (RTU over TCP)" if self.rtu else "")


class _Failure(Exception):
    """A poll or connect that failed; the message is the reason for the log."""


class ModbusSource:
    """One Modbus device (one connection) and the channels read from it.

    Times are in seconds. ``baselines`` are saved raw values per channel (``baselines()`` of an
    earlier run): the first good reading reports the difference as catch-up.
    ``baseline_age`` is how long ago they were saved, if known (it bounds that catch-up by
    ``max_rate``). ``max_rate`` is per source; a point's own ``max_rate`` wins.
    """

    def __init__(
        self,
        source_id: str,
        endpoint: Endpoint,
        points: Mapping[str, ModbusPoint],
        *,
        unit_id: int = 1,
        poll_interval: float = 1.0,
        timeout: float = 1.0,
        retries: int = DEFAULT_RETRIES,
        backoff_max: float = DEFAULT_BACKOFF_MAX_S,
        min_request_gap: float | None = None,
        max_rate: float = DEFAULT_MAX_RATE,
        max_read_gap: int = DEFAULT_MAX_READ_GAP,
        max_read_registers: int = MAX_READ_REGISTERS,
        baselines: Mapping[str, Baseline] | None = None,
        baseline_age: float | None = None,
        phase: float = 0.0,
    ) -> None:
        self.id = source_id
        self.endpoint = endpoint
        self.unit_id = unit_id
        self.poll_interval = poll_interval
        self.phase = phase % 1.0  # where in each poll interval this source's polls fall
        self.timeout = timeout
        self.retries = retries
        self.backoff_max = max(backoff_max, poll_interval)
        rtu = endpoint.rtu or endpoint.device is not None
        default_gap = DEFAULT_GAP_RTU_S if rtu else DEFAULT_GAP_TCP_S
        self.min_request_gap = default_gap if min_request_gap is None else min_request_gap
        self.blocks = plan_reads(
            points, max_gap=max_read_gap, max_count=min(max_read_registers, MAX_READ_REGISTERS)
        )
        saved = baselines or {}
        # the saved value may have been read up to a poll before the checkpoint that saved it
        since = None if baseline_age is None else time.monotonic() - baseline_age - poll_interval
        slack = _SLACK_S + timeout
        self._deltas: dict[str, ChannelDelta] = {}
        for channel, point in points.items():
            rate = getattr(point, "max_rate", None) or max_rate
            self._deltas[channel] = ChannelDelta(
                source_id,
                channel,
                point,
                max_rate=rate,
                slack=slack,
                baseline=saved.get(channel),
                baseline_time=since,
            )
            rollover = self._deltas[channel].rollover
            if rollover is not None and rate * (poll_interval + slack) * 2 > rollover:
                # A wrap and a reset differ only by size: both must fit well inside one rollover.
                log.warning(
                    "modbus_rollover_too_small",
                    source=source_id,
                    channel=channel,
                    rollover=rollover,
                    max_rate=rate,
                    poll_interval=poll_interval,
                )
        self.up: bool | None = None  # None until the first poll or failure
        self.requests = 0  # read requests sent, retries included
        self.failures = 0  # polls or connects that failed
        self.cycle_seconds = 0.0  # how long the last complete poll cycle took
        self._failed_in_a_row = 0
        self._last_request = -math.inf
        self._rtu = rtu

    @property
    def glitches(self) -> dict[str, int]:
        """Implausible readings per channel since start (a copy: for metrics)."""
        return {channel: delta.glitches for channel, delta in self._deltas.items()}

    def counters(self) -> dict[str, dict[str, int]]:
        """Implausible readings per channel (``glitches``)."""
        return {"glitches": self.glitches}

    def baselines(self) -> dict[str, Baseline]:
        """Per channel, the raw register value the reported pulses go up to."""
        values = {channel: delta.baseline() for channel, delta in self._deltas.items()}
        return {channel: value for channel, value in values.items() if value is not None}

    async def run(self, sink: PulseSink) -> None:
        """Connect, poll, report; reconnect with backoff after any failure; until cancelled."""
        quiet_pymodbus()
        # A restart after a crash (the service marks the source down then) must say up again.
        self.up = None
        while True:
            client = self.endpoint.client(self.timeout)
            try:
                await self._connect(client)
                await self._poll(client, sink)
            except _Failure as failure:
                self.failures += 1
                self._failed_in_a_row += 1
                self._went_down(sink, str(failure))
            finally:
                client.close()  # one connection per source: the old one goes before a new one
            await asyncio.sleep(self._backoff())

    def _backoff(self) -> float:
        """Exponential from the poll interval, capped, with equal jitter (no thundering herd)."""
        exponent = min(self._failed_in_a_row - 1, 30)
        ceiling = min(self.backoff_max, self.poll_interval * 2**exponent)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def _connect(self, client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> None:
        await self._pace()
        try:
            async with asyncio.timeout(self.timeout + _SLACK_S):
                connected = await client.connect()
        except (ModbusException, OSError, TimeoutError):
            connected = False
        finally:
            self._last_request = time.monotonic()
        if not connected:
            raise _Failure(f"cannot connect to {self.endpoint}")

    async def _poll(
        self, client: AsyncModbusTcpClient | AsyncModbusSerialClient, sink: PulseSink
    ) -> None:
        """Poll at once, then on this source's grid until a poll fails; missed slots are
        skipped, not made up."""
        while True:
            started = time.monotonic()
            readings = await self._cycle(client)
            self.cycle_seconds = time.monotonic() - started
            self._failed_in_a_row = 0
            self._deliver(readings, sink)
            now = time.monotonic()
            await asyncio.sleep(self.next_slot(now) - now)

    def next_slot(self, after: float) -> float:
        """The first slot of the grid after ``after`` (monotonic seconds): every poll_interval,
        at ``phase`` of it. Sources given different phases take turns instead of all polling
        (and all answering, and all being counted) in the same instant."""
        interval = self.poll_interval
        wait = (self.phase * interval - after) % interval
        if wait < interval * 1e-6:  # on a slot now (or a rounding away): the next one
            wait += interval
        return after + wait

    async def _cycle(
        self, client: AsyncModbusTcpClient | AsyncModbusSerialClient
    ) -> list[tuple[ReadBlock, list[int], float]]:
        """Every block read once (all or nothing), with the time each answer came."""
        readings: list[tuple[ReadBlock, list[int], float]] = []
        index = 0
        while index < len(self.blocks):
            block = self.blocks[index]
            registers = await self._read(client, block)
            if registers is None:
                parts = split_block(block)
                log.warning(
                    "modbus_read_split",
                    source=self.id,
                    table=block.table,
                    address=block.address,
                    count=block.count,
                    into=[(part.address, part.count) for part in parts],
                )
                self.blocks[index : index + 1] = parts
                continue
            readings.append((block, registers, time.monotonic()))
            index += 1
        return readings

    async def _read(
        self, client: AsyncModbusTcpClient | AsyncModbusSerialClient, block: ReadBlock
    ) -> list[int] | None:
        """One block's registers, None if the device wants it split; ``_Failure`` if it fails."""
        read = (
            client.read_holding_registers
            if block.table == "holding"
            else client.read_input_registers
        )
        attempt = 0
        while True:
            await self._pace()
            self.requests += 1
            timed_out = False
            try:
                # pymodbus enforces ``timeout`` itself; this only guards against a hang in it
                async with asyncio.timeout(self.timeout + _SLACK_S):
                    response = await read(block.address, count=block.count, device_id=self.unit_id)
            except ConnectionException as exc:
                raise _Failure(f"connection lost: {exc}") from None
            except (ModbusException, OSError, TimeoutError):
                reason, timed_out = f"no answer within {self.timeout:g} s", True
            else:
                # pymodbus returns exception responses, it does not raise them
                # (docs/design/sources.md)
                if not response.isError() and len(response.registers) >= block.count:
                    return list(response.registers[: block.count])
                code = getattr(response, "exception_code", None)
                if code in _SPLIT_CODES and len(block.points) > 1:
                    return None
                reason = f"exception response {code}" if code else "short answer"
            finally:
                self._last_request = time.monotonic()
            if attempt >= self.retries:
                where = f"{block.table} {block.address}+{block.count}"
                raise _Failure(f"{reason} ({where}, {attempt + 1} attempts)")
            attempt += 1
            if timed_out and self._rtu:
                # RTU replies carry no transaction id: let a late one arrive (and be dropped as
                # unsolicited) before the retry, or it would pass for the retry's answer
                # (docs/design/sources.md)
                await asyncio.sleep(self.timeout)

    async def _pace(self) -> None:
        wait = self._last_request + self.min_request_gap - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _deliver(self, readings: list[tuple[ReadBlock, list[int], float]], sink: PulseSink) -> None:
        """Decode, count and report; synchronous, so a checkpoint never sees half of it."""
        counted: dict[str, int] = {}
        for block, registers, at in readings:
            for channel, point in block.points:
                offset = point.address - block.address
                value = decode(point, registers[offset : offset + point.words])
                pulses = self._deltas[channel].update(value, at)
                if pulses:
                    counted[channel] = pulses
        if self.up:
            for channel, pulses in counted.items():
                sink.pulses(channel, pulses)
            return
        log.info("modbus_source_up", source=self.id, endpoint=str(self.endpoint), catch_up=counted)
        self.up = True
        sink.source_up(self.id, counted)  # counted through the outage: in no demand window

    def _went_down(self, sink: PulseSink, reason: str) -> None:
        if self.up is not False:
            log.warning(
                "modbus_source_down", source=self.id, endpoint=str(self.endpoint), reason=reason
            )
            sink.source_down(self.id)
        else:
            log.debug("modbus_still_down", source=self.id, reason=reason)
        self.up = False


def quiet_pymodbus() -> None:
    """Silence pymodbus's own stderr lines unless someone configured its logger.

    Every fault is logged here as a structured event; pymodbus would add unstructured lines
    with raw-frame dumps to stderr on each timeout and reconnect attempt.
    """
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


def _seconds(span: int | float | None, default: float | None) -> float | None:
    """A config duration (microseconds) in seconds, or ``default`` when it is not set."""
    return default if span is None else span / 1_000_000


def modbus_source(
    config: ModbusTcpSource | ModbusRtuSource,
    points: Mapping[str, ModbusPoint],
    baselines: Mapping[str, Baseline],
    baseline_age: float | None = None,
    phase: float = 0.0,
) -> ModbusSource:
    """A ``ModbusSource`` from a config entry; keys the config may not have yet use defaults.
    ``phase``: where in each poll interval its polls fall, a fraction (``ModbusSource``)."""
    if isinstance(config, ModbusRtuSource):
        if importlib.util.find_spec("serial") is None:
            raise SourceError(
                f"source {config.id!r}: modbus-rtu needs pyserial: pip install 'pymodbus[serial]'"
            )
        endpoint = Endpoint(
            device=config.device,
            baudrate=config.baudrate,
            parity=config.parity,
            stopbits=config.stopbits,
            rtu=True,
        )
    else:  # RTU framing over TCP: serial device servers in transparent mode (Moxa NPort...)
        rtu = getattr(config, "framing", "socket") == "rtu"
        endpoint = Endpoint(config.host, config.port, rtu=rtu)
    return ModbusSource(
        config.id,
        endpoint,
        points,
        unit_id=config.unit_id,
        poll_interval=config.poll_interval / 1_000_000,
        timeout=config.timeout / 1_000_000,
        retries=getattr(config, "retries", DEFAULT_RETRIES),
        backoff_max=_seconds(getattr(config, "backoff_max", None), DEFAULT_BACKOFF_MAX_S) or 0.0,
        min_request_gap=_seconds(getattr(config, "min_request_gap", None), None),
        max_rate=getattr(config, "max_rate", None) or DEFAULT_MAX_RATE,
        max_read_gap=getattr(config, "max_read_gap", DEFAULT_MAX_READ_GAP),
        max_read_registers=getattr(config, "max_read_registers", MAX_READ_REGISTERS),
        baselines={channel: baselines[channel] for channel in points if channel in baselines},
        baseline_age=baseline_age,
        phase=phase,
    )
