"""Async execute that raises RuntimeError("async failure")."""


class TritonPythonModel:
    async def execute(self, requests):
        raise RuntimeError("async failure")
