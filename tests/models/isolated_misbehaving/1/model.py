import json
import os
import time

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            parameters = json.loads(request.parameters() or "{}")
            action = parameters.get("action", "")
            if action == "sleep":
                time.sleep(float(parameters.get("seconds", 1)))
            if action == "exit":
                os._exit(3)
            if action == "exit_soon":
                pb_utils.Logger.log_warn("isolated model exits soon")
                time.sleep(float(parameters.get("seconds", 1)))
                os._exit(3)
            if action == "hang":
                pb_utils.Logger.log_warn("isolated model hangs now")
                time.sleep(3600)
            if action == "system_exit":
                raise SystemExit(5)
            if action == "log":
                pb_utils.Logger.log_warn("isolated model says hello")
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if action == "double_in_place":  # inputs are writable, as in Triton
                x *= 2
            pid = np.array([os.getpid()], np.int64)
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUTPUT0", x.copy()), pb_utils.Tensor("OUTPUT1", pid)]
                )
            )
        return responses
