"""YAML configuration (schema 1, docs/reference/configuration.md) -> a frozen ``Config``.

Field technicians edit this file on site, so every problem is reported at once, each as
``FILE:LINE:COL: key.path: message``, and nothing is half-loaded: ``load_config`` either returns
a whole ``Config`` or raises ``ConfigError`` with the full list, sorted by place.

PyYAML builds plain dicts and silently keeps the last of two equal keys, losing positions on the
way. So the file is *composed* into nodes (which carry line and column), and this module walks
the nodes itself: duplicate keys, unknown keys (with "did you mean"), wrong types and bad values
are all caught with their place. The node reader and the per-source-type schema live in
``gateway.config_sources``.

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

import ipaddress
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Literal, overload
from zoneinfo import ZoneInfo, available_timezones

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from gateway.bacnet.points import RESET_ALL_INSTANCE
from gateway.config_sources import (
    ConfigError,
    Entries,
    GpioPoint,
    GpioSource,
    ModbusPoint,
    ModbusRtuSource,
    ModbusTcpSource,
    PointConfig,
    Problem,
    Reader,
    SimulatedPoint,
    SimulatedSource,
    SourceConfig,
    boolean,
    check_shared_inputs,
    describe_point,
    describe_source,
    did_you_mean,
    join,
    read_point,
    read_sources,
    show,
    yaml_key,
    yaml_keys,
)
from gateway.core import UNITS, ChannelRules, Span, Unit, format_duration
from gateway.core.timeline import MICROS_PER_SECOND
from gateway.export.energycap import DEFAULT_TIME_FORMAT
from gateway.export.energycap import FORMATS as EXPORT_FORMATS
from gateway.export.energycap import VALUES as EXPORT_VALUES

__all__ = [
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

CHANNEL_ID = re.compile(r"[a-z0-9_]+")
# The ImportID is a column of the EnergyCAP files (comma- and whitespace-separated).
IMPORT_ID = re.compile(r"[^\s,\"']+")

DEFAULT_RETENTION = 400 * 86400 * MICROS_PER_SECOND
BACNET_PORT = 47808
MAX_INSTANCE = 4194302  # 2**22 - 2: 4194303 is the "any instance" wildcard (ASHRAE 135 12.11)
OBJECTS_PER_CHANNEL = 6  # analog-inputs base+1..base+6 (and one binary-value at base+1)
DEFAULT_INTERVAL: Span = 15 * 60 * MICROS_PER_SECOND
DEFAULT_GATEWAY_NAME = "pulse-gateway"
# Only exports and their file names use local time; UTC is the one zone that is never wrong by
# a daylight-saving hour, and a site's zone is one line in the file.
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """The ``gateway:`` section; ``state_dir`` is absolute (relative = next to the config)."""

    name: str
    state_dir: Path
    timezone: str
    interval_retention: Span = DEFAULT_RETENTION  # interval records older than this are pruned

    @property
    def zone(self) -> ZoneInfo:
        """The local time zone (interval export timestamps, daily export file names)."""
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class ForeignDevice:
    """``bacnet.foreign_device``: register with a BBMD to be seen across subnets."""

    host: str = field(metadata=yaml_key("bbmd"))  # bbmd: HOST:PORT
    port: int = field(metadata=yaml_key("bbmd"))
    ttl: int  # seconds; the registration is renewed before it runs out


@dataclass(frozen=True, slots=True)
class ExportSchedule:
    """``export.schedule``: the daily EnergyCAP drop of the previous day's interval data."""

    directory: Path
    prefix: str  # files are {prefix}_{yyyyMMdd}.csv, then ...a, ...b when the name exists
    format: str  # energycap1 | energycap3 | energycap4
    at: tuple[int, int]  # local (hour, minute) of the daily run
    value: str  # demand | consumption
    time_format: str  # an EnergyCAP timestamp picture
    utc: bool  # timestamps in UTC instead of the gateway's timezone


