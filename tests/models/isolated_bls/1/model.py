import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            inner = pb_utils.InferenceRequest(
                model_name="identity_fp32",
                inputs=[pb_utils.Tensor("INPUT0", x * 2)],
                requested_output_names=["OUTPUT0"],
            ).exec()
            if inner.has_error():
                responses.append(pb_utils.InferenceResponse(error=inner.error()))
                continue
            doubled = pb_utils.get_output_tensor_by_name(inner, "OUTPUT0").as_numpy()
            stream = pb_utils.InferenceRequest(
                model_name="isolated_decoupled",
                inputs=[pb_utils.Tensor("IN", np.array([3], np.int32))],
                requested_output_names=["OUT"],
            ).exec(decoupled=True)
            streamed = sum(1 for r in stream if not r.has_error() and r.output_tensors())
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", doubled + streamed)])
            )
        return responses
