"""Run the real `pulse-gateway run` as a child process on loopback, and read what it says."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port

START_TIMEOUT_S = 20.0


# free_port is tests.helpers' (free for TCP and UDP alike); both names are imported from here.
free_udp_port = free_port


def write_config(
    folder: Path,
    *,
    channels: str | None = None,
    metrics_port: int | None = None,
    bacnet_port: int | None = None,
    name: str = "gateway.yaml",
) -> Path:
    """A run config with a simulated source, everything on 127.0.0.1, state in ``folder``."""
    channels = channels or (
        "  - {id: e, unit: kWh, scale_factor: 0.5, demand_window: 2s, demand_slide: 1s,\n"
        "     source: {id: sim, rate: 200, mode: constant}}\n"
        "  - {id: w, unit: us_gallons, scale_factor: 1, demand_window: 2s, demand_slide: 2s,\n"
        "     source: {id: sim, rate: 40}}\n"
    )
    path = folder / name
    path.write_text(
        "gateway: {name: test-site, state_dir: state}\n"
        f"bacnet: {{address: 127.0.0.1/8, port: {bacnet_port or free_port()},"
        " device_instance: 1001, reset_allowed_from: [127.0.0.0/8],"
        " device_name: Test Gateway}\n"
        f"metrics: {{listen: '127.0.0.1:{metrics_port or free_port()}'}}\n"
        "sources:\n  - {id: sim, type: simulated, seed: 7}\n"
        f"channels:\n{channels}"
    )
    return path


class Daemon:
    """One `pulse-gateway run -c CONFIG` child process and its JSON log lines; with no CONFIG,
    `pulse-gateway run` (the bundled demo) in directory ``cwd``."""

    def __init__(self, config: Path | None, *, cwd: Path | None = None) -> None:
        self.config = config
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        options = [] if config is None else ["-c", str(config)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.lines.put(json.loads(line))
            except json.JSONDecodeError:
                self.lines.put({"event": "unparsed", "text": line})

    def wait_for(self, event: str, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """The next log line with this event name (earlier lines are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if line.get("event") == event:
                return line
        stderr = self.process.stderr.read() if self.process.poll() is not None else ""
        raise AssertionError(f"no {event!r} log line; saw {self.seen[-10:]}; stderr {stderr}")

    def ready(self) -> Daemon:
        """Wait for gateway_ready; a gateway that never gets there is killed, not leaked (the
        ``with`` block it was meant for never starts)."""
        try:
            self.metrics_port = int(self.wait_for("gateway_ready")["metrics_port"])
        except BaseException:
            self.__exit__()
            raise
        return self

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """A real HTTP scrape of /metrics, as {(sample name, labels): value}."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