@dataclass(frozen=True, slots=True)
class BacnetSettings:
    """The ``bacnet:`` section."""

    address: IPv4Interface
    port: int
    device_instance: int
    device_name: str
    reset_allowed_from: tuple[IPv4Network, ...] = ()
    location: str = ""  # the Device object's location and description properties
    description: str = ""
    foreign_device: ForeignDevice | None = None

    @property
    def bind(self) -> str:
        """``ADDRESS/PREFIX:PORT``, the form a bacpypes3 NetworkPortObject takes."""
        return f"{self.address}:{self.port}"

    def may_reset(self, host: str | IPv4Address) -> bool:
        """Whether a write from ``host`` may perform a reset (an empty list allows nobody)."""
        try:
            address = IPv4Address(host)
        except ValueError:
            return False
        return any(address in network for network in self.reset_allowed_from)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The ``metrics:`` section: where ``/metrics`` is served."""

    host: str = field(metadata=yaml_key("listen"))  # listen: IP:PORT
    port: int = field(metadata=yaml_key("listen"))
    # PEM certificate chain: serve HTTPS
    tls_cert: Path | None = field(default=None, metadata=yaml_key("tls.cert"))
    tls_key: Path | None = field(default=None, metadata=yaml_key("tls.key"))
    # Basic auth: the password is read from password_file at start
    username: str | None = field(default=None, metadata=yaml_key("basic_auth.username"))
    password_file: Path | None = field(default=None, metadata=yaml_key("basic_auth.password_file"))

    @property
    def listen(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One channel: identity, demand rules, input, BACnet and interval settings.

    ``bacnet_instance_base`` is resolved by the loader (100 * k for the k-th channel unless set);
    ``source`` is None only in a replay-purpose config.
    """

    id: str
    import_id: str
    # ChannelRules belongs to the core, which knows no YAML: the keys of its fields are named
    # here (demand_window and demand_slide are its window and slide).
    rules: ChannelRules = field(
        metadata=yaml_key(
            *("unit", "scale_factor", "demand_window", "demand_slide"),
            *("initial_reading", "reset_lockout"),
        )
    )
    source: PointConfig | None = None
    cov_increment: float = 0.0
    bacnet_instance_base: int = 100
    interval: Span = DEFAULT_INTERVAL


@dataclass(frozen=True, slots=True)
class Config:
    """A validated configuration; the sections other than channels are None for replay.

    ``load_config(..., purpose="run")`` returns a ``RunConfig``, which always has them.
    """

    path: str = field(metadata=yaml_key())  # the file's name, not a key in it
    gateway: GatewaySettings | None
    bacnet: BacnetSettings | None
    metrics: MetricsSettings | None
    sources: tuple[SourceConfig, ...]
    channels: tuple[ChannelConfig, ...]
    # The export: section holds only the schedule: mapping so far.
    export: ExportSchedule | None = field(default=None, metadata=yaml_key("export.schedule"))
    # The gateway's timezone, for both purposes: replay reads this one key of the gateway
    # section when it is there (a replayed database is labelled in local time like the site).
    timezone: str = field(default=DEFAULT_TIMEZONE, metadata=yaml_key("gateway.timezone"))

    def rules(self) -> dict[str, ChannelRules]:
        """Channel rules by id, in config order."""
        return {channel.id: channel.rules for channel in self.channels}

    def source(self, source_id: str) -> SourceConfig:
        """The source with id ``source_id`` (KeyError if there is none)."""
        for source in self.sources:
            if source.id == source_id:
                return source
        raise KeyError(source_id)

    @property
    def bacnet_object_count(self) -> int:
        """Device + 6 analog-inputs and a reset binary-value per channel + reset_all + the
        B/IP network-port object (which bacpypes3 binds through)."""
        return 1 + (OBJECTS_PER_CHANNEL + 1) * len(self.channels) + 1 + 1

    def summary(self) -> str:
        """What ``pulse-gateway check`` prints for a valid file."""
        head = f"OK {self.path}: {_count(len(self.channels), 'channel')}"
        if self.gateway is not None:
            head += f", {_count(len(self.sources), 'source')}"
        if self.bacnet is not None:
            head += (
                f", {self.bacnet_object_count} BACnet objects "
                f"(device {self.bacnet.device_instance} at {self.bacnet.bind})"
            )
        lines = [head]
        if self.gateway is not None:
            metrics = f"metrics at {self.metrics.listen}" if self.metrics else "no metrics"
            lines.append(
                f"  gateway {self.gateway.name!r}: state in {self.gateway.state_dir}, "
                f"timezone {self.gateway.timezone}, {metrics}"
            )
        if self.bacnet is not None:
            allowed = ", ".join(map(str, self.bacnet.reset_allowed_from)) or "nobody"
            lines.append(f"  bacnet {self.bacnet.device_name!r}: resets allowed from {allowed}")
        lines.extend(f"  source {source.id}: {describe_source(source)}" for source in self.sources)
        for channel in self.channels:
            rules = channel.rules
            base = channel.bacnet_instance_base
            line = (
                f"  channel {channel.id}: {rules.unit.name}, "
                f"window {format_duration(rules.window)} / slide {format_duration(rules.slide)}, "
                f"interval {format_duration(channel.interval)}"
            )
            if self.bacnet is not None:
                line += f", BACnet {base + 1}..{base + OBJECTS_PER_CHANNEL}"
            if channel.source is not None:
                line += f", source {describe_point(channel.source)}"
            lines.append(line)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class RunConfig(Config):
    """A config validated for ``run`` (and ``check``): gateway and bacnet are always set."""

    gateway: GatewaySettings
    bacnet: BacnetSettings


