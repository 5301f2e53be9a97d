"""The gateway's BACnet object classes: values read from the engine when a client asks.

Theory of operation
-------------------
Each channel has a ``ChannelLink``: its config and the live ``gateway.core.Channel`` the engine
updates. The objects hold the link, and their ``presentValue``, ``statusFlags`` and
``reliability`` are Python properties that compute the answer from the channel at read time.
bacpypes3's ``Object.read_property`` calls a property's getter directly, so a ReadProperty or
ReadPropertyMultiple costs one attribute read on the channel, and nothing is ever pushed into
14,000 objects every second (each assignment goes through bacpypes3's property monitors:
about 11 µs, some 15 % of the loop at 14,000 a second; docs/design/bacpypes3.md, "Reads").

Status (docs/reference/bacnet.md, "Status flags and reliability"):

    channel offline             status-flags fault, reliability communication-failure,
                                on all its objects (the reset binary-value too)
    demand not available        on ``{id}.demand`` only: present-value keeps the last valid
    (online)                    demand (0.0 before any), status-flags fault, reliability
                                unreliable-other (the value is right but stale; no more specific
                                code fits "the window is not complete yet")
    otherwise                   no-fault-detected

Every object is read-only: ``write_property`` answers write-access-denied (bacpypes3 accepts
writes to any property by default: docs/design/bacpypes3.md, "Writes"). Writes to the reset
objects' present-value never reach ``write_property``: the application routes them to
``gateway.bacnet.resets``.

Construction: building a bacpypes3 local object through its constructor costs ~0.4-2 ms (each
of ~40 properties is cast and probed with ``inspect.getattr_static``), i.e. 6-28 s for 2,000
channels. ``ObjectFactory`` builds one prototype per class the normal way and stamps out the
others by copying the prototype's attribute dictionary and setting the few per-object values:
~20 µs each. This relies on bacpypes3 0.0.110's layout (pinned in pyproject.toml); the tests
compare every property of a stamped object with one built by the constructor.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bacpypes3.basetypes import (
    BinaryPV,
    EngineeringUnits,
    ObjectTypesSupported,
    PropertyIdentifier,
    Reliability,
    ServicesSupported,
    StatusFlags,
)
from bacpypes3.constructeddata import ArrayOf
from bacpypes3.errors import PropertyError
from bacpypes3.local.analog import AnalogInputObject
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.primitivedata import CharacterString, ObjectIdentifier, ObjectType, Real

from gateway.bacnet.cov import LiveCriteria
from gateway.bacnet.points import Measure, Point
from gateway.readings import projected

if TYPE_CHECKING:
    from gateway.config import ChannelConfig
    from gateway.core import Channel, Instant

# instances, not the class attributes: those are plain ints that bacpypes3 cannot encode
NO_FAULT = Reliability("noFaultDetected")
COMMUNICATION_FAILURE = Reliability("communicationFailure")
UNRELIABLE_OTHER = Reliability("unreliableOther")
CONFIGURATION_ERROR = Reliability("configurationError")  # a configured channel the engine lacks

# status-flags {in-alarm, fault, overridden, out-of-service}; never mutated, so shared
FLAGS_NORMAL = StatusFlags([0, 0, 0, 0])
FLAGS_FAULT = StatusFlags([0, 1, 0, 0])
INACTIVE = BinaryPV("inactive")

# 135 clause 12, Property_List of every object type: it does not include Object_Identifier,
# Object_Name, Object_Type and Property_List (bacpypes3 0.0.110 lists them:
# docs/design/bacpypes3.md, "The Device object")
_NOT_IN_PROPERTY_LIST = frozenset({"objectIdentifier", "objectName", "objectType", "propertyList"})

_READERS: dict[Measure, Callable[[Channel], float]] = {
    Measure.CONSUMPTION: lambda c: c.consumption,
    Measure.DEMAND: lambda c: d if (d := c.last_valid_demand) is not None else 0.0,
    Measure.PEAK_DEMAND: lambda c: c.peak_demand,
    Measure.PREVIOUS_PEAK_DEMAND: lambda c: c.previous_peak_demand,
    Measure.CUMULATIVE_DEMAND: lambda c: c.cumulative_demand,
    Measure.RESET_COUNT: lambda c: float(c.reset_count),
    Measure.PERIOD_CONSUMPTION: lambda c: c.period_consumption,
    Measure.PREVIOUS_PERIOD_CONSUMPTION: lambda c: c.previous_period,
    # PROJECTED_DEMAND needs the gateway's time: ChannelLink.projected
}


class ChannelLink:
    """One channel as BACnet sees it: its config, its objects, and its live engine channel.

    The channel is looked up by id in the engine's live mapping on every read, so a channel
    the engine replaces (a reload, a reset that could not be stored) is seen at once and
    nothing needs re-pointing; no such channel shows as a configuration-error fault.
    """

    __slots__ = ("_channels", "config", "inputs", "latest_time", "reset", "trends")

    def __init__(
        self,
        config: ChannelConfig,
        channels: Mapping[str, Channel],
        latest_time: Callable[[], Instant],
    ) -> None:
        self.config = config
        self._channels = channels
        self.latest_time = latest_time  # the gateway's time, for projected demand
        self.inputs: dict[Measure, ChannelInput] = {}
        self.reset: ResetValue | None = None
        self.trends: dict[Measure, Any] = {}  # the trend logs (gateway.bacnet.trendlog)

    @property
    def channel(self) -> Channel | None:
        return self._channels.get(self.config.id)

    def reliability(self, measure: Measure | None) -> Reliability:
        channel = self.channel
        if channel is None:
            return CONFIGURATION_ERROR
        if not channel.is_online:
            return COMMUNICATION_FAILURE
        if measure is Measure.DEMAND and channel.demand is None:
            return UNRELIABLE_OTHER
        if measure is Measure.PROJECTED_DEMAND and self.projected(channel) is None:
            return UNRELIABLE_OTHER
        return NO_FAULT

    def projected(self, channel: Channel) -> float | None:
        return projected(channel, self.latest_time())

    def objects(self) -> list[Any]:
        """Every object of this channel (analog inputs, the reset binary-value, trend logs)."""
        found: list[Any] = list(self.inputs.values())
        if self.reset is not None:
            found.append(self.reset)
        found.extend(self.trends.values())
        return found


class GatewayObject:
    """Mixin for every object of the gateway: read-only, and a standard Property_List."""

    async def write_property(
        self, attr: int | str, value: Any, index: int | None = None, priority: int | None = None
    ) -> None:
        # bacpypes3 would accept and apply the write; the standard answer for a
        # property that exists but may not be written is write-access-denied (15.9.1.3.1)
        raise PropertyError("writeAccessDenied")

    @property
    def propertyList(self) -> Any:
        elements = self._elements  # type: ignore[attr-defined]
        names = [
            name
            for name in elements
            if name not in _NOT_IN_PROPERTY_LIST
            and inspect.getattr_static(self, name, None) is not None
        ]
        identifier = self._property_identifier_class  # type: ignore[attr-defined]
        return ArrayOf(PropertyIdentifier)([identifier(name) for name in names])

    @propertyList.setter
    def propertyList(self, value: Any) -> None:
        """Computed; assignments from the constructor are ignored."""


class LiveStatus:
    """Mixin for the objects over a channel: status flags and reliability read live from it
    (the subclass says how, in ``live_reliability``), never stored in the object."""

    def live_reliability(self) -> Reliability:
        raise TypeError(f"{type(self).__name__} must say how its reliability is read")

    @property
    def statusFlags(self) -> StatusFlags:
        return FLAGS_NORMAL if self.live_reliability() == NO_FAULT else FLAGS_FAULT

    @statusFlags.setter
    def statusFlags(self, value: Any) -> None:
        """Computed; assignments from the constructor are ignored."""

    @property
    def reliability(self) -> Reliability:
        return self.live_reliability()

    @reliability.setter
    def reliability(self, value: Any) -> None:
        """Computed; assignments from the constructor are ignored."""


class ChannelInput(LiveStatus, GatewayObject, AnalogInputObject):
    """``{id}.consumption`` ... ``{id}.reset_count``: an analog input over a live channel."""

    # Per-object attributes, set by ObjectFactory (no class annotations: bacpypes3's metaclass
    # evaluates them): _link (ChannelLink), _measure (Measure), _read (Channel -> float),
    # _increment (float, the COV increment).
    _cov_criteria = LiveCriteria

    def live_value(self) -> float:
        channel = self._link.channel
        if channel is None:
            return 0.0
        if self._measure is Measure.PROJECTED_DEMAND:  # 0 while not available (a fault)
            return self._link.projected(channel) or 0.0
        return self._read(channel)

    def live_reliability(self) -> Reliability:
        return self._link.reliability(self._measure)

    @property
    def presentValue(self) -> Real:
        return Real(self.live_value())

    # LiveCriteria's interface
    def cov_state(self) -> tuple[float, bool]:
        return self.live_value(), self.live_reliability() != NO_FAULT

    def cov_values(self) -> tuple[Real, StatusFlags]:
        return self.presentValue, self.statusFlags

    def cov_increment(self) -> float:
        return self._increment


class ResetValue(LiveStatus, GatewayObject, BinaryValueObject):
    """``{id}.reset`` and ``reset_all``: momentary, so present-value always reads inactive.

    Not commandable (no priority array, 12.6): the reset is performed while the write is being
    answered, so there is no "active" state to observe, nothing to relinquish, and no slot a BMS
    could leave stuck. ``_link`` is None for ``reset_all``, which never shows a fault.
    """

    _cov_criteria = LiveCriteria  # _link: ChannelLink, or None for reset_all (ObjectFactory)

    def live_reliability(self) -> Reliability:
        return NO_FAULT if self._link is None else self._link.reliability(None)

    @property
    def channel_id(self) -> str | None:
        """The channel this object resets; None for reset_all."""
        return None if self._link is None else self._link.config.id

    @property
    def presentValue(self) -> BinaryPV:
        return INACTIVE

    def cov_state(self) -> tuple[float, bool]:
        return 0.0, self.live_reliability() != NO_FAULT

    def cov_values(self) -> tuple[BinaryPV, StatusFlags]:
        return INACTIVE, self.statusFlags

    def cov_increment(self) -> float:
        return 0.0


# 12.11.32 / 12.11.33: what this device executes (RP, RPM, WP, WPM, SubscribeCOV, ReadRange,
# Who-Is, Who-Has) and initiates (I-Am, I-Have, COV notifications). bacpypes3 0.0.110 derives
# the bits from its do_* methods, which also counts client-side handlers and maps unconfirmed
# services through the confirmed enumeration; a fixed list is exact.
SERVICES = (
    "readProperty",
    "readPropertyMultiple",
    "writeProperty",
    "writePropertyMultiple",
    "subscribeCOV",
    "readRange",
    "confirmedCOVNotification",
    "unconfirmedCOVNotification",
    "iAm",
    "iHave",
    "whoHas",
    "whoIs",
)
OBJECT_TYPES = ("device", "analogInput", "binaryValue", "networkPort", "trendLog")


def _services_supported() -> ServicesSupported:
    bits = ServicesSupported([])
    for name in SERVICES:
        bits[getattr(bits, name)] = 1
    return bits


def _object_types_supported() -> ObjectTypesSupported:
    bits = ObjectTypesSupported([])
    for name in OBJECT_TYPES:
        bits[getattr(bits, name)] = 1
    return bits


class GatewayDevice(GatewayObject, DeviceObject):
    """The Device object, with the gaps bacpypes3 leaves filled (docs/design/bacpypes3.md)."""

    _services = None  # ServicesSupported, built on first read
    _object_types = None  # ObjectTypesSupported, built on first read

    @property
    def protocolServicesSupported(self) -> ServicesSupported:
        if GatewayDevice._services is None:
            GatewayDevice._services = _services_supported()
        return GatewayDevice._services

    @protocolServicesSupported.setter
    def protocolServicesSupported(self, value: Any) -> None:
        """Computed; assignments from the constructor are ignored."""

    @property
    def protocolObjectTypesSupported(self) -> ObjectTypesSupported:
        if GatewayDevice._object_types is None:
            GatewayDevice._object_types = _object_types_supported()
        return GatewayDevice._object_types

    @protocolObjectTypesSupported.setter
    def protocolObjectTypesSupported(self, value: Any) -> None:
        """Computed; assignments from the constructor are ignored."""


class GatewayNetworkPort(GatewayObject, NetworkPortObject):
    """The B/IP network port (12.56), read-only: a remote write must not move the socket."""


def _template(cls: type, **kwargs: Any) -> dict[str, Any]:
    """The attribute dictionary of an object built by the constructor (needs a running loop)."""
    prototype = cls(**kwargs)
    # Properties the object does not have are stored as None; leaving them out reads the same
    # (bacpypes3 answers unknown-property for a missing attribute as for a None one, and skips
    # both in Property_List and RPM ALL) and saves ~1.5 KB per object.
    template = {key: value for key, value in prototype.__dict__.items() if value is not None}
    for private in ("_app", "_property_monitors", "_link", "_measure"):
        template.pop(private, None)
    return template


# bacpypes3.local.object.Object keeps these two in name-mangled private attributes; reading
# them through the dictionary skips its ~25 µs __getattribute__ (inspect.getattr_static)
_ID = "_Object__objectIdentifier"
_NAME = "_Object__objectName"


def identity(obj: Any) -> tuple[Any, Any]:
    """(objectIdentifier, objectName) of a local object, cheaply."""
    attributes = obj.__dict__
    return attributes[_ID], attributes[_NAME]


class ObjectFactory:
    """Stamps out channel objects from prototypes (see the module docstring).

    Create it inside the running event loop: bacpypes3 object constructors schedule a task.
    """

    def __init__(self) -> None:
        common = {"eventState": "normal", "outOfService": False, "description": "prototype"}
        self._input = _template(
            ChannelInput,
            objectIdentifier=("analog-input", 1),
            objectName="prototype.input",
            units="noUnits",
            covIncrement=0.0,
            **common,
        )
        self._reset = _template(
            ResetValue,
            objectIdentifier=("binary-value", 1),
            objectName="prototype.reset",
            activeText="reset",
            inactiveText="idle",
            **common,
        )
        self._analog_input = ObjectType("analogInput")
        self._binary_value = ObjectType("binaryValue")
        self._units: dict[str, EngineeringUnits] = {}

    def _engineering_units(self, name: str) -> EngineeringUnits:
        units = self._units.get(name)
        if units is None:
            units = self._units[name] = EngineeringUnits(name)
        return units

    @staticmethod
    def _stamp(
        kind: type[Any], template: dict[str, Any], point: Point, object_type: ObjectType
    ) -> Any:
        obj = object.__new__(kind)  # no __init__: the template holds what it would have set
        attributes = obj.__dict__
        attributes.update(template)
        attributes["_app"] = None
        attributes["_property_monitors"] = defaultdict(list)
        attributes[_ID] = ObjectIdentifier((object_type, point.instance))
        attributes[_NAME] = CharacterString(point.name)
        attributes["description"] = CharacterString(point.description)
        return obj

    def channel_input(self, point: Point, link: ChannelLink) -> ChannelInput:
        """The analog input for ``point`` (a channel measure)."""
        assert point.measure is not None and point.cov_increment is not None
        obj = self._stamp(ChannelInput, self._input, point, self._analog_input)
        attributes = obj.__dict__
        attributes["units"] = self._engineering_units(point.units)
        attributes["covIncrement"] = Real(point.cov_increment)
        attributes["_link"] = link
        attributes["_measure"] = point.measure
        attributes["_read"] = _READERS.get(point.measure)
        attributes["_increment"] = point.cov_increment
        return obj

    def reset_value(self, point: Point, link: ChannelLink | None) -> ResetValue:
        """The reset binary-value for ``point``; ``link`` None for reset_all."""
        obj = self._stamp(ResetValue, self._reset, point, self._binary_value)
        obj.__dict__["_link"] = link
        return obj

    def update_input(self, obj: ChannelInput, point: Point) -> None:
        """Apply a reload's new unit or COV increment to an existing object (keeps subscribers)."""
        attributes = obj.__dict__
        attributes["units"] = self._engineering_units(point.units)
        attributes["covIncrement"] = Real(point.cov_increment)
        attributes["description"] = CharacterString(point.description)
        attributes["_increment"] = point.cov_increment
