"""Pulse sources: hardware (or a simulation) in, pulse counts and up/down transitions out.

Every source has the same shape: ``await source.run(sink)`` runs until cancelled and reports
to the sink, which belongs to the service. A source never reads the wall clock and never
touches the engine: the service stamps what the sink receives with its timeline and feeds the
engine, so all time handling lives in one place (gateway/clock.py).

- ``sink.pulses(channel, count)``: pulses just counted on a channel.
- ``sink.source_down(source)``: the source stopped delivering (timeout, disconnect); its
  channels are offline from now on.
- ``sink.source_up(source, catch_up)``: it delivers again; ``catch_up`` holds the pulses per
  channel that accumulated meanwhile (a Modbus counter kept counting), which count in
  consumption but in no demand window (PRODUCT.md §2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class PulseSink(Protocol):
    """Where a source reports; implemented by the service."""

    def pulses(self, channel: str, count: int) -> None: ...

    def source_down(self, source: str) -> None: ...

    def source_up(self, source: str, catch_up: Mapping[str, int]) -> None: ...


class Source(Protocol):
    """A running pulse source."""

    id: str

    async def run(self, sink: PulseSink) -> None:
        """Count pulses and report them to ``sink`` until cancelled."""
        ...
