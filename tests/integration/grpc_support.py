"""Python-backend test models and small helpers the gRPC integration tests share."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from tritonclient.utils import InferenceServerException

from tests.helpers import IDENTITY_MODEL_PY, write_model

#: The gRPC servers the gRPC tests run against: Trident's own (the default) and grpc.aio.
GRPC_IMPLEMENTATIONS = ["native", "grpcio"]

IDENT_CONFIG = """
name: "ident"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]
"""

#: Any shape, any size: for big tensors and dtype round trips.
ANY_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: {datatype} dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: {datatype} dims: [ -1 ] }} ]
"""

#: Echoes what the model sees of the request: parameters (JSON), id and correlation id.
ECHO_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            params = np.array([request.parameters().encode()], dtype=np.object_)
            rid = np.array([request.request_id().encode()], dtype=np.object_)
            corr = np.array([str(request.correlation_id()).encode()], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("PARAMS", params), pb_utils.Tensor("ID", rid),
                                pb_utils.Tensor("CORR", corr)],
                parameters={"echoed": True, "inputs": len(request.inputs())}))
        return responses
"""

ECHO_CONFIG = """
name: "echo"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "PARAMS" data_type: TYPE_STRING dims: [ 1 ] },
         { name: "ID" data_type: TYPE_STRING dims: [ 1 ] },
         { name: "CORR" data_type: TYPE_STRING dims: [ 1 ] } ]
"""

#: Decoupled: sends IN[0] responses 0, 1, ... then a flag-only final. A negative count sends
#: one good response, then an error response, then the final flag.
REPEAT_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            count = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            if count < 0:
                out = pb_utils.Tensor("OUT", np.array([0], dtype=np.int32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
                sender.send(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError("repeat was asked to fail")))
            for index in range(max(count, 0)):
                out = pb_utils.Tensor("OUT", np.array([index], dtype=np.int32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""

REPEAT_CONFIG = """
name: "repeat"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""

#: Decoupled: sends its last response together with the final flag (no flag-only response).
LAST_IS_FINAL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            for index in range(3):
                out = pb_utils.Tensor("OUT", np.array([index], dtype=np.int32))
                flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if index == 2 else 0
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]), flags=flags)
        return None
"""

#: Raises for every request.
FAIL_PY = """
class TritonPythonModel:
    def execute(self, requests):
        raise ValueError("this model always fails")
"""

#: Waits (up to 20 s) until its request is cancelled, then writes a marker file.
SLOW_PY = """
import json
import time
from pathlib import Path
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.marker = Path(config["parameters"]["marker"]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not request.is_cancelled():
                time.sleep(0.02)
            if request.is_cancelled():
                self.marker.write_text("cancelled")
            out = pb_utils.Tensor("OUTPUT0", np.zeros(1, dtype=np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""

#: Decoupled: streams a tick every 20 ms until cancelled (up to 20 s), then writes a marker.
TICKER_PY = """
import json
import time
from pathlib import Path
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.marker = Path(config["parameters"]["marker"]["string_value"])

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            deadline = time.monotonic() + 20
            tick = 0
            while time.monotonic() < deadline and not request.is_cancelled():
                out = pb_utils.Tensor("OUTPUT0", np.array([tick], dtype=np.float32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out]))
                tick += 1
                time.sleep(0.02)
            if request.is_cancelled():
                self.marker.write_text("cancelled")
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""


def slow_config(marker: Path, name: str, decoupled: bool = False) -> str:
    return f"""
name: "{name}"
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: {str(decoupled).lower()} }}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
parameters {{ key: "marker" value: {{ string_value: "{marker}" }} }}
"""


def simple_config(name: str, in_name: str, out_name: str, datatype: str, decoupled: bool) -> str:
    return f"""
name: "{name}"
backend: "python"
max_batch_size: 0
model_transaction_policy {{ decoupled: {str(decoupled).lower()} }}
input [ {{ name: "{in_name}" data_type: {datatype} dims: [ 1 ] }} ]
output [ {{ name: "{out_name}" data_type: {datatype} dims: [ 1 ] }} ]
"""


def write_test_models(repository: Path, markers: Path) -> None:
    """The models every gRPC integration test module serves."""
    ident_dir = write_model(repository, "ident", IDENTITY_MODEL_PY, IDENT_CONFIG)
    (ident_dir / "labels.txt").write_text("a\nb\nc\nd\n")
    for name, datatype in (("any_fp32", "TYPE_FP32"), ("strings", "TYPE_STRING")):
        write_model(
            repository, name, IDENTITY_MODEL_PY, ANY_CONFIG.format(name=name, datatype=datatype)
        )
    write_model(repository, "echo", ECHO_PY, ECHO_CONFIG)
    write_model(repository, "repeat", REPEAT_PY, REPEAT_CONFIG)
    write_model(
        repository,
        "last_is_final",
        LAST_IS_FINAL_PY,
        simple_config("last_is_final", "IN", "OUT", "TYPE_INT32", decoupled=True),
    )
    write_model(
        repository,
        "fail",
        FAIL_PY,
        simple_config("fail", "INPUT0", "OUTPUT0", "TYPE_FP32", decoupled=False),
    )
    write_model(repository, "slow", SLOW_PY, slow_config(markers / "slow", "slow"))
    write_model(repository, "ticker", TICKER_PY, slow_config(markers / "ticker", "ticker", True))


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def status_of(error: InferenceServerException | grpc.RpcError) -> grpc.StatusCode | str:
    """The gRPC status code a failed call reported."""
    if isinstance(error, grpc.RpcError):
        return error.code()
    return error.status()


def expect_code(
    code: grpc.StatusCode, call: Callable[[], object], match: str = ""
) -> InferenceServerException | grpc.RpcError:
    """Run `call`, expect it to fail with `code` (and a message containing `match`)."""
    with pytest.raises((InferenceServerException, grpc.RpcError)) as caught:
        call()
    error = caught.value
    status = status_of(error)
    assert status in (code, str(code)), f"expected {code}, got {status}: {error}"
    message = error.details() if isinstance(error, grpc.RpcError) else error.message()
    assert match in (message or ""), f"{match!r} not in {message!r}"
    return error