# The allowed keys of each mapping, read from the settings above. The parsing below reads each
# key by name; a key missing here is reported as unknown, one missing there is never read.
TOP_LEVEL_KEYS = ("schema", *yaml_keys(Config))  # schema is checked, not kept: there is one
GATEWAY_KEYS = yaml_keys(GatewaySettings)
BACNET_KEYS = yaml_keys(BacnetSettings)
FOREIGN_DEVICE_KEYS = yaml_keys(ForeignDevice)
METRICS_KEYS = yaml_keys(MetricsSettings)
TLS_KEYS = yaml_keys(MetricsSettings, "tls")
BASIC_AUTH_KEYS = yaml_keys(MetricsSettings, "basic_auth")
EXPORT_KEYS = yaml_keys(Config, "export")
SCHEDULE_KEYS = yaml_keys(ExportSchedule)
CHANNEL_KEYS = yaml_keys(ChannelConfig)
SECTION_KEYS = {
    "gateway": GATEWAY_KEYS,
    "bacnet": BACNET_KEYS,
    "metrics": METRICS_KEYS,
    "export": EXPORT_KEYS,
}


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
    sources: list[SourceConfig] = []
    types: dict[str, str | None] = {}
    if run:  # replay ignores these sections (module docstring)
        for key in ("gateway", "bacnet", "sources"):
            if key not in top:
                reader.problem(root, key, "required section is missing")
        gateway = _section(top, "gateway", partial(_gateway, base_dir=Path(file).parent))
        bacnet = _section(top, "bacnet", _bacnet)
        metrics = _section(top, "metrics", partial(_metrics, base_dir=Path(file).parent))
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
    _check_import_ids(reader, drafts)
    if run:
        _check_bacnet_instances(reader, drafts)
        points = [draft.point for draft in drafts if draft.point is not None]
        check_shared_inputs(reader, points, {source.id: source for source in sources})
    timezone = DEFAULT_TIMEZONE if run else _replay_timezone(reader, top.value_node("gateway"))
    if reader.problems:
        # Sorted by place: cross-checks run after the walk but belong where the file says.
        raise ConfigError(sorted(reader.problems, key=lambda p: (p.line, p.column)))
    channels = tuple(draft.config for draft in drafts if draft.config is not None)
    if not run:
        return Config(file, None, None, None, (), channels, timezone=timezone or DEFAULT_TIMEZONE)
    # Both sections are required for run: a missing or broken one was reported above.
    assert gateway is not None and bacnet is not None
    return RunConfig(
        file, gateway, bacnet, metrics, tuple(sources), channels, export, gateway.timezone
    )


def _replay_timezone(reader: Reader, node: Node | None) -> str | None:
    """``gateway.timezone`` for replay, which reads that key alone of the gateway section."""
    if not isinstance(node, MappingNode):
        return None
    for key_node, value_node in node.value:
        if key_node.value == "timezone":
            return _timezone(reader, value_node, "gateway.timezone")
    return None


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


