"""Config reading, part 1: YAML nodes -> typed values, and the schema of pulse sources.

``gateway.config`` composes the file into nodes and walks them with a ``Reader``: each typed
read (a number, a duration, a choice...) reports a ``Problem`` with the node's line and column
and returns None, so one pass finds every mistake. This module also holds the part of the
schema that depends on a source's *type*: the ``sources:`` entries (modbus-tcp, modbus-rtu,
simulated, gpio) and a channel's ``source:`` point, whose keys are those of the type of the
source it names. A key that belongs to another type, or to the other side (a source key put on
a channel's point, or the reverse), is named as such, not just "unknown".
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import yaml.constructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.core import Span, TimeSyntaxError, format_duration, parse_duration
from gateway.core.timeline import MICROS_PER_SECOND

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

MILLISECOND = MICROS_PER_SECOND // 1000
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Plain scalars YAML 1.1 keeps as text although people mean numbers ("1e-3": YAML 1.1 wants a
# dot and a signed exponent); accepted where a number is expected.
_NUMBER_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# YAML 1.1 reads 017 as octal 15 and 10:30 as base-60 630: never what a technician meant.
_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
SOURCE_ID = re.compile(r"[a-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config file, with its place."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.path}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems


class _Invalid:
    """Stands in for a value that is no scalar: a list or mapping, or a broken scalar."""


_COLLECTION = _Invalid()  # a list or a mapping: the typed reader says what it expected
_REPORTED = _Invalid()  # a scalar YAML itself could not build: already reported

type Read[T] = Callable[[Node, str], T | None]


class Reader:
    """Walks composed YAML nodes, collecting problems instead of stopping at the first."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, node: Node, path: str, message: str) -> None:
        mark, where = node.start_mark, path or "(file)"  # "" is the document itself
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, where, message))

    def entries(
        self,
        node: Node,
        path: str,
        known: Sequence[str],
        foreign: Mapping[str, str] | None = None,
    ) -> Entries | None:
        """The entries of a mapping node; reports duplicate and unknown keys.

        ``foreign`` maps keys that exist elsewhere in the schema to the message that says where
        they belong. YAML merge keys (``<<: *anchor``) are honoured, own keys winning.
        """
        items = self._mapping(node, path, known, foreign or {})
        return None if items is None else Entries(self, node, path, items)

    def _mapping(
        self, node: Node, path: str, known: Sequence[str], foreign: Mapping[str, str]
    ) -> dict[str, tuple[Node, Node]] | None:
        if not isinstance(node, MappingNode):
            self.problem(node, path, f"expected a mapping (key: value lines), found {kind(node)}")
            return None
        items: dict[str, tuple[Node, Node]] = {}
        merged: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.append(value_node)
                continue
            key = self.scalar(key_node, path)
            if not isinstance(key, str):
                if key is not _REPORTED:
                    self.problem(key_node, path, f"keys must be names, not {kind(key_node)}")
                continue
            where = join(path, key)
            if key in items:
                first = items[key][0].start_mark.line + 1
                self.problem(key_node, where, f"duplicate key (first given on line {first})")
            elif key in known:
                items[key] = (key_node, value_node)
            elif key in foreign:
                self.problem(key_node, where, foreign[key])
            else:
                self.problem(key_node, where, f"unknown key{did_you_mean(key, known)}")
        for value_node in merged:
            parts = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for part in parts:
                for key, entry in (self._mapping(part, path, known, foreign) or {}).items():
                    items.setdefault(key, entry)
        return items

    def sequence(self, node: Node, path: str, what: str) -> list[Node] | None:
        """The items of a list node; reports anything else."""
        if not isinstance(node, SequenceNode):
            self.problem(node, path, f"expected a list of {what}, found {kind(node)}")
            return None
        return list(node.value)

    def scalar(self, node: Node, path: str) -> Any:
        """The Python value of a scalar node, or one of the ``_Invalid`` markers."""
        if not isinstance(node, ScalarNode):
            return _COLLECTION
        try:
            return self._constructor.construct_object(node)
        except (yaml.constructor.ConstructorError, ValueError, TypeError) as exc:
            # e.g. `date: 2026-13-01` or a custom `!tag`: YAML itself cannot build the value.
            detail = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else str(exc)
            self.problem(node, path, f"cannot read {node.value!r}: {detail}")
            return _REPORTED

    # -- typed readers: each returns None after reporting a problem ----------------------------

    def number(
        self,
        node: Node,
        path: str,
        *,
        above: float | None = None,
        at_least: float | None = None,
        at_most: float | None = None,
    ) -> float | None:
        value = self._numeric(node, path, "a number")
        if value is None:
            return None
        value = float(value)
        if not math.isfinite(value):
            self.problem(node, path, "expected a finite number")
        elif above is not None and value <= above:
            self.problem(node, path, f"must be greater than {above:g}, not {value:g}")
        elif at_least is not None and value < at_least:
            self.problem(node, path, f"must be at least {at_least:g}, not {value:g}")
        elif at_most is not None and value > at_most:
            self.problem(node, path, f"must be at most {at_most:g}, not {value:g}")
        else:
            return value
        return None

    def integer(self, node: Node, path: str, *, low: int, high: int | None = None) -> int | None:
        value = self._numeric(node, path, "a whole number")
        if value is None:
            return None
        if not isinstance(value, int):
            self.problem(node, path, f"expected a whole number, found {show(node)}")
        elif value < low or (high is not None and value > high):
            limits = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(node, path, f"must be {limits}, not {value}")
        else:
            return value
        return None

    def duration(
        self, node: Node, path: str, *, at_least: Span = 0, at_most: Span | None = None
    ) -> Span | None:
        value = self.scalar(node, path)
        if value is _REPORTED:
            return None
        if value is _COLLECTION:
            self.problem(node, path, f"expected a duration like '15min', found {kind(node)}")
            return None
        try:
            span = parse_duration(value)
        except TimeSyntaxError as exc:
            self.problem(node, path, str(exc))
            return None
        if span < at_least:
            self.problem(node, path, f"must be at least {format_duration(at_least)}")
        elif at_most is not None and span > at_most:
            self.problem(node, path, f"must be at most {format_duration(at_most)}")
        else:
            return span
        return None

    def text(self, node: Node, path: str) -> str | None:
        value = self.scalar(node, path)
        if value is _REPORTED:
            return None
        if not isinstance(value, str) or not value.strip():
            quote = isinstance(node, ScalarNode) and node.value
            hint = f" (quote it: '{node.value}')" if quote else ""
            self.problem(node, path, f"expected text, found {show(node)}{hint}")
            return None
        return value

    def choice[S: str](self, node: Node, path: str, *, options: Sequence[S]) -> S | None:
        """One of ``options``, typed as narrowly as they are (a ``Literal`` for most)."""
        value = self.scalar(node, path)
        if value is _REPORTED:
            return None
        for option in options:
            if value == option:
                return option
        allowed = ", ".join(options)
        if isinstance(value, str):
            hint = did_you_mean(value, options)
            self.problem(node, path, f"{value!r} is not one of: {allowed}{hint}")
        else:
            self.problem(node, path, f"expected one of: {allowed}; found {show(node)}")
        return None

    def one_of[S: str](self, options: Sequence[S]) -> Read[S]:
        """``choice`` with ``options`` bound, for ``Entries.get``.

        Annotate the variable it is read into (``table: ModbusTable | None = entries.get(...)``):
        left to infer ``get``'s type alone, mypy widens a union of literals to ``str``.
        """
        return lambda node, path: self.choice(node, path, options=options)

    def _numeric(self, node: Node, path: str, what: str) -> int | float | None:
        value = self.scalar(node, path)
        if value is _REPORTED:
            return None
        plain = isinstance(node, ScalarNode) and node.style is None
        if plain and isinstance(value, int) and not isinstance(value, bool):
            if _LEADING_ZERO.fullmatch(node.value):
                digits = node.value.lstrip("+-0_") or "0"
                message = f"write {digits} without the leading 0 (YAML reads it as octal)"
                self.problem(node, path, message)
                return None
            if ":" in node.value:
                self.problem(node, path, f"{node.value!r} is read as a base-60 number: quote it")
                return None
        if plain and isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(node, path, f"expected {what}, found {show(node)}")
            return None
        return value


