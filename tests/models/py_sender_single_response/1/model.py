"""Not decoupled, answers through the response sender: it tries the final flag before any
response, sends OUT = 7, tries a second response, then sends the final flag. The errors of the
two refused sends are kept in `errors`.
"""

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        self.errors = []
        for request in requests:
            sender = request.get_response_sender()
            try:
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except pb_utils.TritonModelException as exc:
                self.errors.append(str(exc))
            out = pb_utils.Tensor("OUT", np.array([7], np.int32))
            sender.send(pb_utils.InferenceResponse([out]))
            try:
                sender.send(pb_utils.InferenceResponse([out]))
            except pb_utils.TritonModelException as exc:
                self.errors.append(str(exc))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
