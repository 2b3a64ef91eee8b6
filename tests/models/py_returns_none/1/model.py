"""Not decoupled, returns None from execute without sending anything."""


class TritonPythonModel:
    def execute(self, requests):
        return None
