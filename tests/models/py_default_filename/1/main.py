"""A model file named main.py, as its config's default_model_filename says."""


class TritonPythonModel:
    def execute(self, requests):
        return []
