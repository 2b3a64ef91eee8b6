"""Writes <marker>.started, waits (up to 20 s) until its request is cancelled, then writes the
marker file: the test appends the marker parameter (a path) to this config.
"""

import json
import time
from pathlib import Path

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.marker = Path(config["parameters"]["marker"]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            self.marker.with_suffix(".started").write_text("running")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not request.is_cancelled():
                time.sleep(0.02)
            if request.is_cancelled():
                self.marker.write_text("cancelled")
            out = pb_utils.Tensor("OUTPUT0", np.zeros(1, dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
