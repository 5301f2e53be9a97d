"""What a validated configuration is: the settings dataclasses, their defaults and keys.

``Config`` and ``RunConfig`` with their sections (gateway, bacnet, metrics, export, channels),
and the allowed keys of each mapping, read from these dataclasses by ``yaml_keys``. Separate
from the readers (``gateway.config_sections``, ``gateway.config_channels``) so that they build
these without importing the loader, ``gateway.config``, which puts them together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.config_reader import yaml_key, yaml_keys
from gateway.config_source_types import PointConfig, SourceConfig, describe_point, describe_source
from gateway.core import ChannelRules, ResetSchedule, Span, format_duration
from gateway.core.timeline import MICROS_PER_SECOND

DEFAULT_RETENTION = 400 * 86400 * MICROS_PER_SECOND
BACNET_PORT = 47808
MAX_INSTANCE = 4194302  # 2**22 - 2: 4194303 is the "any instance" wildcard (ASHRAE 135 12.11)
OBJECTS_PER_CHANNEL = 9  # analog-inputs base+1..base+9 (and one binary-value at base+1)
TREND_LOGS_PER_CHANNEL = 2  # trend-logs base+1 (consumption) and base+2 (demand)
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
    # every channel's billing reset unless it says otherwise (None: resets only on request)
    reset_schedule: ResetSchedule | None = None

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
    """The ``http:`` section (``metrics:`` is its older name): the one HTTP listener, serving
    /metrics, the status pages and the JSON API."""

    host: str = field(metadata=yaml_key("listen"))  # listen: IP:PORT
    port: int = field(metadata=yaml_key("listen"))
    # PEM certificate chain: serve HTTPS
    tls_cert: Path | None = field(default=None, metadata=yaml_key("tls.cert"))
    tls_key: Path | None = field(default=None, metadata=yaml_key("tls.key"))
    # Basic auth: the password is read from password_file at start
    username: str | None = field(default=None, metadata=yaml_key("basic_auth.username"))
    password_file: Path | None = field(default=None, metadata=yaml_key("basic_auth.password_file"))
    # POST /api/v1/channels/{id}/reset; only with basic auth (ignored without, with a warning)
    allow_reset: bool = False

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
            *("initial_reading", "reset_lockout", "reset_schedule", "virtual"),
        )
    )
    source: PointConfig | None = None
    cov_increment: float = 0.0
    bacnet_instance_base: int = 100
    interval: Span = DEFAULT_INTERVAL
    # two trend-log objects over the channel's interval records (docs/reference/bacnet.md)
    trend_log: bool = True


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
    # what `check` says about the file besides its summary (an older section name, a setting
    # that has no effect); not read from the file
    notes: tuple[str, ...] = field(default=(), metadata=yaml_key())

    def rules(self) -> dict[str, ChannelRules]:
        """Channel rules by id, in config order."""
        return {channel.id: channel.rules for channel in self.channels}

    def intervals(self) -> dict[str, Span]:
        """Each channel's interval-record span by id."""
        return {channel.id: channel.interval for channel in self.channels}

    def import_ids(self) -> dict[str, str]:
        """Each channel's EnergyCAP ImportID by id."""
        return {channel.id: channel.import_id for channel in self.channels}

    def source(self, source_id: str) -> SourceConfig:
        """The source with id ``source_id`` (KeyError if there is none)."""
        for source in self.sources:
            if source.id == source_id:
                return source
        raise KeyError(source_id)

    @property
    def bacnet_object_count(self) -> int:
        """Device + 9 analog-inputs, a reset binary-value and (unless ``trend_log: false``) two
        trend-logs per channel + reset_all + the B/IP network-port object (which bacpypes3
        binds through)."""
        per_channel = sum(
            OBJECTS_PER_CHANNEL + 1 + (TREND_LOGS_PER_CHANNEL if c.trend_log else 0)
            for c in self.channels
        )
        return 1 + per_channel + 1 + 1

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
            metrics = f"http at {self.metrics.listen}" if self.metrics else "no http listener"
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
                if not channel.trend_log:
                    line += " (no trend logs)"
            if channel.source is not None:
                line += f", source {describe_point(channel.source)}"
            if rules.terms:
                sums = " ".join(f"{'+' if sign > 0 else '-'} {term}" for term, sign in rules.terms)
                line += f", virtual {sums.removeprefix('+ ')}"
            lines.append(line)
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class RunConfig(Config):
    """A config validated for ``run`` (and ``check``): gateway and bacnet are always set."""

    gateway: GatewaySettings
    bacnet: BacnetSettings


# The allowed keys of each mapping, read from the settings above. The parsing below reads each
# key by name; a key missing here is reported as unknown, one missing there is never read.
# schema is checked, not kept: there is one; http is the metrics field's section (its new name)
TOP_LEVEL_KEYS = ("schema", *yaml_keys(Config), "http")
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
    "http": METRICS_KEYS,
    "export": EXPORT_KEYS,
}


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