class Entries:
    """A mapping's entries with its reader, node and path bound: ``get`` reads one key."""

    __slots__ = ("_items", "node", "path", "reader")

    def __init__(
        self, reader: Reader, node: Node, path: str, items: dict[str, tuple[Node, Node]]
    ) -> None:
        self.reader = reader
        self.node = node
        self.path = path
        self._items = items

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def value_node(self, key: str) -> Node | None:
        """The node of ``key``'s value, None when the key is absent."""
        return self._items[key][1] if key in self._items else None

    def key_line(self, key: str) -> int:
        return self._items[key][0].start_mark.line + 1

    def get[T](
        self, key: str, read: Read[T], default: T | None = None, *, required: bool = False
    ) -> T | None:
        """Read ``key`` with ``read``; the default when absent, None when missing or bad."""
        if key not in self._items:
            if required:
                self.reader.problem(self.node, join(self.path, key), "required key is missing")
            return default
        return read(self._items[key][1], join(self.path, key))

    def problem(self, key: str, message: str) -> None:
        """Report ``message`` at ``key``'s value, or at the mapping when the key is absent."""
        where = self.value_node(key) or self.node
        self.reader.problem(where, join(self.path, key), message)


# -- the keys of a settings dataclass -----------------------------------------------------------

_YAML_KEYS = "yaml_keys"  # the field metadata entry yaml_key() writes


