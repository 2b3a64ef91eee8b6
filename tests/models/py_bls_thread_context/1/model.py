"""BLS from threads the model starts: one plain thread (whose exec() fails: it lacks the
model's context) and one running in a copy of the context. Keeps in `results` the plain
thread's error message ("plain") and whether the copied-context call had an error ("copied").
"""

import contextvars
import threading

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        x = pb_utils.get_input_tensor_by_name(requests[0], "X")
        request = pb_utils.InferenceRequest(
            model_name="doubler", requested_output_names=["DOUBLED"], inputs=[x]
        )
        results = {}

        def plain():
            try:
                request.exec()
            except pb_utils.TritonModelException as exc:
                results["plain"] = str(exc)

        def with_context():
            results["copied"] = request.exec().has_error()

        threading.Thread(target=plain).start()
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(with_context,))
        worker.start()
        worker.join()
        self.results = results
        return [pb_utils.InferenceResponse([]) for _ in requests]
