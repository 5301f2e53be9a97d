"""The /metrics endpoint (docs/reference/metrics.md): real engine, real HTTP, live values.

The listener is the gateway's aiohttp application (gateway/web/server.py) serving /metrics
only; tests/test_web.py has the whole listener with the pages and the API.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.core import Channel, Engine, Unit
from gateway.metrics import GatewayCollector, GatewayReading, Metrics, _Scrape
from gateway.web.server import metrics_app, serve
from tests.helpers import at, rules

HOST = "127.0.0.1"
CONTRACT = {  # docs/reference/metrics.md: sample name -> label names
    "pulse_gateway_pulses_total": {"channel"},
    "pulse_gateway_consumption": {"channel", "unit"},
    "pulse_gateway_demand": {"channel", "unit"},
    "pulse_gateway_peak_demand": {"channel", "unit"},
    "pulse_gateway_previous_peak_demand": {"channel", "unit"},
    "pulse_gateway_cumulative_demand": {"channel", "unit"},
    "pulse_gateway_resets_total": {"channel"},
    "pulse_gateway_reset_rejections_total": {"channel", "reason"},
    "pulse_gateway_source_up": {"source"},
    "pulse_gateway_channel_online": {"channel"},
    "pulse_gateway_boundary_lag_seconds": set(),
}


@dataclass
class View:
    """The service's side of the contract, over a real engine (None: not started yet)."""

    engine: Engine | None
    up: dict[str, bool] = field(default_factory=lambda: {"sim": True})
    rejections: dict[tuple[str, str], int] = field(default_factory=dict)
    lag: float = 0.0
    broken: bool = False
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    checksums: dict[str, bool] = field(default_factory=dict)

    def channel_readings(self) -> Iterator[tuple[str, Unit, Channel]]:
        if self.engine is None:
            return
        for channel_id, channel in self.engine.channels.items():
            yield channel_id, channel.rules.unit, channel

    def sources_up(self) -> Mapping[str, bool]:
        if self.broken:
            raise RuntimeError("a bug in the service's bookkeeping")
        return self.up

    def reset_rejections(self) -> Mapping[tuple[str, str], int]:
        return self.rejections

    def boundary_lag_seconds(self) -> float:
        return self.lag

    def latest_time(self) -> int:
        return 0 if self.engine is None else self.engine.now

    def source_counters(self) -> Mapping[str, Mapping[str, int]]:
        return self.counters

    def checksum_ok(self) -> Mapping[str, bool]:
        return self.checksums


def make_engine() -> Engine:
    """main: kWh x0.5, W 10min / S 5min, lockout 15min; gas: cubic feet x10, W = S = 5min."""
    return Engine(
        {
            "main": rules("kWh", 0.5, "10min", "5min", initial=1000, lockout="15min"),
            "gas": rules("cubic_feet", 10, "5min", "5min"),
        },
        at("00:00:00"),
    )


@asynccontextmanager
async def serving(metrics: Metrics) -> AsyncIterator[int]:
    runner = await serve(metrics_app(metrics), HOST, 0)
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def scrape(port: int) -> tuple[str, dict[tuple[str, frozenset], float]]:
    """GET /metrics with urllib (off the loop, which must stay free to answer)."""

    def get() -> tuple[str, str]:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
            return response.headers["Content-Type"], response.read().decode()

    content_type, text = await asyncio.to_thread(get)
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return content_type, samples