def yaml_key(*keys: str) -> dict[str, tuple[str, ...]]:
    """``field(metadata=...)`` for a settings field not read from the YAML key of its name.

    A dotted key is nested (``tls.cert``: key ``cert`` of the mapping under ``tls``). Several
    fields may come from one key (``listen`` gives host and port), one field from several keys,
    and a field given no key is not read from the file at all.
    """
    return {_YAML_KEYS: keys}


def yaml_keys(settings: type[DataclassInstance], under: str = "") -> tuple[str, ...]:
    """The keys a settings dataclass is read from, each once, in field order.

    ``under`` names a nested mapping (``"tls"``) to list its keys instead. These tuples are the
    only lists of allowed keys: unknown-key errors and "did you mean" hints are made from them.
    """
    prefix = f"{under}." if under else ""
    keys: dict[str, None] = {}
    for item in fields(settings):
        for key in item.metadata.get(_YAML_KEYS, (item.name,)):
            if key.startswith(prefix):
                keys.setdefault(key.removeprefix(prefix).split(".")[0])
    return tuple(keys)


def _without(keys: tuple[str, ...], *dropped: str) -> tuple[str, ...]:
    return tuple(key for key in keys if key not in dropped)


# -- sources ----------------------------------------------------------------------------------

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


def boolean(reader: Reader, node: Node, path: str) -> bool | None:
    """A YAML true or false."""
    before = len(reader.problems)
    value = reader.scalar(node, path)
    if len(reader.problems) > before:
        return None
    if not isinstance(value, bool):
        reader.problem(node, path, f"expected true or false, found {show(node)}")
        return None
    return value


_POINT_READERS: dict[str, Callable[[Entries, str], PointConfig | None]] = {
    "modbus-tcp": _modbus_point,
    "modbus-rtu": _modbus_point,
    "simulated": _simulated_point,
    "gpio": _gpio_point,
}


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


def _entry(node: Node, key: str) -> Node | None:
    """The value node of ``key`` in a mapping node, without reading (or reporting) anything."""
    if not isinstance(node, MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            return value_node
    return None


def _peek_text(node: Node, key: str) -> str | None:
    value = _entry(node, key)
    return value.value if isinstance(value, ScalarNode) and value.value else None


def _peek_choice(node: Node, key: str, options: Sequence[str]) -> str | None:
    text = _peek_text(node, key)
    return text if text in options else None


# -- message helpers --------------------------------------------------------------------------


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return show(node)


def show(node: Node) -> str:
    if not isinstance(node, ScalarNode):
        return kind(node)
    if node.value == "" and node.tag.endswith(":null"):
        return "nothing"
    return repr(node.value)
