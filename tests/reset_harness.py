"""A real gateway process that resets its channels as fast as it can, for kill -9 tests.

Run as ``python -m tests.reset_harness CONFIG``. After each reset returns (that is, after it was
made durable) it prints ``ACK channel accepted reset_count`` and flushes, so the parent knows
which resets were acknowledged when it kills this process.
"""

from __future__ import annotations

import asyncio
import sys

from gateway.config import load_config
from gateway.logging import configure
from gateway.service import Gateway


async def main(path: str) -> None:
    configure(sys.stderr)
    gateway = Gateway(load_config(path, purpose="run"))
    await gateway.start()
    print("READY", flush=True)
    channels = [channel.id for channel in gateway.config.channels]
    while True:
        for channel in channels:
            outcome = gateway.reset(channel, "harness")
            print(f"ACK {channel} {int(outcome.accepted)} {outcome.after.reset_count}", flush=True)
        await asyncio.sleep(0.01)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
