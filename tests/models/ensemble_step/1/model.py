"""One step of the test ensembles: the op is the model's name (add_one, double, square, sum;
any other name fails). Each execute logs when it starts and ends to <repository>/timeline.txt,
so the tests can see which steps overlapped.
"""

import time
from pathlib import Path

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.op = args["model_name"]
        self.timeline = Path(args["model_repository"]).parent / "timeline.txt"

    def execute(self, requests):
        start = time.monotonic()
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "A").as_numpy()
            if self.op == "add_one":
                out = a + 1
            elif self.op == "double":
                time.sleep(0.3)
                out = a * 2
            elif self.op == "square":
                time.sleep(0.3)
                out = a * a
            elif self.op == "sum":
                out = a + pb_utils.get_input_tensor_by_name(request, "B").as_numpy()
            else:
                raise ValueError("bad things happened in " + self.op)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("Y", out.astype(np.float32))]
                )
            )
        with open(self.timeline, "a") as log:
            log.write(f"{self.op} {start} {time.monotonic()}\n")
        return responses
