"""BLS: asks the decoupled model `streamer` for COUNT = 3 responses with exec(decoupled=True)
and answers VALUES: the INDEX of each response as a string, "final" for the one without
outputs.
"""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        count = pb_utils.Tensor("COUNT", np.array([3], np.int32))
        request = pb_utils.InferenceRequest(
            model_name="streamer", requested_output_names=["INDEX"], inputs=[count]
        )
        values = []
        for response in request.exec(decoupled=True):
            assert not response.has_error()
            if response.output_tensors():
                values.append(int(response.output_tensors()[0].as_numpy()[0]))
            else:
                values.append("final")
        out = pb_utils.Tensor("VALUES", np.array([str(v) for v in values], dtype=object))
        return [pb_utils.InferenceResponse([out]) for _ in requests]
