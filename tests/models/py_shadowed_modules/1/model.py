"""Answers OUT = True when `types` and `numpy` are the standard and installed modules, not the
same-named files next to this one (which raise when imported).
"""

import types

import numpy

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        ok = hasattr(types, "SimpleNamespace") and hasattr(numpy, "ndarray")
        out = pb_utils.Tensor("OUT", numpy.array([ok]))
        return [pb_utils.InferenceResponse([out]) for _ in requests]
