"""The config file (docs/reference/configuration.md): every mistake reported at once, with its
exact place."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import (
    ConfigError,
    ForeignDevice,
    GpioPoint,
    GpioSource,
    ModbusPoint,
    ModbusTcpSource,
    SimulatedPoint,
    SimulatedSource,
    load_config,
    parse_config,
)
from gateway.core import UNITS, parse_duration

ROOT = Path(__file__).resolve().parent.parent

# A valid run config. Broken variants replace one piece of text, so the line numbers below can
# be read straight off this listing.
VALID = """\
gateway:
  name: test-site
  state_dir: state
  timezone: UTC
bacnet:
  address: 127.0.0.1/8
  port: 47808
  device_instance: 7
  reset_allowed_from: [127.0.0.0/8]
metrics:
  listen: 127.0.0.1:9842
sources:
  - {id: sim, type: simulated, seed: 1}
  - {id: plc, type: modbus-tcp, host: 10.0.0.5, unit_id: 3, poll_interval: 2s}
  - {id: pins, type: gpio, chip: /dev/gpiochip0}
channels:
  - id: elec
    unit: kWh
    scale_factor: 0.5
    demand_window: 15min
    demand_slide: 5min
    source: {id: plc, table: input, address: 0, type: u32}
  - id: gas
    unit: cubic_feet
    scale_factor: 10
    demand_window: 1h
    demand_slide: 15min
    source: {id: pins, line: 17}
  - id: water
    unit: us_gallons
    scale_factor: 1
    demand_window: 15min
    demand_slide: 15min
    source: {id: sim, rate: 0.2}
"""

REPLAY_ONLY = """\
channels:
  - {id: a, unit: kWh, scale_factor: 1, demand_window: 2min, demand_slide: 1min}
"""


def broken(*edits: tuple[str, str]) -> str:
    """VALID with each (old, new) edit applied once; an edit that matches nothing is a bug."""
    text = VALID
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} must occur exactly once in VALID"
        text = text.replace(old, new)
    return text


def problems(text: str, purpose: str = "run") -> list[str]:
    """The problem lines for ``text`` (the config must be refused)."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "site.yaml", purpose=purpose)  # type: ignore[arg-type]
    return [str(problem) for problem in caught.value.problems]


