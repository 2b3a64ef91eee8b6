"""Echoes what the model sees of the request: parameters (JSON), id and correlation id."""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            params = np.array([request.parameters().encode()], dtype=np.object_)
            rid = np.array([request.request_id().encode()], dtype=np.object_)
            corr = np.array([str(request.correlation_id()).encode()], dtype=np.object_)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("PARAMS", params),
                        pb_utils.Tensor("ID", rid),
                        pb_utils.Tensor("CORR", corr),
                    ],
                    parameters={"echoed": True, "inputs": len(request.inputs())},
                )
            )
        return responses
