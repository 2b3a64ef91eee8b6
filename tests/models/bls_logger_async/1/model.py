"""Async: appends "<INPUT0[0]> <thread name>" to calls.log in its model folder, once per request,
then awaits a BLS call to `inner` (async_exec); OUTPUT0 = inner's OUTPUT0 + 1.
"""

import os
import threading

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.log = os.path.join(args["model_repository"], "calls.log")

    async def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            with open(self.log, "a") as log:
                log.write(f"{x[0]:g} {threading.current_thread().name}\n")
            inner = pb_utils.InferenceRequest(
                model_name="inner",
                inputs=[pb_utils.Tensor("INPUT0", x)],
                requested_output_names=["OUTPUT0"],
            )
            result = await inner.async_exec()
            if result.has_error():
                responses.append(pb_utils.InferenceResponse(error=result.error()))
                continue
            out = pb_utils.get_output_tensor_by_name(result, "OUTPUT0").as_numpy() + 1
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", out)]))
        return responses