# (old, new, line, column, key path, message fragment)
BROKEN = [
    # -- bacnet: device properties and foreign-device registration --
    pytest.param(
        "  reset_allowed_from: [127.0.0.0/8]",
        "  reset_allowed_from: [127.0.0.0/8]\n  foreign_device: {bbmd: 10.0.0.1, ttl: 300}",
        10,
        26,
        "bacnet.foreign_device.bbmd",
        "expected IP:PORT",
        id="foreign-device-without-port",
    ),
    pytest.param(
        "  reset_allowed_from: [127.0.0.0/8]",
        "  reset_allowed_from: [127.0.0.0/8]\n  foreign_device: {bbmd: '10.0.0.1:47808', ttl: 5}",
        10,
        49,
        "bacnet.foreign_device.ttl",
        "60",
        id="foreign-device-ttl-too-short",
    ),
    pytest.param(
        "  reset_allowed_from: [127.0.0.0/8]",
        "  reset_allowed_from: [127.0.0.0/8]\n  foreign_device: {bbmd: '10.0.0.1:47808', tll: 300}",
        10,
        44,
        "bacnet.foreign_device.tll",
        "did you mean 'ttl'",
        id="foreign-device-typo",
    ),
    # -- gateway --
    pytest.param(
        "timezone: UTC",
        "timezone: Mars/Olympus",
        4,
        13,
        "gateway.timezone",
        "unknown timezone 'Mars/Olympus'",
        id="unknown-timezone",
    ),
    pytest.param(
        "timezone: UTC",
        "timezone: Europe/Berln",
        4,
        13,
        "gateway.timezone",
        "(did you mean 'Europe/Berlin'?)",
        id="timezone-typo",
    ),
    pytest.param(
        "state_dir: state",
        "state_dir: ~/state",
        3,
        14,
        "gateway.state_dir",
        "~ is not expanded",
        id="state-dir-tilde",
    ),
    pytest.param(
        "  name: test-site",
        "  name: 2026-13-01",
        2,
        9,
        "gateway.name",
        "cannot read '2026-13-01': month must be in 1..12",
        id="value-yaml-cannot-build",
    ),
    # -- bacnet --
    pytest.param(
        "address: 127.0.0.1/8",
        "address: 127.0.0.1",
        6,
        12,
        "bacnet.address",
        "add the prefix length, like 192.168.1.50/24",
        id="address-without-prefix",
    ),
    pytest.param(
        "address: 127.0.0.1/8",
        "address: 300.1.2.3/24",
        6,
        12,
        "bacnet.address",
        "not an IPv4 address/prefix",
        id="address-out-of-range",
    ),
    pytest.param(
        "address: 127.0.0.1/8",
        "address: 192.168.1.0/24",
        6,
        12,
        "bacnet.address",
        "192.168.1.0 is the network address of 192.168.1.0/24",
        id="address-is-network",
    ),
    pytest.param(
        "port: 47808", "port: 0", 7, 9, "bacnet.port", "between 1 and 65535, not 0", id="port-zero"
    ),
    pytest.param(
        "port: 47808",
        "port: '47808'",
        7,
        9,
        "bacnet.port",
        "expected a whole number, found '47808'",
        id="port-quoted",
    ),
    pytest.param(
        "device_instance: 7",
        "device_instance: 4194303",
        8,
        20,
        "bacnet.device_instance",
        "between 0 and 4194302, not 4194303",
        id="device-instance-wildcard",
    ),
    pytest.param(
        "[127.0.0.0/8]",
        "[127.0.0.1/8]",
        9,
        24,
        "bacnet.reset_allowed_from[0]",
        "host bits set: write 127.0.0.0/8 or 127.0.0.1/32",
        id="reset-network-host-bits",
    ),
    pytest.param(
        "[127.0.0.0/8]",
        "127.0.0.0/8",
        9,
        23,
        "bacnet.reset_allowed_from",
        "expected a list of IPv4 networks",
        id="reset-networks-not-a-list",
    ),
    # -- metrics --
    pytest.param(
        "listen: 127.0.0.1:9842",
        "listen: localhost:9842",
        11,
        11,
        "metrics.listen",
        "expected IP:PORT like 127.0.0.1:9842",
        id="listen-hostname",
    ),
    pytest.param(
        "listen: 127.0.0.1:9842",
        "listen: 127.0.0.1:99999",
        11,
        11,
        "metrics.listen",
        "port '99999' must be a whole number from 1 to 65535",
        id="listen-port-range",
    ),
    pytest.param(
        "listen: 127.0.0.1:9842",
        "listen: 9842",
        11,
        11,
        "metrics.listen",
        "expected text, found '9842'",
        id="listen-number",
    ),
    # -- sources --
    pytest.param(
        "seed: 1}",
        "seed: 1, rate: 5}",
        13,
        41,
        "sources[0].rate",
        "rate is set per channel, in the channel's source: mapping",
        id="point-key-on-source",
    ),
    pytest.param(
        "type: modbus-tcp",
        "type: modbus",
        14,
        21,
        "sources[1].type",
        "'modbus' is not one of: modbus-tcp, modbus-rtu, simulated, gpio "
        "(did you mean 'modbus-tcp'?)",
        id="source-type-typo",
    ),
    pytest.param(
        "{id: pins, type: gpio",
        "{id: sim, type: gpio",
        15,
        10,
        "sources[2].id",
        "duplicate source id 'sim' (first on line 13)",
        id="duplicate-source-id",
    ),
    pytest.param(
        "host: 10.0.0.5",
        "host: 10.0.0.256",
        14,
        39,
        "sources[1].host",
        "not an IPv4 address",
        id="modbus-host-octet",
    ),
    pytest.param(
        "unit_id: 3",
        "unit_id: 300",
        14,
        58,
        "sources[1].unit_id",
        "between 0 and 247, not 300",
        id="modbus-unit-id",
    ),
    pytest.param(
        "poll_interval: 2s",
        "poll_interval: 2",
        14,
        76,
        "sources[1].poll_interval",
        "a duration is text with a unit",
        id="poll-interval-without-unit",
    ),
    pytest.param(
        "poll_interval: 2s",
        "poll_interval: 10ms",
        14,
        76,
        "sources[1].poll_interval",
        "must be at least 100ms",
        id="poll-interval-too-fast",
    ),
    pytest.param(
        "chip: /dev/gpiochip0",
        "chip: gpiochip0",
        15,
        34,
        "sources[2].chip",
        "expected a device path",
        id="gpio-chip-not-a-path",
    ),
    pytest.param(
        "chip: /dev/gpiochip0}",
        "chip: /dev/gpiochip0, line: 4}",
        15,
        50,
        "sources[2].line",
        "line is set per channel",
        id="gpio-line-on-source",
    ),
    # -- channel points --
    pytest.param(
        "table: input",
        "table: inputs",
        22,
        30,
        "channels[0].source.table",
        "'inputs' is not one of: holding, input (did you mean 'input'?)",
        id="modbus-table-typo",
    ),
    pytest.param(
        "address: 0,",
        "address: 70000,",
        22,
        46,
        "channels[0].source.address",
        "between 0 and 65535, not 70000",
        id="modbus-address-range",
    ),
    pytest.param(
        "address: 0,",
        "address: 010,",
        22,
        46,
        "channels[0].source.address",
        "write 10 without the leading 0 (YAML reads it as octal)",
        id="modbus-address-octal",
    ),
    pytest.param(
        "type: u32}",
        "type: s32}",
        22,
        55,
        "channels[0].source.type",
        "'s32' is not one of: u16, u32, u64, i32, f32, f64",
        id="modbus-register-type",
    ),
    pytest.param(
        "type: u32}",
        "type: u32, rate: 2}",
        22,
        60,
        "channels[0].source.rate",
        "rate applies to simulated sources, not modbus-tcp ('plc' is modbus-tcp)",
        id="simulated-key-on-modbus-point",
    ),
    pytest.param(
        "type: u32}",
        "type: u16, rollover: 100000}",
        22,
        70,
        "channels[0].source.rollover",
        "a u16 register rolls over at a whole number up to 65536",
        id="rollover-beyond-register",
    ),
    pytest.param(
        "type: u32}",
        "type: u32, poll_interval: 1s}",
        22,
        60,
        "channels[0].source.poll_interval",
        "poll_interval is set on the source itself, under sources:",
        id="source-key-on-point",
    ),
    pytest.param(
        "{id: pins, line: 17}",
        "{id: pin, line: 17}",
        28,
        18,
        "channels[1].source.id",
        "unknown source 'pin' (did you mean 'pins'?); sources: sim, plc, pins",
        id="missing-source",
    ),
    pytest.param(
        "line: 17}",
        "line: -1}",
        28,
        30,
        "channels[1].source.line",
        "must be at least 0, not -1",
        id="gpio-negative-line",
    ),
    pytest.param(
        "line: 17}",
        "line: 17, edge: up}",
        28,
        40,
        "channels[1].source.edge",
        "'up' is not one of: rising, falling, both",
        id="gpio-edge",
    ),
    pytest.param(
        "line: 17}",
        "line: 17, debounce: 2s}",
        28,
        44,
        "channels[1].source.debounce",
        "must be at most 1s",
        id="gpio-debounce-too-long",
    ),
    pytest.param(
        "rate: 0.2}",
        "rate: 0}",
        34,
        29,
        "channels[2].source.rate",
        "must be greater than 0, not 0",
        id="simulated-rate-zero",
    ),
    pytest.param(
        "rate: 0.2}",
        "rate: 0.2, mode: random}",
        34,
        40,
        "channels[2].source.mode",
        "'random' is not one of: constant, poisson",
        id="simulated-mode",
    ),
    pytest.param(
        "    source: {id: sim, rate: 0.2}\n",
        "",
        29,
        5,
        "channels[2].source",
        "required key is missing",
        id="run-needs-a-source",
    ),
    pytest.param(
        "    source: {id: sim, rate: 0.2}",
        "    source: [sim]",
        34,
        13,
        "channels[2].source",
        "expected a mapping (key: value lines), found a list",
        id="point-is-a-list",
    ),
    # -- channels --
    pytest.param(
        "unit: kWh",
        "unit: kwh",
        18,
        11,
        "channels[0].unit",
        "unknown unit 'kwh' (did you mean 'kWh'?); allowed: kWh, lbs, cubic_feet, us_gallons",
        id="unit-case",
    ),
    pytest.param(
        "demand_window: 1h",
        "demand_window: 50min",
        26,
        20,
        "channels[1].demand_window",
        "must be a positive whole multiple of demand_slide (15min)",
        id="window-not-multiple-of-slide",
    ),
    pytest.param(
        "demand_slide: 5min",
        "demand_slide: 1500ms",
        21,
        19,
        "channels[0].demand_slide",
        "must be a whole number of seconds, at least 1s",
        id="slide-fraction-of-second",
    ),
    pytest.param(
        "scale_factor: 0.5",
        "scale_factor: 0.5\n    interval: 7min",
        20,
        15,
        "channels[0].interval",
        "must be a positive whole multiple of demand_slide (5min)",
        id="interval-not-multiple-of-slide",
    ),
    pytest.param(
        "scale_factor: 0.5",
        "scale_factor: 0.5\n    cov_increment: -1",
        20,
        20,
        "channels[0].cov_increment",
        "must be at least 0, not -1",
        id="negative-cov-increment",
    ),
    pytest.param(
        "scale_factor: 0.5",
        "scale_factor: 0.5\n    bacnet_instance_base: 0",
        20,
        27,
        "channels[0].bacnet_instance_base",
        "binary-value 1 is reset_all",
        id="base-collides-with-reset-all",
    ),
    pytest.param(
        "scale_factor: 1\n",
        "scale_factor: 1\n    bacnet_instance_base: 203\n",
        32,
        27,
        "channels[2].bacnet_instance_base",
        "objects 204..212 overlap 201..209 of channels[1] (line 23)",
        id="base-overlaps-default-base",
    ),
    pytest.param(
        "scale_factor: 0.5",
        "scale_factor: 0.5\n    bacnet_instance_base: 4194300",
        20,
        27,
        "channels[0].bacnet_instance_base",
        "between 0 and 4194293",
        id="base-beyond-last-instance",
    ),
    pytest.param(
        "id: water",
        "id: gas",
        29,
        9,
        "channels[2].id",
        "duplicate channel id 'gas' (first on line 23)",
        id="duplicate-channel-id",
    ),
    pytest.param(
        "id: water",
        "id: Water",
        29,
        9,
        "channels[2].id",
        "'Water': use lower-case letters, digits and _ only",
        id="channel-id-case",
    ),
    pytest.param(
        "scale_factor: 10",
        "scale_facter: 10",
        25,
        5,
        "channels[1].scale_facter",
        "unknown key (did you mean 'scale_factor'?)",
        id="unknown-channel-key",
    ),
    pytest.param(
        "scale_factor: 10",
        "scale_factor: 10\n    scale_factor: 20",
        26,
        5,
        "channels[1].scale_factor",
        "duplicate key (first given on line 25)",
        id="duplicate-key",
    ),
    pytest.param(
        "scale_factor: 0.5",
        "scale_factor: 0.5\n    import_id: KZG 0026",
        20,
        16,
        "channels[0].import_id",
        "no spaces, commas or quotes",
        id="import-id-with-space",
    ),
    pytest.param(
        "{id: sim, rate: 0.2}",
        "{id: plc, table: input, address: 1, type: u16}",
        34,
        46,
        "channels[2].source.address",
        "input register 1 overlaps 0..1 read by channels[0].source (line 22)",
        id="overlapping-modbus-registers",
    ),
    pytest.param(
        "{id: sim, rate: 0.2}",
        "{id: pins, line: 17, edge: both}",
        34,
        30,
        "channels[2].source.line",
        "line 17 of /dev/gpiochip0 is already counted by channels[1].source (line 28)",
        id="shared-gpio-line",
    ),
    # -- file level --
    pytest.param(
        "channels:\n",
        "channel:\n",
        16,
        1,
        "channel",
        "unknown key (did you mean 'channels'?)",
        id="top-level-typo",
    ),
    pytest.param(
        "gateway:\n",
        "schema: 2\ngateway:\n",
        1,
        9,
        "schema",
        "this gateway reads schema 1, not '2'",
        id="schema-2",
    ),
    pytest.param(
        "unit: kWh",
        "unit: [kWh",
        19,
        17,
        "(syntax)",
        "YAML syntax: expected ',' or ']', but got ':' (while parsing a flow sequence on line 18)",
        id="yaml-syntax",
    ),
    pytest.param(
        "    unit: kWh",
        "\tunit: kWh",
        18,
        1,
        "(indentation)",
        "tab character in indentation",
        id="tab-indentation",
    ),
    pytest.param(
        "metrics:\n  listen: 127.0.0.1:9842\n",
        "metrics: [127.0.0.1:9842]\n",
        10,
        10,
        "metrics",
        "expected a mapping (key: value lines), found a list",
        id="section-is-a-list",
    ),
    pytest.param(
        "sources:\n",
        "sources: sim\nx:\n",
        12,
        10,
        "sources",
        "expected a list of sources, found 'sim'",
        id="sources-not-a-list",
    ),
]


