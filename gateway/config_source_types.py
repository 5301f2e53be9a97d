"""The pulse source types: their settings and channel points, keys, inputs and summaries.

What the ``sources:`` entries (modbus-tcp, modbus-rtu, simulated, gpio) and a channel's
``source:`` point become, with the keys each type allows read from the dataclasses; which
physical input a point reads, so two channels counting one input are reported; and the one-line
descriptions ``check`` prints. Separate from the readers (``gateway.config_sources``) because
the sources themselves import these types, and they need no YAML reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from yaml.nodes import Node

from gateway.config_reader import Reader, _entry, _without, join, yaml_keys
from gateway.core import Span, format_duration
from gateway.core.timeline import MICROS_PER_SECOND

MILLISECOND = MICROS_PER_SECOND // 1000

# The values a choice key allows: each written once, as the type of the field that holds it; the
# tuples (which the reader offers and lists in messages) are read back from the types.
type ModbusTable = Literal["holding", "input"]
type RegisterType = Literal["u16", "u32", "u64", "i32", "f32", "f64"]
type WordOrder = Literal["big", "little"]
type PointKind = Literal["counter", "total"]
type SimulationMode = Literal["constant", "poisson"]
type GpioEdge = Literal["rising", "falling", "both"]
type GpioBias = Literal["as_is", "pull_up", "pull_down", "disabled"]
type Framing = Literal["socket", "rtu"]
type Parity = Literal["N", "E", "O"]
MODBUS_TABLES: tuple[ModbusTable, ...] = get_args(ModbusTable.__value__)
REGISTER_TYPES: tuple[RegisterType, ...] = get_args(RegisterType.__value__)
WORD_ORDERS: tuple[WordOrder, ...] = get_args(WordOrder.__value__)
POINT_KINDS: tuple[PointKind, ...] = get_args(PointKind.__value__)
SIMULATION_MODES: tuple[SimulationMode, ...] = get_args(SimulationMode.__value__)
GPIO_EDGES: tuple[GpioEdge, ...] = get_args(GpioEdge.__value__)
GPIO_BIASES: tuple[GpioBias, ...] = get_args(GpioBias.__value__)
FRAMINGS: tuple[Framing, ...] = get_args(Framing.__value__)
PARITIES: tuple[Parity, ...] = get_args(Parity.__value__)
# Register types and their width in 16-bit words (docs/reference/configuration.md).
REGISTER_WORDS: dict[RegisterType, int] = {
    "u16": 1,
    "u32": 2,
    "u64": 4,
    "i32": 2,
    "f32": 2,
    "f64": 4,
}
BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
MAX_SIMULATED_RATE = 1000.0  # pulses/s: far above any real pulse output, cheap to simulate


@dataclass(frozen=True, slots=True)
class ModbusTcpSource:
    """A Modbus TCP device (or TCP-to-RTU gateway) polled for counter registers."""

    type: ClassVar[str] = "modbus-tcp"
    id: str
    host: str
    port: int = 502
    unit_id: int = 1
    poll_interval: Span = MICROS_PER_SECOND
    timeout: Span = MICROS_PER_SECOND
    retries: int = 1
    backoff_max: Span = 60 * MICROS_PER_SECOND
    min_request_gap: Span | None = None  # None: 20 ms on TCP, 50 ms framed as RTU
    max_read_gap: int = 16
    max_read_registers: int = 125
    framing: Framing = "socket"  # rtu: RTU frames over TCP (serial servers)


@dataclass(frozen=True, slots=True)
class ModbusRtuSource:
    """A Modbus RTU device on a serial line (8 data bits)."""

    type: ClassVar[str] = "modbus-rtu"
    id: str
    device: str
    baudrate: int = 9600
    parity: Parity = "E"
    stopbits: int = 1
    unit_id: int = 1
    poll_interval: Span = MICROS_PER_SECOND
    timeout: Span = MICROS_PER_SECOND
    retries: int = 1
    backoff_max: Span = 60 * MICROS_PER_SECOND
    min_request_gap: Span | None = None  # None: 50 ms between requests on a serial line
    max_read_gap: int = 16
    max_read_registers: int = 125


@dataclass(frozen=True, slots=True)
class SimulatedSource:
    """Built-in simulated meters (the demo); ``seed`` makes the pulse trains repeatable."""

    type: ClassVar[str] = "simulated"
    id: str
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class GpioSource:
    """A Linux GPIO chip (libgpiod v2 character device)."""

    type: ClassVar[str] = "gpio"
    id: str
    chip: str
    event_buffer_size: int | None = None  # None: max(256, 16 x lines)


type SourceConfig = ModbusTcpSource | ModbusRtuSource | SimulatedSource | GpioSource


@dataclass(frozen=True, slots=True)
class ModbusPoint:
    """A channel's register on a Modbus source; ``address`` is the 0-based PDU address."""

    id: str  # the source's id (YAML: source: {id: ...})
    table: ModbusTable
    address: int
    type: RegisterType
    word_order: WordOrder = "big"
    rollover: int | float | None = None
    kind: PointKind = "counter"
    pulses_per_count: float = 1.0
    max_rate: float | None = None  # plausible pulses/s; None: the source's default (1000)

    @property
    def words(self) -> int:
        """How many 16-bit registers the value spans."""
        return REGISTER_WORDS[self.type]


