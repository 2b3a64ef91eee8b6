"""Counts its execute calls in a module-level list and answers OUT = the count so far: module
state, which each instance must hold on its own (one process per instance in Triton).
"""

import numpy as np

import triton_python_backend_utils as pb_utils

CALLS = []


class TritonPythonModel:
    def execute(self, requests):
        CALLS.append(1)
        out = pb_utils.Tensor("OUT", np.array([len(CALLS)], np.int32))
        return [pb_utils.InferenceResponse([out]) for _ in requests]
