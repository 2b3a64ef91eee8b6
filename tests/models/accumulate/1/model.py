"""Sums its inputs per sequence, starting over on START, skipping slots that are not READY. It
also echoes what the batcher and the request told it: flags() and the CORRID control. The
sequence tests serve it under several sequence_batching settings.
"""

import numpy as np

import triton_python_backend_utils as pb_utils


def scalar(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0]


class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            shape = value.shape
            if int(scalar(request, "READY")) == 0:
                total = 0
            else:
                key = request.correlation_id()
                if int(scalar(request, "START")) == 1:
                    self.sums[key] = 0
                self.sums[key] += int(value.reshape(-1)[0])
                total = self.sums[key]
            corrid = np.empty(1, dtype=object)
            corrid[0] = scalar(request, "CORRID")
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT", np.full(shape, total, np.int32)),
                        pb_utils.Tensor("FLAGS", np.full(shape, request.flags(), np.int32)),
                        pb_utils.Tensor("CORRID_OUT", corrid.reshape(shape)),
                        pb_utils.Tensor("BATCH", np.full(shape, len(requests), np.int32)),
                    ]
                )
            )
        return responses
