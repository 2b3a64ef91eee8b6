"""Appends "<INPUT0[0]> <thread name>" to calls.log in its model folder, once per request. With
the request parameter `call` set to "bls", it then calls the model `inner` on INPUT0 through a
method name built at run time, so that no .py file of this model names the call (the server
cannot tell that it may make one); OUTPUT0 = inner's OUTPUT0 + 1. Otherwise OUTPUT0 = INPUT0.
A failed call comes back as the request's error.
"""

import json
import os
import threading

import triton_python_backend_utils as pb_utils

_METHOD = "".join(("ex", "ec"))


class TritonPythonModel:
    def initialize(self, args):
        self.log = os.path.join(args["model_repository"], "calls.log")

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            with open(self.log, "a") as log:
                log.write(f"{x[0]:g} {threading.current_thread().name}\n")
            if json.loads(request.parameters() or "{}").get("call") != "bls":
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
                continue
            inner = pb_utils.InferenceRequest(
                model_name="inner",
                inputs=[pb_utils.Tensor("INPUT0", x)],
                requested_output_names=["OUTPUT0"],
            )
            try:
                result = getattr(inner, _METHOD)()
            except pb_utils.TritonModelException as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            if result.has_error():
                responses.append(pb_utils.InferenceResponse(error=result.error()))
                continue
            out = pb_utils.get_output_tensor_by_name(result, "OUTPUT0").as_numpy() + 1
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", out)]))
        return responses