# -- sections ---------------------------------------------------------------------------------


def _section[T](top: Entries, key: str, read: Callable[[Entries], T | None]) -> T | None:
    node = top.value_node(key)
    if node is None:
        return None
    entries = top.reader.entries(node, key, SECTION_KEYS[key])
    return None if entries is None else read(entries)


def _gateway(entries: Entries, base_dir: Path) -> GatewaySettings | None:
    reader = entries.reader
    name = entries.get("name", reader.text, DEFAULT_GATEWAY_NAME)
    state_dir = entries.get("state_dir", partial(_state_dir, reader, base_dir), required=True)
    timezone = entries.get("timezone", partial(_timezone, reader), DEFAULT_TIMEZONE)
    retention = entries.get("interval_retention", reader.duration, DEFAULT_RETENTION)
    if retention is not None and retention < 86400 * MICROS_PER_SECOND:
        entries.problem("interval_retention", "keep interval data at least 1d")
        retention = None
    if name is None or state_dir is None or timezone is None or retention is None:
        return None
    return GatewaySettings(name, state_dir, timezone, retention)


def _export(entries: Entries, base_dir: Path) -> ExportSchedule | None:
    node = entries.value_node("schedule")
    if node is None:
        return None
    reader = entries.reader
    schedule = reader.entries(node, "export.schedule", SCHEDULE_KEYS)
    if schedule is None:
        return None
    directory = schedule.get("directory", partial(_state_dir, reader, base_dir), required=True)
    prefix = schedule.get("prefix", partial(_prefix, reader), required=True)
    fmt = schedule.get("format", reader.one_of(EXPORT_FORMATS), required=True)
    at = schedule.get("at", partial(_clock_time, reader), (0, 30))
    value = schedule.get("value", reader.one_of(EXPORT_VALUES), "demand")
    time_format = schedule.get("time_format", reader.text, DEFAULT_TIME_FORMAT)
    utc = schedule.get("utc", partial(boolean, reader), False)
    if directory is None or prefix is None or fmt is None or at is None or value is None:
        return None
    if time_format is None or utc is None:
        return None
    return ExportSchedule(directory, prefix, fmt, at, value, time_format, utc)


def _prefix(reader: Reader, node: Node, path: str) -> str | None:
    text = reader.text(node, path)
    if text is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        reader.problem(node, path, f"{text!r}: use letters, digits, _ and - (it starts file names)")
        return None
    return text


def _clock_time(reader: Reader, node: Node, path: str) -> tuple[int, int] | None:
    text = reader.text(node, path)
    if text is None:
        return None
    match = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", text)
    if match is None:
        reader.problem(node, path, f"{text!r}: a daily time as HH:MM in quotes, like '00:30'")
        return None
    return int(match[1]), int(match[2])


def _state_dir(reader: Reader, base_dir: Path, node: Node, path: str) -> Path | None:
    text = reader.text(node, path)
    if text is None:
        return None
    if text.startswith("~"):
        # The daemon runs as a service user whose home is not the technician's.
        reader.problem(node, path, "write the full path: ~ is not expanded")
        return None
    # Relative to the config file, not to whatever directory the daemon was started in.
    return Path(os.path.normpath((base_dir / text).absolute()))


def _timezone(reader: Reader, node: Node, path: str) -> str | None:
    name = reader.text(node, path)
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        hint = did_you_mean(name, sorted(available_timezones()))
        message = f"unknown timezone {name!r}{hint}: use an IANA name like America/New_York"
        reader.problem(node, path, message)
        return None
    return name


def _bacnet(entries: Entries) -> BacnetSettings | None:
    reader = entries.reader
    address = entries.get("address", partial(_interface, reader), required=True)
    port = entries.get("port", partial(reader.integer, low=1, high=65535), BACNET_PORT)
    read_instance = partial(reader.integer, low=0, high=MAX_INSTANCE)
    instance = entries.get("device_instance", read_instance, required=True)
    # Device names must be unique on the BACnet internetwork; the instance has to be already.
    name = entries.get("device_name", reader.text, f"pulse-gateway {instance}")
    nobody: tuple[IPv4Network, ...] = ()
    allowed = entries.get("reset_allowed_from", partial(_networks, reader), nobody)
    location = entries.get("location", reader.text, "")
    description = entries.get("description", reader.text, "")
    foreign = entries.get("foreign_device", partial(_foreign_device, reader), None)
    if address is None or port is None or instance is None or name is None or allowed is None:
        return None
    if location is None or description is None:
        return None
    if "foreign_device" in entries and foreign is None:
        return None
    return BacnetSettings(address, port, instance, name, allowed, location, description, foreign)


