"""BLS: opens a decoupled stream from the model `endless`, takes two responses, cancels the
iterator and keeps what it still yields (until it ends) as `rest`.
"""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        count = pb_utils.Tensor("COUNT", np.array([0], np.int32))
        responses = pb_utils.InferenceRequest(
            model_name="endless", requested_output_names=["INDEX"], inputs=[count]
        ).exec(decoupled=True)
        for _ in range(2):
            next(responses)
        responses.cancel()
        self.rest = list(responses)  # ends instead of hanging
        return [pb_utils.InferenceResponse([]) for _ in requests]
