"""Keeps nothing itself: the server feeds STATE_IN and keeps STATE_OUT (implicit state)."""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            state = pb_utils.get_input_tensor_by_name(request, "STATE_IN").as_numpy()
            total = (state + value).astype(np.int32)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT", total),
                        pb_utils.Tensor("STATE_OUT", total),
                    ]
                )
            )
        return responses