@pytest.mark.parametrize(("old", "new", "line", "column", "path", "message"), BROKEN)
def test_a_broken_config_names_the_place_and_the_mistake(
    old: str, new: str, line: int, column: int, path: str, message: str
) -> None:
    """Each mistake is reported as FILE:LINE:COL: key.path: message at the offending text."""
    found = problems(broken((old, new)))
    expected = f"site.yaml:{line}:{column}: {path}: "
    assert any(p.startswith(expected) and message in p for p in found), found


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    """Mistakes in different sections all come back from one check, sorted by line."""
    found = problems(
        broken(
            ("timezone: UTC", "timezone: Nowhere"),
            ("port: 47808", "port: 99999"),
            ("type: modbus-tcp", "type: modbus"),
            ("unit: kWh", "unit: kwh"),
            ("{id: pins, line: 17}", "{id: gpio9, line: 17}"),
            ("demand_window: 1h", "demand_window: 70min"),
        )
    )
    assert [p.split(": ")[0] + ": " + p.split(": ")[1] for p in found] == [
        "site.yaml:4:13: gateway.timezone",
        "site.yaml:7:9: bacnet.port",
        "site.yaml:14:21: sources[1].type",
        "site.yaml:18:11: channels[0].unit",
        "site.yaml:26:20: channels[1].demand_window",
        "site.yaml:28:18: channels[1].source.id",
    ]


