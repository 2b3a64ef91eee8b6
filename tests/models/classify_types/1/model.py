"""Returns INPUT0 cast to each output's datatype."""

import numpy as np

import triton_python_backend_utils as pb_utils

OUTPUTS = {
    "OUT_INT32": np.int32,
    "OUT_FP32": np.float32,
    "OUT_FP16": np.float16,
    "OUT_INT64": np.int64,
    "OUT_UINT8": np.uint8,
}


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            tensors = [pb_utils.Tensor(name, data.astype(dtype)) for name, dtype in OUTPUTS.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
