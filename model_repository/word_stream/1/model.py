"""Streams each word of `text_input` back as its own response (a decoupled model)."""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            text = (
                pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
            )
            for word in text.decode("utf-8").split():
                if sender.is_cancelled():
                    break
                out = pb_utils.Tensor(
                    "text_output", np.array([word.encode("utf-8")], dtype=np.object_)
                )
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
