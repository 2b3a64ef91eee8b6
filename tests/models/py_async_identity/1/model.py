"""Async execute: returns each request's IN tensor object as it came and keeps the thread it ran
on as `thread`.
"""

import asyncio
import threading

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        await asyncio.sleep(0)
        self.thread = threading.get_ident()
        return [
            pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "IN")])
            for r in requests
        ]