def test_a_channel_with_several_mistakes_reports_each() -> None:
    """One channel's bad unit, scale, window and point key are four lines, not the first one."""
    found = problems(
        broken(
            ("unit: us_gallons", "unit: gallons"),
            ("scale_factor: 1\n", "scale_factor: -1\n"),
            (
                "demand_window: 15min\n    demand_slide: 15min",
                "demand_window: 15\n    demand_slide: 15min",
            ),
            ("rate: 0.2}", "rate: 0.2, line: 3}"),
        )
    )
    assert found == [
        "site.yaml:30:11: channels[2].unit: unknown unit 'gallons' (did you mean 'us_gallons'?); "
        "allowed: kWh, lbs, cubic_feet, us_gallons, m3, liters",
        "site.yaml:31:19: channels[2].scale_factor: must be greater than 0, not -1",
        "site.yaml:32:20: channels[2].demand_window: a duration is text with a unit, "
        "like '15min' or '10s', not 15",
        "site.yaml:34:34: channels[2].source.line: line applies to gpio sources, "
        "not simulated ('sim' is simulated)",
    ]


def test_missing_sections_for_run_are_named() -> None:
    """A channels-only file is not enough to run: gateway, bacnet and sources are required."""
    found = problems(REPLAY_ONLY)
    assert found == [
        "site.yaml:1:1: gateway: required section is missing",
        "site.yaml:1:1: bacnet: required section is missing",
        "site.yaml:1:1: sources: required section is missing",
        "site.yaml:2:5: channels[0].source: required key is missing",
    ]


def test_required_keys_of_each_section_are_named() -> None:
    """Empty sections say which keys they need, at the section's place."""
    text = (
        "gateway: {name: x}\n"
        "bacnet: {port: 47808}\n"
        "metrics: {}\n"
        "sources: [{id: plc, type: modbus-tcp}, {type: gpio}]\n"
        "channels: [{id: a, source: {id: plc}}]\n"
    )
    assert problems(text) == [
        "site.yaml:1:10: gateway.state_dir: required key is missing",
        "site.yaml:2:9: bacnet.address: required key is missing",
        "site.yaml:2:9: bacnet.device_instance: required key is missing",
        "site.yaml:3:10: metrics.listen: required key is missing",
        "site.yaml:4:11: sources[0].host: required key is missing",
        "site.yaml:4:40: sources[1].id: required key is missing",
        "site.yaml:4:40: sources[1].chip: required key is missing",
        "site.yaml:5:12: channels[0].unit: required key is missing",
        "site.yaml:5:12: channels[0].scale_factor: required key is missing",
        "site.yaml:5:12: channels[0].demand_window: required key is missing",
        "site.yaml:5:12: channels[0].demand_slide: required key is missing",
        "site.yaml:5:28: channels[0].source.table: required key is missing",
        "site.yaml:5:28: channels[0].source.address: required key is missing",
        "site.yaml:5:28: channels[0].source.type: required key is missing",
    ]


