"""Raises on every execution."""


class TritonPythonModel:
    def execute(self, requests):
        raise RuntimeError("this model always fails")
