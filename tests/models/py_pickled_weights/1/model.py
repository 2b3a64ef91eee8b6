"""Unpickles weights.pkl from its model folder in initialize and answers OUT = its `value`. The
pickle (written by the test) names its class `weightsdef.Weights`, a module next to this file.
"""

import pickle

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        with open(args["model_repository"] + "/weights.pkl", "rb") as f:
            self.weights = pickle.load(f)

    def execute(self, requests):
        out = pb_utils.Tensor("OUT", np.array([self.weights.value], np.int32))
        return [pb_utils.InferenceResponse([out]) for _ in requests]
