"""Pulse sources: hardware (or a simulation) in, pulse counts and up/down transitions out.

Every source has the same shape: ``await source.run(sink)`` runs until cancelled and reports
to the sink, which belongs to the service. A source never reads the wall clock and never
touches the engine: the service stamps what the sink receives with its timeline and feeds the
engine, so all time handling lives in one place (gateway/clock.py).

- ``sink.pulses(channel, count)``: pulses just counted on a channel.
- ``sink.source_down(source)``: the source stopped delivering (timeout, disconnect); its
  channels are offline from now on.
- ``sink.source_up(source, catch_up)``: it delivers again; ``catch_up`` holds the pulses per
  channel that accumulated meanwhile (a Modbus counter kept counting), which count in
  consumption but in no demand window (docs/reference/demand-rules.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.config import Config

type Baseline = int | float  # a source's raw reading that the counted pulses go up to


class PulseSink(Protocol):
    """Where a source reports; implemented by the service."""

    def pulses(self, channel: str, count: int) -> None: ...

    def source_down(self, source: str) -> None: ...

    def source_up(self, source: str, catch_up: Mapping[str, int]) -> None: ...


class Source(Protocol):
    """A running pulse source."""

    id: str

    async def run(self, sink: PulseSink) -> None:
        """Count pulses and report them to ``sink`` until cancelled."""
        ...

    def baselines(self) -> Mapping[str, Baseline]:
        """Per channel, the raw reading the pulses reported so far go up to (a Modbus counter's
        value). The service saves it with each checkpoint, in the same transaction as the
        channel state, and hands it back on start, so pulses counted by a device while the
        gateway was down arrive as catch-up. Empty for sources without one."""
        ...

    def counters(self) -> Mapping[str, Mapping[str, int]]:
        """Per counter name, per channel, how often something the metrics report happened:
        ``glitches`` (implausible Modbus readings), ``lost_edges`` and ``late_edges`` (GPIO
        edges whose time is unknown). Empty for sources that count none of these."""
        ...


class SourceError(Exception):
    """A source that cannot be built from the config; the message says why."""


def unbuildable(config: Config) -> list[str]:
    """Why the sources of ``config`` cannot be built here (a missing extra), if they cannot."""
    try:
        build_sources(config, {})
    except SourceError as exc:
        return [str(exc)]
    return []


def build_sources(
    config: Config, baselines: Mapping[str, Baseline], baseline_age: float | None = None
) -> list[Source]:
    """One running source per configured source that has channels.

    ``baselines`` are the saved raw readings per channel (see ``Source.baselines``);
    ``baseline_age`` how many seconds ago they were true, if known: a Modbus counter that
    moved more than its ``max_rate`` allows in that time is a glitch, not pulses.
    """
    from gateway.config_sources import (
        GpioPoint,
        GpioSource,
        ModbusPoint,
        ModbusRtuSource,
        ModbusTcpSource,
        SimulatedPoint,
        SimulatedSource,
    )
    from gateway.sources.simulated import SimulatedMeter, Simulator

    sources: list[Source] = []
    # Modbus sources poll at evenly spread phases of their interval, in config order: forty
    # devices polled in the same instant answer in the same instant, and their counting held
    # the loop (and the BACnet requests behind it) for tens of milliseconds every second.
    used = {c.source.id for c in config.channels if c.source}
    polled = [
        s.id
        for s in config.sources
        if isinstance(s, ModbusTcpSource | ModbusRtuSource) and s.id in used
    ]
    for source in config.sources:
        points = {c.id: c.source for c in config.channels if c.source and c.source.id == source.id}
        if not points:
            continue
        match source:
            case SimulatedSource():
                meters = {
                    channel: SimulatedMeter(point.rate, point.mode)
                    for channel, point in _typed(source.id, points, SimulatedPoint).items()
                }
                sources.append(Simulator(source.id, meters, seed=source.seed))
            case ModbusTcpSource() | ModbusRtuSource():
                from gateway.sources.modbus import modbus_source

                modbus = _typed(source.id, points, ModbusPoint)
                phase = polled.index(source.id) / len(polled)
                sources.append(modbus_source(source, modbus, baselines, baseline_age, phase))
            case GpioSource():
                from gateway.sources.gpio import gpio_source

                sources.append(gpio_source(source, _typed(source.id, points, GpioPoint)))
            case _:
                raise SourceError(
                    f"source {source.id!r}: type {source.type} is not available in this version"
                )
    return sources


def _typed[P](source: str, points: Mapping[str, object], kind: type[P]) -> dict[str, P]:
    """The points of one source, all of the kind it reads (the config loader ensures it)."""
    typed = {}
    for channel, point in points.items():
        if not isinstance(point, kind):
            raise SourceError(f"channel {channel!r}: its point does not fit source {source!r}")
        typed[channel] = point
    return typed


def baseline_readings(config: Config) -> dict[str, str]:
    """Per channel whose source keeps a baseline (Modbus), what the baseline is read from:
    the device and the register, as text. A saved baseline applies only to the same reading
    (``Store.bind_baselines``); how the value is interpreted (rollover, pulses per count,
    max rate) may change without losing it."""
    from gateway.config_sources import ModbusPoint, ModbusRtuSource, ModbusTcpSource

    devices: dict[str, str] = {}
    for source in config.sources:
        if isinstance(source, ModbusTcpSource):
            place = f"tcp {source.host}:{source.port} {source.framing}"
        elif isinstance(source, ModbusRtuSource):
            place = f"rtu {source.device}"
        else:
            continue
        devices[source.id] = f"{place} unit {source.unit_id}"
    readings = {}
    for channel in config.channels:
        point = channel.source
        if isinstance(point, ModbusPoint) and point.id in devices:
            register = f"{point.table} {point.address} {point.type} {point.word_order}"
            readings[channel.id] = f"{devices[point.id]} {register} {point.kind}"
    return readings
