"""`pulse-gateway run` end to end: a real child process, real SQLite, real HTTP scrapes."""

from __future__ import annotations

import asyncio
import base64
import math
import os
import random
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.store import Store
from tests.daemon import Daemon, free_port, free_udp_port, write_config

ROOT = Path(__file__).resolve().parent.parent


def saved(state_dir: Path):
    """The state as the last checkpoint left it, read through a read-only store."""
    with Store.open_readonly(state_dir / "gateway.db") as store:
        return store.load(), store.reset_log(), store.verdict()


def test_run_counts_and_serves_metrics(tmp_path: Path) -> None:
    """The daemon counts simulated pulses and /metrics shows them growing."""
    demand_key = ("pulse_gateway_demand", (("channel", "e"), ("unit", "kilowatts")))
    with Daemon(write_config(tmp_path)).ready() as daemon:
        first = daemon.scrape()
        # demand is valid once a whole 2 s window was observed after the source came up
        deadline = time.monotonic() + 15
        while math.isnan((second := daemon.scrape())[demand_key]):
            assert time.monotonic() < deadline, "demand never became valid"
            time.sleep(0.2)
        assert daemon.stop() == 0
    key = ("pulse_gateway_pulses_total", (("channel", "e"),))
    assert second[key] > first[key] >= 0
    assert second[("pulse_gateway_source_up", (("source", "sim"),))] == 1.0
    demand = second[demand_key]
    # 200 pulses/s * 0.5 kWh * 3600 s/h: the simulation reports every 0.2 s, so a 2 s window
    # holds 9 to 11 reports; a wrong units_Scale would be off by 60x
    assert demand == pytest.approx(200 * 0.5 * 3600, rel=0.25)


def test_kill_minus_9_never_corrupts_or_loses_more_than_a_checkpoint(tmp_path: Path) -> None:
    """20 kill -9 at random moments: the database stays sound and counts never go back."""
    config = write_config(tmp_path)
    rng = random.Random(20261124)
    previous: dict[str, int] = {}
    for _ in range(20):
        with Daemon(config).ready() as daemon:
            time.sleep(rng.uniform(0.0, 1.2))
            killed_at = time.time()
            daemon.kill()
        state, _, verdicts = saved(tmp_path / "state")
        assert state is not None
        assert all(v.ok for v in verdicts)
        # a checkpoint every second: at most about one second of pulses is lost
        assert killed_at - state.saved_at / 1e6 < 2.5
        for channel, entry in state.channels.items():
            assert entry.state.pulses_total >= previous.get(channel, 0)
            previous[channel] = entry.state.pulses_total
    assert previous["e"] > 0


