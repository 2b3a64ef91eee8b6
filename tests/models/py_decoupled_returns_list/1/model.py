"""Decoupled, yet returns a list from execute (a decoupled model must return None)."""


class TritonPythonModel:
    def execute(self, requests):
        return []
