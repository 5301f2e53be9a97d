"""The BACnet/IP server: lifecycle, object set and COV evaluation (docs/reference/bacnet.md).

The service owns one ``BacnetServer`` and talks to it through a small interface both ways:

- the server reads the service through ``BacnetView`` (live channels, resets, refusals);
- the service calls ``start``/``stop``, ``refresh()`` after anything that may change a value or
  a status (boundaries, pulses, sources up/down), and ``reconfigure`` after a reload.

Start-up (docs/design/bacpypes3.md, "Building the application" and "Start-up failures bacpypes3
hides"):

1. Probe the address (``gateway.bacnet.startup.probe``): refuse, with a message for a person,
   an address:port another process holds (bacpypes3's SO_REUSEPORT would share it silently) or
   an address this host does not have (bacpypes3 would retry the bind forever).
2. Build the Device object and the application, then the channel objects, yielding to the loop
   every ``YIELD_EVERY`` objects (14,000 objects for 2,000 channels take well under a second
   with ``ObjectFactory``, but the loop keeps serving metrics and sources meanwhile).
3. Add the network-port object, which binds the sockets (unicast and, unless the prefix is /32,
   the subnet broadcast); wait until they are bound, or stop with a ``BacnetError``.
4. Put the fast path (``gateway.bacnet.fastpath``, with ``gateway.bacnet.lookup``) in front
   of the unicast socket: ReadProperty/RPM of the common properties of channel objects are
   answered from the datagram, everything else goes to bacpypes3.
5. Announce the device with a global I-Am (bacpypes3 sends none by itself).

Values are never pushed into objects: see ``gateway.bacnet.objects``. COV is evaluated only for
objects that have subscribers (``gateway.bacnet.cov``), when the service calls ``refresh()``
(coalesced to once per loop iteration) and once a second as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bacpypes3.basetypes import HostNPort, IPMode

from gateway.bacnet.app import GatewayApplication
from gateway.bacnet.cov import LiveCriteria
from gateway.bacnet.fastpath import FastPath
from gateway.bacnet.fastpath import install as install_fast_path
from gateway.bacnet.lookup import FastLookup
from gateway.bacnet.objects import (
    ChannelLink,
    GatewayDevice,
    GatewayNetworkPort,
    ObjectFactory,
    identity,
)
from gateway.bacnet.points import (
    NETWORK_PORT_INSTANCE,
    NETWORK_PORT_NAME,
    Point,
    channel_points,
    reset_all_point,
)
from gateway.bacnet.resets import ResetWrites
from gateway.bacnet.startup import (
    BacnetError,
    foreign_device,
    ip_settings,
    probe,
    route_stack_logging,
)
from gateway.bacnet.trendlog import (
    TrendLog,
    TrendLogs,
    open_trend_logs,
    stamp_trend_log,
    trend_log_template,
    update_trend_log,
)
from gateway.logging import get_logger

if TYPE_CHECKING:
    from gateway.config import BacnetSettings, ChannelConfig
    from gateway.core import Channel, Instant, ResetOutcome, Span

log = get_logger("bacnet")

YIELD_EVERY = 100  # objects built between two yields to the event loop
BIND_TIMEOUT_S = 5.0
SWEEP_INTERVAL_S = 1.0
# A COV pass is cut in turns of the event loop so that requests are answered in between: a
# confirmed notification costs ~0.3 ms of loop time (building and encoding it, then its ack),
# so 200 subscribed objects crossing their increment at once (meters pulsing in step) held the
# loop 60-80 ms. A turn ends after COV_BATCH notifications (an object's subscribers are
# all notified in the same turn; about 2.5 ms, short enough for a ReadProperty to wait
# behind), the next one COV_PACE_S later (at most 2,000 notifications/s; a busier site gets
# its passes stretched, and each object is still notified with its latest value), or after
# COV_SCAN objects evaluated, the next one at once.
COV_BATCH = 8
COV_PACE_S = 0.004
COV_SCAN = 1000
MAX_APDU = 1476  # the largest APDU a B/IP datagram carries (135 Annex J, Table 6-1)
# Not an ASHRAE-registered identifier for this project: 999 is what bacpypes3's own samples
# use. A vendor shipping the gateway should obtain its own identifier from ASHRAE (free) and
# put it here; clients only use it to pick proprietary object and property definitions.
VENDOR_IDENTIFIER = 999
VENDOR_NAME = "pulse-gateway"
MODEL_NAME = "pulse-gateway"


class BacnetView(Protocol):
    """What the server needs from the service (``gateway.service.Gateway`` implements it)."""

    def live_channels(self) -> Mapping[str, Channel]:
        """The engine's channels by id: one mapping for the server's life, which the engine
        changes in place (objects look their channel up in it on every read)."""
        ...

    def reset(self, channel_id: str, origin: str) -> ResetOutcome:
        """Apply a reset and make it durable; raises if it could not be stored."""
        ...

    def reset_all(self, origin: str) -> dict[str, ResetOutcome]:
        """Reset every channel at one instant, durably; raises if it could not be stored."""
        ...

    def count_rejection(self, channel_id: str, reason: str) -> None:
        """Count a refused reset ("not_allowed", "bad_value") in the metrics."""
        ...

    def latest_time(self) -> Instant:
        """The gateway's time as of its last clock reading (projected demand is read at it)."""
        ...

    def audit_refusals(self, channel_ids: list[str], reason: str, origin: str) -> None:
        """Log refused resets that never reached the engine in the reset audit (a refused
        reset_all is one row per channel, in one transaction)."""
        ...


