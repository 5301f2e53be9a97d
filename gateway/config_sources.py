"""Config reading, the source types' part: the ``sources:`` list and each channel's point.

The part of the schema that depends on a source's *type*: the ``sources:`` entries and a
channel's ``source:`` point, whose keys are those of the type of the source it names. A key that
belongs to another type, or to the other side (a source key put on a channel's point, or the
reverse), is named as such, not just "unknown". The node reader is ``gateway.config_reader`` and
the types ``gateway.config_source_types``; every name this module held before they were split
off is still importable from here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Literal

from yaml.nodes import Node

from gateway.config_reader import (
    ConfigError,
    Entries,
    Problem,
    Read,
    Reader,
    _peek_choice,
    _peek_text,
    boolean,
    did_you_mean,
    join,
    kind,
    show,
    yaml_key,
    yaml_keys,
)
from gateway.config_source_types import (
    _ALL_POINT_KEYS,
    _ALL_SOURCE_KEYS,
    BAUDRATES,
    FRAMINGS,
    GPIO_BIASES,
    GPIO_EDGES,
    MAX_SIMULATED_RATE,
    MILLISECOND,
    MODBUS_TABLES,
    PARITIES,
    POINT_KEYS,
    POINT_KINDS,
    REGISTER_TYPES,
    REGISTER_WORDS,
    SIMULATION_MODES,
    SOURCE_KEYS,
    SOURCE_TYPES,
    WORD_ORDERS,
    Framing,
    GpioBias,
    GpioEdge,
    GpioPoint,
    GpioSource,
    ModbusPoint,
    ModbusRtuSource,
    ModbusTable,
    ModbusTcpSource,
    Parity,
    PointConfig,
    PointKind,
    RegisterType,
    SimulatedPoint,
    SimulatedSource,
    SimulationMode,
    SourceConfig,
    WordOrder,
    check_shared_inputs,
    describe_point,
    describe_source,
)
from gateway.core import Span
from gateway.core.timeline import MICROS_PER_SECOND

# the public names of the config's source part, wherever they are defined now
__all__ = [
    "BAUDRATES",
    "FRAMINGS",
    "GPIO_BIASES",
    "GPIO_EDGES",
    "MAX_SIMULATED_RATE",
    "MILLISECOND",
    "MODBUS_TABLES",
    "PARITIES",
    "POINT_KEYS",
    "POINT_KINDS",
    "REGISTER_TYPES",
    "REGISTER_WORDS",
    "SIMULATION_MODES",
    "SOURCE_ID",
    "SOURCE_KEYS",
    "SOURCE_TYPES",
    "WORD_ORDERS",
    "ConfigError",
    "Entries",
    "Framing",
    "GpioBias",
    "GpioEdge",
    "GpioPoint",
    "GpioSource",
    "ModbusPoint",
    "ModbusRtuSource",
    "ModbusTable",
    "ModbusTcpSource",
    "Parity",
    "PointConfig",
    "PointKind",
    "Problem",
    "Read",
    "Reader",
    "RegisterType",
    "SimulatedPoint",
    "SimulatedSource",
    "SimulationMode",
    "SourceConfig",
    "WordOrder",
    "boolean",
    "check_shared_inputs",
    "describe_point",
    "describe_source",
    "did_you_mean",
    "join",
    "kind",
    "read_point",
    "read_sources",
    "show",
    "yaml_key",
    "yaml_keys",
]

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
SOURCE_ID = re.compile(r"[a-z0-9_-]+")


def read_sources(reader: Reader, node: Node) -> tuple[list[SourceConfig], dict[str, str | None]]:
    """The ``sources:`` list, and every readable source id with its type (None if unknown).

    Ids come back even for a source with other mistakes, so the channels that name it are
    still checked against its type instead of being reported as pointing nowhere.
    """
    sources: list[SourceConfig] = []
    types: dict[str, str | None] = {}
    first_line: dict[str, int] = {}
    for index, item in enumerate(reader.sequence(node, "sources", "sources") or []):
        path = f"sources[{index}]"
        source_type = _peek_choice(item, "type", SOURCE_TYPES)
        if source_type is None:  # the type's own problem is reported below
            entries = reader.entries(item, path, _ALL_SOURCE_KEYS)
        else:
            known = ("id", "type", *SOURCE_KEYS[source_type])
            foreign = _foreign_keys(source_type, SOURCE_KEYS, POINT_KEYS, "source")
            entries = reader.entries(item, path, known, foreign)
        if entries is None:
            continue
        before = len(reader.problems)
        source_id = entries.get("id", reader.text, required=True)
        if source_id is not None and not SOURCE_ID.fullmatch(source_id):
            entries.problem("id", f"{source_id!r}: use lower-case letters, digits, _ and - only")
            source_id = None
        checked = entries.get("type", reader.one_of(SOURCE_TYPES), required=True)
        if source_id in first_line:
            first = first_line[source_id]
            entries.problem("id", f"duplicate source id {source_id!r} (first on line {first})")
        elif source_id is not None:
            first_line[source_id] = entries.key_line("id")
            types[source_id] = checked
        if checked is not None:  # the type's keys are checked even when the id is bad
            source = _SOURCE_READERS[checked](entries, source_id or "")
            if source is not None and len(reader.problems) == before:
                sources.append(source)
    return sources, types


def _modbus_tcp(entries: Entries, source_id: str) -> ModbusTcpSource | None:
    reader = entries.reader
    host = entries.get("host", partial(_host, reader), required=True)
    port = entries.get("port", partial(reader.integer, low=1, high=65535), 502)
    unit = entries.get("unit_id", partial(reader.integer, low=0, high=247), 1)
    poll, timeout = _polling(entries)
    framing: Framing | None = entries.get("framing", reader.one_of(FRAMINGS), "socket")
    pacing = _pacing(entries, poll)
    if host is None or port is None or unit is None or poll is None or timeout is None:
        return None
    if framing is None or pacing is None:
        return None
    return ModbusTcpSource(source_id, host, port, unit, poll, timeout, *pacing, framing)


def _modbus_rtu(entries: Entries, source_id: str) -> ModbusRtuSource | None:
    reader = entries.reader
    device = entries.get("device", partial(_device, reader), required=True)
    baudrate = entries.get("baudrate", partial(_baudrate, reader), 9600)
    parity: Parity | None = entries.get("parity", reader.one_of(PARITIES), "E")
    stopbits = entries.get("stopbits", partial(reader.integer, low=1, high=2), 1)
    # Unit 0 is the serial broadcast address: no device answers it, so a poll cannot work.
    unit = entries.get("unit_id", partial(reader.integer, low=1, high=247), 1)
    poll, timeout = _polling(entries)
    pacing = _pacing(entries, poll)
    if device is None or baudrate is None or parity is None or stopbits is None:
        return None
    if unit is None or poll is None or timeout is None or pacing is None:
        return None
    return ModbusRtuSource(
        source_id, device, baudrate, parity, stopbits, unit, poll, timeout, *pacing
    )


def _simulated(entries: Entries, source_id: str) -> SimulatedSource | None:
    return SimulatedSource(source_id, entries.get("seed", partial(entries.reader.integer, low=0)))


def _gpio(entries: Entries, source_id: str) -> GpioSource | None:
    chip = entries.get("chip", partial(_device, entries.reader), required=True)
    # the kernel caps a line request's event buffer at 1024 (libgpiod v2)
    read_size = partial(entries.reader.integer, low=16, high=1024)
    size = entries.get("event_buffer_size", read_size, None)
    if chip is None or ("event_buffer_size" in entries and size is None):
        return None
    return GpioSource(source_id, chip, size)


_SOURCE_READERS: dict[str, Callable[[Entries, str], SourceConfig | None]] = {
    "modbus-tcp": _modbus_tcp,
    "modbus-rtu": _modbus_rtu,
    "simulated": _simulated,
    "gpio": _gpio,
}


def _polling(entries: Entries) -> tuple[Span | None, Span | None]:
    reader = entries.reader
    # Polls faster than 100 ms load a device that another master may be polling too
    # (docs/design/sources.md).
    read_poll = partial(reader.duration, at_least=100 * MILLISECOND)
    poll = entries.get("poll_interval", read_poll, MICROS_PER_SECOND)
    read_timeout = partial(
        reader.duration, at_least=10 * MILLISECOND, at_most=60 * MICROS_PER_SECOND
    )
    return poll, entries.get("timeout", read_timeout, MICROS_PER_SECOND)


type _Pacing = tuple[int, Span, Span | None, int, int]  # in the dataclasses' field order


def _pacing(entries: Entries, poll: Span | None) -> _Pacing | None:
    """retries, backoff_max, min_request_gap, max_read_gap, max_read_registers.

    A good second master retries little, backs off, paces and coalesces its requests
    (docs/design/sources.md).
    """
    reader = entries.reader
    retries = entries.get("retries", partial(reader.integer, low=0, high=5), 1)
    read_backoff = partial(
        reader.duration, at_least=poll or MICROS_PER_SECOND, at_most=3600 * MICROS_PER_SECOND
    )
    backoff = entries.get("backoff_max", read_backoff, 60 * MICROS_PER_SECOND)
    read_gap = partial(reader.duration, at_most=10 * MICROS_PER_SECOND)
    gap = entries.get("min_request_gap", read_gap, None)
    read_gap_registers = entries.get("max_read_gap", partial(reader.integer, low=0, high=124), 16)
    read_max = entries.get("max_read_registers", partial(reader.integer, low=1, high=125), 125)
    if retries is None or backoff is None or read_gap_registers is None or read_max is None:
        return None
    if "min_request_gap" in entries and gap is None:
        return None
    return retries, backoff, gap, read_gap_registers, read_max


def _baudrate(reader: Reader, node: Node, path: str) -> int | None:
    value = reader.integer(node, path, low=1)
    if value is not None and value not in BAUDRATES:
        rates = ", ".join(map(str, BAUDRATES))
        reader.problem(node, path, f"{value} is not a standard baud rate: {rates}")
        return None
    return value


def _device(reader: Reader, node: Node, path: str) -> str | None:
    value = reader.text(node, path)
    if value is not None and not value.startswith("/dev/"):
        reader.problem(node, path, f"{value!r}: expected a device path like /dev/ttyUSB0")
        return None
    return value


def _host(reader: Reader, node: Node, path: str) -> str | None:
    value = reader.text(node, path)
    if value is None:
        return None
    if re.fullmatch(r"[\d.]+", value):  # looks like an address: it must be a good one
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError as exc:
            reader.problem(node, path, f"not an IPv4 address: {exc}")
            return None
    if not _HOSTNAME.fullmatch(value):
        reader.problem(node, path, f"{value!r}: expected an IPv4 address or a host name")
        return None
    return value


# -- a channel's point on its source ----------------------------------------------------------


def read_point(
    reader: Reader, node: Node, path: str, types: Mapping[str, str | None]
) -> PointConfig | None:
    """A channel's ``source:`` mapping, checked against the type of the source it names."""
    peeked = _peek_text(node, "id")
    source_type = types.get(peeked) if peeked is not None else None
    if source_type is None:  # unknown or broken source: its own problem is reported
        entries = reader.entries(node, path, _ALL_POINT_KEYS)
    else:
        known = ("id", *POINT_KEYS[source_type])
        foreign = _foreign_keys(source_type, POINT_KEYS, SOURCE_KEYS, "point")
        # Name the source that decided the keys, so "rate on a modbus source" explains itself.
        foreign = {key: f"{text} ({peeked!r} is {source_type})" for key, text in foreign.items()}
        entries = reader.entries(node, path, known, foreign)
    if entries is None:
        return None
    before = len(reader.problems)
    source_id = entries.get("id", reader.text, required=True)
    if source_id is not None and source_id not in types:
        hint = did_you_mean(source_id, tuple(types))
        defined = ", ".join(types) if types else "none are defined under sources:"
        entries.problem("id", f"unknown source {source_id!r}{hint}; sources: {defined}")
        return None
    if source_id is None or source_type is None:
        return None
    point = _POINT_READERS[source_type](entries, source_id)
    return point if len(reader.problems) == before else None


