"""Async initialize and finalize: initialize keeps its thread as `init_thread`; finalize writes
its thread's id to the file named by `path` (set by the test).
"""

import asyncio
import threading


class TritonPythonModel:
    async def initialize(self, args):
        await asyncio.sleep(0)
        self.init_thread = threading.get_ident()

    async def execute(self, requests):
        return []

    async def finalize(self):
        await asyncio.sleep(0)
        with open(self.path, "w") as f:
            f.write(str(threading.get_ident()))
