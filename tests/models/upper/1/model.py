"""Upper-cases text_input (repeated `repeat` times, optional) into text_output; `lengths` holds
the output's length and the count of request parameters.
"""

import json

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy()
            repeat = pb_utils.get_input_tensor_by_name(request, "repeat")
            count = 1 if repeat is None else int(repeat.as_numpy().reshape(-1)[0])
            out = np.array([text.reshape(-1)[0].upper() * count], dtype=np.object_)
            params = json.loads(request.parameters())
            lengths = np.array([len(out[0]), len(params)], dtype=np.int32)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("text_output", out),
                        pb_utils.Tensor("lengths", lengths),
                    ]
                )
            )
        return responses
