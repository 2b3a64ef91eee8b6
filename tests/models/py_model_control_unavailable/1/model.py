"""Calls is_model_ready from execute (which fails where the server does not offer the model
loading API).
"""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        pb_utils.is_model_ready("x")
