"""Answers a batch of four requests with, in order: an INVALID_ARG error, an error with no
code, a response with OUT, and a NOT_FOUND error.
"""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = pb_utils.Tensor("OUT", np.zeros(1, np.float32))
        return [
            pb_utils.InferenceResponse(
                error=pb_utils.TritonError("bad input value", pb_utils.TritonError.INVALID_ARG)
            ),
            pb_utils.InferenceResponse(error=pb_utils.TritonError("plain failure")),
            pb_utils.InferenceResponse([out]),
            pb_utils.InferenceResponse(
                error=pb_utils.TritonError("gone", code=pb_utils.TritonError.NOT_FOUND)
            ),
        ]
