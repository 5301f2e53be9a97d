"""YAML configuration (schema 1, PRODUCT.md §4) -> a frozen, validated ``Config``.

Field technicians edit this file on site, so every problem is reported at once, each as
``FILE:LINE:COL: key.path: message``, and nothing is half-loaded: ``load_config`` either returns
a whole ``Config`` or raises ``ConfigError`` with the full list.

PyYAML builds plain dicts and silently keeps the last of two equal keys, losing positions on the
way. So the file is *composed* into nodes (which carry line and column), and this module walks
the nodes itself: duplicate keys, unknown keys (with "did you mean"), wrong types and bad values
are all caught with their place.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
import yaml.constructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.core import UNITS, ChannelRules, Span, TimeSyntaxError, parse_duration
from gateway.core.timeline import MICROS_PER_SECOND

CHANNEL_ID = re.compile(r"[a-z0-9_]+")

TOP_LEVEL_KEYS = ("schema", "gateway", "bacnet", "metrics", "sources", "channels")
# Keys a channel may have. For replay only the demand keys are read; the rest are accepted and
# left for the daemon (PRODUCT.md §3: "every other section and key is optional there and ignored").
CHANNEL_KEYS = (
    "id",
    "import_id",
    "unit",
    "scale_factor",
    "demand_window",
    "demand_slide",
    "initial_reading",
    "reset_lockout",
    "source",
    "cov_increment",
    "bacnet_instance_base",
    "interval",
)


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


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One channel: its identity and its demand rules."""

    id: str
    import_id: str
    rules: ChannelRules


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration."""

    path: str
    channels: tuple[ChannelConfig, ...]

    def rules(self) -> dict[str, ChannelRules]:
        """Channel rules by id, in config order."""
        return {channel.id: channel.rules for channel in self.channels}


class _Reader:
    """Walks composed YAML nodes, collecting problems instead of stopping at the first."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def problem(self, node: Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, path, message))

    def mapping(
        self, node: Node, path: str, known: tuple[str, ...]
    ) -> dict[str, tuple[Node, Node]] | None:
        """The entries of a mapping node by key; reports duplicates and unknown keys."""
        if not isinstance(node, MappingNode):
            self.problem(node, path, f"expected a mapping (key: value lines), found {_kind(node)}")
            return None
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                self.problem(key_node, path, f"keys must be names, not {_kind(key_node)}")
                continue
            where = _join(path, key)
            if key in entries:
                first = entries[key][0].start_mark.line + 1
                self.problem(key_node, where, f"duplicate key (first given on line {first})")
                continue
            if key not in known:
                self.problem(key_node, where, f"unknown key{_did_you_mean(key, known)}")
                continue
            entries[key] = (key_node, value_node)
        return entries

    def scalar(self, node: ScalarNode) -> Any:
        return self._constructor.construct_object(node)

    def value(
        self,
        entries: dict[str, tuple[Node, Node]],
        owner: Node,
        path: str,
        key: str,
        read: Callable[[Node, str], Any],
        *,
        default: Any = None,
        required: bool = False,
    ) -> Any:
        """Read ``key`` from ``entries`` with ``read``; None when it is missing or bad."""
        if key not in entries:
            if required:
                self.problem(owner, _join(path, key), "required key is missing")
            return default
        return read(entries[key][1], _join(path, key))

    # -- typed readers: each returns None after reporting a problem ----------------------------

    def number(self, node: Node, path: str) -> float | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(node, path, f"expected a number, found {_show(node)}")
            return None
        if not math.isfinite(value):
            self.problem(node, path, "expected a finite number")
            return None
        return float(value)

    def duration(self, node: Node, path: str) -> Span | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        try:
            return parse_duration(value)
        except TimeSyntaxError as exc:
            self.problem(node, path, str(exc))
            return None

    def text(self, node: Node, path: str) -> str | None:
        value = self.scalar(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, str) or not value:
            hint = (
                f" (quote it: '{node.value}')"
                if isinstance(node, ScalarNode) and node.value
                else ""
            )
            self.problem(node, path, f"expected text, found {_show(node)}{hint}")
            return None
        return value


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raise ``ConfigError`` listing every problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, 1, 1, "(file)", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(file, 1, 1, "(file)", "not UTF-8 text")]) from None
    return parse_config(text, file)


