"""Answers OUT = shared_settings.BASE * tools.scale.factor() + tools.scale.EXTRA (5 * 5 + 1):
`shared_settings` lies in the model folder next to config.pbtxt, `tools` is a package in the
version folder that imports `shared_settings` too.
"""

import numpy as np
import shared_settings
from tools import scale
from tools.scale import factor

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        value = shared_settings.BASE * factor() + scale.EXTRA
        out = pb_utils.Tensor("OUT", np.array([value], np.int32))
        return [pb_utils.InferenceResponse([out]) for _ in requests]