class BacnetServer:
    """The gateway's BACnet/IP device.

    Attributes after ``start()``: ``app`` (the bacpypes3 application), ``device`` (the Device
    object), ``port`` (the bound UDP port), ``links`` (channel id -> ``ChannelLink``, whose
    ``inputs``/``reset`` are the channel's objects). ``object_count`` counts every object.
    """

    def __init__(
        self,
        view: BacnetView,
        settings: BacnetSettings,
        channels: Sequence[ChannelConfig],
        *,
        version: str,
        fast_path: bool = True,
        database: Path | None = None,
        retention: Span | None = None,
    ) -> None:
        self.view = view
        self.settings = settings
        self.version = version
        self.port: int = settings.port
        self.app: GatewayApplication | None = None
        self.device: GatewayDevice | None = None
        self.links: dict[str, ChannelLink] = {}
        self._channels = list(channels)
        self._factory: ObjectFactory | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refresh_handle: asyncio.Handle | None = None
        self._cov_pass: deque[object] = deque()  # subscribed objects still to evaluate
        self._cov_again = False  # a refresh came during a pass: another pass after it
        # what the next pass evaluates: the subscribed objects of these channels, or (when
        # _changed_all) all of them
        self._changed: set[str] = set()
        self._changed_all = False
        self._sweeper: asyncio.Task[None] | None = None
        self.lookup = FastLookup()
        self.fast_path: FastPath | None = None
        self._use_fast_path = fast_path
        # the trend logs read the interval records from this database (the view's store's when
        # not given) and size their buffers by this retention (the view's config's)
        self._database = database
        self._retention = retention
        self.trend_logs = TrendLogs(None)
        self._trend_template: dict[str, Any] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Probe, build every object, bind, announce (module docstring); BacnetError if not."""
        settings = self.settings
        host = str(settings.address.ip)
        probe(host, settings.port)
        route_stack_logging()
        self._loop = asyncio.get_running_loop()
        self._factory = ObjectFactory()
        self._trend_template = trend_log_template()
        self.trend_logs = open_trend_logs(self.view, self._database, self._retention)
        self.device = self._device()
        app = GatewayApplication.from_object_list([self.device])
        self.app = app
        app.resets = ResetWrites(self.view, settings, self._channel_ids, self.refresh)
        try:
            self._add(self._factory.reset_value(reset_all_point(), None))
            await self._add_channels(self._channels)
            await self._bind(host)
            if self._use_fast_path:
                self.fast_path = await install_fast_path(app, self.lookup)
        except BaseException:
            app.close()
            self.app = None
            self.trend_logs.close()
            raise
        app.i_am()
        self._sweeper = asyncio.create_task(self._sweep(), name="bacnet-cov-sweep")
        log.info(
            "bacnet_started",
            address=f"{host}:{self.port}",
            device_instance=settings.device_instance,
            objects=self.object_count,
        )

    async def stop(self) -> None:
        """Cancel subscriptions and timers, close the sockets."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._refresh_handle is not None:
            self._refresh_handle.cancel()
            self._refresh_handle = None
        self._cov_pass.clear()
        if self.fast_path is not None:
            self.fast_path.uninstall()
            self.fast_path = None
        app = self.app
        if app is None:
            return
        for detection in list(app._cov_detections.values()):
            for cov in list(detection.cov_subscriptions):
                app.cancel_subscription(cov)
        app.close()
        self.app = None
        self.trend_logs.close()
        await asyncio.sleep(0)
        log.info("bacnet_stopped")

    def _device(self) -> GatewayDevice:
        settings = self.settings
        extra = {
            key: value
            for key in ("location", "description")
            if (value := getattr(settings, key, ""))
        }
        return GatewayDevice(
            objectIdentifier=("device", settings.device_instance),
            objectName=settings.device_name,
            vendorName=VENDOR_NAME,
            vendorIdentifier=VENDOR_IDENTIFIER,
            modelName=MODEL_NAME,
            firmwareRevision=self.version,
            applicationSoftwareVersion=self.version,
            maxApduLengthAccepted=MAX_APDU,
            **extra,
        )

    async def _bind(self, host: str) -> None:
        """Add the network-port object (which binds the sockets) and wait until they are."""
        assert self.app is not None
        settings = self.settings
        port = GatewayNetworkPort(
            f"{settings.address.ip}/{settings.address.network.prefixlen}:{settings.port}",
            objectIdentifier=("network-port", NETWORK_PORT_INSTANCE),
            objectName=NETWORK_PORT_NAME,
        )
        # required of a B/IP port below protocol revision 24 (apdu-length) and for IPv4 (12.56)
        port.apduLength = MAX_APDU
        port.ipDefaultGateway, port.ipDNSServer = ip_settings(host)
        foreign = getattr(settings, "foreign_device", None)
        if foreign is not None:
            bbmd, ttl = foreign_device(foreign)
            port.bacnetIPMode = IPMode.foreign
            port.fdBBMDAddress = HostNPort(bbmd)
            port.fdSubscriptionLifetime = ttl
        self._check_free(port.objectIdentifier, NETWORK_PORT_NAME)
        self.app.add_object(port)
        link_layer = self.app.link_layers[port.objectIdentifier]
        tasks = list(link_layer.server._transport_tasks)
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), BIND_TIMEOUT_S)
        except (TimeoutError, OSError) as exc:
            for task in tasks:
                task.cancel()
            raise BacnetError(
                f"BACnet/IP {host}:{settings.port} could not be bound within "
                f"{BIND_TIMEOUT_S:g}s ({exc or 'timeout'}): check bacnet.address and bacnet.port"
            ) from None
        transport = link_layer.server.local_transport
        if transport is not None:
            self.port = int(transport.get_extra_info("sockname")[1])
        if foreign is not None:
            log.info("bacnet_foreign_device", bbmd=bbmd, ttl=ttl)

    # -- objects --------------------------------------------------------------------------

    @property
    def object_count(self) -> int:
        return 0 if self.app is None else len(self.app.objectIdentifier)

    def _channel_ids(self) -> list[str]:
        return list(self.links)

    def _check_free(self, objid: Any, name: str) -> None:
        assert self.app is not None
        if name in self.app.objectName:
            raise BacnetError(
                f"BACnet object name {name!r} is used twice: it is also the device name or "
                "another object's name; choose another bacnet.device_name"
            )
        if objid in self.app.objectIdentifier:
            raise BacnetError(
                f"BACnet object {objid[0]},{objid[1]} ({name}) is used twice: "
                "check bacnet_instance_base"
            )

    def _add(self, obj: Any) -> None:
        """``Application.add_object`` for a channel object, without its slow attribute reads.

        What add_object does for an object that is neither the device, a network port nor a
        schedule: index it by identifier and by name, and tell it its application.
        """
        assert self.app is not None
        objid, name = identity(obj)
        self._check_free(objid, str(name))
        self.app.objectIdentifier[objid] = obj
        self.app.objectName[name] = obj
        obj._app = self.app
        if not isinstance(obj, TrendLog):  # the fast path knows the channels' values only
            self.lookup.add(obj)

    def _build(self, point: Point, link: ChannelLink) -> Any:
        assert self._factory is not None
        if point.object_type == "trend-log":
            assert point.measure is not None and self._trend_template is not None
            trend = stamp_trend_log(self._trend_template, point, link, self.trend_logs)
            link.trends[point.measure] = trend
            return trend
        if point.measure is None:
            obj = self._factory.reset_value(point, link)
            link.reset = obj
        else:
            obj = self._factory.channel_input(point, link)
            link.inputs[point.measure] = obj
        return obj

    async def _add_channels(self, channels: Iterable[ChannelConfig]) -> list[str]:
        """Build and add the objects of ``channels``; yields to the loop as it goes."""
        added = []
        built = 0
        for config in channels:
            link = ChannelLink(config, self.view.live_channels(), self.view.latest_time)
            objects = [self._build(point, link) for point in channel_points(config)]
            self.links[config.id] = link  # first, so that a failure part-way can be undone
            for obj in objects:
                self._add(obj)
            added.append(config.id)
            built += len(objects)
            if built >= YIELD_EVERY:
                built = 0
                await asyncio.sleep(0)
        return added

    def _remove(self, link: ChannelLink) -> None:
        """Remove a channel's objects, ending their COV subscriptions first."""
        assert self.app is not None
        app = self.app
        for obj in link.objects():
            objid, name = identity(obj)
            detection = app._cov_detections.get(objid)
            if detection is not None:
                for cov in list(detection.cov_subscriptions):
                    app.cancel_subscription(cov)
            if app.objectIdentifier.get(objid) is obj:  # not one it collided with
                del app.objectIdentifier[objid]
                del app.objectName[name]
                obj._app = None
                self.lookup.remove(obj)
        self.links.pop(link.config.id, None)

    def _follow_trend_logs(self, link: ChannelLink, config: ChannelConfig) -> int:
        """Apply a reload to a channel's trend logs: added or removed with ``trend_log``, else
        updated in place (interval, buffer size, description). The objects added or removed."""
        assert self.app is not None
        wanted = {
            p.measure: p
            for p in channel_points(config)
            if p.object_type == "trend-log" and p.measure is not None
        }
        changed = 0
        for measure, trend in list(link.trends.items()):
            if measure not in wanted:
                objid, name = identity(trend)
                if self.app.objectIdentifier.get(objid) is trend:
                    del self.app.objectIdentifier[objid]
                    del self.app.objectName[name]
                    trend._app = None
                del link.trends[measure]
                changed += 1
        for measure, point in wanted.items():
            trend = link.trends.get(measure)
            if trend is not None:
                update_trend_log(trend, point, link)
                continue
            try:
                self._add(self._build(point, link))
                changed += 1
            except BacnetError as exc:
                link.trends.pop(measure, None)
                log.error("bacnet_trend_log_not_published", channel=config.id, problem=str(exc))
        return changed

    async def reconfigure(self, channels: Sequence[ChannelConfig]) -> None:
        """Follow a reload: add, remove or rebuild channel objects; keep the unchanged ones.

        A channel whose ``bacnet_instance_base`` changed is rebuilt (its subscriptions end); a
        new unit or COV increment is applied in place. A channel whose objects would collide
        with another's is left out and logged (``check`` refuses such a file anyway).
        """
        if self.app is None:
            self._channels = list(channels)
            return
        wanted = {config.id: config for config in channels}
        removed = added = trend_logs = 0
        for channel_id, link in list(self.links.items()):
            config = wanted.get(channel_id)
            if config is None or config.bacnet_instance_base != link.config.bacnet_instance_base:
                self._remove(link)
                removed += 1
        for channel_id, link in self.links.items():
            config = wanted[channel_id]
            if config != link.config:
                link.config = config
                assert self._factory is not None
                for point in channel_points(config):
                    if point.object_type == "analog-input" and point.measure is not None:
                        self._factory.update_input(link.inputs[point.measure], point)
                trend_logs += self._follow_trend_logs(link, config)
        for config in channels:
            if config.id in self.links:
                continue
            try:
                added += len(await self._add_channels([config]))
            except BacnetError as exc:
                self._remove(self.links[config.id])
                log.error("bacnet_channel_not_published", channel=config.id, problem=str(exc))
        self._channels = list(channels)
        if (added or removed or trend_logs) and self.device is not None:
            # 12.11.35: Database_Revision changes when objects are created or deleted
            self.device.databaseRevision = int(self.device.databaseRevision or 0) + 1
        log.info("bacnet_reconfigured", added=added, removed=removed, objects=self.object_count)
        self.refresh()

    # -- COV ------------------------------------------------------------------------------

    def refresh(self, channels: Iterable[str] | None = None) -> None:
        """Something changed in ``channels`` (None: anywhere, or not known where): evaluate
        COV for their subscribed objects, soon and once.

        Cheap: when nothing is subscribed this is a dictionary check; otherwise one evaluation
        pass is scheduled for the next loop iteration however often this is called before it
        (or, during a pass, one more pass after it). A pass evaluates the objects of the
        channels named since the last one: with sources polled at spread phases, a pulse
        event arrives every few milliseconds, and evaluating every subscribed object for each
        would cost more than the events themselves.
        """
        app = self.app
        if app is None or not app._cov_detections:
            return
        if channels is None:
            self._changed_all = True
        elif not self._changed_all:
            self._changed.update(channels)
        if self._refresh_handle is not None:
            self._cov_again = self._cov_again or bool(self._cov_pass)  # a pass is under way
            return
        assert self._loop is not None
        self._refresh_handle = self._loop.call_soon(self._evaluate)

    def _evaluate(self) -> int:
        """One turn of the current pass over the subscribed objects (see ``COV_BATCH``);
        returns how many notifications it sent."""
        self._refresh_handle = None
        app = self.app
        if app is None:
            return 0
        if not self._cov_pass:
            detections = app._cov_detections.values()
            if self._changed_all:
                self._cov_pass.extend(detections)
            else:
                changed = self._changed
                self._cov_pass.extend(
                    d for d in detections if getattr(d, "channel", None) in changed
                )
            self._changed, self._changed_all = set(), False
            self._cov_again = False
        notified = scanned = 0
        while self._cov_pass and notified < COV_BATCH and scanned < COV_SCAN:
            detection = self._cov_pass.popleft()
            scanned += 1
            if isinstance(detection, LiveCriteria):
                notified += detection.evaluate()
        if self._cov_pass or self._cov_again:
            assert self._loop is not None
            if notified < COV_BATCH:
                self._refresh_handle = self._loop.call_soon(self._evaluate)
            else:
                self._refresh_handle = self._loop.call_later(COV_PACE_S, self._evaluate)
        return notified

    async def _sweep(self) -> None:
        """Once a second: evaluate COV, in case a refresh was missed."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                self.refresh()
            except Exception as exc:  # a service bug must not end COV for the whole run
                log.error("bacnet_sweep_failed", error=repr(exc))
