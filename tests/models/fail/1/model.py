"""Raises for every request."""


class TritonPythonModel:
    def execute(self, requests):
        raise ValueError("this model always fails")