def test_an_explicit_base_is_blamed_even_when_it_comes_first() -> None:
    """A base that lands on a later channel's default range is reported at the explicit base."""
    found = problems(
        broken(("scale_factor: 0.5", "scale_factor: 0.5\n    bacnet_instance_base: 298"))
    )
    assert found == [
        "site.yaml:20:27: channels[0].bacnet_instance_base: objects 299..307 overlap 301..309 "
        "of channels[2] (line 30); bases must be at least 9 apart"
    ]


def test_the_same_import_id_and_unit_twice_is_refused() -> None:
    """Two channels exporting under one ImportID and unit would write the same export rows."""
    found = problems(
        REPLAY_ONLY + "  - {id: b, import_id: a, unit: kWh, scale_factor: 1,"
        " demand_window: 1min, demand_slide: 1min}\n",
        purpose="replay",
    )
    assert found == [
        "site.yaml:3:24: channels[1].import_id: import_id 'a' with unit kWh is already used "
        "by channels[0] (line 2): their export rows would collide"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "site.yaml:1:1: (file): empty: expected a 'channels:' list"),
        (
            "- a\n- b\n",
            "site.yaml:1:1: (file): expected a mapping (key: value lines), found a list",
        ),
        ("a: 1\n---\nb: 2\n", "site.yaml:2:1: (syntax): YAML syntax: but found another document"),
        (
            "channels: [{id: !custom x, unit: kWh, scale_factor: 1, demand_window: 1min,"
            " demand_slide: 1min}]\n",
            "site.yaml:1:17: channels[0].id: cannot read 'x': could not determine a constructor",
        ),
    ],
)
def test_whole_file_mistakes_are_one_line(text: str, expected: str) -> None:
    """An empty file, a list at the top, two documents or an unknown tag give one clear line."""
    found = problems(text, purpose="replay")
    assert len(found) == 1 and found[0].startswith(expected), found


# -- replay purpose ---------------------------------------------------------------------------


def test_replay_accepts_a_channels_only_file() -> None:
    """For replay only channels are needed; the rest of the config is absent."""
    config = parse_config(REPLAY_ONLY, "site.yaml")
    assert (config.gateway, config.bacnet, config.metrics, config.sources) == (None,) * 3 + ((),)
    (channel,) = config.channels
    assert (channel.id, channel.source, channel.rules.window) == ("a", None, 120_000_000)


def test_replay_ignores_the_hardware_sections_and_channel_sources() -> None:
    """A site config whose sources would not check out here still replays."""
    text = broken(
        ("address: 127.0.0.1/8", "address: nonsense"),
        ("{id: pins, line: 17}", "{id: nowhere, line: 17}"),
    )
    config = parse_config(text, "site.yaml", purpose="replay")
    assert [channel.id for channel in config.channels] == ["elec", "gas", "water"]
    assert all(channel.source is None for channel in config.channels)


def test_replay_still_refuses_unknown_keys() -> None:
    """A typo is never ignored, even where the section's values are."""
    found = problems(REPLAY_ONLY + "metric: {listen: x}\n", purpose="replay")
    assert found == ["site.yaml:3:1: metric: unknown key (did you mean 'metrics'?)"]


def test_replay_requires_channels() -> None:
    """Without channels there is nothing to replay."""
    assert problems("schema: 1\n", purpose="replay") == [
        "site.yaml:1:1: channels: required key is missing"
    ]


# -- valid files and defaults -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["demo.yaml", "example.yaml"])
def test_the_shipped_configs_load_for_run(name: str) -> None:
    """config/demo.yaml and config/example.yaml are valid run configs."""
    config = load_config(ROOT / "config" / name, purpose="run")
    assert config.gateway is not None and config.bacnet is not None
    assert all(channel.source is not None for channel in config.channels)


def test_the_demo_is_four_b6070_meters_on_loopback() -> None:
    """The demo has electricity, gas, water and steam on one simulated source, on 127.0.0.1."""
    config = load_config(ROOT / "config" / "demo.yaml", purpose="run")
    assert [channel.rules.unit.name for channel in config.channels] == [
        "kWh",
        "cubic_feet",
        "us_gallons",
        "lbs",
    ]
    assert [type(source) for source in config.sources] == [SimulatedSource]
    assert config.bacnet is not None and config.metrics is not None and config.gateway is not None
    assert config.bacnet.address == IPv4Interface("127.0.0.1/8")
    assert config.metrics.host == "127.0.0.1"
    assert config.gateway.state_dir == ROOT / "config" / "state"
    assert all(channel.rules.slide <= parse_duration("1min") for channel in config.channels)


