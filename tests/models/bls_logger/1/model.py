"""Appends "<INPUT0[0]> <thread name>" to calls.log in its model folder, once per request (a side
effect that must happen exactly once), then makes the call named by the request parameter
`call`:

- none (default): OUTPUT0 = INPUT0
- exec: BLS to `inner` (an identity model) on INPUT0; OUTPUT0 = its OUTPUT0 + 1
- stream: decoupled BLS to `repeat` asking for 3 responses; OUTPUT0 = INPUT0 + their count
- ready: pb_utils.is_model_ready("inner"); OUTPUT0 = INPUT0 + 1 when it is
- thread: the exec call, made from a thread of the model's own (started with
  contextvars.copy_context().run, as BLS from a thread must be) that execute waits for

A failed call comes back as the request's error.
"""

import contextvars
import json
import os
import threading

import numpy as np

import triton_python_backend_utils as pb_utils


def _exec_inner(x):
    inner = pb_utils.InferenceRequest(
        model_name="inner",
        inputs=[pb_utils.Tensor("INPUT0", x)],
        requested_output_names=["OUTPUT0"],
    )
    result = inner.exec()
    if result.has_error():
        raise pb_utils.TritonModelException(result.error().message())
    return pb_utils.get_output_tensor_by_name(result, "OUTPUT0").as_numpy() + 1


def _stream_count():
    request = pb_utils.InferenceRequest(
        model_name="repeat",
        inputs=[pb_utils.Tensor("IN", np.array([3], dtype=np.int32))],
        requested_output_names=["OUT"],
    )
    count = 0
    for response in request.exec(decoupled=True):
        if response.has_error():
            raise pb_utils.TritonModelException(response.error().message())
        if pb_utils.get_output_tensor_by_name(response, "OUT") is not None:
            count += 1
    return count


def _exec_from_a_thread(x):
    results = []

    def run():
        try:
            results.append(_exec_inner(x))
        except Exception as exc:  # handed to execute, which reports it
            results.append(exc)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(run,))
    thread.start()
    thread.join()
    if isinstance(results[0], Exception):
        raise results[0]
    return results[0]


class TritonPythonModel:
    def initialize(self, args):
        self.log = os.path.join(args["model_repository"], "calls.log")

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            with open(self.log, "a") as log:
                log.write(f"{x[0]:g} {threading.current_thread().name}\n")
            call = json.loads(request.parameters() or "{}").get("call", "none")
            try:
                if call == "exec":
                    out = _exec_inner(x)
                elif call == "stream":
                    out = x + _stream_count()
                elif call == "ready":
                    out = x + float(pb_utils.is_model_ready("inner"))
                elif call == "thread":
                    out = _exec_from_a_thread(x)
                else:
                    out = x
            except pb_utils.TritonModelException as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", out)]))
        return responses
