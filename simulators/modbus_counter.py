"""An N-channel Modbus pulse-counter module (like an ADAM-6051 or ioLogik E1210), simulated.

Run ``python -m simulators.modbus_counter --help``. Each device is a real pymodbus server
(``SimDevice`` with an action callback: docs/design/sources.md) behind a ``FaultProxy``
(simulators/fault_proxy.py) on 127.0.0.1. Channel i's counter sits at ``start + i * stride`` in one
register block that FC3 (holding) and FC4 (input) both read; gaps between counters are invalid
addresses (exception 2) unless ``--gaps zero``. Counters count at their rate, wrap at
``rollover`` and keep the **exact number of pulses** each channel emitted (``truth``): the ground
truth tests compare with. A reset puts the register back to 0 without touching ``truth``.
Writes are refused (exception 1) and counted, so a test can prove a master stayed read-only.

Control port (one command per line, one JSON answer per line; DEV and CH are 0-based indexes or
``*`` for all):

    status [DEV]              counts, registers, rates, requests, connections, faults
    rate DEV CH PULSES_PER_S  change a counting rate (0 freezes the channel)
    pulse DEV CH N            emit N pulses now
    reset DEV CH              the counter restarts from 0 (as after a power cut)
    mute DEV on|off           stop answering (requests are swallowed)
    exception DEV CODE|off    answer every read with Modbus exception CODE (6 = busy)
    delay DEV SECONDS         hold every request this long (slow replies; 0 = off)
    drop DEV                  close every client connection now
    limit DEV N|off [refuse|oldest]   at most N connections: refuse new ones, or evict oldest
    down DEV / up DEV         close / reopen the listening port (connection refused)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pymodbus import FramerType
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.fault_proxy import FaultProxy

WORDS = {"u16": 1, "u32": 2, "u64": 4, "i32": 2, "f32": 2, "f64": 4}
_DATATYPES = {
    "u16": ModbusClientMixin.DATATYPE.UINT16,
    "u32": ModbusClientMixin.DATATYPE.UINT32,
    "u64": ModbusClientMixin.DATATYPE.UINT64,
    "i32": ModbusClientMixin.DATATYPE.INT32,
    "f32": ModbusClientMixin.DATATYPE.FLOAT32,
    "f64": ModbusClientMixin.DATATYPE.FLOAT64,
}


@dataclass(frozen=True, slots=True)
class CounterLayout:
    """What one simulated module looks like on the wire."""

    channels: int = 8
    type: str = "u32"  # u16 u32 u64 i32 (wrapping counts) or f32 f64 (totals: count * scale)
    word_order: Literal["big", "little"] = "big"
    start: int = 0  # 0-based address of channel 0
    stride: int | None = None  # registers from one counter to the next (default: its words)
    rollover: int | None = None  # integer counters wrap here (default 2^bits)
    scale: float = 1.0  # f32/f64: register units per pulse
    rates: tuple[float, ...] = (1.0,)  # pulses/s per channel; the last repeats
    initial: int = 0  # counts shown at start
    unit_id: int = 1
    framer: Literal["socket", "rtu"] = "socket"
    gaps: Literal["invalid", "zero"] = "invalid"

    @property
    def words(self) -> int:
        return WORDS[self.type]

    def address(self, channel: int) -> int:
        return self.start + channel * (self.stride or self.words)

    @property
    def modulus(self) -> int:
        return self.rollover or 2 ** (16 * self.words)


class CounterModel:
    """Exact pulse counts per channel and the registers that show them."""

    def __init__(self, layout: CounterLayout, clock: Callable[[], float] = time.monotonic):
        self.layout = layout
        self.clock = clock
        count = layout.channels
        self.rates = [layout.rates[min(i, len(layout.rates) - 1)] for i in range(count)]
        self.truth = [0] * count  # pulses emitted since start: never reset, never wrapped
        self._base = [-layout.initial] * count  # register count = truth - base
        self._carry = [0.0] * count
        self._last = clock()

    def advance(self) -> None:
        """Emit the pulses the rates owe since the last call (fractions carried: exact)."""
        now = self.clock()
        elapsed, self._last = now - self._last, now
        for i, rate in enumerate(self.rates):
            if rate:
                self._carry[i] += rate * elapsed
                whole = int(self._carry[i])
                self._carry[i] -= whole
                self.truth[i] += whole

    def set_rate(self, channel: int, rate: float) -> None:
        self.advance()
        self.rates[channel] = rate

    def pulse(self, channel: int, count: int) -> None:
        self.advance()
        self.truth[channel] += count

    def reset(self, channel: int) -> None:
        self.advance()
        self._base[channel] = self.truth[channel]

    def value(self, channel: int) -> int | float:
        """What the register shows: the count wrapped (or scaled, for float types)."""
        count = self.truth[channel] - self._base[channel]
        kind = self.layout.type
        if kind[0] == "f":
            return count * self.layout.scale
        count %= self.layout.modulus
        if kind == "i32" and count >= 2**31:
            count -= 2**32
        return count

    def registers(self, channel: int) -> list[int]:
        layout = self.layout
        value = self.value(channel)
        kind = _DATATYPES[layout.type]
        return ModbusClientMixin.convert_to_registers(value, kind, word_order=layout.word_order)


@dataclass(frozen=True, slots=True)
class Request:
    """One read the device answered (or refused): for pacing and coalescing checks."""

    at: float  # time.monotonic()
    function: int
    address: int
    count: int


class CounterModule:
    """One simulated device: model, pymodbus server and fault proxy."""

    def __init__(self, layout: CounterLayout, host: str = "127.0.0.1", port: int = 0) -> None:
        self.layout = layout
        self.model = CounterModel(layout)
        self.exception: int | None = None
        self.requests: deque[Request] = deque(maxlen=100_000)
        self.request_count = 0
        self.writes = 0
        self._server: ModbusTcpServer | None = None
        self.proxy = FaultProxy(("127.0.0.1", 0), host, port)

    @property
    def port(self) -> int:
        return self.proxy.port

    async def start(self) -> None:
        layout = self.layout
        if layout.gaps == "invalid":
            blocks = [
                SimData(layout.address(i), count=layout.words, datatype=DataType.REGISTERS)
                for i in range(layout.channels)
            ]
        else:
            span = layout.address(layout.channels - 1) + layout.words - layout.start
            blocks = [SimData(layout.start, count=span, datatype=DataType.REGISTERS)]
        device = SimDevice(layout.unit_id, simdata=blocks, action=self._action)
        framer = FramerType.RTU if layout.framer == "rtu" else FramerType.SOCKET
        self._server = ModbusTcpServer(device, address=("127.0.0.1", 0), framer=framer)
        await self._server.serve_forever(background=True)
        listener = self._server.transport  # for TCP, the asyncio.Server of loop.create_server
        if not isinstance(listener, asyncio.Server):
            raise RuntimeError(f"the Modbus simulator is not listening: {listener!r}")
        upstream = listener.sockets[0].getsockname()[:2]
        self.proxy.upstream = upstream
        await self.proxy.start()

    async def stop(self) -> None:
        await self.proxy.stop()
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def _action(
        self,
        function: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Runs on every access (docs/design/sources.md): fill the live registers in, or refuse."""
        if values is not None:
            self.writes += 1
            return ExcCodes.ILLEGAL_FUNCTION
        self.request_count += 1
        self.requests.append(Request(time.monotonic(), function, address, count))
        if self.exception is not None:
            return ExcCodes(self.exception)
        self.model.advance()
        layout = self.layout
        stride = layout.stride or layout.words
        for channel in range(max(0, (address - layout.start) // stride - 1), layout.channels):
            where = layout.address(channel)
            if where >= address + count:
                break
            if where + layout.words <= address:
                continue
            offset = where - start
            registers[offset : offset + layout.words] = self.model.registers(channel)
        return None

    def status(self) -> dict[str, Any]:
        self.model.advance()
        proxy = self.proxy
        return {
            "port": self.port,
            "unit_id": self.layout.unit_id,
            "framer": self.layout.framer,
            "truth": list(self.model.truth),
            "values": [self.model.value(i) for i in range(self.layout.channels)],
            "rates": list(self.model.rates),
            "requests": self.request_count,
            "writes": self.writes,
            "connections": {
                "open": proxy.open_connections,
                "accepted": proxy.accepted,
                "refused": proxy.refused,
                "peak": proxy.peak,
            },
            "faults": {
                "mute": proxy.mute,
                "delay": proxy.delay,
                "exception": self.exception,
                "limit": proxy.limit,
                "policy": proxy.policy,
                "down": not proxy.listening,
            },
        }


class CommandError(Exception):
    """A control command that cannot be carried out; the message says why."""


class CounterSimulator:
    """Several modules and the control port that drives them."""

    def __init__(self, modules: Sequence[CounterModule]) -> None:
        self.modules = list(modules)
        self.control_port: int | None = None
        self._control: asyncio.Server | None = None

    async def start(self, control_port: int | None = 0) -> None:
        for module in self.modules:
            await module.start()
        if control_port is not None:
            self._control = await asyncio.start_server(self._serve, "127.0.0.1", control_port)
            self.control_port = self._control.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        for module in self.modules:
            await module.stop()

    async def command(self, line: str) -> dict[str, Any]:
        """Carry out one control command; the JSON-able answer."""
        words = line.split()
        if not words:
            raise CommandError("empty command")
        name, args = words[0].lower(), words[1:]
        if name == "status":
            picked = self._devices(args[0]) if args else self.modules
            return {"devices": [module.status() for module in picked]}
        if name not in _ARITY:
            raise CommandError(f"unknown command {name!r}; try: {', '.join(['status', *_ARITY])}")
        low, high = _ARITY[name]
        if not low <= len(args) <= high:
            raise CommandError(f"{name} takes {low}..{high} arguments, got {len(args)}")
        for module in self._devices(args[0]):
            await _apply(module, name, args[1:])
        return {}

    def _devices(self, text: str) -> list[CounterModule]:
        if text == "*":
            return self.modules
        index = _index(text, len(self.modules), "device")
        return [self.modules[index]]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := (await reader.readline()).decode(errors="replace"):
                if line.strip().lower() == "quit":
                    break
                try:
                    answer = {"ok": True, **await self.command(line)}
                except CommandError as exc:
                    answer = {"ok": False, "error": str(exc)}
                writer.write((json.dumps(answer) + "\n").encode())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


_ARITY = {
    "rate": (3, 3),
    "pulse": (3, 3),
    "reset": (2, 2),
    "mute": (2, 2),
    "exception": (2, 2),
    "delay": (2, 2),
    "drop": (1, 1),
    "limit": (2, 3),
    "down": (1, 1),
    "up": (1, 1),
}


async def _apply(module: CounterModule, name: str, args: list[str]) -> None:
    proxy, model = module.proxy, module.model
    channels = module.layout.channels
    if name in ("rate", "pulse", "reset"):
        picked = range(channels) if args[0] == "*" else [_index(args[0], channels, "channel")]
        for channel in picked:
            if name == "rate":
                model.set_rate(channel, _number(args[1], float, "rate"))
            elif name == "pulse":
                model.pulse(channel, _number(args[1], int, "pulse count"))
            else:
                model.reset(channel)
    elif name == "mute":
        proxy.mute = _switch(args[0])
    elif name == "exception":
        code = None if args[0] == "off" else _number(args[0], int, "exception code")
        if code is not None and code not in set(ExcCodes):
            raise CommandError(f"no Modbus exception code {code}: {[int(c) for c in ExcCodes]}")
        module.exception = code
    elif name == "delay":
        proxy.delay = _number(args[0], float, "delay")
    elif name == "drop":
        proxy.drop()
    elif name == "limit":
        proxy.limit = None if args[0] == "off" else _number(args[0], int, "limit")
        if len(args) > 1:
            if args[1] not in ("refuse", "oldest"):
                raise CommandError("limit policy is refuse or oldest")
            proxy.policy = "refuse" if args[1] == "refuse" else "oldest"
    elif name == "down":
        await proxy.down()
    else:
        await proxy.up()


def _index(text: str, size: int, what: str) -> int:
    value = _number(text, int, what)
    if not 0 <= value < size:
        raise CommandError(f"{what} {value} out of range 0..{size - 1}")
    return value


def _number[T: (int, float)](text: str, kind: type[T], what: str) -> T:
    try:
        value = kind(text)
    except ValueError:
        raise CommandError(f"{what}: expected a number, got {text!r}") from None
    if value < 0:
        raise CommandError(f"{what} cannot be negative")
    return value


def _switch(text: str) -> bool:
    if text not in ("on", "off"):
        raise CommandError(f"expected on or off, got {text!r}")
    return text == "on"


@contextlib.asynccontextmanager
async def running(
    *layouts: CounterLayout, control_port: int | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[CounterSimulator]:
    """Start modules (ports picked free) for a test or a bench; stopped on exit."""
    simulator = CounterSimulator([CounterModule(layout, host) for layout in layouts])
    try:
        await simulator.start(control_port)
        yield simulator
    finally:
        await simulator.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.modbus_counter",
        description="Simulated Modbus pulse-counter modules on 127.0.0.1, with fault injection "
        "through a line-based control port. Prints one JSON line with the ports when ready; "
        "stops on Ctrl-C or SIGTERM.",
        epilog="Control port" + (__doc__ or "").partition("Control port")[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=5020, help="first device's port; 0 = any free (5020)")
    add("--devices", type=int, default=1, help="modules, on consecutive ports (1)")
    add("--channels", type=int, default=8, help="counters per module (8)")
    add("--type", choices=sorted(WORDS), default="u32", help="register type (u32)")
    add("--word-order", choices=("big", "little"), default="big", help="big = high word first")
    add("--start", type=int, default=0, help="0-based address of the first counter (0)")
    add("--stride", type=int, help="registers from one counter to the next (its words)")
    add("--rollover", type=int, help="integer counters wrap here (2^bits); small = many wraps")
    add("--scale", type=float, default=1.0, help="f32/f64 totals: units per pulse (1)")
    add("--rate", default="1", help="pulses/s, one value or a comma list per channel (1)")
    add("--initial", type=int, default=0, help="counts shown at start (0)")
    add("--unit-id", type=int, default=1, help="Modbus unit id (1)")
    add("--framer", choices=("socket", "rtu"), default="socket", help="rtu = RTU over TCP")
    add("--gaps", choices=("invalid", "zero"), default="invalid", help="between counters")
    add("--control-port", type=int, default=5019, help="control port; 0 = any free (5019)")
    return parser


async def _main(args: argparse.Namespace) -> None:
    rates = tuple(float(rate) for rate in args.rate.split(","))
    layout = CounterLayout(
        channels=args.channels,
        type=args.type,
        word_order=args.word_order,
        start=args.start,
        stride=args.stride,
        rollover=args.rollover,
        scale=args.scale,
        rates=rates,
        initial=args.initial,
        unit_id=args.unit_id,
        framer=args.framer,
        gaps=args.gaps,
    )
    ports = [args.port + i if args.port else 0 for i in range(args.devices)]
    simulator = CounterSimulator([CounterModule(layout, args.host, port) for port in ports])
    await simulator.start(args.control_port)
    ready = {
        "devices": [{"host": args.host, "port": m.port} for m in simulator.modules],
        "control_port": simulator.control_port,
        "unit_id": layout.unit_id,
        "framer": layout.framer,
    }
    print(json.dumps(ready), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await simulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.devices < 1 or args.channels < 1:
        print("--devices and --channels must be at least 1", file=sys.stderr)
        return 2
    try:
        asyncio.run(_main(args))
    except OSError as exc:
        print(f"cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