def value(samples: Mapping, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def assert_matches_engine(samples: Mapping, engine: Engine) -> None:
    for channel_id, channel in engine.channels.items():
        unit = channel.rules.unit
        c = {"channel": channel_id, "unit": unit.consumption}
        d = {"channel": channel_id, "unit": unit.demand}
        assert value(samples, "pulse_gateway_pulses_total", channel=channel_id) == (
            channel.pulses_total
        )
        assert value(samples, "pulse_gateway_consumption", **c) == channel.consumption
        demand = value(samples, "pulse_gateway_demand", **d)
        if channel.demand is None:
            assert math.isnan(demand)
        else:
            assert demand == channel.demand
        assert value(samples, "pulse_gateway_peak_demand", **d) == channel.peak_demand
        assert value(samples, "pulse_gateway_previous_peak_demand", **d) == (
            channel.previous_peak_demand
        )
        assert value(samples, "pulse_gateway_cumulative_demand", **d) == channel.cumulative_demand
        assert value(samples, "pulse_gateway_resets_total", channel=channel_id) == (
            channel.reset_count
        )
        assert value(
            samples, "pulse_gateway_reset_rejections_total", channel=channel_id, reason="lockout"
        ) == (channel.rejected_resets)
        assert value(samples, "pulse_gateway_channel_online", channel=channel_id) == (
            1.0 if channel.is_online else 0.0
        )


async def raw(port: int, request: bytes) -> bytes:
    """Send ``request`` bytes as they are and return everything the server answers."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.asyncio
async def test_scrape_shows_the_engines_numbers() -> None:
    """A scrape shows every channel's counts, demands, peaks, resets and rejections as is."""
    engine = make_engine()
    engine.pulses("main", at("00:01:00"), 7)
    engine.pulses("gas", at("00:02:00"), 3)
    engine.advance(at("00:10:00"))
    engine.pulses("main", at("00:12:00"), 20)
    engine.advance(at("00:15:00"))
    engine.reset("main", at("00:15:00"))
    engine.reset("main", at("00:16:00"))  # inside the 15min lockout: refused
    metrics = Metrics(View(engine))
    async with serving(metrics) as port:
        content_type, samples = await scrape(port)
    main = engine.channels["main"]
    assert (main.reset_count, main.rejected_resets, main.previous_peak_demand) == (1, 1, 60.0)
    assert content_type == CONTENT_TYPE_LATEST
    assert_matches_engine(samples, engine)


@pytest.mark.asyncio
async def test_demand_is_nan_until_a_whole_window_was_seen() -> None:
    """Demand is NaN before the first valid window, then the engine's value."""
    engine = make_engine()
    engine.pulses("main", at("00:01:00"), 4)
    metrics = Metrics(View(engine))
    labels = {"channel": "main", "unit": "kilowatts"}
    async with serving(metrics) as port:
        engine.advance(at("00:05:00"))
        _, before = await scrape(port)
        engine.advance(at("00:10:00"))
        _, after = await scrape(port)
    assert math.isnan(value(before, "pulse_gateway_demand", **labels))
    assert value(after, "pulse_gateway_demand", **labels) == engine.channels["main"].demand == 12.0


@pytest.mark.asyncio
async def test_values_change_between_scrapes_with_no_second_copy() -> None:
    """Events applied between two scrapes on one server show up in the second scrape."""
    engine = make_engine()
    view = View(engine)
    metrics = Metrics(view)
    async with serving(metrics) as port:
        _, first = await scrape(port)
        assert_matches_engine(first, engine)
        engine.pulses("gas", at("00:01:00"), 5)
        engine.offline("main", at("00:02:00"))
        engine.advance(at("00:05:00"))
        view.up["sim"] = False
        view.lag = 0.25
        _, second = await scrape(port)
    assert_matches_engine(second, engine)
    assert value(second, "pulse_gateway_pulses_total", channel="gas") == 5
    assert value(second, "pulse_gateway_channel_online", channel="main") == 0.0
    assert value(first, "pulse_gateway_source_up", source="sim") == 1.0
    assert value(second, "pulse_gateway_source_up", source="sim") == 0.0
    assert value(second, "pulse_gateway_boundary_lag_seconds") == 0.25


@pytest.mark.asyncio
async def test_reset_rejections_add_the_views_reasons_to_the_engines_lockouts() -> None:
    """Every channel has a lockout count from the engine; other reasons come from the view."""
    engine = make_engine()
    view = View(engine, rejections={("gas", "not_allowed"): 3, ("gas", "lockout"): 99})
    async with serving(Metrics(view)) as port:
        _, samples = await scrape(port)
    rejections = {
        tuple(sorted(labels)): count
        for (name, labels), count in samples.items()
        if name == "pulse_gateway_reset_rejections_total"
    }
    assert rejections == {
        (("channel", "gas"), ("reason", "lockout")): 0.0,
        (("channel", "gas"), ("reason", "not_allowed")): 3.0,
        (("channel", "main"), ("reason", "lockout")): 0.0,
    }


@pytest.mark.asyncio
async def test_exposes_exactly_the_contracts_names_and_labels() -> None:
    """Every documented name is exposed with its labels, counters typed counter, with HELP text."""
    metrics = Metrics(View(make_engine()))
    metrics.checkpoint_duration.observe(0.004)
    async with serving(metrics) as port:
        _, samples = await scrape(port)
    labels_by_name: dict[str, set[str]] = {}
    for name, labels in samples:
        labels_by_name.setdefault(name, set()).update(key for key, _ in labels)
    assert {name: labels_by_name.get(name) for name in CONTRACT} == CONTRACT
    assert samples[("pulse_gateway_checkpoint_duration_seconds_count", frozenset())] == 1.0
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    for name in ("pulse_gateway_pulses", "pulse_gateway_resets", "pulse_gateway_reset_rejections"):
        assert families[name].type == "counter"
    assert all(family.documentation for family in families.values())
    assert "process_cpu_seconds" in families and "python_info" in families


@pytest.mark.asyncio
async def test_source_glitches_and_lost_gpio_edges_are_counted_per_channel() -> None:
    """Source glitches, lost GPIO edges and the reset checksum are exposed per channel."""
    view = View(
        make_engine(),
        counters={"glitches": {"main": 2}, "lost_edges": {"gas": 5}},
        checksums={"main": True, "gas": False},
    )
    async with serving(Metrics(view)) as port:
        _, samples = await scrape(port)
    assert samples[("pulse_gateway_checksum_ok", frozenset({("channel", "main")}))] == 1
    assert samples[("pulse_gateway_checksum_ok", frozenset({("channel", "gas")}))] == 0
    assert samples[("pulse_gateway_source_glitches_total", frozenset({("channel", "main")}))] == 2
    assert samples[("pulse_gateway_gpio_lost_edges_total", frozenset({("channel", "gas")}))] == 5


def test_metrics_use_their_own_registry() -> None:
    """Two Metrics live side by side and neither touches the process-global registry."""
    first, second = Metrics(View(make_engine())), Metrics(View(make_engine()))
    assert first.registry is not second.registry is not REGISTRY
    assert b"pulse_gateway_" not in generate_latest(REGISTRY)


@pytest.mark.asyncio
async def test_head_answers_headers_only() -> None:
    """HEAD /metrics answers 200 with the metrics' length and no body."""
    async with serving(Metrics(View(make_engine()))) as port:
        response = await raw(
            port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    head, _, body = response.partition(b"\r\n\r\n")
    assert status(response) == 200 and body == b""
    assert b"\r\nContent-Length: " in head


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"DELETE /metrics HTTP/1.0\r\n\r\n", 405),
        (b"GET /metrics?name[]=x HTTP/1.1\r\n\r\n", 200),
        (b"hello\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n", 400),
    ],
)
async def test_answers_other_requests_with_the_right_status(
    request_bytes: bytes, expected: int
) -> None:
    """Unknown paths get 404, other methods 405 (with Allow), malformed requests and a header
    over 8 KiB 400."""
    async with serving(Metrics(View(make_engine()))) as port:
        # a Host header (HTTP/1.1 requires one) and one request per connection
        extra = b"\r\nHost: x\r\nConnection: close\r\n"
        response = await raw(port, request_bytes.replace(b"\r\n", extra, 1))
    assert status(response) == expected
    if expected == 405:
        assert b"\r\nAllow: GET" in response


