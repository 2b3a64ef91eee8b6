"""BLS from an async execute: awaits two async_exec calls to `doubler` and one decoupled call to
`streamer` (COUNT = 2) together, answers TOTAL = the two DOUBLED summed, and keeps the number
of outputs of each streamed response as `streamed` and the error a blocking exec() raises on
the loop as `blocking_error`.
"""

import asyncio

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        x = pb_utils.get_input_tensor_by_name(requests[0], "X")
        single = pb_utils.InferenceRequest(
            model_name="doubler", requested_output_names=["DOUBLED"], inputs=[x]
        )
        count = pb_utils.Tensor("COUNT", np.array([2], np.int32))
        stream = pb_utils.InferenceRequest(
            model_name="streamer", requested_output_names=["INDEX"], inputs=[count]
        )
        first, second, streamed = await asyncio.gather(
            single.async_exec(), single.async_exec(), stream.async_exec(decoupled=True)
        )
        try:
            single.exec()
        except pb_utils.TritonModelException as exc:
            self.blocking_error = str(exc)
        total = (
            pb_utils.get_output_tensor_by_name(first, "DOUBLED").as_numpy()
            + pb_utils.get_output_tensor_by_name(second, "DOUBLED").as_numpy()
        )
        self.streamed = [len(r.output_tensors()) for r in streamed]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("TOTAL", total)])]
