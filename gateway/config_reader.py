"""Config reading: YAML nodes -> typed values, every problem with its line and column.

``gateway.config`` composes the file into nodes (which carry line and column) and walks them
with a ``Reader``: each typed read (a number, a duration, a choice...) reports a ``Problem`` at
the node's place and returns None, so one pass finds every mistake. ``yaml_keys`` reads the
allowed keys of a mapping from the settings dataclass it becomes. Separate from the schema
(``gateway.config``, ``gateway.config_sources``) because it knows YAML, not what any key means.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import yaml.constructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.core import Span, TimeSyntaxError, format_duration, parse_duration

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Plain scalars YAML 1.1 keeps as text although people mean numbers ("1e-3": YAML 1.1 wants a
# dot and a signed exponent); accepted where a number is expected.
_NUMBER_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# YAML 1.1 reads 017 as octal 15 and 10:30 as base-60 630: never what a technician meant.
_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")


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


# -- peeking: a value without reading (or reporting) anything --------------------------------


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
