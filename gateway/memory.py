"""The cyclic garbage collector around the gateway's big allocations.

Start-up builds millions of long-lived objects (BACnet objects, a year of missed resets with
their outcomes); the collector's generational passes would walk them again and again while
they are being built, and every full pass later would hold the loop. Only ``run`` calls
``settle``: it owns the process.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No collection while a block builds many objects that all stay alive (nothing cyclic is
    left behind by it, so nothing is lost by collecting later)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def settle() -> None:
    """Put what start-up (or a reload) built out of the cyclic collector's way.

    The channels' BACnet objects and their properties are about a million Python objects at
    2,000 channels, alive until the process ends; every full collection walked them all and
    held the loop 50-65 ms. Frozen (``gc.freeze``), they are still freed when no longer
    referenced, but never scanned.
    """
    gc.unfreeze()  # a reload's leftovers among the frozen objects get collected here
    gc.collect()
    gc.freeze()
