"""Replies within the client's max-APDU: bacpypes3 0.0.110's server transactions, corrected.

A confirmed request declares the largest APDU the client accepts (max-APDU, 20.1.2.5), whether
it accepts a segmented answer (SA) and how many segments (max-segments, 20.1.2.4). The limit
counts the whole APDU, header included: a ComplexACK header is 3 octets unsegmented and 5
segmented (20.1.5). bacpypes3's ``ServerSSM.confirmation`` compares only the service data with
the limit, so every segment was 5 octets over it and an answer up to 3 octets over went out
whole, even to a client that accepts no segments. :class:`GatewayServerSSM` decides whole,
segmented or Abort from the real sizes (5.4.5.3, CannotSendSegmentedComplexACK):

- the answer fits whole when service data + 3 <= the limit;
- otherwise it goes in segments of (limit - 5) octets of service data, if this device sends
  segments and the request said SA; else Abort segmentation-not-supported;
- more segments than the client's max-segments: Abort buffer-overflow (bacpypes3 answered
  apdu-too-long).

The limit is the request's own max-APDU, bounded by this device's. bacpypes3 replaced it with a
larger value from its device-information cache (an I-Am), but the request says what this
transaction's client accepts (a router on the way may carry less than the device takes).

Two smaller faults of the segmented send are fixed on the way: the window after sequence number
255 restarted at segment 0 (``fill_window`` takes a sequence number, modulo 256, as the segment
index), and a timeout before the client's first SegmentACK failed an assertion (no window size
yet) instead of sending the first segment again.

Every ComplexACK bacpypes3 sends (ReadProperty, ReadPropertyMultiple, any other confirmed
service) passes here; the fast path (``fastpath.py``) only sends what fits whole and hands the
rest to bacpypes3. Simple ACKs, Errors, Rejects and Aborts are a few octets, within every limit.

Seam: ``ApplicationServiceAccessPoint.confirmation`` builds a server transaction with the
module-global name ``bacpypes3.appservice.ServerSSM``; :func:`install` points that name at the
subclass (docs/design/bacpypes3.md, "Reply sizes").
"""

from __future__ import annotations

from typing import Any

from bacpypes3 import appservice
from bacpypes3.apdu import (
    AbortReason,
    ComplexAckPDU,
    decode_max_apdu_length_accepted,
)
from bacpypes3.basetypes import Segmentation

__all__ = [
    "SEGMENTED_HEADER",
    "UNSEGMENTED_HEADER",
    "GatewayServerSSM",
    "capacity",
    "client_limit",
    "install",
    "plan",
]

UNSEGMENTED_HEADER = 3  # ComplexACK: type and flags, invoke ID, service choice (20.1.5)
SEGMENTED_HEADER = 5  # ... plus sequence number and proposed window size
SMALLEST_MAX_APDU = 50  # for a reserved max-APDU code (6-15): never send more than any client takes

_SENDS_SEGMENTS = (Segmentation.segmentedTransmit, Segmentation.segmentedBoth)


def client_limit(max_resp_code: int, own: int | None) -> int:
    """The APDU limit of a request's client: its declared max-APDU (20.1.2.5), bounded by this
    device's own; a reserved code counts as the smallest limit there is."""
    try:
        declared = decode_max_apdu_length_accepted(max_resp_code)
    except (ValueError, IndexError, TypeError):
        declared = None
    return min(declared or SMALLEST_MAX_APDU, own or declared or SMALLEST_MAX_APDU)


def capacity(limit: int, segments: int) -> int:
    """The most service-data octets :func:`plan` sends in at most ``segments`` APDUs of
    ``limit`` octets: what a service that chooses how much to answer (ReadRange) may fill."""
    whole = limit - UNSEGMENTED_HEADER
    if segments <= 1:
        return whole
    return max(whole, segments * (limit - SEGMENTED_HEADER))


def plan(data_length: int, limit: int) -> tuple[int, int]:
    """(segment count, service-data octets per segment) for ``data_length`` octets of
    service data to a client whose APDU limit is ``limit``; (1, data_length) when it fits whole.
    """
    if data_length + UNSEGMENTED_HEADER <= limit:
        return 1, data_length
    size = limit - SEGMENTED_HEADER
    return -(-data_length // size), size


class GatewayServerSSM(appservice.ServerSSM):
    """bacpypes3's server transaction with ComplexACKs sized by the real APDU (module docstring).

    Everything but the ComplexACK decision and the window's segment index is bacpypes3's.
    """

    request_limit: int | None = None  # the client's APDU limit for this transaction
    _window_start = 0  # the segment index of the current window's first segment

    async def idle(self, apdu: Any) -> None:
        # Before bacpypes3 replaces maxApduLengthAccepted (this device's, until now) with the
        # client's, possibly from its cache: the request may come back answered inside idle().
        self.request_limit = client_limit(apdu.apduMaxResp, self.maxApduLengthAccepted)
        await super().idle(apdu)

    async def confirmation(self, apdu: Any) -> None:
        if apdu.apduType != ComplexAckPDU.pduType:
            await super().confirmation(apdu)
            return
        limit = self.request_limit or self.maxApduLengthAccepted or SMALLEST_MAX_APDU
        device_info = self.device_info
        if device_info is not None and device_info.max_npdu_length is not None:
            limit = min(limit, device_info.max_npdu_length)

        self.set_segmentation_context(apdu)
        self.segmentCount, self.segmentSize = plan(len(apdu.pduData or b""), limit)
        if self.segmentCount > 1:
            if self.segmentationSupported not in _SENDS_SEGMENTS:
                await self.response(self.abort(AbortReason.segmentationNotSupported))
                return
            if not self.segmented_response_accepted:
                await self.response(self.abort(AbortReason.segmentationNotSupported))
                return
            # None: max-segments unspecified or more than 64 (20.1.2.4), no limit given
            if (
                self.maxSegmentsAccepted is not None
                and self.segmentCount > self.maxSegmentsAccepted
            ):
                await self.response(self.abort(AbortReason.bufferOverflow))
                return

        self.segmentRetryCount = 0
        self.initialSequenceNumber = 0
        self.actualWindowSize = None
        self._window_start = 0
        if self.segmentCount == 1:
            apdu.apduSeg = False
            apdu.apduMor = False
            await self.response(apdu)
            self.set_state(appservice.COMPLETED)
        else:
            await self.response(self.get_segment(0))
            self.set_state(appservice.SEGMENTED_RESPONSE, self.segmentTimeout)

    async def fill_window(self, seqNum: int) -> None:
        """Send the window starting at sequence number ``seqNum``: bacpypes3 passes the sequence
        number (modulo 256), which is turned back into the segment index here."""
        if self.actualWindowSize is None:
            # no SegmentACK yet: the first segment is the whole window so far (5.4.5.4)
            await self.ssmSAP.request(self.get_segment(0))
            return
        start = self._window_start + (seqNum - self._window_start) % 256
        self._window_start = start
        await super().fill_window(start)


def install() -> None:
    """Make bacpypes3 build :class:`GatewayServerSSM` for every confirmed request it serves.

    Idempotent. Raises RuntimeError when ``bacpypes3.appservice.ServerSSM`` is neither the
    original class nor the subclass (another patch, or a bacpypes3 this was not written for).
    """
    current = appservice.ServerSSM
    if current is GatewayServerSSM:
        return
    if current is not GatewayServerSSM.__mro__[1]:
        raise RuntimeError(f"bacpypes3.appservice.ServerSSM is {current!r}, not bacpypes3's own")
    appservice.ServerSSM = GatewayServerSSM