def parse_config(text: str, file: str = "<config>") -> Config:
    """Validate config ``text``; ``file`` names it in messages."""
    reader = _Reader(file)
    tabs = [
        Problem(
            file,
            number,
            line.index("\t") + 1,
            "(indentation)",
            "tab character in indentation: YAML indents with spaces only",
        )
        for number, line in enumerate(text.splitlines(), start=1)
        if "\t" in line[: len(line) - len(line.lstrip())]
    ]
    if tabs:
        raise ConfigError(tabs)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax: {exc.problem or exc.context}"
        raise ConfigError([Problem(file, line, column, "(syntax)", message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, "(syntax)", f"YAML syntax: {exc}")]) from None
    if root is None:
        raise ConfigError([Problem(file, 1, 1, "(file)", "empty: expected a 'channels:' list")])
    top = reader.mapping(root, "", TOP_LEVEL_KEYS)
    channels: list[ChannelConfig] = []
    if top is not None:
        if "schema" in top:
            schema_node = top["schema"][1]
            schema = reader.scalar(schema_node) if isinstance(schema_node, ScalarNode) else None
            if schema != 1 or isinstance(schema, bool):
                reader.problem(
                    schema_node, "schema", f"this gateway reads schema 1, not {_show(schema_node)}"
                )
        if "channels" not in top:
            reader.problem(root, "channels", "required key is missing")
        else:
            channels = _channels(reader, top["channels"][1])
    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(file, tuple(channels))


def _channels(reader: _Reader, node: Node) -> list[ChannelConfig]:
    if not isinstance(node, SequenceNode):
        reader.problem(node, "channels", f"expected a list of channels, found {_kind(node)}")
        return []
    if not node.value:
        reader.problem(node, "channels", "at least one channel is needed")
    channels: list[ChannelConfig] = []
    first_line: dict[str, int] = {}
    for index, item in enumerate(node.value):
        channel = _channel(reader, item, f"channels[{index}]")
        if channel is None:
            continue
        if channel.id in first_line:
            reader.problem(
                item,
                f"channels[{index}].id",
                f"duplicate channel id {channel.id!r} (first on line {first_line[channel.id]})",
            )
            continue
        first_line[channel.id] = item.start_mark.line + 1
        channels.append(channel)
    return channels


def _channel(reader: _Reader, node: Node, path: str) -> ChannelConfig | None:
    entries = reader.mapping(node, path, CHANNEL_KEYS)
    if entries is None:
        return None
    before = len(reader.problems)

    channel_id = reader.value(entries, node, path, "id", reader.text, required=True)
    if channel_id is not None and not CHANNEL_ID.fullmatch(channel_id):
        reader.problem(
            entries["id"][1],
            _join(path, "id"),
            f"{channel_id!r}: use lower-case letters, digits and _ only",
        )
    import_id = reader.value(entries, node, path, "import_id", reader.text, default=channel_id)

    unit = None
    unit_name = reader.value(entries, node, path, "unit", reader.text, required=True)
    if unit_name is not None:
        unit = UNITS.get(unit_name)
        if unit is None:
            reader.problem(
                entries["unit"][1],
                _join(path, "unit"),
                f"unknown unit {unit_name!r}{_did_you_mean(unit_name, tuple(UNITS))}; "
                f"allowed: {', '.join(UNITS)}",
            )

    scale = reader.value(entries, node, path, "scale_factor", reader.number, required=True)
    if scale is not None and scale <= 0:
        reader.problem(
            entries["scale_factor"][1],
            _join(path, "scale_factor"),
            "must be greater than 0 (consumption units per pulse)",
        )
    window = reader.value(entries, node, path, "demand_window", reader.duration, required=True)
    slide = reader.value(entries, node, path, "demand_slide", reader.duration, required=True)
    if slide is not None and (slide < MICROS_PER_SECOND or slide % MICROS_PER_SECOND):
        reader.problem(
            entries["demand_slide"][1],
            _join(path, "demand_slide"),
            "must be a whole number of seconds, at least 1s",
        )
        slide = None
    if window is not None and slide is not None and (window <= 0 or window % slide):
        reader.problem(
            entries["demand_window"][1],
            _join(path, "demand_window"),
            "must be a positive whole multiple of demand_slide",
        )
    initial = reader.value(entries, node, path, "initial_reading", reader.number, default=0.0)
    lockout = reader.value(entries, node, path, "reset_lockout", reader.duration, default=0)

    if len(reader.problems) > before or None in (
        channel_id,
        import_id,
        unit,
        scale,
        window,
        slide,
        initial,
        lockout,
    ):
        return None
    assert unit is not None and scale is not None  # narrowed by the check above
    rules = ChannelRules(unit, scale, window, slide, initial, lockout)
    return ChannelConfig(channel_id, import_id, rules)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _show(node)


def _show(node: Node) -> str:
    if not isinstance(node, ScalarNode):
        return _kind(node)
    if node.value == "" and node.tag.endswith(":null"):
        return "nothing"
    return repr(node.value)
