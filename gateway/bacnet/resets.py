"""Writes to the reset objects: who may, what value, and what the writer is told.

docs/reference/bacnet.md, "Resets", is the contract.

A write of ``active`` to ``{id}.reset`` (or ``reset_all``) performs the reset through the
service, which applies it and makes it durable, and only then is the SimpleACK sent. The checks,
in order, and the answers (ASHRAE 135 clause 18 error class / code):

    property other than present-value     property / write-access-denied   (not a reset attempt)
    writer outside reset_allowed_from     property / write-access-denied   "not_allowed"
    an array index                        property / property-is-not-an-array  "bad_value"
    priority outside 1..16                property / value-out-of-range     "bad_value"
    a datatype other than ENUMERATED/NULL property / invalid-data-type      "bad_value"
    ENUMERATED other than 0 or 1          property / value-out-of-range     "bad_value"
    NULL (relinquish) or inactive         SimpleACK, nothing happens
    active, inside the reset lockout      services / service-request-denied  (the engine counts
                                          and the store audits it as "lockout")
    active, the state cannot be stored    device / operational-problem      (nothing changed)
    active                                the reset, then SimpleACK

The writer's address is checked before anything else so that an outsider learns nothing
about the object; a write routed from another BACnet network is never allowed (its sender's
IP address cannot be checked). bacpypes3 casts the value without a range check (REAL 5.0 and
ENUMERATED 7 became ``BinaryPV(5)``/``BinaryPV(7)``: docs/design/bacpypes3.md, "Writes"), so the
raw tag is inspected.
Lockout gets its own code so that an operator can tell "not now" from "not you".
``reset_all`` is refused (and counted) for every channel, and answers an Error only when no
channel accepted it. Refusals that never reach the engine are counted with
``view.count_rejection`` and audited with ``view.audit_refusals``; the origin is
``bacnet:HOST:PORT`` of the writer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from bacpypes3.errors import ExecutionError, PropertyError, ServicesError
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import Enumerated, TagClass, TagNumber

from gateway.logging import get_logger

if TYPE_CHECKING:
    from gateway.bacnet.objects import ResetValue
    from gateway.bacnet.server import BacnetView
    from gateway.config import BacnetSettings

log = get_logger("bacnet")

NOT_ALLOWED = "not_allowed"
BAD_VALUE = "bad_value"


def writer_host(source: Any) -> tuple[str, int] | None:
    """(host, port) of a B/IP writer on this network; None for routed or unknown sources.

    A write routed from another BACnet network arrives from a router on behalf of a device
    whose IP address cannot be checked, so it is never allowed to reset (docs/reference/bacnet.md).
    """
    if not isinstance(source, Address) or source.addrType != Address.localStationAddr:
        return None
    address = getattr(source, "addrTuple", None)
    if not address:
        return None
    return str(address[0]), int(address[1])


def origin_of(source: Any) -> str:
    """The audit's source string: ``bacnet:HOST:PORT``, or ``bacnet:ADDRESS`` when routed."""
    host = writer_host(source)
    if host is None:
        return f"bacnet:{source}"
    return f"bacnet:{host[0]}:{host[1]}"


class ResetWrites:
    """Performs and refuses remote writes to the reset objects for one server."""

    def __init__(
        self,
        view: BacnetView,
        settings: BacnetSettings,
        channel_ids: Callable[[], list[str]],
        after_reset: Callable[[], None],
    ) -> None:
        self.view = view
        self.settings = settings
        self._channel_ids = channel_ids  # the channels reset_all resets, in config order
        self._after_reset = after_reset  # evaluate COV

    def _refuse(
        self, target: ResetValue, reason: str, origin: str, error: ExecutionError
    ) -> NoReturn:
        channels = self._targets(target)
        try:
            for channel in channels:
                self.view.count_rejection(channel, reason)
            # a refused reset_all is one audit row per channel, in one transaction
            self.view.audit_refusals(channels, reason, origin)
        except Exception as exc:  # the writer still gets the refusal, not a storage error
            log.error("bacnet_refusal_not_audited", origin=origin, reason=reason, error=str(exc))
        log.info(
            "bacnet_reset_refused",
            object=str(target.objectName),
            origin=origin,
            reason=reason,
            error=f"{error.errorClass}/{error.errorCode}",
        )
        raise error

    def _targets(self, target: ResetValue) -> list[str]:
        channel = target.channel_id
        return self._channel_ids() if channel is None else [channel]

    async def write(
        self,
        target: ResetValue,
        index: int | None,
        raw: Any,
        priority: int | None,
        source: Any,
    ) -> None:
        """Apply a WriteProperty of present-value; raises ExecutionError for the Error answer."""
        origin = origin_of(source)
        host = writer_host(source)
        if host is None or not self.settings.may_reset(host[0]):
            self._refuse(target, NOT_ALLOWED, origin, PropertyError("writeAccessDenied"))
        if index is not None:
            self._refuse(target, BAD_VALUE, origin, PropertyError("propertyIsNotAnArray"))
        if priority is not None and not 1 <= priority <= 16:
            self._refuse(target, BAD_VALUE, origin, PropertyError("valueOutOfRange"))
        tags = list(getattr(raw, "tagList", None) or [])
        if len(tags) >= 2 and tags[0].tag_class == TagClass.opening:
            tags = tags[1:-1]  # the value arrives inside the request's [3] opening/closing tags
        tag = tags[0] if len(tags) == 1 else None
        if tag is None or tag.tag_class != TagClass.application:
            self._refuse(target, BAD_VALUE, origin, PropertyError("invalidDataType"))
        if tag.tag_number == TagNumber.null:
            return  # a relinquish: the object is not commandable, nothing to release
        if tag.tag_number != TagNumber.enumerated:
            self._refuse(target, BAD_VALUE, origin, PropertyError("invalidDataType"))
        value = int(raw.cast_out(Enumerated))
        if value not in (0, 1):
            self._refuse(target, BAD_VALUE, origin, PropertyError("valueOutOfRange"))
        if value == 0:
            return  # inactive: the object already is
        self._reset(target, origin)

    def _reset(self, target: ResetValue, origin: str) -> None:
        channel = target.channel_id
        try:
            if channel is None:
                outcomes = self.view.reset_all(origin)
                accepted = not outcomes or any(o.accepted for o in outcomes.values())
            else:
                accepted = self.view.reset(channel, origin).accepted
        except Exception as exc:  # storage failure: the service has undone the reset
            log.error(
                "bacnet_reset_failed", object=str(target.objectName), origin=origin, error=str(exc)
            )
            raise ExecutionError("device", "operationalProblem") from None
        finally:
            self._after_reset()
        if not accepted:
            # the engine refused it (lockout) and the service already counted and audited it
            raise ServicesError("serviceRequestDenied")