def test_defaults_fill_what_a_minimal_run_config_leaves_out(tmp_path: Path) -> None:
    """Unset keys take the documented defaults, and state_dir is relative to the file."""
    folder = tmp_path / "site"
    folder.mkdir()
    path = folder / "site.yaml"
    path.write_text(
        "gateway: {state_dir: ../data}\n"
        "bacnet: {address: 10.1.2.3/16, device_instance: 9}\n"
        "sources:\n"
        "  - {id: plc, type: modbus-tcp, host: plc.local}\n"
        "  - {id: pins, type: gpio, chip: /dev/gpiochip1}\n"
        "  - {id: sim, type: simulated}\n"
        "channels:\n"
        "  - {id: a, unit: kWh, scale_factor: 1, demand_window: 15min, demand_slide: 5min,\n"
        "     source: {id: plc, table: holding, address: 4, type: u32}}\n"
        "  - {id: b, unit: lbs, scale_factor: 1, demand_window: 20min, demand_slide: 10min,\n"
        "     source: {id: pins, line: 3}}\n"
        "  - {id: c, unit: m3, scale_factor: 1, demand_window: 1min, demand_slide: 1min,\n"
        "     source: {id: sim, rate: 1}}\n"
    )
    config = load_config(path, purpose="run")
    assert config.gateway is not None and config.bacnet is not None
    assert (config.gateway.name, config.gateway.timezone) == ("pulse-gateway", "UTC")
    assert config.gateway.state_dir == tmp_path / "data"
    assert (config.bacnet.port, config.bacnet.device_name) == (47808, "pulse-gateway 9")
    assert config.bacnet.reset_allowed_from == ()
    assert config.metrics is None
    assert config.sources[0] == ModbusTcpSource("plc", "plc.local", 502, 1, 1_000_000, 1_000_000)
    a, b, c = config.channels
    assert a.source == ModbusPoint("plc", "holding", 4, "u32", "big", None, "counter", 1.0)
    assert b.source == GpioPoint("pins", 3, "falling", 10_000)
    assert c.source == SimulatedPoint("sim", 1.0, "poisson")
    assert [ch.import_id for ch in config.channels] == ["a", "b", "c"]
    assert [ch.bacnet_instance_base for ch in config.channels] == [100, 200, 300]
    assert [ch.cov_increment for ch in config.channels] == [0.0, 0.0, 0.0]
    # 15min where it is a multiple of the slide, else the first multiple of both (30min).
    assert [ch.interval for ch in config.channels] == [
        parse_duration("15min"),
        parse_duration("30min"),
        parse_duration("15min"),
    ]
    assert c.rules.unit is UNITS["m3"]


def test_explicit_values_come_through_typed() -> None:
    """Addresses, networks and durations are parsed into their Python types."""
    config = parse_config(VALID, "site.yaml", purpose="run")
    assert config.bacnet is not None and config.metrics is not None
    assert config.bacnet.reset_allowed_from == (IPv4Network("127.0.0.0/8"),)
    assert config.bacnet.may_reset("127.9.9.9") and not config.bacnet.may_reset("10.0.0.1")
    assert config.bacnet.bind == "127.0.0.1/8:47808"
    assert config.metrics.listen == "127.0.0.1:9842"
    assert config.source("plc") == ModbusTcpSource("plc", "10.0.0.5", 502, 3, 2_000_000, 1_000_000)
    assert config.source("sim") == SimulatedSource("sim", 1)
    assert config.rules()["gas"].window == parse_duration("1h")


def test_yaml_merge_keys_share_channel_settings() -> None:
    """A technician may write shared settings once with an anchor; own keys win over merged."""
    text = (
        "channels:\n"
        "  - &meter {id: a, unit: kWh, scale_factor: 1, demand_window: 15min, demand_slide: 5min}\n"
        "  - {<<: *meter, id: b, scale_factor: 2}\n"
    )
    a, b = parse_config(text).channels
    assert (b.id, b.rules.scale_factor, b.rules.window) == ("b", 2.0, a.rules.window)


def test_numbers_as_people_write_them_are_read() -> None:
    """1e-3 (plain text to YAML 1.1) and hex register addresses are read as numbers."""
    text = broken(("scale_factor: 0.5", "scale_factor: 1e-3"), ("address: 0,", "address: 0x48,"))
    config = parse_config(text, purpose="run")
    assert config.channels[0].rules.scale_factor == 0.001
    assert isinstance(config.channels[0].source, ModbusPoint)
    assert config.channels[0].source.address == 72


def test_a_bom_and_an_unreadable_file_are_handled(tmp_path: Path) -> None:
    """A byte-order mark is skipped; a missing file is one problem line, not a traceback."""
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + REPLAY_ONLY.encode())
    assert [channel.id for channel in load_config(path).channels] == ["a"]
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.yaml", purpose="run")
    assert str(caught.value).endswith(
        "missing.yaml:1:1: (file): cannot read: No such file or directory"
    )


def test_summary_lists_the_gateway_sources_and_channels() -> None:
    """check prints counts, the BACnet device and one line per source and channel."""
    assert parse_config(VALID, "site.yaml", purpose="run").summary().splitlines() == [
        "OK site.yaml: 3 channels, 3 sources, 39 BACnet objects (device 7 at 127.0.0.1/8:47808)",
        f"  gateway 'test-site': state in {Path.cwd() / 'state'}, timezone UTC, "
        "http at 127.0.0.1:9842",
        "  bacnet 'pulse-gateway 7': resets allowed from 127.0.0.0/8",
        "  source sim: simulated (seed 1)",
        "  source plc: modbus-tcp 10.0.0.5:502 unit 3, poll every 2s",
        "  source pins: gpio /dev/gpiochip0",
        "  channel elec: kWh, window 15min / slide 5min, interval 15min, BACnet 101..109, "
        "source plc input 0 u32 high word first counter",
        "  channel gas: cubic_feet, window 1h / slide 15min, interval 15min, BACnet 201..209, "
        "source pins line 17 falling, debounce 10ms",
        "  channel water: us_gallons, window 15min / slide 15min, interval 15min, "
        "BACnet 301..309, source sim 0.2 pulses/s poisson",
        "note: metrics: is the older name of http:; it still works, rename it",
    ]


