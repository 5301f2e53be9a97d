"""The real gateway process against the real Modbus simulator, over TCP on loopback.

The simulator keeps its own exact count of every pulse (its "truth"); the gateway's
pulses_total must move by exactly as much across wraps, a device outage and a kill -9 of the
gateway itself, and no demand window may span the outage.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, free_port, free_udp_port

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 20.0


class Simulator:
    """`python -m simulators.modbus_counter` as a child process, driven by its control port."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulators.modbus_counter",
                "--port",
                "0",
                "--control-port",
                "0",
                *args,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        ready = json.loads(self.process.stdout.readline())
        self.port = int(ready["devices"][0]["port"])
        self.control = socket.create_connection(("127.0.0.1", ready["control_port"]), timeout=5)
        self.replies = self.control.makefile("r")

    def command(self, line: str) -> dict:
        self.control.sendall(line.encode() + b"\n")
        return json.loads(self.replies.readline())

    def truth(self) -> list[int]:
        return list(self.command("status 0")["devices"][0]["truth"])

    def close(self) -> None:
        self.replies.close()
        self.control.close()
        self.process.terminate()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    # two u32 counters wrapping at 1000, starting near it: wraps within seconds
    sim = Simulator("--channels", "2", "--rate", "40,15", "--rollover", "1000", "--initial", "950")
    try:
        yield sim
    finally:
        sim.close()


def config_for(folder: Path, modbus_port: int) -> Path:
    path = folder / "modbus.yaml"
    path.write_text(
        "gateway: {name: modbus-test, state_dir: state}\n"
        f"bacnet: {{address: 127.0.0.1/8, port: {free_udp_port()}, device_instance: 1002}}\n"
        f"metrics: {{listen: '127.0.0.1:{free_port()}'}}\n"
        "sources:\n"
        f"  - {{id: adam, type: modbus-tcp, host: 127.0.0.1, port: {modbus_port},"
        " poll_interval: 200ms, timeout: 300ms, backoff_max: 1s}\n"
        "channels:\n"
        "  - {id: a, unit: kWh, scale_factor: 1, demand_window: 2s, demand_slide: 1s,\n"
        "     source: {id: adam, table: holding, address: 0, type: u32, rollover: 1000}}\n"
        "  - {id: b, unit: us_gallons, scale_factor: 1, demand_window: 2s, demand_slide: 1s,\n"
        "     source: {id: adam, table: holding, address: 2, type: u32, rollover: 1000}}\n"
    )
    return path


def pulses(daemon: Daemon) -> list[float]:
    samples = daemon.scrape()
    return [samples[("pulse_gateway_pulses_total", (("channel", c),))] for c in "ab"]


def settled(daemon: Daemon, sim: Simulator) -> tuple[list[float], list[int]]:
    """Freeze the counters and wait until the gateway has read their final values."""
    sim.command("rate 0 * 0")
    deadline = time.monotonic() + TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        now = pulses(daemon)
        if now == last:
            return now, sim.truth()
        last = now
        time.sleep(0.7)  # longer than a poll plus a boundary: a stable pair means read through
    raise AssertionError("the gateway's counts never settled")


def wait_until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_exact_totals_across_wraps_an_outage_and_a_gateway_kill(
    tmp_path: Path, simulator: Simulator
) -> None:
    """Counts equal the simulator's truth after wraps, a mute and a kill -9; no false peak."""
    config = config_for(tmp_path, simulator.port)
    with Daemon(config).ready() as daemon:
        wait_until(lambda: pulses(daemon)[0] > 0, "the gateway never counted")
        base_pulses, base_truth = settled(daemon, simulator)
        simulator.command("rate 0 0 40")
        simulator.command("rate 0 1 15")
        time.sleep(1.5)
        simulator.command("mute 0 on")  # the module stops answering; counters keep counting
        up = ("pulse_gateway_source_up", (("source", "adam"),))
        wait_until(lambda: daemon.scrape()[up] == 0.0, "the outage was never noticed")
        time.sleep(2.5)
        demand = ("pulse_gateway_demand", (("channel", "a"), ("unit", "kilowatts")))
        assert math.isnan(daemon.scrape()[demand])  # a window over the outage is not available
        simulator.command("mute 0 off")
        wait_until(lambda: daemon.scrape()[up] == 1.0, "the source never came back")
        time.sleep(1.0)
        after_outage, truth = settled(daemon, simulator)
        assert [p - b for p, b in zip(after_outage, base_pulses, strict=True)] == [
            t - b for t, b in zip(truth, base_truth, strict=True)
        ]
        peak = ("pulse_gateway_peak_demand", (("channel", "a"), ("unit", "kilowatts")))
        # 40 pulses/s * 1 kWh * 3600: the outage's catch-up never became a peak
        assert daemon.scrape()[peak] <= 40 * 3600 * 1.5
        simulator.command("rate 0 0 40")
        time.sleep(1.2)
        daemon.kill()  # the gateway dies; the module keeps counting
    time.sleep(1.0)
    with Daemon(config).ready() as daemon:
        final, truth = settled(daemon, simulator)
        assert daemon.stop() == 0
    assert [f - b for f, b in zip(final, base_pulses, strict=True)] == [
        t - b for t, b in zip(truth, base_truth, strict=True)
    ]


def test_a_channel_moved_to_another_register_while_down_counts_no_difference(
    tmp_path: Path,
) -> None:
    """Registers swapped in the config while the gateway was stopped: neither channel takes
    the difference between the two registers for pulses; the change is logged; both count
    on from their new registers."""
    sim = Simulator("--channels", "2", "--rate", "0")
    try:
        sim.command("pulse 0 0 1000")
        sim.command("pulse 0 1 1200")
        config = config_for(tmp_path, sim.port)
        text = config.read_text().replace(", rollover: 1000", "")  # 2^32: no wrap in play
        config.write_text(text)
        with Daemon(config).ready() as daemon:
            wait_until(
                lambda: daemon.scrape()[("pulse_gateway_source_up", (("source", "adam"),))] == 1.0,
                "the source never came up",
            )
            sim.command("pulse 0 0 10")
            wait_until(lambda: pulses(daemon) == [10.0, 0.0], "the pulses were never counted")
            assert daemon.stop() == 0
        swapped = text.replace("address: 0,", "address: @,").replace("address: 2,", "address: 0,")
        config.write_text(swapped.replace("address: @,", "address: 2,"))
        sim.command("pulse 0 1 5")  # while down: register 2 reaches 1205
        with Daemon(config).ready() as daemon:
            time.sleep(1.0)  # several polls
            assert pulses(daemon) == [10.0, 0.0]  # not +195 (a) nor a wrap (b)
            dropped = {
                line["channel"]
                for line in daemon.seen
                if line.get("event") == "source_baseline_dropped"
            }
            assert dropped == {"a", "b"}
            sim.command("pulse 0 1 3")  # a now reads register 2
            sim.command("pulse 0 0 4")  # b now reads register 0
            wait_until(lambda: pulses(daemon) == [13.0, 4.0], "the new registers never counted")
            assert daemon.stop() == 0
    finally:
        sim.close()