def _foreign_device(reader: Reader, node: Node, path: str) -> ForeignDevice | None:
    entries = reader.entries(node, path, FOREIGN_DEVICE_KEYS)
    if entries is None:
        return None
    bbmd = entries.get("bbmd", partial(_listen, reader), required=True)
    # BACnet clause J.5.2.1: the BBMD adds a 30 s grace period; at least a minute is sensible
    ttl = entries.get("ttl", partial(reader.integer, low=60, high=65535), 300)
    if bbmd is None or ttl is None:
        return None
    return ForeignDevice(bbmd[0], bbmd[1], ttl)


def _interface(reader: Reader, node: Node, path: str) -> IPv4Interface | None:
    text = reader.text(node, path)
    if text is None:
        return None
    if "/" not in text:
        reader.problem(
            node,
            path,
            f"{text!r}: add the prefix length, like 192.168.1.50/24 "
            "(BACnet broadcasts go to the subnet it defines)",
        )
        return None
    try:
        interface = IPv4Interface(text)
    except ValueError as exc:
        reader.problem(node, path, f"not an IPv4 address/prefix: {exc}")
        return None
    ip, network = interface.ip, interface.network
    if ip.is_unspecified or ip.is_multicast:
        reader.problem(node, path, f"{ip} cannot be bound: use this host's own address")
        return None
    if network.prefixlen <= 30 and ip in (network.network_address, network.broadcast_address):
        which = "network" if ip == network.network_address else "broadcast"
        message = f"{ip} is the {which} address of {network}: use this host's own address"
        reader.problem(node, path, message)
        return None
    return interface


def _networks(reader: Reader, node: Node, path: str) -> tuple[IPv4Network, ...] | None:
    items = reader.sequence(node, path, "IPv4 networks like 192.168.1.0/24 ([] = nobody)")
    if items is None:
        return None
    networks: list[IPv4Network] = []
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        text = reader.text(item, where)
        if text is None:
            continue
        try:
            networks.append(IPv4Network(text))
        except ValueError as exc:
            if "host bits set" in str(exc):
                # An allow-list must say exactly whom it allows: do not guess which was meant.
                loose, host = IPv4Network(text, strict=False), text.split("/")[0]
                message = f"{text!r} has host bits set: write {loose} or {host}/32"
            else:
                message = f"not an IPv4 network: {exc}"
            reader.problem(item, where, message)
    return tuple(networks) if len(networks) == len(items) else None


def _metrics(entries: Entries, base_dir: Path) -> MetricsSettings | None:
    reader = entries.reader
    listen = entries.get("listen", partial(_listen, reader), required=True)
    read_file = partial(_existing_file, reader, base_dir)
    cert = key = username = password_file = None
    broken = False
    tls_node = entries.value_node("tls")
    if tls_node is not None:
        tls = reader.entries(tls_node, "metrics.tls", TLS_KEYS)
        if tls is None:
            broken = True
        else:
            cert = tls.get("cert", read_file, required=True)
            key = tls.get("key", read_file, required=True)
            broken = cert is None or key is None
    auth_node = entries.value_node("basic_auth")
    if auth_node is not None:
        auth = reader.entries(auth_node, "metrics.basic_auth", BASIC_AUTH_KEYS)
        if auth is None:
            broken = True
        else:
            username = auth.get("username", reader.text, required=True)
            password_file = auth.get("password_file", read_file, required=True)
            if username is not None and ":" in username:
                auth.problem("username", "Basic auth user names cannot contain ':'")
                username = None
            broken = broken or username is None or password_file is None
    if listen is None or broken:
        return None
    return MetricsSettings(*listen, cert, key, username, password_file)