def test_the_http_section_and_its_older_name_metrics() -> None:
    """http: is the listener's section; metrics: still works with a note; both is refused."""
    http = VALID.replace("metrics:\n  listen", "http:\n  listen")
    config = parse_config(http, "site.yaml", purpose="run")
    assert config.metrics is not None and config.metrics.listen == "127.0.0.1:9842"
    assert config.notes == () and config.metrics.allow_reset is False
    both = VALID.replace("metrics:\n", "http: {listen: 127.0.0.1:9843}\nmetrics:\n")
    assert problems(both) == ["site.yaml:12:3: metrics: the older name of http:; keep one of them"]
    unknown = http.replace("  listen: 127.0.0.1:9842", "  listen: 127.0.0.1:9842\n  allow: yes")
    assert problems(unknown)[0].startswith("site.yaml:12:3: http.allow: unknown key")


def test_allow_reset_needs_basic_auth_or_check_says_it_is_ignored(tmp_path: Path) -> None:
    """allow_reset is a boolean; without basic_auth it has no effect, and check says so."""
    (tmp_path / "password").write_text("x")
    site = str(tmp_path / "site.yaml")
    open_reset = VALID.replace("metrics:\n  listen", "http:\n  allow_reset: true\n  listen")
    config = parse_config(open_reset, site, purpose="run")
    assert config.metrics is not None and config.metrics.allow_reset is True
    assert config.summary().splitlines()[-1] == (
        "note: http.allow_reset is ignored without http.basic_auth: resets over HTTP stay "
        "refused (403)"
    )
    guarded = open_reset.replace(
        "  allow_reset: true",
        "  allow_reset: true\n  basic_auth: {username: t, password_file: password}",
    )
    assert parse_config(guarded, site, purpose="run").notes == ()
    assert any("http.allow_reset" in p for p in problems(open_reset.replace("true", "maybe")))


def test_summary_of_a_replay_config_has_channels_only() -> None:
    """A replay-purpose config summarises just its channels."""
    assert parse_config(REPLAY_ONLY, "r.yaml").summary().splitlines() == [
        "OK r.yaml: 1 channel",
        "  channel a: kWh, window 2min / slide 1min, interval 15min",
    ]


def test_the_bacnet_object_count_follows_the_channel_count() -> None:
    """1 device + 7 objects per channel + reset_all."""
    config = parse_config(VALID, purpose="run")
    assert (
        config.bacnet_object_count == 1 + 3 * (9 + 1 + 2) + 1 + 1
    )  # AIs, reset, trend logs  # + the network-port object


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_no_edit_of_a_config_gives_a_traceback(data: st.DataObject) -> None:
    """Whatever a technician types, the answer is a Config or a ConfigError."""
    start = data.draw(st.integers(0, len(VALID)))
    end = data.draw(st.integers(start, min(len(VALID), start + 12)))
    insert = data.draw(st.text(alphabet=" :-[]{},'\"\n#&*!<>0123456789.xyz/", max_size=6))
    text = VALID[:start] + insert + VALID[end:]
    for purpose in ("replay", "run"):
        try:
            parse_config(text, purpose=purpose)  # type: ignore[arg-type]
        except ConfigError as exc:
            assert exc.problems


def test_bacnet_device_properties_and_foreign_device_come_through() -> None:
    """location, description and foreign_device are read into BacnetSettings."""
    text = VALID.replace(
        "  reset_allowed_from: [127.0.0.0/8]",
        "  reset_allowed_from: [127.0.0.0/8]\n  location: Plant room B2\n"
        "  description: Utility meters\n  foreign_device: {bbmd: '192.0.2.10:47808', ttl: 600}",
    )
    bacnet = parse_config(text, "site.yaml", purpose="run").bacnet
    assert bacnet is not None
    assert (bacnet.location, bacnet.description) == ("Plant room B2", "Utility meters")
    assert bacnet.foreign_device == ForeignDevice("192.0.2.10", 47808, 600)
    default = parse_config(VALID, "site.yaml", purpose="run").bacnet
    assert default is not None and default.foreign_device is None and default.location == ""


EXPORT = """\
export:
  schedule:
    directory: drop
    prefix: site_a
    format: energycap3
    at: '01:15'
    value: consumption
    time_format: yyyyMMdd hh:mm
"""


