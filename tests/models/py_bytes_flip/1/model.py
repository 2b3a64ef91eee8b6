"""BYTES in and out: FLIPPED is each item of TEXT reversed; STR is a numpy str array (not
bytes), which the backend encodes for the client.
"""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            flipped = np.array([item[::-1] for item in text.reshape(-1)], dtype=object)
            as_str = np.array(["héllo", "wörld"])  # a str array: encoded for the client
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("FLIPPED", flipped.reshape(text.shape)),
                        pb_utils.Tensor("STR", as_str),
                    ]
                )
            )
        return responses
