"""The BACnet/IP server of the gateway: bacpypes3 objects over the live engine.

docs/reference/bacnet.md describes what a client sees.

``BacnetServer`` is what the service starts and stops; ``gateway.bacnet.points`` describes the
object map as plain data (no bacpypes3), for the server and for points lists. The server's
names are imported lazily so that ``gateway.bacnet.points`` can be used without loading
bacpypes3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.bacnet.server import BacnetError, BacnetServer, BacnetView

__all__ = ["BacnetError", "BacnetServer", "BacnetView"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gateway.bacnet import server

        return getattr(server, name)
    raise AttributeError(f"module 'gateway.bacnet' has no attribute {name!r}")
