"""Answers each request with SEEN: a JSON object of what the request's accessors return (id,
correlation id, flags, parameters, requested outputs, input names, first input's shape,
cancelled, timeout).
"""

import json

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for r in requests:
            seen = {
                "id": r.request_id(),
                "correlation_id": r.correlation_id(),
                "flags": r.flags(),
                "parameters": json.loads(r.parameters()),
                "requested": r.requested_output_names(),
                "inputs": [t.name() for t in r.inputs()],
                "shape": r.inputs()[0].shape(),
                "cancelled": r.is_cancelled(),
                "timeout": r.timeout(),
            }
            blob = np.array([json.dumps(seen).encode()], dtype=object)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SEEN", blob)]))
        return responses
