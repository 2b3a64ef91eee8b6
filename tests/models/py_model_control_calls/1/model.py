"""The model loading API from execute: loads `other` (with a config and a file), unloads it with
its dependents, keeps is_model_ready of `loaded` and of `other` version 2 as `ready`, and the
message of the error loading `bad` raises as `error`.
"""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        pb_utils.load_model(
            "other", config='{"backend": "python"}', files={"file:1/model.py": b"x"}
        )
        pb_utils.unload_model(model_name="other", unload_dependents=True)
        self.ready = (pb_utils.is_model_ready("loaded"), pb_utils.is_model_ready("other", "2"))
        try:
            pb_utils.load_model("bad")
        except pb_utils.TritonModelException as exc:
            self.error = str(exc)
        return [pb_utils.InferenceResponse([]) for _ in requests]
