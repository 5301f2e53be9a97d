"""YAML configuration (schema 1, docs/reference/configuration.md) -> a frozen ``Config``.

Field technicians edit this file on site, so every problem is reported at once, each as
``FILE:LINE:COL: key.path: message``, and nothing is half-loaded: ``load_config`` either returns
a whole ``Config`` or raises ``ConfigError`` with the full list, sorted by place.

PyYAML builds plain dicts and silently keeps the last of two equal keys, losing positions on the
way. So the file is *composed* into nodes (which carry line and column), and this module walks
the nodes itself: duplicate keys, unknown keys (with "did you mean"), wrong types and bad values
are all caught with their place. This module is the loader; the parts it puts together are
``config_reader`` (the node reader), ``config_settings`` (what a config is),
``config_sections`` and ``config_channels`` (the sections' readers), ``config_sources`` and
``config_source_types`` (the source types' schema). Every name importable from here before
they were split off still is.

The allowed keys of each mapping are not listed by hand: ``yaml_keys`` reads them from the
settings dataclass the mapping becomes (a field's metadata names its key where the two differ),
so a new setting is one field plus the line that reads it.

Two purposes (docs/reference/commands.md):

- ``replay`` reads what the demand rules need: ``channels:`` is required, a channel's
  ``source`` may be left out, and the other sections are ignored (not even read), so a site's
  real config replays even where its hardware part would not check out on this machine. Unknown
  top-level and channel keys are still errors: a typo is never silently ignored.
- ``run`` (``pulse-gateway run`` and ``check``) validates everything and requires what the
  daemon needs: ``gateway`` (state_dir), ``bacnet`` (address, device_instance),
  ``sources`` and a ``source`` per channel; ``metrics`` is optional (absent = no endpoint).
  It returns a ``RunConfig``, whose ``gateway`` and ``bacnet`` are typed as always present.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal, overload
from zoneinfo import ZoneInfo

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from gateway.config_channels import (
    CHANNEL_ID,
    IMPORT_ID,
    _channels,
    _check_bacnet_instances,
    _check_import_ids,
    _Draft,
    apply_schedules,
)
from gateway.config_reader import ConfigError, Entries, Problem, Reader, show
from gateway.config_schedule import NONE, read_reset_schedule
from gateway.config_sections import _bacnet, _export, _gateway, _metrics, _section, _timezone
from gateway.config_settings import (
    BACNET_KEYS,
    BACNET_PORT,
    BASIC_AUTH_KEYS,
    CHANNEL_KEYS,
    DEFAULT_GATEWAY_NAME,
    DEFAULT_INTERVAL,
    DEFAULT_RETENTION,
    DEFAULT_TIMEZONE,
    EXPORT_KEYS,
    FOREIGN_DEVICE_KEYS,
    GATEWAY_KEYS,
    MAX_INSTANCE,
    METRICS_KEYS,
    OBJECTS_PER_CHANNEL,
    SCHEDULE_KEYS,
    SECTION_KEYS,
    TLS_KEYS,
    TOP_LEVEL_KEYS,
    BacnetSettings,
    ChannelConfig,
    Config,
    ExportSchedule,
    ForeignDevice,
    GatewaySettings,
    MetricsSettings,
    RunConfig,
)
from gateway.config_source_types import (
    GpioPoint,
    GpioSource,
    ModbusPoint,
    ModbusRtuSource,
    ModbusTcpSource,
    PointConfig,
    SimulatedPoint,
    SimulatedSource,
    SourceConfig,
    check_shared_inputs,
)
from gateway.config_sources import read_sources
from gateway.config_virtual import check_terms
from gateway.core import ResetSchedule

__all__ = [
    "BACNET_KEYS",
    "BACNET_PORT",
    "BASIC_AUTH_KEYS",
    "CHANNEL_ID",
    "CHANNEL_KEYS",
    "DEFAULT_GATEWAY_NAME",
    "DEFAULT_INTERVAL",
    "DEFAULT_RETENTION",
    "DEFAULT_TIMEZONE",
    "EXPORT_KEYS",
    "FOREIGN_DEVICE_KEYS",
    "GATEWAY_KEYS",
    "IMPORT_ID",
    "MAX_INSTANCE",
    "METRICS_KEYS",
    "OBJECTS_PER_CHANNEL",
    "SCHEDULE_KEYS",
    "SECTION_KEYS",
    "TLS_KEYS",
    "TOP_LEVEL_KEYS",
    "BacnetSettings",
    "ChannelConfig",
    "Config",
    "ConfigError",
    "ExportSchedule",
    "ForeignDevice",
    "GatewaySettings",
    "GpioPoint",
    "GpioSource",
    "MetricsSettings",
    "ModbusPoint",
    "ModbusRtuSource",
    "ModbusTcpSource",
    "PointConfig",
    "Problem",
    "RunConfig",
    "SimulatedPoint",
    "SimulatedSource",
    "SourceConfig",
    "load_config",
    "parse_config",
]

type Purpose = Literal["replay", "run"]


@overload
def load_config(path: str | Path, *, purpose: Literal["run"]) -> RunConfig: ...
@overload
def load_config(path: str | Path, *, purpose: Purpose = "replay") -> Config: ...
def load_config(path: str | Path, *, purpose: Purpose = "replay") -> Config:
    """Read and validate a config file; raise ``ConfigError`` listing every problem."""
    file = str(path)
    try:
        # utf-8-sig: a byte-order mark (Windows editors add one) is not part of the YAML.
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError([Problem(file, 1, 1, "(file)", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(file, 1, 1, "(file)", "not UTF-8 text")]) from None
    return parse_config(text, file, purpose=purpose)


@overload
def parse_config(text: str, file: str = ..., *, purpose: Literal["run"]) -> RunConfig: ...
@overload
def parse_config(text: str, file: str = ..., *, purpose: Purpose = "replay") -> Config: ...
def parse_config(text: str, file: str = "<config>", *, purpose: Purpose = "replay") -> Config:
    """Validate config ``text`` for ``purpose``; ``file`` names it in messages.

    A relative ``state_dir`` is resolved against the directory of ``file``.
    """
    if purpose not in ("replay", "run"):
        raise ValueError(f"purpose must be 'replay' or 'run', not {purpose!r}")
    root = _compose(text, file)
    reader = Reader(file)
    top = reader.entries(root, "", TOP_LEVEL_KEYS)
    if top is None:
        raise ConfigError(reader.problems)
    schema_node = top.value_node("schema")
    if schema_node is not None:
        before = len(reader.problems)
        schema = reader.scalar(schema_node, "schema")
        if len(reader.problems) == before and (schema != 1 or isinstance(schema, bool)):
            top.problem("schema", f"this gateway reads schema 1, not {show(schema_node)}")

    run = purpose == "run"
    gateway = bacnet = metrics = export = None
    notes: tuple[str, ...] = ()
    sources: list[SourceConfig] = []
    types: dict[str, str | None] = {}
    if run:  # replay ignores these sections (module docstring)
        for key in ("gateway", "bacnet", "sources"):
            if key not in top:
                reader.problem(root, key, "required section is missing")
        gateway = _section(top, "gateway", partial(_gateway, base_dir=Path(file).parent))
        bacnet = _section(top, "bacnet", _bacnet)
        metrics, notes = _http_section(top, Path(file).parent)
        export = _section(top, "export", partial(_export, base_dir=Path(file).parent))
        sources_node = top.value_node("sources")
        if sources_node is not None:
            sources, types = read_sources(reader, sources_node)
            if isinstance(sources_node, SequenceNode) and not sources_node.value:
                top.problem("sources", "at least one source is needed")

    channels_node = top.value_node("channels")
    if channels_node is None:
        reader.problem(root, "channels", "required key is missing")
        drafts: list[_Draft] = []
    else:
        drafts = _channels(reader, channels_node, types if run else None)
    check_terms(reader, drafts)  # before the checks that count on sound channels
    _check_import_ids(reader, drafts)
    if run:
        _check_bacnet_instances(reader, drafts)
        points = [draft.point for draft in drafts if draft.point is not None]
        check_shared_inputs(reader, points, {source.id: source for source in sources})
    if run:
        timezone, default = (gateway.timezone, gateway.reset_schedule) if gateway else (None, None)
    else:
        timezone, default = _replay_gateway(reader, top.value_node("gateway"))
    if timezone is not None:
        apply_schedules(drafts, default, ZoneInfo(timezone))
    if reader.problems:
        # Sorted by place: cross-checks run after the walk but belong where the file says.
        raise ConfigError(sorted(reader.problems, key=lambda p: (p.line, p.column)))
    channels = tuple(draft.config for draft in drafts if draft.config is not None)
    if not run:
        return Config(file, None, None, None, (), channels, timezone=timezone or DEFAULT_TIMEZONE)
    # Both sections are required for run: a missing or broken one was reported above.
    assert gateway is not None and bacnet is not None
    return RunConfig(
        file, gateway, bacnet, metrics, tuple(sources), channels, export, gateway.timezone, notes
    )


def _http_section(top: Entries, base_dir: Path) -> tuple[MetricsSettings | None, tuple[str, ...]]:
    """``http:``, or ``metrics:``, its older name (with a note); never both. The notes say what
    ``check`` should tell: the old name, and an allow_reset that has no effect."""
    notes: list[str] = []
    section = "http"
    if "metrics" in top:
        if "http" in top:
            top.problem("metrics", "the older name of http:; keep one of them")
        else:
            section = "metrics"
            notes.append("metrics: is the older name of http:; it still works, rename it")
    settings = _section(top, section, partial(_metrics, base_dir=base_dir, section=section))
    if settings is not None and settings.allow_reset and settings.username is None:
        notes.append(
            f"{section}.allow_reset is ignored without {section}.basic_auth: "
            "resets over HTTP stay refused (403)"
        )
    return settings, tuple(notes)


def _replay_gateway(reader: Reader, node: Node | None) -> tuple[str | None, ResetSchedule | None]:
    """``gateway.timezone`` and ``gateway.reset_schedule`` for replay, which reads these two
    keys alone of the gateway section (the schedules apply in replay as in the gateway)."""
    timezone: str | None = DEFAULT_TIMEZONE
    default: ResetSchedule | None = None
    if not isinstance(node, MappingNode):
        return timezone, default
    for key_node, value_node in node.value:
        if key_node.value == "timezone":
            timezone = _timezone(reader, value_node, "gateway.timezone")
        elif key_node.value == "reset_schedule":
            setting = read_reset_schedule(reader, value_node, "gateway.reset_schedule")
            if setting == NONE:
                message = "none is for a channel's opt-out: leave the key out"
                reader.problem(value_node, "gateway.reset_schedule", message)
            elif isinstance(setting, ResetSchedule):
                default = setting
    return timezone, default


def _compose(text: str, file: str) -> Node:
    """The YAML node tree of ``text``; syntax problems raise at once (nothing else is known)."""
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
        opened = exc.context_mark
        if exc.problem and exc.context and opened and opened.line + 1 != line:
            # An unclosed bracket is found where the parser gives up; say where it began.
            message += f" ({exc.context} on line {opened.line + 1})"
        raise ConfigError([Problem(file, line, column, "(syntax)", message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, "(syntax)", f"YAML syntax: {exc}")]) from None
    if root is None:
        raise ConfigError([Problem(file, 1, 1, "(file)", "empty: expected a 'channels:' list")])
    return root
