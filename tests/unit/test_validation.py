import numpy as np
import pytest

from trident.runtime.core import model_config
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.core.loaded_model import LoadedModel
from trident.runtime.core.validation import apply_reshapes, validate_request
from trident.runtime.errors import InvalidArgumentError
from trident.runtime.types import InferenceRequest, RequestedOutput, Tensor

CONFIG = """
max_batch_size: 8
input [ { name: "A" data_type: TYPE_FP32 dims: [ -1, 4 ] },
        { name: "B" data_type: TYPE_INT64 dims: [ 2 ] optional: true },
        { name: "R" data_type: TYPE_FP32 dims: [ 4 ] reshape { shape: [ 2, 2 ] } optional: true } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]
"""


@pytest.fixture
def model(tmp_path):
    config = model_config.parse_config_text(CONFIG)
    model_config.normalize(config, "m", "python")
    return LoadedModel("m", 1, config, "python", tmp_path)


def _request(*tensors, outputs=()):
    request = InferenceRequest(
        model_name="m", inputs=list(tensors), outputs=[RequestedOutput(n) for n in outputs]
    )
    return InFlightRequest(request, 1)


def _fp32(name, shape):
    return Tensor(name, "FP32", shape, np.zeros(shape, np.float32))


def test_valid_request_fills_inputs_by_name(model):
    request = _request(_fp32("A", (2, 3, 4)), outputs=["OUT"])
    validate_request(request, model)
    assert set(request.inputs_by_name) == {"A"}


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([_fp32("Z", (1, 1, 4))], "unexpected inference input 'Z'"),
        ([Tensor("A", "INT32", (1, 1, 4), np.zeros((1, 1, 4), np.int32))], "data-type is 'INT32'"),
        ([_fp32("A", (1, 1, 3))], r"Expected \[-1, -1, 4\], got \[1, 1, 3\]"),
        ([_fp32("A", (9, 1, 4))], "batch-size must be <= 8"),
        ([_fp32("A", (1, 1, 4)), _fp32("A", (1, 1, 4))], "more than once"),
        ([_fp32("B", (1, 2))], "data-type is 'FP32'"),
        ([], r"missing required input\(s\) \['A'\]"),
    ],
)
def test_invalid_requests(model, tensors, message):
    with pytest.raises(InvalidArgumentError, match=message):
        validate_request(_request(*tensors), model)


def test_batch_sizes_must_agree(model):
    b = Tensor("B", "INT64", (2, 2), np.zeros((2, 2), np.int64))
    with pytest.raises(InvalidArgumentError, match="disagree on the batch size"):
        validate_request(_request(_fp32("A", (1, 1, 4)), b), model)


def test_unknown_output(model):
    with pytest.raises(InvalidArgumentError, match="unexpected inference output 'NOPE'"):
        validate_request(_request(_fp32("A", (1, 1, 4)), outputs=["NOPE"]), model)


def test_error_carries_request_id(model):
    request = _request(_fp32("A", (1, 1, 3)))
    request.request.id = "abc"
    with pytest.raises(InvalidArgumentError, match=r"^\[request id: abc\]"):
        validate_request(request, model)


def test_reshape_gives_the_model_its_shape(model):
    request = _request(_fp32("A", (2, 1, 4)), _fp32("R", (2, 4)))
    validate_request(request, model)
    apply_reshapes(request, model)
    assert request.inputs_by_name["R"].data.shape == (2, 2, 2)
