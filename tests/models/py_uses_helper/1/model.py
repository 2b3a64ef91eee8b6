"""Answers OUT = helper.VALUE + OFFSET + helper.VALUE again, imported in execute: `helper` and
`relative` are modules next to this file, which the test writes with values of its own into
each copy, so that two copies hold same-named modules with different contents.
"""

import helper
import numpy as np

import triton_python_backend_utils as pb_utils

from .relative import OFFSET


class TritonPythonModel:
    def execute(self, requests):
        import helper as lazily_imported  # inside execute, as some models do

        value = helper.VALUE + OFFSET + lazily_imported.VALUE
        out = pb_utils.Tensor("OUT", np.array([value], np.int32))
        return [pb_utils.InferenceResponse([out]) for _ in requests]