def test_the_export_schedule_and_retention_come_through(tmp_path: Path) -> None:
    """export.schedule is read with its defaults; a relative directory sits by the config."""
    text = VALID.replace("  timezone: UTC", "  timezone: UTC\n  interval_retention: 30d") + EXPORT
    config = parse_config(text, str(tmp_path / "site.yaml"), purpose="run")
    assert config.gateway is not None and config.gateway.interval_retention == parse_duration("30d")
    schedule = config.export
    assert schedule is not None
    assert (schedule.directory, schedule.prefix, schedule.format, schedule.at) == (
        tmp_path / "drop",
        "site_a",
        "energycap3",
        (1, 15),
    )
    assert (schedule.value, schedule.time_format, schedule.utc) == (
        "consumption",
        "yyyyMMdd hh:mm",
        False,
    )
    default = parse_config(VALID, "site.yaml", purpose="run")
    assert default.export is None
    assert default.gateway is not None and default.gateway.interval_retention == parse_duration(
        "400d"
    )


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        ("format: energycap3", "format: energycap2", "export.schedule.format", "energycap1"),
        ("at: '01:15'", "at: '25:00'", "export.schedule.at", "HH:MM"),
        ("prefix: site_a", "prefix: site a", "export.schedule.prefix", "letters, digits"),
        (
            "    value: consumption\n",
            "    value: consumption\n    utc: maybe\n",
            "export.schedule.utc",
            "true or false",
        ),
        ("    prefix: site_a\n", "", "export.schedule.prefix", "required"),
    ],
)
def test_a_broken_export_schedule_is_named(old: str, new: str, path: str, message: str) -> None:
    """Each mistake in export.schedule is reported with its key path."""
    with pytest.raises(ConfigError) as error:
        parse_config(VALID + EXPORT.replace(old, new), "site.yaml", purpose="run")
    assert any(f" {path}: " in str(p) and message in str(p) for p in error.value.problems), [
        str(p) for p in error.value.problems
    ]


PACED = (
    (
        "  - {id: plc, type: modbus-tcp, host: 10.0.0.5, unit_id: 3, poll_interval: 2s}",
        "  - {id: plc, type: modbus-tcp, host: 10.0.0.5, unit_id: 3, poll_interval: 2s,\n"
        "     framing: rtu, retries: 2, backoff_max: 30s, min_request_gap: 50ms,\n"
        "     max_read_gap: 0, max_read_registers: 60}",
    ),
    (
        "  - {id: pins, type: gpio, chip: /dev/gpiochip0}",
        "  - {id: pins, type: gpio, chip: /dev/gpiochip0, event_buffer_size: 512}",
    ),
    (
        "    source: {id: plc, table: input, address: 0, type: u32}",
        "    source: {id: plc, table: input, address: 0, type: u32, max_rate: 50}",
    ),
    (
        "    source: {id: pins, line: 17}",
        "    source: {id: pins, line: 17, bias: pull_up, active_low: true}",
    ),
)


def test_modbus_pacing_and_gpio_line_settings_come_through() -> None:
    """The sources' pacing, framing and line keys are read into their typed configs."""
    config = parse_config(broken(*PACED), "site.yaml", purpose="run")
    plc, pins = config.source("plc"), config.source("pins")
    assert isinstance(plc, ModbusTcpSource) and isinstance(pins, GpioSource)
    assert (plc.framing, plc.retries, plc.backoff_max, plc.min_request_gap) == (
        "rtu",
        2,
        parse_duration("30s"),
        parse_duration("50ms"),
    )
    assert (plc.max_read_gap, plc.max_read_registers, pins.event_buffer_size) == (0, 60, 512)
    points = {c.id: c.source for c in config.channels}
    assert isinstance(points["elec"], ModbusPoint) and points["elec"].max_rate == 50.0
    water = next(p for p in points.values() if isinstance(p, GpioPoint))
    assert (water.bias, water.active_low) == ("pull_up", True)
    default = parse_config(VALID, "site.yaml", purpose="run")
    assert default.source("plc").min_request_gap is None  # the source picks 20 or 50 ms


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("retries: 2", "retries: 9", "retries"),
        ("framing: rtu", "framing: serial", "framing"),
        ("max_read_registers: 60", "max_read_registers: 200", "max_read_registers"),
        ("backoff_max: 30s", "backoff_max: 1s", "backoff_max"),
        ("event_buffer_size: 512", "event_buffer_size: 4", "event_buffer_size"),
        ("max_rate: 50", "max_rate: 0", "max_rate"),
        ("bias: pull_up", "bias: pullup", "bias"),
        ("active_low: true", "active_low: 1", "true or false"),
    ],
)
def test_bad_pacing_and_line_settings_are_named(old: str, new: str, message: str) -> None:
    """Each out-of-range or misspelt source key is one problem at its place."""
    text = broken(*PACED).replace(old, new)
    with pytest.raises(ConfigError) as error:
        parse_config(text, "site.yaml", purpose="run")
    assert any(message in str(p) for p in error.value.problems), [
        str(p) for p in error.value.problems
    ]


def test_metrics_tls_and_basic_auth_files_must_exist(tmp_path: Path) -> None:
    """metrics.tls and basic_auth name files next to the config; missing ones are named."""
    for name in ("cert.pem", "key.pem", "password"):
        (tmp_path / name).write_text("x")
    secured = VALID.replace(
        "  listen: 127.0.0.1:9842",
        "  listen: 127.0.0.1:9842\n  tls: {cert: cert.pem, key: key.pem}\n"
        "  basic_auth: {username: prom, password_file: password}",
    )
    metrics = parse_config(secured, str(tmp_path / "site.yaml"), purpose="run").metrics
    assert metrics is not None
    assert (metrics.tls_cert, metrics.tls_key) == (tmp_path / "cert.pem", tmp_path / "key.pem")
    assert (metrics.username, metrics.password_file) == ("prom", tmp_path / "password")
    (tmp_path / "key.pem").unlink()
    broken_text = secured.replace("username: prom", "username: 'pro:m'")
    with pytest.raises(ConfigError) as error:
        parse_config(broken_text, str(tmp_path / "site.yaml"), purpose="run")
    problems = [str(p) for p in error.value.problems]
    assert any("metrics.tls.key: no such file" in p for p in problems), problems
    assert any("metrics.basic_auth.username" in p for p in problems), problems
