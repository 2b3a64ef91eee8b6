"""Each response says how many inferences the execute call that served it held (BATCH) and in
which execute call it ran (CALL). A request whose INPUT0 starts with a negative value makes
its execute call sleep that many seconds, to hold the instance busy while others queue; the
model creates the file `running` in its folder when such a call starts. The dynamic-batching
tests serve it under their own dynamic_batching settings.
"""

import itertools
import os
import time

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.calls = itertools.count()
        self.marker = os.path.join(args["model_repository"], "running")

    def execute(self, requests):
        call = next(self.calls)
        data = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        inferences = sum(d.shape[0] for d in data)
        pause = max(float(-d[0, 0]) for d in data)
        if pause > 0:
            open(self.marker, "w").close()
            time.sleep(pause)
        responses = []
        for d in data:
            rows = d.shape[0]
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("OUTPUT0", d),
                        pb_utils.Tensor("BATCH", np.full((rows, 1), inferences, np.int32)),
                        pb_utils.Tensor("CALL", np.full((rows, 1), call, np.int32)),
                    ]
                )
            )
        return responses