@pytest.mark.asyncio
async def test_promtool_finds_nothing_to_say() -> None:
    """`promtool check metrics` is silent about a scrape of a busy gateway."""
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool not found: apt-get install -y prometheus (Debian) puts it on PATH"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    engine = make_engine()
    engine.pulses("main", at("00:01:00"), 9)
    engine.advance(at("00:10:00"))
    engine.reset("main", at("00:10:00"))
    engine.offline("gas", at("00:11:00"))
    metrics = Metrics(View(engine, rejections={("main", "not_allowed"): 1}))
    metrics.checkpoint_duration.observe(0.002)

    def get() -> bytes:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
            return response.read()

    async with serving(metrics) as port:
        body = await asyncio.to_thread(get)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")
    assert b"pulse_gateway_demand" in body


@pytest.mark.asyncio
async def test_urllib_sees_404_for_other_paths() -> None:
    """A real HTTP client gets 404 for a path other than /metrics."""

    def get() -> int:
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=5)
        except urllib.error.HTTPError as exc:
            return exc.code
        return 200

    async with serving(Metrics(View(make_engine()))) as port:
        assert await asyncio.to_thread(get) == 404


@pytest.mark.asyncio
async def test_scrape_before_the_engine_exists() -> None:
    """Before the service has built its engine a scrape succeeds with no channel samples."""
    async with serving(Metrics(View(None))) as port:
        _, samples = await scrape(port)
    assert not [name for name, labels in samples if ("channel", "main") in labels]
    assert value(samples, "pulse_gateway_source_up", source="sim") == 1.0