def _existing_file(reader: Reader, base_dir: Path, node: Node, path: str) -> Path | None:
    """A file that exists (relative paths next to the config), checked now, read at start."""
    target = _state_dir(reader, base_dir, node, path)
    if target is not None and not target.is_file():
        reader.problem(node, path, f"no such file: {target}")
        return None
    return target


def _listen(reader: Reader, node: Node, path: str) -> tuple[str, int] | None:
    text = reader.text(node, path)
    if text is None:
        return None
    host, colon, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    try:
        address = ipaddress.ip_address(host) if colon else None
    except ValueError:
        address = None
    if address is None or (address.version == 6) != bracketed:
        reader.problem(
            node,
            path,
            f"{text!r}: expected IP:PORT like 127.0.0.1:9842 "
            "(0.0.0.0 listens on every interface; IPv6 quoted in brackets, like '[::1]:9842')",
        )
        return None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        reader.problem(node, path, f"port {port!r} must be a whole number from 1 to 65535")
        return None
    return str(address), int(port)


# -- channels ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    """A channel as read, with the places cross-checks point at (config None if broken)."""

    path: str
    node: Node
    entries: Entries
    base: int | None  # resolved, None if it was bad
    config: ChannelConfig | None = None

    @property
    def point(self) -> tuple[str, Node, PointConfig] | None:
        """The channel's input with its place, when the whole channel is sound."""
        point_node = self.entries.value_node("source")
        if self.config is None or self.config.source is None or point_node is None:
            return None
        return join(self.path, "source"), point_node, self.config.source


def _channels(reader: Reader, node: Node, types: dict[str, str | None] | None) -> list[_Draft]:
    """The ``channels:`` list; ``types`` (source id -> type) is None for replay."""
    items = reader.sequence(node, "channels", "channels")
    if items is None:
        return []
    if not items:
        reader.problem(node, "channels", "at least one channel is needed")
    drafts: list[_Draft] = []
    first_line: dict[str, int] = {}
    for index, item in enumerate(items):
        entries = reader.entries(item, f"channels[{index}]", CHANNEL_KEYS)
        if entries is None:
            continue
        before = len(reader.problems)
        channel_id = entries.get("id", reader.text, required=True)
        if channel_id is not None and not CHANNEL_ID.fullmatch(channel_id):
            entries.problem("id", f"{channel_id!r}: use lower-case letters, digits and _ only")
            channel_id = None
        if channel_id in first_line:
            first = first_line[channel_id]
            entries.problem("id", f"duplicate channel id {channel_id!r} (first on line {first})")
        elif channel_id is not None:
            first_line[channel_id] = entries.key_line("id")
        draft = _channel(entries, index, channel_id, types)
        if len(reader.problems) > before:
            draft.config = None
        drafts.append(draft)
    return drafts


def _channel(
    entries: Entries, index: int, channel_id: str | None, types: dict[str, str | None] | None
) -> _Draft:
    reader = entries.reader
    import_id = entries.get("import_id", partial(_import_id, reader), channel_id)
    unit = entries.get("unit", partial(_unit, reader), required=True)
    scale = entries.get("scale_factor", partial(reader.number, above=0), required=True)
    window = entries.get("demand_window", reader.duration, required=True)
    slide = entries.get("demand_slide", reader.duration, required=True)
    if slide is not None and (slide < MICROS_PER_SECOND or slide % MICROS_PER_SECOND):
        entries.problem("demand_slide", "must be a whole number of seconds, at least 1s")
        slide = None
    if window is not None and slide is not None and (window <= 0 or window % slide):
        message = f"must be a positive whole multiple of demand_slide ({format_duration(slide)})"
        entries.problem("demand_window", message)
        window = None
    initial = entries.get("initial_reading", reader.number, 0.0)
    lockout = entries.get("reset_lockout", reader.duration, 0)
    interval = entries.get("interval", reader.duration, _default_interval(slide))
    if interval is not None and slide is not None and (interval <= 0 or interval % slide):
        message = f"must be a positive whole multiple of demand_slide ({format_duration(slide)})"
        entries.problem("interval", message)
        interval = None
    cov = entries.get("cov_increment", partial(reader.number, at_least=0), 0.0)
    read_base = partial(reader.integer, low=0, high=MAX_INSTANCE - OBJECTS_PER_CHANNEL)
    base = entries.get("bacnet_instance_base", read_base, 100 * (index + 1))
    draft = _Draft(entries.path, entries.node, entries, base)

    point: PointConfig | None = None
    if types is not None:  # run: every channel counts the pulses of a source
        point_node = entries.value_node("source")
        if point_node is None:
            entries.problem("source", "required key is missing")
            return draft
        point = read_point(reader, point_node, join(entries.path, "source"), types)
    if channel_id is None or import_id is None or unit is None or scale is None:
        return draft
    if window is None or slide is None or initial is None or lockout is None:
        return draft
    if interval is None or cov is None or base is None or (types is not None and point is None):
        return draft
    rules = ChannelRules(unit, scale, window, slide, initial, lockout)  # all checked above
    draft.config = ChannelConfig(channel_id, import_id, rules, point, cov, base, interval)
    return draft


