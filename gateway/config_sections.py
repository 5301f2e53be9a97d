"""The config's sections other than channels: gateway, bacnet, metrics and export.

Each reader takes a section's entries and returns its settings, or None after reporting every
problem with its place: state directories and timezones, BACnet addresses and allow-lists, the
metrics listener with TLS and basic auth, the daily export schedule. Separate from the loader
(``gateway.config``) and the channels (``gateway.config_channels``): one section's rules each.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from functools import partial
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

from yaml.nodes import Node

from gateway.config_reader import Entries, Reader, boolean, did_you_mean
from gateway.config_schedule import NONE, read_reset_schedule
from gateway.config_settings import (
    BACNET_PORT,
    BASIC_AUTH_KEYS,
    DEFAULT_GATEWAY_NAME,
    DEFAULT_RETENTION,
    DEFAULT_TIMEZONE,
    FOREIGN_DEVICE_KEYS,
    MAX_INSTANCE,
    SCHEDULE_KEYS,
    SECTION_KEYS,
    TLS_KEYS,
    BacnetSettings,
    ExportSchedule,
    ForeignDevice,
    GatewaySettings,
    MetricsSettings,
)
from gateway.core import ResetSchedule
from gateway.core.timeline import MICROS_PER_SECOND
from gateway.export.energycap import DEFAULT_TIME_FORMAT
from gateway.export.energycap import FORMATS as EXPORT_FORMATS
from gateway.export.energycap import VALUES as EXPORT_VALUES


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
    schedule = _default_schedule(entries)
    if name is None or state_dir is None or timezone is None or retention is None:
        return None
    if schedule is None and "reset_schedule" in entries:
        return None
    return GatewaySettings(name, state_dir, timezone, retention, schedule)


def _default_schedule(entries: Entries) -> ResetSchedule | None:
    """``gateway.reset_schedule``: a schedule for every channel (``none`` means no default)."""
    setting = entries.get("reset_schedule", partial(read_reset_schedule, entries.reader))
    if setting == NONE:
        entries.problem("reset_schedule", "none is for a channel's opt-out: leave the key out")
        return None
    return setting if isinstance(setting, ResetSchedule) else None


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


def _metrics(entries: Entries, base_dir: Path, section: str = "http") -> MetricsSettings | None:
    """The ``http:`` section, or ``metrics:`` (its older name): ``section`` says which."""
    reader = entries.reader
    listen = entries.get("listen", partial(_listen, reader), required=True)
    read_file = partial(_existing_file, reader, base_dir)
    cert = key = username = password_file = None
    broken = False
    tls_node = entries.value_node("tls")
    if tls_node is not None:
        tls = reader.entries(tls_node, f"{section}.tls", TLS_KEYS)
        if tls is None:
            broken = True
        else:
            cert = tls.get("cert", read_file, required=True)
            key = tls.get("key", read_file, required=True)
            broken = cert is None or key is None
    auth_node = entries.value_node("basic_auth")
    if auth_node is not None:
        auth = reader.entries(auth_node, f"{section}.basic_auth", BASIC_AUTH_KEYS)
        if auth is None:
            broken = True
        else:
            username = auth.get("username", reader.text, required=True)
            password_file = auth.get("password_file", read_file, required=True)
            if username is not None and ":" in username:
                auth.problem("username", "Basic auth user names cannot contain ':'")
                username = None
            broken = broken or username is None or password_file is None
    allow_reset = entries.get("allow_reset", partial(boolean, reader), False)
    if listen is None or broken or allow_reset is None:
        return None
    return MetricsSettings(*listen, cert, key, username, password_file, allow_reset)


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