def _modbus_point(entries: Entries, source_id: str) -> ModbusPoint | None:
    reader = entries.reader
    table: ModbusTable | None = entries.get("table", reader.one_of(MODBUS_TABLES), required=True)
    address = entries.get("address", partial(reader.integer, low=0, high=65535), required=True)
    read_type = reader.one_of(REGISTER_TYPES)
    register_type: RegisterType | None = entries.get("type", read_type, required=True)
    word_order: WordOrder | None = entries.get("word_order", reader.one_of(WORD_ORDERS), "big")
    kind_: PointKind | None = entries.get("kind", reader.one_of(POINT_KINDS), "counter")
    per_count = entries.get("pulses_per_count", partial(reader.number, above=0), 1.0)
    rollover: int | float | None = entries.get("rollover", partial(reader.number, above=0))
    max_rate = entries.get("max_rate", partial(reader.number, above=0), None)
    if "max_rate" in entries and max_rate is None:
        return None
    if register_type is None:
        return None
    words = REGISTER_WORDS[register_type]
    if rollover is not None and register_type[0] in "ui":
        # An integer register wraps at a whole count no larger than its own range.
        limit = 2 ** (16 * words)
        if rollover != int(rollover) or rollover > limit:
            message = f"a {register_type} register rolls over at a whole number up to {limit}"
            entries.problem("rollover", message)
            return None
        rollover = int(rollover)
    if address is not None and address + words > 65536:
        entries.problem("address", f"a {register_type} at {address} runs past register 65535")
        return None
    if table is None or address is None or word_order is None or kind_ is None:
        return None
    if per_count is None:
        return None
    return ModbusPoint(
        source_id, table, address, register_type, word_order, rollover, kind_, per_count, max_rate
    )


