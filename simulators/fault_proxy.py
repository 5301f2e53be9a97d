"""A TCP front for a simulated device that injects the faults real networks and devices show.

pymodbus's server has no connection-limit knob and no way to drop or mute a client
(docs/design/sources.md), so each simulated device listens through this byte-transparent proxy:
it works for Modbus/TCP and RTU-over-TCP framing alike, without parsing frames. Faults,
changeable at any time:

- ``mute``: requests are swallowed, nothing is answered (a hung device or a cut cable);
- ``delay``: every request is held this many seconds before the device sees it (slow replies);
- ``drop()``: every client connection is closed now (a device reboot, a NAT timeout);
- ``limit``/``policy``: at most ``limit`` connections; a new one beyond it is closed at once
  (``refuse``) or evicts the oldest (``oldest``, the Schneider M218 policy,
  docs/design/sources.md);
- ``down()``/``up()``: the port closes and reopens (connection refused meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Literal


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection to the device."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream``, with faults (see the module docstring)."""

    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream
        self.host = host
        self.port = port
        self.mute = False
        self.delay = 0.0
        self.limit: int | None = None
        self.policy: Literal["refuse", "oldest"] = "refuse"
        self.accepted = 0  # connections accepted since start
        self.refused = 0  # connections closed by the limit
        self.peak = 0  # most connections open at once
        self._links: list[_Link] = []
        self._server: asyncio.Server | None = None

    @property
    def open_connections(self) -> int:
        return len(self._links)

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen; the first start with port 0 picks a free port, kept for later ``up()``."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the port and every connection."""
        self.drop()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def down(self) -> None:
        await self.stop()

    async def up(self) -> None:
        if self._server is None:
            await self.start()

    def drop(self) -> None:
        for link in list(self._links):
            link.close()
        self._links.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.limit is not None and len(self._links) >= self.limit:
            if self.policy == "refuse" or not self._links:
                self.refused += 1
                writer.close()
                return
            self._links.pop(0).close()
        link = _Link(writer)
        self._links.append(link)
        self.accepted += 1
        self.peak = max(self.peak, len(self._links))
        try:
            up_reader, link.upstream = await asyncio.open_connection(*self.upstream)
            link.tasks = [
                asyncio.create_task(self._requests(reader, link.upstream)),
                asyncio.create_task(self._answers(up_reader, writer)),
            ]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        except OSError:
            pass
        finally:
            link.close()
            if link in self._links:
                self._links.remove(link)

    async def _requests(self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
        # Reading never waits for the delay, so a client's close is seen at once even while a
        # slow request is held: the connection count stays true.
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        forward = asyncio.create_task(self._forward(held, upstream))
        try:
            while data := await reader.read(4096):
                if not self.mute:
                    held.put_nowait((loop.time() + self.delay, data))
        finally:
            forward.cancel()

    @staticmethod
    async def _forward(
        held: asyncio.Queue[tuple[float, bytes]], upstream: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await held.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            upstream.write(data)
            await upstream.drain()

    async def _answers(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            if not self.mute:  # an answer that was in flight when the device went mute
                client.write(data)
                await client.drain()
