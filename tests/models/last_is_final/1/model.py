"""Decoupled: sends its last response together with the final flag (no flag-only response)."""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            for index in range(3):
                out = pb_utils.Tensor("OUT", np.array([index], dtype=np.int32))
                flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if index == 2 else 0
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]), flags=flags)
        return None
