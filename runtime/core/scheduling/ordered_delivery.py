"""`preserve_ordering` for the dynamic batcher: responses reach the clients in the order their
requests left the queue, whichever instance finished first."""

from __future__ import annotations

import threading
from collections import deque

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import TridentError
from trident.runtime.types import InferenceResponse

from .base import Responder


class OrderedDelivery:
    """`preserve_ordering`: responses reach the clients in the order their requests left the
    queue, whichever instance finished first. Responses may come from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: deque[OrderedResponder] = deque()

    def wrap(self, request: InFlightRequest) -> None:
        slot = OrderedResponder(self, request.responder)
        with self._lock:
            self._slots.append(slot)
        request.responder = slot

    def deliver(self, slot: OrderedResponder, response: InferenceResponse) -> None:
        with self._lock:  # held while sending, so two threads cannot interleave their flushes
            slot.held.append(response)
            slot.done = slot.done or response.final
            slots = self._slots
            while slots and slots[0].held:
                head = slots[0]
                for held in head.held:
                    head.target.send(held)
                head.held.clear()
                if not head.done:
                    break
                slots.popleft()


class OrderedResponder:
    """Stands in for a request's responder while its turn to deliver has not come."""

    __slots__ = ("delivery", "done", "held", "target")

    def __init__(self, delivery: OrderedDelivery, target: Responder) -> None:
        self.delivery = delivery
        self.target = target
        self.held: list[InferenceResponse] = []
        self.done = False

    def send(self, response: InferenceResponse) -> None:
        self.delivery.deliver(self, response)

    def fail(self, error: TridentError) -> None:
        self.send(InferenceResponse(error=error, final=True))
