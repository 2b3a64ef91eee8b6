"""Decoupled: streams a tick every 20 ms until cancelled (up to 20 s), then writes a marker file:
the test appends the marker parameter (a path) to this config.
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
        for request in requests:
            sender = request.get_response_sender()
            deadline = time.monotonic() + 20
            tick = 0
            while time.monotonic() < deadline and not request.is_cancelled():
                out = pb_utils.Tensor("OUTPUT0", np.array([tick], dtype=np.float32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
                tick += 1
                time.sleep(0.02)
            if request.is_cancelled():
                self.marker.write_text("cancelled")
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
