import os
import threading

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            count = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            sender = request.get_response_sender()
            threading.Thread(target=self._stream, args=(sender, count)).start()
        return None

    def _stream(self, sender, count):
        if count < 0:  # one response, then the process ends while the request is open
            sender.send(
                pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([0], np.int32))])
            )
            os._exit(6)
        for index in range(count):
            out = pb_utils.Tensor("OUT", np.array([index], np.int32))
            sender.send(pb_utils.InferenceResponse([out]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
