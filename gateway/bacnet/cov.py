"""Change of value for objects whose values live in the engine (ASHRAE 135 clause 13.1).

bacpypes3's COV machinery (``bacpypes3.local.cov``) is driven by property *assignments*: a
detection algorithm hooks the object's ``__setattr__`` monitors and fires when code assigns
``presentValue``. The gateway never assigns values (each assignment goes through the property
monitors, docs/design/bacpypes3.md, "Reads"); its objects read the engine when asked. So this
module keeps bacpypes3's subscription bookkeeping (``Subscription``,
``Application._cov_detections``, lifetimes, the SubscribeCOV service) and replaces the detection:

- ``LiveCriteria`` is created by bacpypes3 when the first client subscribes to an object and
  dropped when the last subscription ends, so ``Application._cov_detections`` holds exactly the
  objects that have subscribers. ``evaluate()`` compares the live present-value and status-flags
  with what was last reported; the server calls it for those objects only (``refresh``).
- Status changes (offline, demand not available) notify on their own: the flags are compared
  directly: bacpypes3 computes ``statusFlags``, so a change of reliability alone would never
  notify (docs/design/bacpypes3.md, "Change of value").
- Analog objects notify when the value moved by at least the COV increment from the last
  reported value (13.1.3); an increment of 0 notifies on any change. Binary objects notify on
  any change.
- ``send_cov_notifications`` takes the device identifier from ``app.device_object`` instead of
  scanning every object of the application per notification as bacpypes3 0.0.110 does (O(N),
  ~4 ms at 1,000 objects): the cost per notification no longer grows with the object count.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from bacpypes3.apdu import ConfirmedCOVNotificationRequest, UnconfirmedCOVNotificationRequest
from bacpypes3.basetypes import PropertyValue
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.local.cov import COVDetection, DetectionAlgorithm

if TYPE_CHECKING:
    from bacpypes3.service.cov import Subscription


class LiveObject(Protocol):
    """What ``LiveCriteria`` needs from an object: its live state, cheaply."""

    _app: Any

    def cov_state(self) -> tuple[float, bool]:
        """(present value as a number, status-flags fault bit)."""
        ...

    def cov_values(self) -> tuple[Any, Any]:
        """(present-value, status-flags) as BACnet values for a notification."""
        ...

    def cov_increment(self) -> float:
        """The minimum change that notifies; 0 = any change."""
        ...


class LiveCriteria(COVDetection):
    """COV detection for an object that computes its values (see the module docstring)."""

    properties_tracked = ()  # nothing is assigned to our objects: no monitors to hook
    properties_reported = ("presentValue", "statusFlags")
    monitored_property_reference = "presentValue"

    def __init__(self, obj: LiveObject) -> None:
        # DetectionAlgorithm, not COVDetection.__init__: that one binds property monitors
        DetectionAlgorithm.__init__(self)
        self.obj = obj
        # the channel whose changes it follows (None: reset_all), read once: a bacpypes3
        # object's attributes are slow to read, and each COV pass asks every detection
        link = getattr(obj, "_link", None)
        self.channel: str | None = None if link is None else link.config.id
        self.cov_subscriptions: list[Subscription] = []
        self.reported_value, self.reported_fault = obj.cov_state()

    def changed(self) -> bool:
        """Whether the live state differs enough from what subscribers were last told."""
        value, fault = self.obj.cov_state()
        if fault != self.reported_fault:
            return True
        increment = self.obj.cov_increment()
        if increment > 0:
            return abs(value - self.reported_value) >= increment
        return value != self.reported_value

    def evaluate(self) -> int:
        """Notify every subscriber if the state changed; returns how many were notified."""
        if self.cov_subscriptions and self.changed():
            count = len(self.cov_subscriptions)
            self.send_cov_notifications()
            return count
        return 0

    def execute(self) -> None:
        self.evaluate()

    def send_cov_notifications(self, subscription: Subscription | None = None) -> None:
        """Notify one new subscriber (its initial notification) or all of them (a change).

        Only a notification to all subscribers moves the reference value: a late subscriber's
        initial notification must not hide a change from the others (13.1.3).
        """
        if not self.cov_subscriptions:
            return
        app = self.obj._app
        if app is None or app.device_object is None:
            return  # the object was removed; its subscriptions are being cancelled
        if subscription is None:
            self.reported_value, self.reported_fault = self.obj.cov_state()
            targets = list(self.cov_subscriptions)
        else:
            targets = [subscription]
        present_value, status_flags = self.obj.cov_values()
        list_of_values = [
            PropertyValue(propertyIdentifier="presentValue", value=AnyValue(present_value)),
            PropertyValue(propertyIdentifier="statusFlags", value=AnyValue(status_flags)),
        ]
        device_id = app.device_object.objectIdentifier
        now = asyncio.get_running_loop().time()
        for cov in targets:
            if cov.cancel_handle is None:
                time_remaining = 0  # indefinite
            else:
                time_remaining = max(1, int(cov.cancel_handle.when() - now))
            request: ConfirmedCOVNotificationRequest | UnconfirmedCOVNotificationRequest
            if cov.confirmed:
                request = ConfirmedCOVNotificationRequest()
            else:
                request = UnconfirmedCOVNotificationRequest()
            request.pduDestination = cov.client_addr
            request.subscriberProcessIdentifier = cov.proc_id
            request.initiatingDeviceIdentifier = device_id
            request.monitoredObjectIdentifier = cov.obj_id
            request.timeRemaining = time_remaining
            request.listOfValues = list_of_values
            app.cov_notification(cov, request)