def test_resets_survive_kill_minus_9_exactly(tmp_path: Path) -> None:
    """Every acknowledged reset is on disk after kill -9, and the checksums hold."""
    config = write_config(tmp_path)
    rng = random.Random(7)
    for _ in range(5):
        harness = subprocess.Popen(
            [sys.executable, "-m", "tests.reset_harness", str(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert harness.stdout is not None
        assert harness.stdout.readline().strip() == "READY"
        acked: dict[str, int] = {}
        deadline = time.monotonic() + rng.uniform(0.2, 1.0)
        while time.monotonic() < deadline:
            _, channel, _, count = harness.stdout.readline().split()
            acked[channel] = int(count)
        harness.kill()
        harness.wait()
        harness.stdout.close()
        state, log, verdicts = saved(tmp_path / "state")
        assert state is not None and all(v.ok for v in verdicts), [v.line() for v in verdicts]
        for channel, count in acked.items():
            on_disk = state.channels[channel].state.reset_count
            # durable before acknowledged: at most one reset past the last ACK was in flight
            assert count <= on_disk <= count + 1
            assert on_disk == sum(1 for r in log if r.channel == channel and r.accepted)


def test_sigterm_stops_within_5_seconds_with_a_final_checkpoint(tmp_path: Path) -> None:
    """SIGTERM: exit 0 in under 5 s, the last checkpoint written on the way out."""
    with Daemon(write_config(tmp_path)).ready() as daemon:
        time.sleep(0.5)
        asked = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = daemon.process.wait(timeout=10)
        took = time.monotonic() - asked
        daemon.wait_for("gateway_stopped", timeout=1)
    assert code == 0 and took < 5.0
    state, _, _ = saved(tmp_path / "state")
    assert state is not None and time.time() - state.saved_at / 1e6 < 5.0


def test_a_closed_log_pipe_neither_stops_the_gateway_nor_its_sigterm(tmp_path: Path) -> None:
    """Whoever read the log went away (``pulse-gateway run | head``): the gateway goes on,
    says so once on stderr, reloads, and still stops cleanly on SIGTERM with its checkpoint."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "-c", str(write_config(tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        deadline = time.monotonic() + 20
        while b'"gateway_ready"' not in process.stdout.readline():
            assert time.monotonic() < deadline and process.poll() is None
        process.stdout.close()  # the reader is gone: the next log line meets EPIPE
        process.send_signal(signal.SIGHUP)  # config_reloaded and friends get logged
        time.sleep(1.5)
        assert process.poll() is None
        asked = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
        took = time.monotonic() - asked
        stderr = process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert code == 0 and took < 5.0, stderr
    assert stderr.count("the log output was closed (broken pipe)") == 1
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    state, _, _ = saved(tmp_path / "state")
    assert state is not None and time.time() - state.saved_at / 1e6 < 5.0


def test_a_second_instance_on_the_same_state_dir_refuses_to_start(tmp_path: Path) -> None:
    """While one gateway runs, another on its state dir exits 1 with a clear message."""
    config = write_config(tmp_path)
    with Daemon(config).ready() as first:
        second = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert first.process.poll() is None
        first.stop()
    assert second.returncode == 1
    assert "state" in second.stderr and str(first.process.pid) in second.stderr
    assert "Traceback" not in second.stderr


def test_sighup_applies_a_good_config_and_refuses_a_bad_one(tmp_path: Path) -> None:
    """A reload keeps counts, adds channels and changes scales; a broken file changes nothing."""
    metrics_port = free_port()
    config = write_config(tmp_path, metrics_port=metrics_port)
    with Daemon(config).ready() as daemon:
        time.sleep(1.5)
        before = daemon.scrape()
        write_config(
            tmp_path,
            metrics_port=metrics_port,
            channels=(
                "  - {id: e, unit: kWh, scale_factor: 2, demand_window: 2s, demand_slide: 1s,\n"
                "     source: {id: sim, rate: 200, mode: constant}}\n"
                "  - {id: w, unit: us_gallons, scale_factor: 1, demand_window: 2s,"
                " demand_slide: 2s, source: {id: sim, rate: 40}}\n"
                "  - {id: steam, unit: lbs, scale_factor: 1, demand_window: 2s, demand_slide: 1s,\n"
                "     source: {id: sim, rate: 10}}\n"
            ),
        )
        daemon.signal(signal.SIGHUP)
        reloaded = daemon.wait_for("config_reloaded")
        after = daemon.scrape()
        consumption = ("pulse_gateway_consumption", (("channel", "e"), ("unit", "kilowatt-hours")))
        assert after[consumption] >= before[consumption]  # continuous: no jump down
        pulses = ("pulse_gateway_pulses_total", (("channel", "e"),))
        assert after[pulses] >= before[pulses]
        assert reloaded["added"] == ["steam"] and reloaded["changed"] == ["e"]
        assert ("pulse_gateway_pulses_total", (("channel", "steam"),)) in after

        config.write_text(config.read_text().replace("unit: lbs", "unit: lbz"))
        daemon.signal(signal.SIGHUP)
        refused = daemon.wait_for("config_reload_refused")
        assert "unknown unit 'lbz'" in " ".join(refused["problems"])
        still = daemon.scrape()
        assert still[pulses] >= after[pulses]
        assert daemon.stop() == 0


def test_a_bms_reads_and_resets_through_the_running_daemon(tmp_path: Path) -> None:
    """bac-py against `pulse-gateway run`: names and values read, a Reset lands in the audit."""
    from bac_py import Client

    port = free_udp_port()
    config = write_config(tmp_path, bacnet_port=port)
    server = f"127.0.0.1:{port}"

    async def session() -> tuple[str, float, float, int]:
        client_port = free_udp_port()
        async with Client(
            instance_number=4002,
            interface="127.0.0.1",
            port=client_port,
            broadcast_address="127.255.255.255",
        ) as client:
            name = await asyncio.wait_for(client.read(server, "ai,101", "object-name"), 5)
            consumption = 0.0
            for _ in range(50):  # the simulated meter is counting
                consumption = await asyncio.wait_for(client.read(server, "ai,101", "pv"), 5)
                if consumption > 0:
                    break
                await asyncio.sleep(0.1)
            await asyncio.wait_for(client.write(server, "bv,101", "pv", 1, priority=8), 5)
            count = await asyncio.wait_for(client.read(server, "ai,106", "pv"), 5)
            return str(name), float(consumption), float(count), client_port

    with Daemon(config).ready() as daemon:
        name, consumption, count, client_port = asyncio.run(session())
        assert daemon.stop() == 0
    assert name == "e.consumption" and consumption > 0 and count == 1.0
    _, log, verdicts = saved(tmp_path / "state")
    assert [(r.channel, r.accepted, r.source) for r in log] == [
        ("e", True, f"bacnet:127.0.0.1:{client_port}")
    ]
    assert all(v.ok for v in verdicts)


def test_metrics_over_tls_with_basic_auth(tmp_path: Path) -> None:
    """With metrics.tls and basic_auth, a scrape needs HTTPS and the password; else 401."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    (tmp_path / "password").write_text("s3cret-for-scrapes\n")
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace(
            "metrics: {listen: '127.0.0.1:",
            "metrics: {tls: {cert: cert.pem, key: key.pem},"
            " basic_auth: {username: prometheus, password_file: password}, listen: '127.0.0.1:",
        )
    )
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    with Daemon(config).ready() as daemon:
        url = f"https://127.0.0.1:{daemon.metrics_port}/metrics"
        token = base64.b64encode(b"prometheus:s3cret-for-scrapes").decode()
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            assert b"pulse_gateway_pulses_total" in response.read()
        for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"x:y").decode()}):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(
                    urllib.request.Request(url, headers=headers), context=context, timeout=5
                )
            assert refused.value.code == 401
            assert "Basic" in refused.value.headers["WWW-Authenticate"]
            refused.value.close()  # its TLS socket, before the GC finds it in another test
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP
            urllib.request.urlopen(url.replace("https", "http"), timeout=5)
        assert daemon.stop() == 0
