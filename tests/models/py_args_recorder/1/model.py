"""Keeps the `args` initialize receives as `args`."""


class TritonPythonModel:
    def initialize(self, args):
        self.args = args

    def execute(self, requests):
        return []
