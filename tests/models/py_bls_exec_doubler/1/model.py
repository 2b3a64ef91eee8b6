"""BLS: sends its input X to the model `doubler` (output DOUBLED, version 2, with a request id,
correlation id 5, the sequence-start flag, a timeout and parameters), answers with the DOUBLED
it gets back and keeps the answer's parameters as `response_parameters`.
"""

import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X")
            bls = pb_utils.InferenceRequest(
                model_name="doubler",
                requested_output_names=["DOUBLED"],
                inputs=[x],
                request_id="inner",
                correlation_id=5,
                model_version=2,
                flags=pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START,
                timeout=1000,
                parameters={"k": "v", "n": 3},
            )
            answer = bls.exec()
            assert not answer.has_error(), answer.error().message()
            doubled = pb_utils.get_output_tensor_by_name(answer, "DOUBLED")
            self.response_parameters = json.loads(answer.parameters())
            responses.append(pb_utils.InferenceResponse([doubled]))
        return responses
