"""Imports the module `helper` next to it; finalize writes "done" to the file `finalized` in its
model folder.
"""

import helper  # noqa: F401  (imported to be forgotten when the model closes)


class TritonPythonModel:
    def initialize(self, args):
        self.path = args["model_repository"] + "/finalized"

    def execute(self, requests):
        return []

    def finalize(self):
        with open(self.path, "w") as f:
            f.write("done")