@pytest.mark.asyncio
async def test_a_failing_view_costs_one_scrape_not_the_server() -> None:
    """A view that raises answers 500 for that scrape; the next scrape is served again."""
    engine = make_engine()
    view = View(engine, broken=True)
    async with serving(Metrics(view)) as port:
        failed = await raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        view.broken = False
        _, samples = await scrape(port)
    assert status(failed) == 500
    assert_matches_engine(samples, engine)


def gateway_lines(body: bytes) -> list[str]:
    return [line for line in body.decode().splitlines() if "pulse_gateway_" in line]


@pytest.mark.asyncio
async def test_a_scrape_made_in_a_thread_is_the_same_text_as_one_made_on_the_loop() -> None:
    """``scrape`` (numbers read on the loop, text made in a thread) serves what ``render``
    gives, family for family and in the same order, process metrics included."""
    engine = make_engine()
    engine.pulses("gas", at("00:01:00"), 5)
    engine.advance(at("00:10:00"))
    view = View(engine, rejections={("main", "not_allowed"): 2}, checksums={"main": True})
    view.counters = {"glitches": {"gas": 1}}
    metrics = Metrics(view)
    metrics.checkpoint_duration.observe(0.02)
    on_loop, threaded = metrics.render(), await metrics.scrape()
    assert gateway_lines(threaded) == gateway_lines(on_loop)
    names = [family.name for family in text_string_to_metric_families(threaded.decode())]
    assert names == [f.name for f in text_string_to_metric_families(on_loop.decode())]
    assert "process_cpu_seconds" in names and "python_info" in names


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**63), 2**63),
    st.sampled_from([0.0, -0.0, 1e-300, 123456789.0, 1e22, 0.1 + 0.2]),
)
IDS = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True),
    st.text(min_size=1, max_size=8),  # quotes, backslashes, newlines, any unicode
)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(IDS, NUMBERS, NUMBERS, st.one_of(st.none(), NUMBERS), st.booleans()),
        min_size=0,
        max_size=12,
        unique_by=lambda row: row[0],
    ),
    lag=NUMBERS,
)
def test_the_fast_text_is_generate_latests_to_the_byte(
    rows: list[tuple[str, float, float, float | None, bool]], lag: float
) -> None:
    """Every family the gateway exposes, with any numbers and any channel id, is written
    exactly as prometheus_client's generate_latest writes the same reading's families."""
    channels = [
        (cid, "kilowatt-hours", "kilowatts", None if on else 7, a, b, a, b, a, 3, 1, on,
         b, a, c, c, c)
        for cid, a, b, c, on in rows
    ]  # fmt: skip
    reading = GatewayReading(
        channels=channels,  # type: ignore[arg-type]
        rejections=[((cid, "not_allowed"), 2) for cid, *_ in rows[:3]],
        sources=[("sim", True), ('we"ird\\', False)],
        lag=lag,
        checksums=[(cid, on) for cid, *_, on in rows],
        counters=[("glitches", [(cid, 1) for cid, *_ in rows])],
    )
    families = GatewayCollector.families(reading)
    assert GatewayCollector.text(reading) == generate_latest(_Scrape(families, []))


@pytest.mark.asyncio
async def test_a_scrape_shows_the_numbers_of_the_moment_it_was_read() -> None:
    """Events applied while the thread makes the text belong to the next scrape, whole."""
    engine = make_engine()
    metrics = Metrics(View(engine))
    scraping = asyncio.create_task(metrics.scrape())
    await asyncio.sleep(0)  # the scrape has read the numbers and waits for its thread
    engine.pulses("gas", at("00:01:00"), 5)
    engine.advance(at("00:05:00"))
    before = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families((await scraping).decode())
        for s in family.samples
    }
    assert value(before, "pulse_gateway_pulses_total", channel="gas") == 0
    assert math.isnan(
        value(before, "pulse_gateway_demand", channel="gas", unit="cubic-feet-per-minute")
    )
    after = metrics.render().decode()
    assert 'pulse_gateway_pulses_total{channel="gas"} 5.0' in after
