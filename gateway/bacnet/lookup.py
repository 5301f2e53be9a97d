"""The fast path's view of the gateway's objects: the common properties, encoded at request time.

``gateway.bacnet.fastpath`` answers ReadProperty/ReadPropertyMultiple straight from the
datagram when its lookup knows every requested property, and hands everything else to
bacpypes3. This lookup knows the properties a BMS polls on the channel objects (present-value,
status-flags, reliability, object-name, units, event-state, out-of-service, cov-increment) and
computes them exactly as the objects' bacpypes3 properties do (same live reads, same encoding;
the tests compare the bytes with bacpypes3's for every object and status). It answers None for
anything else (the Device, the network port, array indexes, other properties), so those stay
bacpypes3's.
"""

from __future__ import annotations

from typing import Any

from gateway.bacnet.fastpath import (
    encode_boolean,
    encode_character_string,
    encode_enumerated,
    encode_real,
    encode_status_flags,
)
from gateway.bacnet.objects import NO_FAULT, ChannelInput, ResetValue, identity

ANALOG_INPUT, BINARY_VALUE = 0, 5  # BACnetObjectType
PRESENT_VALUE = 85
STATUS_FLAGS = 111
RELIABILITY = 103
OBJECT_NAME = 77
UNITS = 117
EVENT_STATE = 36
OUT_OF_SERVICE = 81
COV_INCREMENT = 22

_NORMAL = encode_status_flags()
_FAULT = encode_status_flags(fault=True)
_EVENT_NORMAL = encode_enumerated(0)  # the objects have no event reporting: always normal
_NOT_OUT_OF_SERVICE = encode_boolean(False)
_INACTIVE = encode_enumerated(0)


class FastLookup:
    """(object type, instance, property, index) -> encoded value, or None for bacpypes3.

    The server adds and removes channel objects as it publishes them.
    """

    def __init__(self) -> None:
        self._objects: dict[tuple[int, int], tuple[Any, bytes]] = {}

    def add(self, obj: ChannelInput | ResetValue) -> None:
        objid, name = identity(obj)
        self._objects[(int(objid[0]), int(objid[1]))] = (obj, encode_character_string(str(name)))

    def remove(self, obj: ChannelInput | ResetValue) -> None:
        objid, _ = identity(obj)
        self._objects.pop((int(objid[0]), int(objid[1])), None)

    def __call__(
        self, object_type: int, instance: int, prop: int, index: int | None
    ) -> bytes | None:
        entry = self._objects.get((object_type, instance))
        if entry is None or index is not None:
            return None
        obj, name = entry
        if prop == PRESENT_VALUE:
            if object_type == ANALOG_INPUT:
                return encode_real(obj.live_value())
            return _INACTIVE
        if prop == STATUS_FLAGS:
            return _NORMAL if obj.live_reliability() == NO_FAULT else _FAULT
        if prop == RELIABILITY:
            return encode_enumerated(int(obj.live_reliability()))
        if prop == OBJECT_NAME:
            return name
        if prop == EVENT_STATE:
            return _EVENT_NORMAL
        if prop == OUT_OF_SERVICE:
            return _NOT_OUT_OF_SERVICE
        if object_type == ANALOG_INPUT:
            if prop == UNITS:
                return encode_enumerated(int(obj.__dict__["units"]))
            if prop == COV_INCREMENT:
                return encode_real(obj.__dict__["covIncrement"])
        return None
