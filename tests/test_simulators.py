"""The simulators as people use them: the Modbus counter CLI and its control port on loopback."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.framer import FramerType

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 10.0


@dataclass
class Running:
    """A ``python -m simulators.modbus_counter`` child process and its control connection."""

    process: subprocess.Popen[str]
    ready: dict[str, Any]
    control: socket.socket
    lines: Any

    @property
    def port(self) -> int:
        return int(self.ready["devices"][0]["port"])

    def command(self, line: str) -> dict[str, Any]:
        self.control.sendall((line + "\n").encode())
        answer: dict[str, Any] = json.loads(self.lines.readline())
        return answer

    def status(self, device: int = 0) -> dict[str, Any]:
        answer = self.command(f"status {device}")
        assert answer["ok"]
        status: dict[str, Any] = answer["devices"][0]
        return status

    def client(self, framer: FramerType = FramerType.SOCKET) -> ModbusTcpClient:
        client = ModbusTcpClient("127.0.0.1", port=self.port, framer=framer, timeout=1, retries=0)
        assert client.connect()
        return client


def cli(arguments: str) -> pytest.MarkDecorator:
    """Run the test's simulator with these extra command-line arguments."""
    return pytest.mark.parametrize("simulator", [arguments], indirect=True)


@pytest.fixture
def simulator(request: pytest.FixtureRequest) -> Iterator[Running]:
    """The CLI on free ports (more arguments as the indirect parameter), stopped afterwards."""
    command = [sys.executable, "-m", "simulators.modbus_counter", "--port", "0"]
    with subprocess.Popen(  # leaving the block closes its pipes
        [*command, "--control-port", "0", *getattr(request, "param", "").split()],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            readable, _, _ = select.select([process.stdout], [], [], WAIT_S)  # bounded wait
            ready = json.loads(process.stdout.readline() if readable else "{}")  # the ports
            assert ready, process.stderr.read() if process.stderr else "no output"
            address = ("127.0.0.1", ready["control_port"])
            control = socket.create_connection(address, timeout=WAIT_S)
            with control, control.makefile("r") as lines:
                yield Running(process, ready, control, lines)
        finally:
            process.terminate()
            try:
                process.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=WAIT_S)


def test_help_describes_the_control_commands() -> None:
    """--help exits 0 and lists the fault commands a person can type."""
    result = subprocess.run(
        [sys.executable, "-m", "simulators.modbus_counter", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=True,
    )
    for command in ("rate DEV CH", "pulse DEV CH N", "mute DEV", "exception DEV", "limit DEV"):
        assert command in result.stdout


@cli("--channels 4 --rate 0 --initial 65534 --rollover 65536")
def test_pulses_and_resets_show_in_the_registers_and_the_exact_count(simulator: Running) -> None:
    """pulse moves register and truth alike, across the rollover; reset zeroes the register only."""
    client = simulator.client()
    try:
        assert client.read_holding_registers(2, count=2, device_id=1).registers == [0, 65534]
        assert simulator.command("pulse 0 1 5") == {"ok": True}
        assert client.read_input_registers(2, count=2, device_id=1).registers == [0, 3]
        assert simulator.status()["truth"][1] == 5
        assert simulator.command("reset 0 1")["ok"]
        assert client.read_holding_registers(2, count=2, device_id=1).registers == [0, 0]
        status = simulator.status()
        assert status["truth"] == [0, 5, 0, 0] and status["values"][1] == 0
        assert status["requests"] == 3 and status["writes"] == 0
    finally:
        client.close()


@cli("--channels 2 --rate 0 --word-order little --framer rtu")
def test_rtu_framing_and_low_word_first(simulator: Running) -> None:
    """--framer rtu answers RTU frames over TCP; --word-order little puts the low word first."""
    simulator.command("pulse 0 0 70000")  # 0x0001_1170
    client = simulator.client(FramerType.RTU)
    try:
        assert client.read_holding_registers(0, count=2, device_id=1).registers == [0x1170, 1]
    finally:
        client.close()


@cli("--channels 2 --rate 0")
def test_faults_are_driven_through_the_control_port(simulator: Running) -> None:
    """exception, mute, drop, limit and down each change what a Modbus client sees."""
    client = simulator.client()
    try:
        assert simulator.command("exception 0 6")["ok"]
        assert client.read_holding_registers(0, count=2, device_id=1).exception_code == 6
        assert simulator.command("exception 0 off")["ok"]
        assert simulator.command("mute 0 on")["ok"]
        with pytest.raises(Exception, match="No response"):
            client.read_holding_registers(0, count=2, device_id=1)
        assert simulator.status()["faults"]["mute"] is True
    finally:
        client.close()
    assert simulator.command("mute 0 off")["ok"]
    assert simulator.command("delay 0 0.2")["ok"]
    assert simulator.status()["faults"]["delay"] == 0.2
    assert simulator.command("delay 0 0")["ok"]
    assert simulator.command("limit 0 1 refuse")["ok"]
    first = simulator.client()
    second = ModbusTcpClient("127.0.0.1", port=simulator.port, timeout=1, retries=0)
    try:
        second.connect()
        with pytest.raises(Exception, match="Connection"):
            second.read_holding_registers(0, count=2, device_id=1)
        assert first.read_holding_registers(0, count=2, device_id=1).registers == [0, 0]
        assert simulator.status()["connections"]["refused"] >= 1
        assert simulator.command("drop 0")["ok"]
        with pytest.raises(Exception, match="Connection"):
            first.read_holding_registers(0, count=2, device_id=1)
    finally:
        first.close()
        second.close()
    assert simulator.command("limit 0 off")["ok"]
    assert simulator.command("down 0")["ok"]
    refused = ModbusTcpClient("127.0.0.1", port=simulator.port, timeout=1, retries=0)
    assert not refused.connect()
    assert simulator.command("up 0")["ok"]
    assert refused.connect()
    refused.close()


@cli("--devices 2 --channels 3 --rate 0")
def test_bad_commands_get_a_clear_error_and_the_port_keeps_working(simulator: Running) -> None:
    """Unknown commands, bad indexes and bad values answer ok=false with a reason."""
    assert len(simulator.ready["devices"]) == 2
    for line, reason in [
        ("fly 0", "unknown command"),
        ("pulse 5 0 1", "device 5 out of range"),
        ("pulse 0 9 1", "channel 9 out of range"),
        ("rate 0 0 fast", "expected a number"),
        ("exception 0 99", "no Modbus exception code 99"),
        ("mute 0 maybe", "expected on or off"),
        ("drop", "takes 1..1 arguments"),
    ]:
        answer = simulator.command(line)
        assert answer["ok"] is False and reason in answer["error"], line
    assert simulator.command("rate * * 2.5")["ok"]
    statuses = simulator.command("status")["devices"]
    assert [s["rates"] for s in statuses] == [[2.5] * 3, [2.5] * 3]
