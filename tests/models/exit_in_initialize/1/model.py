class TritonPythonModel:
    def initialize(self, args):
        raise SystemExit(7)

    def execute(self, requests):
        return []
