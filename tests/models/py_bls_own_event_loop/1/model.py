"""BLS from a sync execute that runs an event loop of its own (asyncio.run): two async_exec
calls to `doubler` with X; answers the first one's DOUBLED.
"""

import asyncio

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        x = pb_utils.get_input_tensor_by_name(requests[0], "X")
        request = pb_utils.InferenceRequest(
            model_name="doubler", requested_output_names=["DOUBLED"], inputs=[x]
        )

        async def twice():
            return await asyncio.gather(request.async_exec(), request.async_exec())

        first, _second = asyncio.run(twice())
        out = pb_utils.get_output_tensor_by_name(first, "DOUBLED")
        return [pb_utils.InferenceResponse([out]) for _ in requests]
