"""The bacpypes3 Application of the gateway, with the fixes 0.0.110 needs.

Each fix is described, with the bacpypes3 code it works around, in docs/design/bacpypes3.md.

- **Wildcard device instance.** 0.0.110 compares the request's ObjectIdentifier with
  ``("device", 4194303)``, which is never equal (ObjectType is not str), so reading
  ``device,4194303`` answered unknown-object. ``get_object_id`` maps it to the Device object,
  and RP/RPM/WPM requests are rewritten so the answer names the real device (135 15.5.1.1.1).
- **SubscribeCOV with the lifetime omitted** reached ``None > 0`` (operational-problem). An
  omitted lifetime with issueConfirmedNotifications present is an indefinite subscription
  (13.14.1.1.4): it is passed on as lifetime 0, which bacpypes3 treats as indefinite.
- **WritePropertyMultiple errors** were raised as ``WritePropertyMultipleError``, an ErrorPDU
  and so a BaseException that ``Application.indication`` never catches: the client got no
  answer. WPM is served here, answering the first failed write with a WPM-Error (16.10.1.3).
- **Writes.** Every WriteProperty/WPM goes through ``_write``: the reset objects'
  present-value goes to ``ResetWrites`` with the writer's address (``apdu.pduSource``, which
  bacpypes3 does not pass to ``Object.write_property``); anything else is unknown-property or
  write-access-denied without bacpypes3 ever casting or applying the value.
- **Subscriptions** are capped at ``MAX_SUBSCRIPTIONS`` so that a client cannot exhaust memory
  with process identifiers (resources / no-space-to-add-list-element).
- **Active COV subscriptions.** The Device's ``active-cov-subscriptions`` (12.11.38) asks the
  application for ``get_active_cov_subscriptions``, which 0.0.110 does not have, so the list
  always read empty. It is built here from the live subscriptions, with each one's time
  remaining.
- **ReadRange** raised NotImplementedError in 0.0.110. ``do_ReadRangeRequest`` serves the
  trend logs' log-buffer (``trendlog.py``, ``readrange.py``), sized to the client's max-APDU
  with ``segmentation``'s arithmetic; every other request gets its Error or Reject.
- **Invoke IDs per peer.** 0.0.110 numbers the confirmed requests it sends (COV notifications)
  from one counter for all destinations, so with several subscribers each one saw an ID come
  back after 256 notifications *in total*: at 40 notifications/s within 6.4 s, inside the
  window in which a receiver treats a known (source, invoke ID) as a retransmission (5.4.5;
  bac-py keeps it 6 s) and acknowledges without delivering. Here every destination has its own
  counter, so an ID returns to a peer only after 256 requests to that peer.
- **Reply sizes.** 0.0.110 sized ComplexACKs without their header, so replies went over the
  client's max-APDU. Building the application installs ``segmentation.GatewayServerSSM``, which
  answers whole, in segments or with an Abort from the real APDU sizes (5.4.5.3).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from bacpypes3.apdu import (
    APDU,
    ComplexAckPDU,
    ConfirmedRequestPDU,
    ReadPropertyMultipleRequest,
    ReadPropertyRequest,
    ReadRangeRequest,
    SimpleAckPDU,
    SubscribeCOVRequest,
    WritePropertyMultipleError,
    WritePropertyMultipleRequest,
    WritePropertyRequest,
    decode_max_segments_accepted,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import (
    COVSubscription,
    DeviceAddress,
    ErrorType,
    ListOfCOVSubscription,
    ObjectPropertyReference,
    Recipient,
    RecipientProcess,
)
from bacpypes3.constructeddata import List
from bacpypes3.errors import (
    ExecutionError,
    MissingRequiredParameter,
    ObjectError,
    ParameterOutOfRange,
    PropertyError,
    ServicesError,
)
from bacpypes3.primitivedata import ObjectType, PropertyIdentifier

from gateway.bacnet import segmentation
from gateway.bacnet.objects import ResetValue
from gateway.bacnet.trendlog import TrendLog, reference_time

if TYPE_CHECKING:
    from gateway.bacnet.resets import ResetWrites

# max-segments "unspecified" or more than 64 (20.1.2.4): answer at most this many segments
UNSPECIFIED_SEGMENTS = 32
COUNT_LIMIT = 2**15  # Count is an INTEGER16 (15.8.1.1.4.1): |count| < 2^15
WILDCARD_INSTANCE = 4194303  # 135 12.11.1: "any device" in Device object identifiers
MAX_SUBSCRIPTIONS = 65_536  # enough for two BMSes subscribing to every object of 2,000 channels


def _range(apdu: ReadRangeRequest) -> tuple[str, Any, int]:
    """(form, reference, count) of a ReadRange's range; Reject parameter-out-of-range for a
    count of 0 or beyond INTEGER16, a position 0, or a time with unspecified fields."""
    chosen = apdu.range
    if chosen is None:
        return "all", None, 1
    for form, name, field in (
        ("position", "byPosition", "referenceIndex"),
        ("sequence", "bySequenceNumber", "referenceSequenceNumber"),
        ("time", "byTime", "referenceTime"),
    ):
        value = getattr(chosen, name, None)
        if value is None:
            continue
        count = int(value.count)
        if count == 0 or not -COUNT_LIMIT <= count < COUNT_LIMIT:
            raise ParameterOutOfRange("count must be a non-zero INTEGER16")
        reference = getattr(value, field)
        if form == "time":
            return form, reference_time(reference), count
        reference = int(reference)
        if form == "position" and reference < 1:
            raise ParameterOutOfRange("positions start at 1")
        return form, reference, count
    raise MissingRequiredParameter("range")


class GatewayApplication(Application):
    """bacpypes3's Application with the gateway's fixes and write routing (module docstring)."""

    resets: ResetWrites | None = None  # set by BacnetServer before the socket is bound

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        segmentation.install()  # before any request: every server transaction is the subclass
        super().__init__(*args, **kwargs)
        self._next_invoke_ids: dict[Any, int] = {}  # per destination address

    def request(self, apdu: APDU) -> Any:
        """Send a request; a confirmed one gets the next invoke ID of its destination (bacpypes3
        still moves it on if that ID is outstanding there)."""
        if isinstance(apdu, ConfirmedRequestPDU) and apdu.apduInvokeID is None:
            peer = apdu.pduDestination
            invoke_id = self._next_invoke_ids.get(peer, 0)
            self._next_invoke_ids[peer] = (invoke_id + 1) % 256
            apdu.apduInvokeID = invoke_id
        return super().request(apdu)

    def _resolve(self, objid: Any) -> Any:
        """``objid`` with the wildcard device instance replaced by our device's identifier."""
        if (
            objid is not None
            and objid[1] == WILDCARD_INSTANCE
            and objid[0] == ObjectType.device
            and self.device_object is not None
        ):
            return self.device_object.objectIdentifier
        return objid

    def get_object_id(self, objid: Any) -> Any:
        """The local object with this identifier (the wildcard device instance included)."""
        return self.objectIdentifier.get(self._resolve(objid))

    async def do_ReadPropertyRequest(self, apdu: ReadPropertyRequest) -> None:
        apdu.objectIdentifier = self._resolve(apdu.objectIdentifier)
        await super().do_ReadPropertyRequest(apdu)

    async def do_ReadPropertyMultipleRequest(self, apdu: ReadPropertyMultipleRequest) -> None:
        for spec in apdu.listOfReadAccessSpecs:
            spec.objectIdentifier = self._resolve(spec.objectIdentifier)
        await super().do_ReadPropertyMultipleRequest(apdu)

    async def do_SubscribeCOVRequest(self, apdu: SubscribeCOVRequest) -> None:
        if apdu.issueConfirmedNotifications is not None:
            if apdu.lifetime is None:
                apdu.lifetime = 0  # omitted = indefinite (13.14.1.1.4)
            if self.subscription_count() >= MAX_SUBSCRIPTIONS and not self._renewal(apdu):
                raise ExecutionError("resources", "noSpaceToAddListElement")
        await super().do_SubscribeCOVRequest(apdu)

    async def do_ReadRangeRequest(self, apdu: ReadRangeRequest) -> None:
        """ReadRange (15.8): a trend log's log-buffer, from the interval records.

        bacpypes3 0.0.110's handler raises NotImplementedError (answered operational-problem);
        this one replaces it at the same name, which ``Application.indication`` looks up.
        The answer is built as bytes (``readrange.py``) and sent as a ComplexACK, so the
        reply-size rules of ``segmentation.GatewayServerSSM`` apply to it like to any other.
        """
        objid = self._resolve(apdu.objectIdentifier)
        obj = self.get_object_id(objid)
        if obj is None:
            raise ObjectError("unknownObject")
        prop = apdu.propertyIdentifier
        if not isinstance(obj, TrendLog) or prop != PropertyIdentifier.logBuffer:
            datatype = obj.get_property_type(prop)
            if datatype is None or getattr(obj, obj._property_identifier_class(prop).attr) is None:
                raise PropertyError("unknownProperty")
            # no other property of the gateway's objects is served by ReadRange: the lists
            # (the Device's active-cov-subscriptions...) are read whole with ReadProperty
            if isinstance(datatype, type) and issubclass(datatype, List):
                raise ServicesError("serviceRequestDenied")
            raise PropertyError("propertyIsNotAList")
        if apdu.propertyArrayIndex is not None:
            raise PropertyError("propertyIsNotAnArray")
        form, reference, count = _range(apdu)
        limit = segmentation.client_limit(apdu.apduMaxResp, self._own_max_apdu())
        segments = 1
        if apdu.apduSA:
            segments = decode_max_segments_accepted(apdu.apduMaxSegs) or UNSPECIFIED_SEGMENTS
        capacity = segmentation.capacity(limit, segments)
        data = obj.read_range(form, reference, count, capacity)
        answer = ComplexAckPDU(context=apdu)
        answer.pduData = bytearray(data)
        await self.response(answer)

    def _own_max_apdu(self) -> int | None:
        device = self.device_object
        value = None if device is None else device.__dict__.get("maxApduLengthAccepted")
        return None if value is None else int(value)

    def subscription_count(self) -> int:
        """Active COV subscriptions on all objects."""
        return sum(len(d.cov_subscriptions) for d in self._cov_detections.values())

    def get_active_cov_subscriptions(self) -> ListOfCOVSubscription:
        """Every live subscription, for the Device's active-cov-subscriptions (12.11.38)."""
        now = asyncio.get_running_loop().time()
        found = []
        for detection in self._cov_detections.values():
            for cov in detection.cov_subscriptions:
                if cov.obj_ref is None:  # cancelled, not yet dropped
                    continue
                address = cov.client_addr
                recipient = Recipient(
                    address=DeviceAddress(
                        networkNumber=address.addrNet or 0, macAddress=address.addrAddr
                    )
                )
                handle = cov.cancel_handle  # None: an indefinite subscription, 0 remaining
                remaining = 0 if handle is None else max(1, round(handle.when() - now))
                subscription = COVSubscription(
                    recipient=RecipientProcess(recipient=recipient, processIdentifier=cov.proc_id),
                    monitoredPropertyReference=ObjectPropertyReference(
                        objectIdentifier=cov.obj_id, propertyIdentifier="presentValue"
                    ),
                    issueConfirmedNotifications=bool(cov.confirmed),
                    timeRemaining=remaining,
                )
                increment = getattr(cov.obj_ref, "covIncrement", None)
                if increment is not None:
                    subscription.covIncrement = float(increment)
                found.append(subscription)
        return ListOfCOVSubscription(found)

    def _renewal(self, apdu: SubscribeCOVRequest) -> bool:
        detection = self._cov_detections.get(apdu.monitoredObjectIdentifier)
        if detection is None:
            return False
        return any(
            cov.client_addr == apdu.pduSource and cov.proc_id == apdu.subscriberProcessIdentifier
            for cov in detection.cov_subscriptions
        )

    async def _write(
        self,
        obj: Any,
        prop: Any,
        index: int | None,
        raw: Any,
        priority: int | None,
        source: Any,
    ) -> None:
        """One write of a WriteProperty or WPM; raises ExecutionError for the Error answer."""
        if obj.get_property_type(prop) is None:
            raise PropertyError("unknownProperty")
        name = obj._property_identifier_class(prop).attr
        if isinstance(obj, ResetValue) and name == "presentValue" and self.resets is not None:
            await self.resets.write(obj, index, raw, priority, source)
            return
        raise PropertyError("writeAccessDenied")

    async def do_WritePropertyRequest(self, apdu: WritePropertyRequest) -> None:
        obj = self.get_object_id(apdu.objectIdentifier)
        if obj is None:
            raise ObjectError("unknownObject")
        await self._write(
            obj,
            apdu.propertyIdentifier,
            apdu.propertyArrayIndex,
            apdu.propertyValue,
            apdu.priority,
            apdu.pduSource,
        )
        await self.response(SimpleAckPDU(context=apdu))

    async def do_WritePropertyMultipleRequest(self, apdu: WritePropertyMultipleRequest) -> None:
        for spec in apdu.listOfWriteAccessSpecs:
            objid = self._resolve(spec.objectIdentifier)
            obj = self.get_object_id(objid)
            if obj is None:
                failed = ObjectPropertyReference(objectIdentifier=objid)
                await self._wpm_error(apdu, ObjectError("unknownObject"), failed)
                return
            for value in spec.listOfProperties:
                try:
                    await self._write(
                        obj,
                        value.propertyIdentifier,
                        value.propertyArrayIndex,
                        value.value,
                        value.priority,
                        apdu.pduSource,
                    )
                except ExecutionError as error:
                    failed = ObjectPropertyReference(
                        objectIdentifier=objid, propertyIdentifier=value.propertyIdentifier
                    )
                    if value.propertyArrayIndex is not None:
                        failed.propertyArrayIndex = value.propertyArrayIndex
                    await self._wpm_error(apdu, error, failed)
                    return
        await self.response(SimpleAckPDU(context=apdu))

    async def _wpm_error(
        self, apdu: WritePropertyMultipleRequest, error: ExecutionError, failed: Any
    ) -> None:
        """Answer a WPM-Error (a WritePropertyMultipleError must be *sent*, not raised)."""
        answer = WritePropertyMultipleError(
            errorType=ErrorType(errorClass=error.errorClass, errorCode=error.errorCode),
            firstFailedWriteAttempt=failed,
            context=apdu,
        )
        await self.response(answer)
