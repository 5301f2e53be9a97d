"""Sources benchmark: Modbus polling at scale and the GPIO event reader's throughput.

Modbus: 2,000 channels on 40 simulated counter modules (50 u32 counters each, 5 pulses/s per
channel), polled every second. The simulator runs in its own process (``python -m
simulators.modbus_counter --devices 40``). Two measurements, each in a child process whose CPU
and RSS are read from /proc:

1. **polling only**: the 40 ``ModbusSource`` objects with a counting sink (what the sources cost),
   with each source's poll cycle time (one coalesced 100-register read per module);
2. **full gateway**: ``pulse-gateway run -c <generated config>`` (sources, demand engine, SQLite
   checkpoints every second, metrics): what the daemon costs. If it cannot run, say so.

GPIO: a ``GpioSource`` on the fake chip (simulators/gpio_pulses.py) with 8 lines counting both
edges; pulse trains at a total of 5,000 edges/s and more through the real path (pipe fd ->
``loop.add_reader`` -> ``read_edge_events`` -> sink), checked for loss; and the reader alone
(``handle()`` on ready events) for its ceiling.

Targets: < 15 % of one core for the polling, >= 5,000 GPIO edges/s with no loss.
Figures, not assertions: the machine is shared and noisy. About 90 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config_sources import GpioPoint, ModbusPoint  # noqa: E402
from gateway.logging import configure  # noqa: E402
from gateway.sources.gpio import GpioSource  # noqa: E402
from gateway.sources.modbus import Endpoint, ModbusSource  # noqa: E402
from simulators.gpio_pulses import EventType, FakeEdgeEvent, FakeGpiod, pulse_train  # noqa: E402

DEVICES, COUNTERS, RATE = 40, 50, 5.0
TICKS = os.sysconf("SC_CLK_TCK")


class CountingSink:
    """A PulseSink that only counts."""

    def __init__(self) -> None:
        self.pulses_total = 0
        self.calls = 0
        self.caught = 0
        self.ups = 0
        self.downs = 0

    def pulses(self, channel: str, count: int) -> None:
        self.pulses_total += count
        self.calls += 1

    def source_down(self, source: str) -> None:
        self.downs += 1

    def source_up(self, source: str, catch_up: Any) -> None:
        self.ups += 1
        self.caught += sum(catch_up.values())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(pid: int, seconds: float) -> tuple[float, float]:
    """CPU (% of one core) of a process over ``seconds``, and its RSS (MiB) at the end."""
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
    return 100 * (cpu1 - cpu0) / (wall1 - wall0), rss_mib(pid)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def points(source: str) -> dict[str, ModbusPoint]:
    return {f"{source}_c{i}": ModbusPoint(source, "holding", 2 * i, "u32") for i in range(COUNTERS)}


# -- child: polling only -------------------------------------------------------------------


async def poll_only(ports: list[int], warmup: float, seconds: float) -> dict[str, Any]:
    sink = CountingSink()
    sources = [
        ModbusSource(f"m{k}", Endpoint("127.0.0.1", port), points(f"m{k}"), poll_interval=1.0)
        for k, port in enumerate(ports)
    ]
    tasks = [asyncio.create_task(source.run(sink)) for source in sources]
    await asyncio.sleep(warmup)
    cycles: list[float] = []
    cpu0, wall0, pulses0, requests0 = (
        time.process_time(),
        time.monotonic(),
        sink.pulses_total,
        sum(s.requests for s in sources),
    )
    for _ in range(int(seconds)):
        await asyncio.sleep(1.0)
        cycles.extend(source.cycle_seconds for source in sources)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    for task in tasks:
        task.cancel()
    return {
        "cpu_percent": 100 * cpu / wall,
        "rss_mib": rss_mib(os.getpid()),
        "pulses_per_s": (sink.pulses_total - pulses0) / wall,
        "requests_per_s": (sum(s.requests for s in sources) - requests0) / wall,
        "cycle_ms_mean": 1000 * statistics.fmean(cycles),
        "cycle_ms_max": 1000 * max(cycles),
        "up": sum(1 for s in sources if s.up),
        "failures": sum(s.failures for s in sources),
        "glitches": sum(sum(s.glitches.values()) for s in sources),
    }


# -- parent ---------------------------------------------------------------------------------


def start_simulator() -> tuple[subprocess.Popen[str], list[int]]:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "simulators.modbus_counter", "--devices", str(DEVICES)),
            *("--channels", str(COUNTERS), "--rate", str(RATE), "--port", "0"),
            *("--control-port", "0"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if not select.select([process.stdout], [], [], 30)[0]:
        process.kill()
        raise SystemExit("the simulator did not start within 30 s")
    ready = json.loads(process.stdout.readline())
    return process, [device["port"] for device in ready["devices"]]


def bench_polling(ports: list[int], seconds: float) -> None:
    child = subprocess.run(
        [sys.executable, __file__, "--poll-only", json.dumps(ports), "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    r = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"modbus polling only (40 ModbusSources + counting sink, own process, {seconds:.0f} s):")
    print(f"  CPU {r['cpu_percent']:.1f} % of one core (target < 15 %), RSS {r['rss_mib']:.0f} MiB")
    print(
        f"  {r['requests_per_s']:.0f} requests/s, {r['pulses_per_s']:.0f} pulses/s, "
        f"sources up {r['up']}/40, failures {r['failures']}, glitches {r['glitches']}"
    )
    print(
        f"  poll cycle per module: mean {r['cycle_ms_mean']:.1f} ms, max {r['cycle_ms_max']:.1f} ms"
    )


def gateway_config(folder: Path, ports: list[int]) -> Path:
    lines = [
        "gateway: {name: bench, state_dir: state}",
        f"bacnet: {{address: 127.0.0.1/8, port: {free_port()}, device_instance: 9001,"
        " device_name: Bench}",
        f"metrics: {{listen: '127.0.0.1:{free_port()}'}}",
        "sources:",
    ]
    lines += [
        f"  - {{id: m{k}, type: modbus-tcp, host: 127.0.0.1, port: {port}, poll_interval: 1s}}"
        for k, port in enumerate(ports)
    ]
    lines.append("channels:")
    for k in range(len(ports)):
        for i in range(COUNTERS):
            lines.append(
                f"  - {{id: m{k}_c{i}, unit: kWh, scale_factor: 0.01, demand_window: 15min,"
                f" demand_slide: 1min, source: {{id: m{k}, table: holding, address: {2 * i},"
                " type: u32}}"
            )
    path = folder / "bench.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_gateway(ports: list[int], warmup: float, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = gateway_config(Path(folder), ports)
        log = open(Path(folder) / "gateway.log", "w+")  # noqa: SIM115 - read back on failure
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "-c", str(config)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(warmup)
            if process.poll() is not None:
                log.seek(0)
                print(f"full gateway: could not run ({log.read()[-400:].strip()})")
                return
            cpu, rss = measure(process.pid, seconds)
            metrics_port = int(config.read_text().split("127.0.0.1:")[1].split("'")[0])
            with urllib.request.urlopen(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=10
            ) as r:
                text = r.read().decode()
            up = sum(
                1
                for line in text.splitlines()
                if line.startswith("pulse_gateway_source_up{") and line.endswith(" 1.0")
            )
            print(f"full gateway (pulse-gateway run, 2,000 channels, 40 sources, {seconds:.0f} s):")
            print(f"  CPU {cpu:.1f} % of one core, RSS {rss:.0f} MiB, sources up {up}/40")
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


async def bench_gpio(seconds: float) -> None:
    lines = 8
    gpiod = FakeGpiod()
    pts = {f"l{n}": GpioPoint("gpio0", n, "both", 0) for n in range(lines)}
    print(f"gpio event reader (fake chip, {lines} lines, both edges, kernel buffer 1024):")
    for total_rate in (5_000, 10_000, 20_000):
        source = GpioSource("gpio0", "/dev/gpiochip0", pts, gpiod=gpiod, event_buffer_size=1024)
        sink = CountingSink()
        task = asyncio.create_task(source.run(sink))
        while not source.up:
            await asyncio.sleep(0.01)
        request = gpiod.requests[-1]
        pulses = int(total_rate / 2 / lines * seconds)  # two edges per pulse
        began = time.monotonic()
        await asyncio.gather(
            *(
                pulse_train(request, n, rate=total_rate / 2 / lines, count=pulses)
                for n in range(lines)
            )
        )
        await asyncio.sleep(0.2)
        elapsed = time.monotonic() - began - 0.2
        edges = sum(source.edges.values())
        lost = sum(source.lost_edges.values())
        late = sum(source.late_edges.values())
        counted = sink.pulses_total + sink.caught
        print(
            f"  {total_rate:>6,} edges/s offered: {edges / elapsed:>8,.0f} edges/s handled, "
            f"counted {counted:,}/{2 * pulses * lines:,}, lost {lost}, late {late}"
        )
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    source = GpioSource("gpio0", "/dev/gpiochip0", pts, gpiod=gpiod)
    size, rounds = 64 * lines, 400
    batches = [
        [
            FakeEdgeEvent(
                EventType.RISING_EDGE, 0, n % lines, r * size + n + 1, r * 64 + n // lines + 1
            )
            for n in range(size)
        ]
        for r in range(rounds)
    ]
    sink = CountingSink()
    began = time.perf_counter()
    for batch in batches:
        source.handle(batch, sink, now_ns=0)
    rate = rounds * size / (time.perf_counter() - began)
    assert sink.pulses_total == rounds * size and not any(source.lost_edges.values())
    print(f"  reader alone (handle() on {size}-event batches): {rate:,.0f} edges/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window (20)")
    parser.add_argument("--poll-only", metavar="PORTS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure(sys.stderr, level=logging.WARNING)  # figures on stdout, not source logs
    if args.poll_only:
        result = asyncio.run(poll_only(json.loads(args.poll_only), 5.0, args.seconds))
        print(json.dumps(result))
        return 0
    simulator, ports = start_simulator()
    try:
        print(f"{DEVICES} simulated modules x {COUNTERS} u32 counters at {RATE:g} pulses/s each")
        bench_polling(ports, args.seconds)
        bench_gateway(ports, 10.0, args.seconds)
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    asyncio.run(bench_gpio(3.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