def _simulated_point(entries: Entries, source_id: str) -> SimulatedPoint | None:
    reader = entries.reader
    read_rate = partial(reader.number, above=0, at_most=MAX_SIMULATED_RATE)
    rate = entries.get("rate", read_rate, required=True)
    mode: SimulationMode | None = entries.get("mode", reader.one_of(SIMULATION_MODES), "poisson")
    if rate is None or mode is None:
        return None
    return SimulatedPoint(source_id, rate, mode)


def _gpio_point(entries: Entries, source_id: str) -> GpioPoint | None:
    reader = entries.reader
    line = entries.get("line", partial(reader.integer, low=0), required=True)
    edge: GpioEdge | None = entries.get("edge", reader.one_of(GPIO_EDGES), "falling")
    # Longer than a second would swallow real pulses: S0 outputs pulse for 30 ms and up.
    read_debounce = partial(reader.duration, at_most=MICROS_PER_SECOND)
    debounce = entries.get("debounce", read_debounce, 10 * MILLISECOND)
    bias: GpioBias | None = entries.get("bias", reader.one_of(GPIO_BIASES), "as_is")
    active_low = entries.get("active_low", partial(boolean, reader), False)
    if line is None or edge is None or debounce is None or bias is None or active_low is None:
        return None
    return GpioPoint(source_id, line, edge, debounce, bias, active_low)


_POINT_READERS: dict[str, Callable[[Entries, str], PointConfig | None]] = {
    "modbus-tcp": _modbus_point,
    "modbus-rtu": _modbus_point,
    "simulated": _simulated_point,
    "gpio": _gpio_point,
}


def _foreign_keys(
    own_type: str,
    same_side: Mapping[str, tuple[str, ...]],
    other_side: Mapping[str, tuple[str, ...]],
    side: Literal["source", "point"],
) -> dict[str, str]:
    """Messages for keys valid elsewhere: on the other side (source/point) or another type."""
    if side == "source":
        elsewhere = "is set per channel, in the channel's source: mapping"
    else:
        elsewhere = "is set on the source itself, under sources:"
    messages: dict[str, str] = {}
    for other_type, keys in same_side.items():
        for key in keys:
            if key not in same_side[own_type]:
                messages.setdefault(key, f"{key} applies to {other_type} sources, not {own_type}")
    for keys in other_side.values():
        for key in keys:
            if key not in same_side[own_type]:
                messages.setdefault(key, f"{key} {elsewhere}")
    return messages
