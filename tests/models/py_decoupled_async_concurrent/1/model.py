"""Decoupled, async execute: the first call waits (up to 5 s) until a second call has run, then
answers OUT = 1; the second answers OUT = 2. Both finish only if the instance takes the next
batch while the first one waits.
"""

import asyncio

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.second_arrived = None

    async def execute(self, requests):
        # The first request waits until the second one ran: only possible when the
        # instance takes the next batch while this one waits.
        if self.second_arrived is None:
            self.second_arrived = asyncio.Event()
            await asyncio.wait_for(self.second_arrived.wait(), 5)
            value = 1
        else:
            self.second_arrived.set()
            value = 2
        for request in requests:
            sender = request.get_response_sender()
            out = pb_utils.Tensor("OUT", np.array([value], np.int32))
            sender.send(
                pb_utils.InferenceResponse([out]),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )
