"""Decoupled, async execute that raises TritonModelException("cannot stream today") before
sending anything.
"""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        raise pb_utils.TritonModelException("cannot stream today")
