"""Decoupled: execute returns at once; a thread of the model's own sends OUT = 0 and 1 (unless
the request is cancelled), then the final flag.
"""

import threading

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()

            def work(sender=sender):
                for i in range(2):
                    if sender.is_cancelled():
                        break
                    out = pb_utils.Tensor("OUT", np.array([i], np.int32))
                    sender.send(pb_utils.InferenceResponse([out]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

            threading.Thread(target=work).start()
        return None
