"""Answers OUT = plugin_for_lookup.VALUE (31), the module next to this file looked up by name
with importlib while execute runs.
"""

import importlib

import numpy as np

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        plugin = importlib.import_module("plugin_for_lookup")
        out = pb_utils.Tensor("OUT", np.array([plugin.VALUE], np.int32))
        return [pb_utils.InferenceResponse([out]) for _ in requests]
