"""Answers each request with IN[0] zero bytes: small requests, large responses."""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            size = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            out = pb_utils.Tensor("OUT", np.zeros(size, dtype=np.uint8))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
