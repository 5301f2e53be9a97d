"""What listens on the network: the HTTP listener (/metrics, pages, API) and the BACnet server.

Both read the running gateway through its views and count nothing themselves, so starting,
restarting or failing one never touches a count. The service decides when (start, reload,
stop); this module knows how, including the reload rule that new channels only add objects
while new network or device settings restart the BACnet server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gateway import __version__
from gateway.config import RunConfig
from gateway.logging import get_logger
from gateway.metrics import Metrics
from gateway.reload import ReloadPlan
from gateway.web import WebError, WebServer
from gateway.web.snapshot import WebView

if TYPE_CHECKING:
    from gateway.bacnet.server import BacnetServer, BacnetView

    class Listened(WebView, BacnetView, Protocol):
        """What both listeners read of the running gateway (the ``Gateway`` itself)."""


log = get_logger("service")


class ListenerError(Exception):
    """A listener cannot start (a port taken, an address not on this machine); says what."""


class Listeners:
    """The gateway's HTTP listener and BACnet server."""

    def __init__(self, view: Listened, metrics: Metrics) -> None:
        self._view = view
        self.endpoint = WebServer(view, metrics)  # /metrics, the pages, the API
        self.bacnet: BacnetServer | None = None

    async def start_http(self, config: RunConfig) -> None:
        try:
            await self.endpoint.start(config.metrics)
        except WebError as exc:
            raise ListenerError(str(exc)) from None

    async def start_bacnet(self, config: RunConfig) -> None:
        if config.bacnet is None:
            return
        # imported here: bacpypes3 is only loaded by the daemon, not by replay or export
        from gateway.bacnet.server import BacnetError
        from gateway.bacnet.server import BacnetServer as Server

        server = Server(self._view, config.bacnet, config.channels, version=__version__)
        try:
            await server.start()
        except BacnetError as exc:
            raise ListenerError(str(exc)) from None
        self.bacnet = server
        if not config.bacnet.reset_allowed_from:
            # the safe default, but a site that expects monthly resets must hear about it
            log.warning("resets_disabled", reason="bacnet.reset_allowed_from is empty")

    async def stop_bacnet(self) -> None:
        if self.bacnet is not None:
            await self.bacnet.stop()
            self.bacnet = None

    async def stop(self) -> None:
        await self.endpoint.stop()
        await self.stop_bacnet()  # no reset can arrive after this

    async def reload(self, config: RunConfig, plan: ReloadPlan) -> None:
        """Apply a reload: a changed http section restarts the listener; new channels' objects
        are added, new network or device settings restart the BACnet server. A listener that
        cannot start again is logged, and counting goes on."""
        if plan.metrics_changed:
            await self.endpoint.stop()
            try:
                await self.start_http(config)
            except ListenerError as exc:
                log.error("http_restart_failed", error=str(exc))
        if not plan.bacnet_changed and self.bacnet is not None:
            await self.bacnet.reconfigure(config.channels)
            return
        await self.stop_bacnet()
        try:
            await self.start_bacnet(config)
        except ListenerError as exc:  # e.g. the new port is taken: say so, keep counting
            log.error("bacnet_restart_failed", error=str(exc))

    def refresh(self, channels: tuple[str, ...] | None = None) -> None:
        """Something a BACnet subscriber may care about changed, in ``channels`` or (None)
        anywhere (cheap: folded per loop pass)."""
        if self.bacnet is not None:
            self.bacnet.refresh(channels)
