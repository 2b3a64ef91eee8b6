"""Decoupled: sends IN[0] responses 0, 1, ... then a flag-only final. A negative count sends one
good response, then an error response, then the final flag.
"""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            count = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            if count < 0:
                out = pb_utils.Tensor("OUT", np.array([0], dtype=np.int32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
                sender.send(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError("repeat was asked to fail")
                    )
                )
            for index in range(max(count, 0)):
                out = pb_utils.Tensor("OUT", np.array([index], dtype=np.int32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