def _default_interval(slide: Span | None) -> Span:
    """15 minutes, or the shortest span that is a multiple of both 15 minutes and the slide.

    Interval records must hold whole slides (docs/reference/export-formats.md); a 10-minute
    slide gets 30 minutes rather than an error for a key the file never set, and intervals stay
    on quarter hours.
    """
    return DEFAULT_INTERVAL if not slide else math.lcm(DEFAULT_INTERVAL, slide)


def _unit(reader: Reader, node: Node, path: str) -> Unit | None:
    name = reader.text(node, path)
    if name is None:
        return None
    unit = UNITS.get(name)
    if unit is None:
        hint = did_you_mean(name, tuple(UNITS))
        reader.problem(node, path, f"unknown unit {name!r}{hint}; allowed: {', '.join(UNITS)}")
    return unit


def _import_id(reader: Reader, node: Node, path: str) -> str | None:
    value = reader.text(node, path)
    if value is not None and not IMPORT_ID.fullmatch(value):
        message = f"{value!r}: no spaces, commas or quotes (it is a column of the export files)"
        reader.problem(node, path, message)
        return None
    return value


def _check_import_ids(reader: Reader, drafts: list[_Draft]) -> None:
    """One EnergyCAP ImportID per unit: two such channels would write the same export rows."""
    seen: dict[tuple[str, str], _Draft] = {}
    for draft in drafts:
        if draft.config is None:
            continue
        key = (draft.config.import_id, draft.config.rules.unit.name)
        if key not in seen:
            seen[key] = draft
            continue
        first = seen[key]
        where = "import_id" if "import_id" in draft.entries else "id"
        reader.problem(
            draft.entries.value_node(where) or draft.node,
            join(draft.path, "import_id"),
            f"import_id {key[0]!r} with unit {key[1]} is already used by {first.path} "
            f"(line {first.node.start_mark.line + 1}): their export rows would collide",
        )


def _check_bacnet_instances(reader: Reader, drafts: list[_Draft]) -> None:
    """Channel objects must not share an instance with another channel's or with reset_all."""
    placed: list[tuple[_Draft, int]] = []
    for draft in drafts:
        if draft.base is None:
            continue
        if draft.base + 1 == RESET_ALL_INSTANCE:
            message = f"binary-value {RESET_ALL_INSTANCE} is reset_all: use a base of 1 or more"
            draft.entries.problem("bacnet_instance_base", message)
            continue
        for other, other_base in placed:
            if abs(draft.base - other_base) >= OBJECTS_PER_CHANNEL:
                continue
            # Point at an explicit base: defaults (100 apart) cannot be the mistake.
            pairs = [(draft, draft.base), (other, other_base)]
            if "bacnet_instance_base" not in draft.entries:
                pairs.reverse()
            (culprit, base), (victim, victim_base) = pairs
            culprit.entries.problem(
                "bacnet_instance_base",
                f"objects {_instances(base)} overlap {_instances(victim_base)} of {victim.path} "
                f"(line {victim.node.start_mark.line + 1}); "
                f"bases must be at least {OBJECTS_PER_CHANNEL} apart",
            )
            break
        else:
            placed.append((draft, draft.base))


def _instances(base: int) -> str:
    return f"{base + 1}..{base + OBJECTS_PER_CHANNEL}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
