"""BLS: calls the model named by the request parameter `target` (default inner) on INPUT0 * 2 and
returns its OUTPUT0 + 1, or its error.
"""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            target = request.parameters() and __import__("json").loads(request.parameters()).get(
                "target", "inner"
            )
            inner = pb_utils.InferenceRequest(
                model_name=target,
                inputs=[pb_utils.Tensor("INPUT0", x.as_numpy() * 2)],
                requested_output_names=["OUTPUT0"],
            )
            result = inner.exec()
            if result.has_error():
                responses.append(pb_utils.InferenceResponse(error=result.error()))
                continue
            out = pb_utils.get_output_tensor_by_name(result, "OUTPUT0").as_numpy() + 1
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", out)]))
        return responses
