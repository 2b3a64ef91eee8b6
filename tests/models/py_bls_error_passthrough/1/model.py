"""BLS: calls the model `missing`, keeps what the failed answer says as `seen` (has_error, the
error's code and message, the output tensors) and answers every request with that error.
"""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        x = pb_utils.Tensor("X", np.zeros(1, np.float32))
        answer = pb_utils.InferenceRequest(
            model_name="missing", requested_output_names=[], inputs=[x]
        ).exec()
        self.seen = (
            answer.has_error(),
            answer.error().code(),
            answer.error().message(),
            answer.output_tensors(),
        )
        return [pb_utils.InferenceResponse(error=answer.error()) for _ in requests]
