"""The BACnet server over in-memory channels, without the service: for benchmarks and probes.

``MemoryView`` is a ``BacnetView`` over a real ``gateway.core.Engine`` and nothing else: resets
apply to the engine (nothing is stored), refusals are only counted. ``standalone_server``
starts a ``BacnetServer`` over N such kWh channels on 127.0.0.1; ``bench_server`` is the hook
``bench/bacnet.py`` calls.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network

from gateway import __version__
from gateway.bacnet.server import BacnetServer
from gateway.config import BacnetSettings, ChannelConfig
from gateway.core import UNITS, Channel, ChannelRules, Engine, ResetOutcome

MINUTE_US = 60_000_000


@dataclass
class MemoryView:
    """A BacnetView over an engine in memory; ``now`` is the wall clock in microseconds."""

    configs: list[ChannelConfig]
    engine: Engine
    rejections: dict[tuple[str, str], int] = field(default_factory=dict)
    refusals: list[tuple[str, str, str]] = field(default_factory=list)

    @staticmethod
    def now() -> int:
        return time.time_ns() // 1000

    def live_channels(self) -> Mapping[str, Channel]:
        return self.engine.channels

    def latest_time(self) -> int:
        return self.engine.now

    def _advance(self) -> int:
        t = max(self.now(), self.engine.now)
        self.engine.advance(t)
        return t

    def reset(self, channel_id: str, origin: str) -> ResetOutcome:
        return self.engine.reset(channel_id, self._advance())

    def reset_all(self, origin: str) -> dict[str, ResetOutcome]:
        return self.engine.reset_all(self._advance())

    def count_rejection(self, channel_id: str, reason: str) -> None:
        key = (channel_id, reason)
        self.rejections[key] = self.rejections.get(key, 0) + 1

    def audit_refusals(self, channel_ids: list[str], reason: str, origin: str) -> None:
        self.refusals += [(channel_id, reason, origin) for channel_id in channel_ids]


def memory_view(channels: int) -> MemoryView:
    """``channels`` kWh channels (scale 1, 15 min window, 5 min slide), online, counting now."""
    rules = ChannelRules(UNITS["kWh"], 1.0, 15 * MINUTE_US, 5 * MINUTE_US)
    configs = [
        ChannelConfig(f"ch{k}", f"ch{k}", rules, None, 0.0, 100 * k) for k in range(1, channels + 1)
    ]
    start = MemoryView.now()
    engine = Engine({config.id: rules for config in configs}, start)
    return MemoryView(configs, engine)


class Standalone:
    """A running standalone server; ``close()`` stops it."""

    def __init__(self, server: BacnetServer) -> None:
        self.server = server

    async def close(self) -> None:
        await self.server.stop()


async def standalone_server(channels: int, port: int) -> Standalone:
    """Start the real server over ``channels`` in-memory channels on 127.0.0.1:``port``."""
    view = memory_view(channels)
    settings = BacnetSettings(
        address=IPv4Interface("127.0.0.1/8"),
        port=port,
        device_instance=599,
        device_name="pulse-gateway standalone",
        reset_allowed_from=(IPv4Network("127.0.0.0/8"),),
    )
    server = BacnetServer(view, settings, view.configs, version=__version__)
    await server.start()
    return Standalone(server)


async def bench_server(channels: int, port: int) -> Standalone:
    """The real server over ``channels`` in-memory kWh channels on 127.0.0.1:``port``.

    The hook ``bench/bacnet.py`` starts (its ``start_gateway``); ``close()`` stops it. The
    bench reads its child's stdout, so the gateway's log lines go to stderr here.
    """
    from gateway.logging import configure

    configure(sys.stderr)
    return await standalone_server(channels, port)
