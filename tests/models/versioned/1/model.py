"""Adds its version number to INPUT0: which version answered."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.version = float(args["model_version"])

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(
                        "OUTPUT0",
                        pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() + self.version,
                    )
                ]
            )
            for r in requests
        ]
