"""Answers each batch after half a second: calls still in flight when the server stops."""

import time

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.5)
        out = pb_utils.Tensor("OUTPUT0", np.ones(1, dtype=np.float32))
        return [pb_utils.InferenceResponse(output_tensors=[out]) for _ in requests]
