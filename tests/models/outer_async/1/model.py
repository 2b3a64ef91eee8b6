"""Async BLS: three concurrent calls to the model inner (INPUT0 + 0, 1, 2); returns the sum of
their OUTPUT0.
"""

import asyncio

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            calls = [
                pb_utils.InferenceRequest(
                    model_name="inner",
                    inputs=[pb_utils.Tensor("INPUT0", x + i)],
                    requested_output_names=["OUTPUT0"],
                ).async_exec()
                for i in range(3)
            ]
            results = await asyncio.gather(*calls)
            total = sum(
                pb_utils.get_output_tensor_by_name(r, "OUTPUT0").as_numpy() for r in results
            )
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", total)]))
        return responses
