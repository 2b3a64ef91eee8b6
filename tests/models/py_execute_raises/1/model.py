# Raises ValueError in execute; a test checks the error names line 4 of model.py.
class TritonPythonModel:
    def execute(self, requests):
        raise ValueError("the model exploded")