@dataclass(frozen=True, slots=True)
class SimulatedPoint:
    """A simulated meter: ``rate`` mean pulses per second, evenly spaced or Poisson."""

    id: str  # the source's id (YAML: source: {id: ...})
    rate: float
    mode: SimulationMode = "poisson"


@dataclass(frozen=True, slots=True)
class GpioPoint:
    """A pulse input line of a GPIO source."""

    id: str  # the source's id (YAML: source: {id: ...})
    line: int
    edge: GpioEdge = "falling"
    debounce: Span = 10 * MILLISECOND
    bias: GpioBias = "as_is"
    active_low: bool = False


type PointConfig = ModbusPoint | SimulatedPoint | GpioPoint

# Per source type, in the order messages list the types: its entry under sources:, and a
# channel's point on such a source.
_SCHEMA: tuple[tuple[type[SourceConfig], type[PointConfig]], ...] = (
    (ModbusTcpSource, ModbusPoint),
    (ModbusRtuSource, ModbusPoint),
    (SimulatedSource, SimulatedPoint),
    (GpioSource, GpioPoint),
)
# The keys that depend on the type. "id" is common to all, and a source's "type" key picks the
# class (it is a ClassVar, not a field): both are added where entries are read.
SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    source.type: _without(yaml_keys(source), "id") for source, _ in _SCHEMA
}
POINT_KEYS: dict[str, tuple[str, ...]] = {
    source.type: _without(yaml_keys(point), "id") for source, point in _SCHEMA
}
SOURCE_TYPES = tuple(SOURCE_KEYS)
_ALL_SOURCE_KEYS = tuple(dict.fromkeys(("id", "type", *sum(SOURCE_KEYS.values(), ()))))
_ALL_POINT_KEYS = tuple(dict.fromkeys(("id", *sum(POINT_KEYS.values(), ()))))


def check_shared_inputs(
    reader: Reader,
    points: Sequence[tuple[str, Node, PointConfig]],
    sources: Mapping[str, SourceConfig],
) -> None:
    """Report two channels on one Modbus register (or overlapping ones) or one GPIO line.

    Both would count the same pulses. Inputs are keyed by the physical device where the source
    is known, so two source entries for one device are caught as well.
    """
    registers: list[tuple[tuple[object, ...], range, str, Node]] = []
    lines: dict[tuple[str, int], tuple[str, Node]] = {}
    for path, node, point in points:
        source = sources.get(point.id)
        if isinstance(point, ModbusPoint):
            key = (*(_device_key(source) if source else (point.id,)), point.table)
            span = range(point.address, point.address + point.words)
            for other_key, other_span, other_path, other_node in registers:
                if (
                    other_key == key
                    and span.start < other_span.stop
                    and other_span.start < span.stop
                ):
                    reader.problem(
                        _entry(node, "address") or node,
                        join(path, "address"),
                        f"{point.table} register {_span(span)} overlaps {_span(other_span)} "
                        f"read by {other_path} (line {other_node.start_mark.line + 1})",
                    )
                    break
            else:
                registers.append((key, span, path, node))
        elif isinstance(point, GpioPoint):
            chip = source.chip if isinstance(source, GpioSource) else point.id
            if (chip, point.line) in lines:
                other_path, other_node = lines[(chip, point.line)]
                reader.problem(
                    _entry(node, "line") or node,
                    join(path, "line"),
                    f"line {point.line} of {chip} is already counted by {other_path} "
                    f"(line {other_node.start_mark.line + 1})",
                )
            else:
                lines[(chip, point.line)] = (path, node)


def describe_source(source: SourceConfig) -> str:
    """One line for ``check``: what the gateway will talk to."""
    if isinstance(source, ModbusTcpSource):
        poll = format_duration(source.poll_interval)
        return f"modbus-tcp {source.host}:{source.port} unit {source.unit_id}, poll every {poll}"
    if isinstance(source, ModbusRtuSource):
        poll = format_duration(source.poll_interval)
        line = f"{source.baudrate} 8{source.parity}{source.stopbits}"
        return f"modbus-rtu {source.device} {line} unit {source.unit_id}, poll every {poll}"
    if isinstance(source, SimulatedSource):
        return "simulated" + ("" if source.seed is None else f" (seed {source.seed})")
    return f"gpio {source.chip}"


def describe_point(point: PointConfig) -> str:
    """A channel's input in a few words, for ``check``."""
    if isinstance(point, ModbusPoint):
        first = "high" if point.word_order == "big" else "low"
        order = f" {first} word first" if point.words > 1 else ""
        return f"{point.id} {point.table} {point.address} {point.type}{order} {point.kind}"
    if isinstance(point, SimulatedPoint):
        return f"{point.id} {point.rate:g} pulses/s {point.mode}"
    debounce = format_duration(point.debounce)
    return f"{point.id} line {point.line} {point.edge}, debounce {debounce}"


def _device_key(source: SourceConfig) -> tuple[object, ...]:
    if isinstance(source, ModbusTcpSource):
        return ("tcp", source.host, source.port, source.unit_id)
    if isinstance(source, ModbusRtuSource):
        return ("rtu", source.device, source.unit_id)
    return (source.id,)


def _span(registers: range) -> str:
    last = registers.stop - 1
    return str(registers.start) if last == registers.start else f"{registers.start}..{last}"
