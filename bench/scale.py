"""Scale benchmark: the whole daemon at 2,000 channels, with a BMS and Prometheus on it.

What runs, all on 127.0.0.1, each in its own process:

- **simulator**: ``python -m simulators.modbus_counter --devices 40 --channels 50`` (u32
  counters, ``--pulse-rate`` pulses/s each, 5 by default);
- **gateway**: ``pulse-gateway run -c <generated config>`` in a temporary directory (state_dir
  there): 40 ``modbus-tcp`` sources polled every 1 s, 2,000 kWh channels (scale 0.01 kWh/pulse,
  demand window 15 min sliding every 1 min, COV increment 0.25 kWh), 12 BACnet objects per
  channel (9 analog inputs, the reset binary value, 2 trend logs), metrics on a free port;
- **COV subscribers**: a child of this script (``--cov-child``) running 4 bac-py clients (4
  BMS front ends) with 200 COV subscriptions between them, *confirmed* by default
  (``--cov unconfirmed`` for the other kind), on the consumption objects of 200 channels spread
  evenly over the 2,000; at 5 pulses/s x 0.01 kWh a consumption crosses the 0.25 kWh increment
  every 5 s, so about 40 notifications/s flow;
- **this process**: ReadProperty present-value at a paced 300/s (raw UDP, the client of
  ``bench/bacnet.py`` made open-loop: requests leave on a timer, not when replies come back;
  objects drawn from every channel), a scrape of ``/metrics`` every 15 s (each one timed,
  connect to last byte) and the gateway's CPU from ``/proc/<pid>/stat``;
- **web clients** (``--web N``, none by default): a child of this script (``--web-child``)
  running N aiohttp clients, each asking ``GET /api/v1/status`` (the whole site as JSON, what
  the status page asks every 2 s) every 2 s during the steady window, staggered evenly over
  the 2 s, on a new connection each time; every answer is timed (connect to the response
  headers, and to the last byte) and checked (200, JSON, one entry per channel);
- **virtual channels** (``--virtual N``, none by default): N kWh virtual channels after the
  2,000 physical ones, each the coincident demand of ``--terms`` (10) added terms spread over
  the site (virtual channel j: physical channels j, j + 200, j + 400, ... at 2,000 channels
  and 10 terms, so at N = 200 each physical channel is a term of exactly one), same window,
  slide and COV increment; they get BACnet objects, ReadProperty is drawn from every channel,
  virtual ones included, and the COV subscriptions stay on physical channels.

Measured: start-up (process start until the ``gateway_ready`` log line, and until BACnet first
answers a ReadProperty; again for a restart on the saved state), then, after a warm-up, over a
steady window (``--duration``, 150 s by default, so two or three 1-minute boundaries fall in
it): the gateway's CPU (% of one core) and RSS (VmRSS at the end, VmHWM), every scrape's time,
ReadProperty p50/p99, the boundary lag (``pulse_gateway_boundary_lag_seconds`` from the
scrapes), COV notifications received, the status requests' times and sizes (with ``--web``),
and the stop time (SIGTERM until exit).

Figures, not assertions: on a shared 2-core machine the gateway, the simulator and the clients
compete with whatever else runs; the script prints the machine's load so the figures can be
read against it. Every child is stopped on exit, Ctrl-C or error (and gets SIGTERM if this
process dies). About 3 minutes by default; ``python bench/scale.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import pstats
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/scale.py` from anywhere
    sys.path.insert(0, str(ROOT))

from bench.bacnet import (  # noqa: E402 - the raw-UDP ReadProperty client
    AI,
    PRESENT_VALUE,
    Load,
    Result,
    confirmed_request,
    cpu_seconds,
    oid,
    points,
    rp_requests,
)
from bench.bacnet import free_port as free_udp_port  # noqa: E402
from gateway.bacnet.points import all_points  # noqa: E402
from gateway.config import load_config  # noqa: E402

PER_DEVICE = 50  # counters per simulated module
START_TIMEOUT_S = 60.0
MAX_OUTSTANDING = 200  # invoke ids are 0-255; beyond this a paced request is skipped
MIB = 1024 * 1024
WEB_EVERY_S = 2.0  # the status page's own refresh: one request per open page every 2 s
TARGET_RSS_MIB = 200e6 / MIB  # 200 MB


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_prctl: Callable[..., int] | None
try:  # looked up here, not in the forked child: no loader work between fork and exec
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when this process dies (Linux prctl PR_SET_PDEATHSIG)."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGTERM))


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found.get("VmRSS", math.nan), found.get("VmHWM", math.nan)


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for 127.0.0.1:``port`` (receive buffer full), /proc/net/udp."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted:
            return int(fields[-1])
    return 0


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# -- the children -------------------------------------------------------------------------------


class Children:
    """Every process this script starts; ``close()`` stops them all, bounded."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[Any]] = []

    def start(self, args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        process = subprocess.Popen(args, cwd=ROOT, preexec_fn=die_with_parent, **kwargs)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def start_simulator(children: Children, devices: int, rate: float) -> list[int]:
    process = children.start(
        [
            *(sys.executable, "-m", "simulators.modbus_counter", "--devices", str(devices)),
            *("--channels", str(PER_DEVICE), "--rate", f"{rate:g}", "--port", "0"),
            *("--control-port", "0"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if not select.select([process.stdout], [], [], 30)[0]:
        raise SystemExit("the simulator did not start within 30 s")
    ready = json.loads(process.stdout.readline())
    return [device["port"] for device in ready["devices"]]


def write_config(
    folder: Path,
    ports: list[int],
    channels: int,
    cov_increment: float,
    virtual: int = 0,
    terms: int = 10,
) -> Path:
    lines = [
        "gateway: {name: scale-bench, state_dir: state}",
        f"bacnet: {{address: 127.0.0.1/8, port: {free_udp_port()}, device_instance: 9001,"
        " device_name: Scale Bench}",
        f"http: {{listen: '127.0.0.1:{free_tcp_port()}'}}",
        "sources:",
        *(
            f"  - {{id: m{k}, type: modbus-tcp, host: 127.0.0.1, port: {port}, poll_interval: 1s}}"
            for k, port in enumerate(ports)
        ),
        "channels:",
    ]
    for n in range(channels):
        k, i = divmod(n, PER_DEVICE)
        lines.append(
            f"  - {{id: m{k}_c{i}, unit: kWh, scale_factor: 0.01, demand_window: 15min,"
            f" demand_slide: 1min, cov_increment: {cov_increment:g},"
            f" source: {{id: m{k}, table: holding, address: {2 * i}, type: u32}}}}"
        )
    step = channels // terms  # a virtual channel's terms step apart: distinct, site-wide
    for j in range(virtual):
        members = ", ".join(
            "m{}_c{}".format(*divmod((j + n * step) % channels, PER_DEVICE)) for n in range(terms)
        )
        lines.append(
            f"  - {{id: v{j}, unit: kWh, virtual: {{add: [{members}]}}, demand_window: 15min,"
            f" demand_slide: 1min, cov_increment: {cov_increment:g}}}"
        )
    path = folder / "scale.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


class GatewayProcess:
    """``pulse-gateway run`` as a child; its JSON log lines are timestamped as they arrive."""

    def __init__(self, children: Children, config: Path, profile: str | None = None) -> None:
        self.events: Counter[str] = Counter()
        self.problems: list[dict[str, Any]] = []  # warning and error lines
        self.arrived: dict[str, list[float]] = {}  # event -> monotonic arrival times
        self.tail: list[str] = []
        self.started = time.monotonic()
        self.process = children.start(
            [
                sys.executable,
                *(("-m", "cProfile", "-o", profile) if profile else ()),
                *("-m", "gateway.cli", "run", "-c", str(config)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.pid = self.process.pid
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            now = time.monotonic()
            self.tail = [*self.tail[-19:], line.rstrip()]
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"event": "unparsed", "level": "error", "text": line.rstrip()}
            event = str(entry.get("event"))
            self.events[event] += 1
            self.arrived.setdefault(event, []).append(now)
            if entry.get("level") in ("warning", "error", "critical"):
                self.problems.append(entry)

    def first(self, event: str) -> float | None:
        times = self.arrived.get(event)
        return times[0] - self.started if times else None

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = "\n  ".join(self.tail[-10:])
            raise SystemExit(f"the gateway exited ({self.process.returncode}):\n  {tail}")

    def stop(self) -> float:
        """SIGTERM; seconds until it exited."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            return math.inf
        return time.monotonic() - began


# -- BACnet: start-up probe and the paced ReadProperty load --------------------------------------


class Probe(asyncio.DatagramProtocol):
    """Asks ReadProperty ai,101 present-value every 20 ms until the first ComplexACK."""

    def __init__(self) -> None:
        self.answered: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > 6 and data[6] >> 4 == 3 and not self.answered.done():
            self.answered.set_result(time.monotonic())

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable before the gateway binds


async def bacnet_answers(port: int, timeout: float) -> float:
    """The monotonic time the gateway first answered a ReadProperty."""
    loop = asyncio.get_running_loop()
    prefix, suffix = confirmed_request(12, oid(0, AI, 101) + bytes((0x19, PRESENT_VALUE)))
    transport, probe = await loop.create_datagram_endpoint(
        Probe, local_addr=("127.0.0.1", free_udp_port())
    )
    try:
        deadline = time.monotonic() + timeout
        invoke = 0
        while not probe.answered.done() and time.monotonic() < deadline:
            transport.sendto(prefix + bytes((invoke,)) + suffix, ("127.0.0.1", port))
            invoke = (invoke + 1) & 0xFF
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(probe.answered), 0.02)
        if not probe.answered.done():
            raise SystemExit(f"BACnet did not answer within {timeout:.0f} s")
        return probe.answered.result()
    finally:
        transport.close()


class Paced(Load):
    """bench/bacnet.py's client, open-loop: requests leave on a timer; a reply sends nothing."""

    def __init__(self, requests: list[tuple[bytes, bytes]], server: tuple[str, int]) -> None:
        super().__init__(requests, server)
        self.sent = 0
        self.skipped = 0

    def send(self) -> None:
        """Called by Load after a reply or a loss: the pace alone decides when to send."""

    def fire(self) -> None:
        if len(self.outstanding) >= MAX_OUTSTANDING:
            self.skipped += self.recording
            return
        Load.send(self)
        self.sent += self.recording


async def pace(load: Paced, rate: float, stop: asyncio.Event) -> None:
    """Send ``rate`` requests a second, evenly spaced, until ``stop``; reap lost ones."""
    interval = 1.0 / rate
    due = time.perf_counter()
    next_reap = due + 0.25
    while not stop.is_set():
        now = time.perf_counter()
        if now - due > 1.0:  # this process was starved for a second: do not burst
            due = now
        while due <= now:
            load.fire()
            due += interval
        if now >= next_reap:
            load.reap()
            next_reap = now + 0.25
        await asyncio.sleep(max(0.0, due - time.perf_counter()))


# -- /metrics -----------------------------------------------------------------------------------


async def scrape(port: int) -> tuple[float, str]:
    """GET /metrics: (seconds from connect to the last byte, body)."""
    began = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    elapsed = time.perf_counter() - began
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"/metrics answered {head[:60]!r}")
    return elapsed, body.decode()


def sample(body: str, name: str) -> float:
    """The value of an unlabelled sample in a text exposition, NaN when absent."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
    return float(found.group(1)) if found else math.nan


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, pattern
    return match.group(1)


def sources_up(body: str) -> int:
    return len(re.findall(r"^pulse_gateway_source_up\{[^}]*\} 1\.0$", body, re.MULTILINE))


# -- the COV subscriber child -------------------------------------------------------------------


async def cov_child(
    port: int, instances: list[int], clients: int, confirmed: bool, life: int
) -> None:
    """Subscribe; print one JSON line when subscribed and one at the end (SIGTERM or ``life``).

    SIGUSR1 marks an instant: the end line gives the notifications between the first two marks.
    Confirmed notifications that bac-py acknowledges without delivering them are counted too:
    its server TSM keeps a finished transaction 6 s and takes a new request with the same
    (source, invoke id) in that time for a retransmission (it resends the cached SimpleACK).
    """
    from bac_py import Client

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    counts = [0] * (len(instances) + 1)  # per subscription, then the swallowed duplicates
    marks: list[tuple[float, list[int]]] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: marks.append((time.monotonic(), counts[:])))

    def count_duplicates(client: Any) -> None:
        tsm = getattr(client.app, "_server_tsm", None)  # bac-py internals: a best effort
        if tsm is None:
            return
        receive = tsm.receive_confirmed_request

        def receiving(pdu: Any, source: Any) -> Any:
            result = receive(pdu, source)
            counts[-1] += result is None
            return result

        tsm.receive_confirmed_request = receiving

    async with contextlib.AsyncExitStack() as stack:
        bms = []
        for n in range(clients):
            client = Client(
                instance_number=4100 + n,
                interface="127.0.0.1",
                port=free_udp_port(),
                broadcast_address="127.255.255.255",
            )
            bms.append(await stack.enter_async_context(client))
            count_duplicates(client)
        gate = asyncio.Semaphore(16)

        async def subscribe(i: int, instance: int) -> None:
            def counted(notification: Any, source: Any) -> None:
                counts[i] += 1

            async with gate:
                await asyncio.wait_for(
                    bms[i % clients].subscribe_cov_ex(
                        f"127.0.0.1:{port}",
                        f"ai,{instance}",
                        process_id=i + 1,
                        confirmed=confirmed,
                        lifetime=life,
                        callback=counted,
                    ),
                    10,
                )

        began = time.monotonic()
        results = await asyncio.gather(
            *(subscribe(i, instance) for i, instance in enumerate(instances)),
            return_exceptions=True,
        )
        failures = [repr(r) for r in results if isinstance(r, BaseException)]
        subscribed = {
            "subscribed": len(instances) - len(failures),
            "failures": failures[:3],
            "seconds": time.monotonic() - began,
        }
        print(json.dumps(subscribed), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), life)
        marks.append((time.monotonic(), counts[:]))
        (t0, c0), (t1, c1) = marks[0], marks[1 if len(marks) > 2 else -1]
        each = [b - a for a, b in zip(c0[:-1], c1[:-1], strict=True)]
        result = {
            "notifications": sum(each),
            "duplicates": c1[-1] - c0[-1],
            "seconds": t1 - t0,
            "silent": each.count(0),
            "per_subscription": [min(each), statistics.median(each), max(each)],
        }
        print(json.dumps(result), flush=True)


def start_cov_child(
    children: Children, port: int, channels: int, args: argparse.Namespace, life: int
) -> subprocess.Popen[str]:
    step = channels / args.subscriptions
    instances = [100 * (int(n * step) + 1) + 1 for n in range(args.subscriptions)]
    return children.start(
        [
            *(sys.executable, __file__, "--cov-child", str(port)),
            *("--cov-instances", ",".join(map(str, instances)), "--cov", args.cov),
            *("--cov-clients", str(args.cov_clients), "--cov-life", str(life)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def read_json_line(
    process: subprocess.Popen[str], timeout: float, who: str = "the COV subscribers"
) -> dict[str, Any]:
    assert process.stdout is not None
    if not select.select([process.stdout], [], [], timeout)[0]:
        raise SystemExit(f"no answer from {who} within {timeout:.0f} s")
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"{who}: the process exited early")
    return json.loads(line)


# -- the web client child -----------------------------------------------------------------------


async def web_child(port: int, clients: int, channels: int, life: int) -> None:
    """``clients`` pollers of ``GET /api/v1/status``, each every WEB_EVERY_S, staggered over it.

    Prints one JSON line when ready. The first SIGUSR1 starts the polling, the second (or
    SIGTERM, or ``life`` s) stops it; the requests in flight then finish and a last JSON line
    gives every request's times, the body sizes and what was wrong with the bad answers. A
    process of its own: parsing five 1 MB documents a second in the bench's process would stall
    its loop and show as ReadProperty latency that is not the gateway's.
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    start, stop = asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, lambda: (stop if start.is_set() else start).set())
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    url = f"http://127.0.0.1:{port}/api/v1/status"
    headers_s: list[float] = []  # connect to the response headers: the document is built by then
    last_byte_s: list[float] = []  # connect to the last byte
    sizes: list[int] = []
    bad: Counter[str] = Counter()
    counts = Counter[str]()  # requests; polls skipped because the one before ran past them

    async def get(session: aiohttp.ClientSession) -> None:
        counts["requests"] += 1
        began = time.perf_counter()
        try:
            async with session.get(url) as response:
                headed = time.perf_counter()
                body = await response.read()
            done = time.perf_counter()
        except (aiohttp.ClientError, TimeoutError) as exc:
            bad[type(exc).__name__] += 1
            return
        headers_s.append(headed - began)
        last_byte_s.append(done - began)
        sizes.append(len(body))
        if response.status != 200:
            bad[f"HTTP {response.status}"] += 1
            return
        try:  # off the loop, so one client's parse does not sit in another's timing
            document = await asyncio.to_thread(json.loads, body)
        except ValueError:
            bad["not JSON"] += 1
            return
        got = len(document.get("channels", ())) if isinstance(document, dict) else -1
        if got != channels:
            bad[f"{got} channels, not {channels}"] += 1

    async def client(due: float) -> None:
        # force_close: a new connection for every request, so each time includes the connect
        connector = aiohttp.TCPConnector(force_close=True)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
                if stop.is_set():
                    return
                await get(session)
                due += WEB_EVERY_S
                while due < time.monotonic():  # a fixed pace: a slow answer skips, never bursts
                    due += WEB_EVERY_S
                    counts["late"] += 1

    print(json.dumps({"ready": clients}), flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(start.wait(), life)
    began = time.monotonic()
    if start.is_set() and not stop.is_set():
        stagger = WEB_EVERY_S / clients
        tasks = [asyncio.create_task(client(began + n * stagger)) for n in range(clients)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), life)
        stop.set()
        ended = time.monotonic()
        await asyncio.gather(*tasks)  # the requests in flight finish: none counted as lost
    else:
        ended = began
    result = {
        "requests": counts["requests"],
        "headers_s": headers_s,
        "last_byte_s": last_byte_s,
        "sizes": [min(sizes, default=0), max(sizes, default=0)],
        "bad": dict(bad),
        "late": counts["late"],
        "seconds": ended - began,
    }
    print(json.dumps(result), flush=True)


def start_web_child(
    children: Children, port: int, channels: int, clients: int, life: int
) -> subprocess.Popen[str]:
    return children.start(
        [
            *(sys.executable, __file__, "--web-child", str(port), "--web", str(clients)),
            *("--channels", str(channels), "--web-life", str(life)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Figures:
    startup_ready: float = math.nan
    startup_bacnet: float = math.nan
    startup_sources: float = math.nan
    restart_ready: float = math.nan
    restart_bacnet: float = math.nan
    stop_s: float = math.nan
    cpu: float = math.nan
    cpu_windows: list[float] = field(default_factory=list)
    rss: float = math.nan
    hwm: float = math.nan
    scrapes: list[float] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)
    rp: Result = field(default_factory=Result)
    rp_sent: int = 0
    rp_skipped: int = 0
    drops: tuple[int, int] = (0, 0)  # UDP datagrams dropped: gateway socket, client socket
    cov_subscribe: dict[str, Any] = field(default_factory=dict)
    cov: dict[str, Any] = field(default_factory=dict)
    web: dict[str, Any] = field(default_factory=dict)  # the web clients' result line
    others: dict[str, float] = field(default_factory=dict)  # CPU % of one core per process
    machine_busy: float = math.nan  # cores busy, whole machine
    loads: list[float] = field(default_factory=list)
    window: float = 0.0
    problems: list[dict[str, Any]] = field(default_factory=list)  # gateway warning/error lines


async def wait_startup(gateway: GatewayProcess, bacnet_port: int) -> tuple[float, float]:
    """(seconds to gateway_ready, seconds to the first BACnet answer) from process start."""
    answered = asyncio.create_task(bacnet_answers(bacnet_port, START_TIMEOUT_S))
    deadline = gateway.started + START_TIMEOUT_S
    while gateway.first("gateway_ready") is None:
        gateway.check_alive()
        if time.monotonic() > deadline:
            answered.cancel()
            raise SystemExit(f"no gateway_ready within {START_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.01)
    bacnet = await answered
    ready = gateway.first("gateway_ready")
    assert ready is not None
    return ready, bacnet - gateway.started


async def measure(
    gateway: GatewayProcess,
    others: dict[str, int],
    cov: subprocess.Popen[str],
    web: subprocess.Popen[str] | None,
    metrics_port: int,
    bacnet_port: int,
    channels: int,
    args: argparse.Namespace,
    figures: Figures,
) -> None:
    """Warm up, then the steady window: RP load, scrapes, web clients, CPU and memory."""
    loop = asyncio.get_running_loop()
    transport, load = await loop.create_datagram_endpoint(
        lambda: Paced(rp_requests(points(channels)), ("127.0.0.1", bacnet_port)),
        local_addr=("127.0.0.1", free_udp_port()),
    )
    stop = asyncio.Event()
    pacer = asyncio.create_task(pace(load, args.rate, stop))
    try:
        print(f"warm-up {args.warmup:g} s (ReadProperty load and COV running)...", flush=True)
        await asyncio.sleep(args.warmup)
        gateway.check_alive()
        print(f"steady window {args.duration:g} s...", flush=True)
        cov.send_signal(signal.SIGUSR1)
        if web is not None:
            web.send_signal(signal.SIGUSR1)  # the status polling runs in the window only
        load.recording = True
        began = time.monotonic()
        cpu0 = cpu_seconds(gateway.pid)
        others0 = {name: cpu_seconds(pid) for name, pid in others.items()}
        client0 = time.process_time()
        busy0, total0 = machine_jiffies()
        client_port = transport.get_extra_info("sockname")[1]
        drops0 = udp_drops(bacnet_port), udp_drops(client_port)
        last_cpu, last_t = cpu0, began
        end = began + args.duration
        next_scrape = began
        while (now := time.monotonic()) < end:
            if now >= next_scrape:
                elapsed, body = await scrape(metrics_port)
                figures.scrapes.append(elapsed)
                figures.bodies.append(body)
                figures.loads.append(loadavg())
                next_scrape += args.scrape_every
                if len(figures.scrapes) > 1:  # the CPU of each slice between two scrapes
                    cpu = cpu_seconds(gateway.pid)
                    figures.cpu_windows.append(100 * (cpu - last_cpu) / (now - last_t))
                    last_cpu, last_t = cpu, now
            gateway.check_alive()
            await asyncio.sleep(max(0.0, min(next_scrape, end) - time.monotonic()))
        window = time.monotonic() - began
        figures.window = window
        figures.cpu = 100 * (cpu_seconds(gateway.pid) - cpu0) / window
        figures.rss, figures.hwm = memory_mib(gateway.pid)
        figures.others = {
            name: 100 * (cpu_seconds(pid) - others0[name]) / window for name, pid in others.items()
        }
        figures.others["bench client (this process)"] = (
            100 * (time.process_time() - client0) / window
        )
        busy1, total1 = machine_jiffies()
        figures.machine_busy = (os.cpu_count() or 1) * (busy1 - busy0) / max(1, total1 - total0)
        figures.loads.append(loadavg())
        figures.drops = (
            udp_drops(bacnet_port) - drops0[0],
            udp_drops(client_port) - drops0[1],
        )
        cov.send_signal(signal.SIGUSR1)
        if web is not None:
            web.send_signal(signal.SIGUSR1)
        load.recording = False
        load.result.seconds = window
        figures.rp, figures.rp_sent, figures.rp_skipped = load.result, load.sent, load.skipped
    finally:
        stop.set()
        await asyncio.gather(pacer, return_exceptions=True)
        await asyncio.sleep(0.1)
        transport.close()


async def run(args: argparse.Namespace) -> Figures:
    figures = Figures()
    channels = args.channels
    devices = math.ceil(channels / PER_DEVICE)
    children = Children()
    try:
        with tempfile.TemporaryDirectory(prefix="scale-bench-") as folder:
            ports = start_simulator(children, devices, args.pulse_rate)
            simulator_pid = children.processes[-1].pid
            config = write_config(
                Path(folder), ports, channels, args.cov_increment, args.virtual, args.terms
            )
            every = channels + args.virtual  # every channel with BACnet objects and a status
            text = config.read_text()
            bacnet_port = int(found(r"port: (\d+), device_instance", text))
            metrics_port = int(found(r"127\.0\.0\.1:(\d+)'", text))
            objects = len(all_points(load_config(config, purpose="run").channels))
            print(
                f"{devices} simulated modules, {channels} channels + {args.virtual} virtual,"
                f" {objects} BACnet objects (and the device and its network port); config and"
                f" state in {folder}",
                flush=True,
            )
            gateway = GatewayProcess(children, config, args.profile)
            figures.startup_ready, figures.startup_bacnet = await wait_startup(gateway, bacnet_port)
            print(
                f"start-up: gateway_ready {figures.startup_ready:.2f} s, BACnet answers"
                f" {figures.startup_bacnet:.2f} s",
                flush=True,
            )
            deadline = time.monotonic() + 30
            while len(gateway.arrived.get("source_up", [])) < devices:
                gateway.check_alive()
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"only {len(gateway.arrived.get('source_up', []))}/{devices} sources up"
                    )
                await asyncio.sleep(0.05)
            figures.startup_sources = gateway.arrived["source_up"][devices - 1] - gateway.started
            life = int(args.warmup + args.duration + 300)
            cov = start_cov_child(children, bacnet_port, channels, args, life)
            figures.cov_subscribe = read_json_line(cov, 60)
            print(
                f"COV: {figures.cov_subscribe['subscribed']}/{args.subscriptions} {args.cov}"
                f" subscriptions in {figures.cov_subscribe['seconds']:.1f} s",
                flush=True,
            )
            others = {"simulator": simulator_pid, "COV subscribers": cov.pid}
            web = None
            if args.web:
                web = start_web_child(children, metrics_port, every, args.web, life)
                read_json_line(web, 30, "the web clients")
                others["web clients"] = web.pid
            await measure(
                gateway, others, cov, web, metrics_port, bacnet_port, every, args, figures
            )
            cov.terminate()
            figures.cov = read_json_line(cov, 15)
            if web is not None:  # after its requests in flight, each bounded by 30 s
                figures.web = read_json_line(web, 45, "the web clients")
            figures.stop_s = gateway.stop()
            figures.problems = gateway.problems
            if args.restart:
                print("restart on the saved state...", flush=True)
                again = GatewayProcess(children, config)
                figures.restart_ready, figures.restart_bacnet = await wait_startup(
                    again, bacnet_port
                )
                again.stop()
    finally:
        children.close()
    return figures


# -- report -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


Row = tuple[str, str, str, bool | None]  # measure, target, measured, verdict (None: none)


def web_rows(web: dict[str, Any], clients: int, channels: int) -> list[Row]:
    """The status requests against their target; the request's time bounds the build time."""
    last = [1000 * s for s in web.get("last_byte_s", [])]
    headed = [1000 * s for s in web.get("headers_s", [])]
    requests = int(web.get("requests", 0))
    good = requests - sum(web.get("bad", {}).values())
    p99 = percentile(last, 99)
    smallest, largest = web.get("sizes", [0, 0])
    size = f"{largest / 1e3:.0f} kB" + (
        f" (min {smallest / 1e3:.0f})" if smallest != largest else ""
    )
    return [
        (
            f"/api/v1/status, {clients} clients p50 / p99",
            "p99 < 50 ms",
            f"{percentile(last, 50):.1f} / {p99:.1f} ms",
            p99 < 50,
        ),
        (
            "  max; to the headers p50 / p99",
            "",
            f"{max(last, default=math.nan):.0f}; {percentile(headed, 50):.1f} /"
            f" {percentile(headed, 99):.1f} ms",
            None,
        ),
        (
            f"  200, JSON, {channels} channels",
            "every answer",
            f"{good} of {requests}",
            requests > 0 and good == requests,
        ),
        ("  body", "", size, None),
    ]


def report(figures: Figures, args: argparse.Namespace) -> None:
    ms = [1000 * s for s in figures.rp.latencies]
    scrapes = [1000 * s for s in figures.scrapes]
    lags = [sample(body, "pulse_gateway_boundary_lag_seconds") for body in figures.bodies]
    bodies = figures.bodies
    checkpoint = "n/a"
    if len(bodies) >= 2:
        name = "pulse_gateway_checkpoint_duration_seconds"
        count = sample(bodies[-1], f"{name}_count") - sample(bodies[0], f"{name}_count")
        total = sample(bodies[-1], f"{name}_sum") - sample(bodies[0], f"{name}_sum")
        if count > 0:
            checkpoint = f"{1000 * total / count:.1f} ms mean over {count:.0f}"
    up = min((sources_up(body) for body in bodies), default=0)
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    rows: list[Row] = [
        ("CPU, gateway process", "< 15 % of one core", f"{figures.cpu:.1f} %", figures.cpu < 15),
        (
            f"  max over {args.scrape_every:g} s slices",
            "",
            f"{max(figures.cpu_windows, default=math.nan):.1f} %",
            None,
        ),
        (
            "RSS (VmRSS / VmHWM)",
            "< 200 MB (190.7 MiB)",
            f"{figures.rss:.0f} / {figures.hwm:.0f} MiB",
            figures.hwm < TARGET_RSS_MIB,
        ),
        (
            f"/metrics scrape ({len(scrapes)}, max)",
            "< 250 ms",
            f"{max(scrapes, default=math.nan):.0f} ms (median"
            f" {statistics.median(scrapes) if scrapes else math.nan:.0f})",
            bool(scrapes) and max(scrapes) < 250,
        ),
        (
            f"ReadProperty at {args.rate:g}/s p50 / p99",
            "p99 < 20 ms",
            f"{p50:.2f} / {p99:.2f} ms",
            p99 < 20,
        ),
        (
            "  p90 / p99.9 / max",
            "",
            f"{percentile(ms, 90):.2f} / {percentile(ms, 99.9):.0f} / {max(ms, default=0):.0f} ms",
            None,
        ),
        (
            "  answers slower than 20 ms",
            "",
            f"{100 * sum(m > 20 for m in ms) / max(1, len(ms)):.2f} %",
            None,
        ),
        (
            "boundary lag (max seen)",
            "(no target)",
            f"{1000 * max(lags, default=math.nan):.0f} ms",
            None,
        ),
        (
            "start-up to gateway_ready",
            "< 10 s",
            f"{figures.startup_ready:.2f} s",
            figures.startup_ready < 10,
        ),
        (
            "start-up to first BACnet answer",
            "< 10 s",
            f"{figures.startup_bacnet:.2f} s",
            figures.startup_bacnet < 10,
        ),
        ("start-up to all sources up", "", f"{figures.startup_sources:.2f} s", None),
    ]
    if args.web:  # after the ReadProperty rows: the two figures to read together
        at = next(i for i, row in enumerate(rows) if row[0].startswith("boundary lag"))
        rows[at:at] = web_rows(figures.web, args.web, args.channels + args.virtual)
    if args.restart:
        rows.append(
            (
                "restart on saved state: ready / BACnet",
                "< 10 s",
                f"{figures.restart_ready:.2f} / {figures.restart_bacnet:.2f} s",
                max(figures.restart_ready, figures.restart_bacnet) < 10,
            )
        )
    rows.append(("stop (SIGTERM to exit)", "< 5 s", f"{figures.stop_s:.2f} s", figures.stop_s < 5))
    print()
    print(f"{'measure':<40} {'target':<22} {'measured':<26} verdict")
    for name, target, measured, ok in rows:
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        print(f"{name:<40} {target:<22} {measured:<26} {verdict}")
    print()
    rp = figures.rp
    print(
        f"ReadProperty: sent {figures.rp_sent}, answered {rp.replies}"
        f" ({rp.replies / figures.window:.0f}/s), errors {rp.errors}, lost {rp.lost},"
        f" skipped {figures.rp_skipped}; UDP datagrams the kernel dropped (receive buffer"
        f" full): gateway's socket {figures.drops[0]}, client's {figures.drops[1]}"
    )
    cov = figures.cov
    seconds = max(cov.get("seconds", 0.0), 1e-9)
    delivered, duplicates = cov.get("notifications", 0), cov.get("duplicates", 0)
    print(
        f"COV ({args.cov}, {figures.cov_subscribe.get('subscribed')} subscriptions,"
        f" {args.cov_clients} bac-py clients, increment {args.cov_increment:g} kWh):"
        f" {delivered} notifications delivered in the window ({delivered / seconds:.1f}/s;"
        f" min/median/max per subscription {cov.get('per_subscription')},"
        f" {cov.get('silent', '?')} silent)"
    )
    if duplicates:
        print(
            f"  + {duplicates} ({duplicates / seconds:.1f}/s) confirmed notifications that bac-py"
            " acknowledged but did not deliver: same invoke id from the gateway within its 6 s"
            " duplicate window (the gateway numbers requests per peer: more than 256 to one"
            " peer in 6 s?)"
        )
    if args.web:
        web = figures.web
        requests, seconds = web.get("requests", 0), max(web.get("seconds", 0.0), 1e-9)
        last = [1000 * s for s in web.get("last_byte_s", [])]
        headed = [1000 * s for s in web.get("headers_s", [])]

        def spread(values: list[float]) -> str:
            return " / ".join(f"{percentile(values, q):.1f}" for q in (50, 90, 99, 100))

        print(
            f"web: {args.web} clients, each GET /api/v1/status every {WEB_EVERY_S:g} s,"
            f" {WEB_EVERY_S / args.web:.2g} s apart, a new connection each time: {requests}"
            f" requests in {seconds:.0f} s ({requests / seconds:.1f}/s), {web.get('late', 0)}"
            f" polls skipped (the one before still running), bad answers:"
            f" {web.get('bad') or 'none'}; connect to last byte p50 / p90 / p99 / max"
            f" {spread(last)} ms, to the headers {spread(headed)} ms. The gateway neither logs"
            " nor exposes the time it takes to build the document:"
            " the time to the headers (connect, build, serialise) bounds it"
        )
    print(f"checkpoints: {checkpoint}; sources up at every scrape: {up}")
    print(
        f"/metrics body {len(bodies[-1].encode()) / 1e6 if bodies else 0:.2f} MB;"
        f" every scrape (ms): {', '.join(f'{s:.0f}' for s in scrapes)}"
    )
    print(
        f"CPU per {args.scrape_every:g} s slice (% of one core): "
        + ", ".join(f"{c:.0f}" for c in figures.cpu_windows)
    )
    print(
        f"window {figures.window:.0f} s; other processes (% of one core): "
        + ", ".join(f"{name} {cpu:.1f}" for name, cpu in figures.others.items())
    )
    ours = figures.cpu + sum(figures.others.values())
    print(
        f"machine: {os.cpu_count()} CPUs, busy {100 * figures.machine_busy:.0f} % of one core"
        f" in the window ({max(0.0, 100 * figures.machine_busy - ours):.0f} % of it not this"
        f" bench's processes); load average (1 min) {min(figures.loads, default=0):.2f}"
        f" to {max(figures.loads, default=0):.2f}; Python {sys.version.split()[0]}"
    )
    if args.profile and Path(args.profile).exists():
        print(f"\ngateway profile (cProfile, {args.profile}), top functions by own time:")
        stats = pstats.Stats(args.profile)
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats(25)
    if figures.problems:
        kinds = Counter(str(p.get("event")) for p in figures.problems)
        print("gateway warnings/errors: " + ", ".join(f"{k} x{n}" for k, n in kinds.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=2000, help="channels (2000)")
    parser.add_argument("--duration", type=float, default=150.0, help="steady window, s (150)")
    parser.add_argument("--warmup", type=float, default=15.0, help="before the window, s (15)")
    parser.add_argument("--rate", type=float, default=300.0, help="ReadProperty/s (300)")
    parser.add_argument("--subscriptions", type=int, default=200, help="COV subscriptions (200)")
    parser.add_argument(
        "--cov", choices=("confirmed", "unconfirmed"), default="confirmed", help="(confirmed)"
    )
    parser.add_argument("--cov-clients", type=int, default=4, help="bac-py clients (4)")
    parser.add_argument("--cov-increment", type=float, default=0.25, help="kWh (0.25)")
    parser.add_argument("--pulse-rate", type=float, default=5.0, help="per counter, /s (5)")
    parser.add_argument("--scrape-every", type=float, default=15.0, help="s (15)")
    parser.add_argument(
        "--web",
        type=int,
        default=0,
        metavar="N",
        help=f"N clients polling /api/v1/status every {WEB_EVERY_S:g} s in the window (0)",
    )
    parser.add_argument(
        "--virtual",
        type=int,
        default=0,
        metavar="N",
        help="N virtual kWh channels over the physical ones, after them (0)",
    )
    parser.add_argument("--terms", type=int, default=10, help="terms per virtual channel (10)")
    parser.add_argument(
        "--no-restart", dest="restart", action="store_false", help="skip the restart timing"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run the gateway under cProfile, stats into FILE (its figures include the overhead)",
    )
    parser.add_argument("--cov-child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--cov-instances", help=argparse.SUPPRESS)
    parser.add_argument("--cov-life", type=int, default=600, help=argparse.SUPPRESS)
    parser.add_argument("--web-child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--web-life", type=int, default=600, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.web_child:
        asyncio.run(web_child(args.web_child, args.web, args.channels, args.web_life))
        return 0
    if args.cov_child:
        instances = [int(i) for i in args.cov_instances.split(",")]
        asyncio.run(
            cov_child(
                args.cov_child,
                instances,
                args.cov_clients,
                args.cov == "confirmed",
                args.cov_life,
            )
        )
        return 0
    if not 1 <= args.subscriptions <= args.channels or args.channels < 1:
        parser.error("need 1 <= --subscriptions <= --channels")
    if not 0 < args.rate <= 5000:
        parser.error("--rate must be in (0, 5000]")
    if args.web < 0:
        parser.error("--web must be >= 0")
    if args.virtual < 0 or not 1 <= args.terms <= args.channels:
        parser.error("need --virtual >= 0 and 1 <= --terms <= --channels")
    print(
        f"bench/scale.py: {args.channels} channels, {args.rate:g} ReadProperty/s,"
        f" {args.subscriptions} {args.cov} COV subscriptions, a scrape every"
        f" {args.scrape_every:g} s, {args.web} web clients, {args.virtual} virtual channels"
        f" of {args.terms} terms; {os.cpu_count()} CPUs, load"
        f" average {loadavg():.2f}, Python {sys.version.split()[0]}",
        flush=True,
    )
    try:
        figures = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted; children stopped", file=sys.stderr)
        return 130
    report(figures, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
