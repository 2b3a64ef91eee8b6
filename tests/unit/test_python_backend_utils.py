"""triton_python_backend_utils itself: tensors, DLPack, helpers, errors, logger, ModelConfig."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import triton_python_backend_utils as pb_utils
from trident.backends.python import pb_utils as implementation
from trident.backends.python.errors import from_trident_error, to_trident_error
from trident.runtime.errors import (
    AlreadyExistsError,
    CancelledError,
    InvalidArgumentError,
    ModelExecutionError,
    UnavailableError,
    UnsupportedError,
)


def test_the_top_level_module_exports_the_whole_api():
    for name in implementation.__all__:
        assert getattr(pb_utils, name) is getattr(implementation, name)
    for name in (
        "Tensor",
        "InferenceRequest",
        "InferenceResponse",
        "TritonError",
        "TritonModelException",
        "Logger",
        "ModelConfig",
        "get_input_tensor_by_name",
        "get_output_config_by_name",
        "TRITONSERVER_RESPONSE_COMPLETE_FINAL",
    ):
        assert name in implementation.__all__
    assert pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL == 1
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START == 1
    assert pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END == 2


def test_tensor_basics():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = pb_utils.Tensor("X", array)
    assert tensor.name() == "X"
    assert tensor.as_numpy() is array
    assert tensor.shape() == [2, 3]
    assert tensor.triton_dtype() == 11
    assert tensor.is_cpu() is True
    transposed = pb_utils.Tensor("T", array.T)
    assert transposed.as_numpy().flags.c_contiguous
    np.testing.assert_array_equal(transposed.as_numpy(), array.T)
    assert pb_utils.Tensor("L", [1, 2, 3]).triton_dtype() == 9
    reinterpreted = pb_utils.Tensor("R", np.zeros(2, np.float32), triton_dtype=8)
    assert reinterpreted.as_numpy().dtype == np.int32
    with pytest.raises(pb_utils.TritonModelException, match="complex64 has no Triton datatype"):
        pb_utils.Tensor("C", np.zeros(1, np.complex64))


def test_tensor_dlpack_round_trip_with_numpy():
    array = np.arange(4, dtype=np.int16)
    tensor = pb_utils.Tensor("X", array)
    back = pb_utils.Tensor.from_dlpack("Y", tensor.to_dlpack())
    assert back.name() == "Y" and back.triton_dtype() == 7
    np.testing.assert_array_equal(back.as_numpy(), array)
    assert np.shares_memory(back.as_numpy(), array)
    from_object = pb_utils.Tensor.from_dlpack("Z", array)
    assert np.shares_memory(from_object.as_numpy(), array)
    read_only = np.frombuffer(b"\x01\x00\x02\x00", dtype=np.int16)
    copied = pb_utils.Tensor.from_dlpack("R", pb_utils.Tensor("R", read_only).to_dlpack())
    np.testing.assert_array_equal(copied.as_numpy(), [1, 2])
    with pytest.raises(pb_utils.TritonModelException, match="string tensors"):
        pb_utils.Tensor("S", np.array([b"a"], dtype=object)).to_dlpack()


def test_tensor_dlpack_with_torch():
    torch = pytest.importorskip("torch")
    source = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    tensor = pb_utils.Tensor.from_dlpack("T", torch.utils.dlpack.to_dlpack(source))
    assert tensor.shape() == [2, 3] and tensor.triton_dtype() == 11
    source[0, 0] = 42
    assert tensor.as_numpy()[0, 0] == 42  # shares memory
    back = torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
    assert back.tolist() == source.tolist()
    assert torch.from_dlpack(tensor).shape == (2, 3)
    bf16 = pb_utils.Tensor.from_dlpack("B", torch.ones(2, dtype=torch.bfloat16))
    assert bf16.triton_dtype() == 14
    assert bf16.as_numpy().tolist() == [0x3F80, 0x3F80]  # raw bfloat16 words
    bf16_capsule = torch.utils.dlpack.to_dlpack(torch.ones(1, dtype=torch.bfloat16))
    assert pb_utils.Tensor.from_dlpack("B", bf16_capsule).triton_dtype() == 14


def test_bytes_serialization_helpers():
    items = np.array([b"ab", "c\u00e9", 7], dtype=object)
    encoded = pb_utils.serialize_byte_tensor(items)
    assert encoded == b"\x02\x00\x00\x00ab\x03\x00\x00\x00c\xc3\xa9\x01\x00\x00\x007"
    decoded = pb_utils.deserialize_bytes_tensor(encoded)
    assert decoded.dtype == np.object_
    assert list(decoded) == [b"ab", "c\u00e9".encode(), b"7"]
    assert pb_utils.serialize_byte_tensor(np.array([], dtype=object)) == ()
    assert pb_utils.serialize_byte_tensor(np.zeros(2, np.float32)) is None


def test_datatype_helpers():
    assert pb_utils.triton_string_to_numpy("TYPE_FP32") is np.float32
    assert pb_utils.triton_string_to_numpy("TYPE_STRING") is np.object_
    assert pb_utils.triton_to_numpy_type(1) is np.bool_
    assert pb_utils.triton_to_numpy_type(11) is np.float32
    assert pb_utils.triton_to_numpy_type(13) is np.object_
    assert pb_utils.triton_to_numpy_type(99) is None
    assert pb_utils.numpy_to_triton_type(np.float16) == 10
    assert pb_utils.numpy_to_triton_type(np.object_) == 13
    assert pb_utils.numpy_to_triton_type(np.bytes_) == 13
    assert pb_utils.numpy_to_triton_type(np.complex128) is None


def test_config_and_tensor_lookup_helpers():
    config = {
        "input": [{"name": "A", "dims": [1]}],
        "output": [{"name": "B", "dims": [2]}],
        "model_transaction_policy": {"decoupled": True},
    }
    assert pb_utils.get_input_config_by_name(config, "A") == {"name": "A", "dims": [1]}
    assert pb_utils.get_input_config_by_name(config, "B") is None
    assert pb_utils.get_output_config_by_name(config, "B") == {"name": "B", "dims": [2]}
    assert pb_utils.using_decoupled_model_transaction_policy(config) is True
    assert pb_utils.using_decoupled_model_transaction_policy({}) is False
    response = pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.zeros(1))])
    assert pb_utils.get_output_tensor_by_name(response, "OUT").name() == "OUT"
    assert pb_utils.get_output_tensor_by_name(response, "NOPE") is None


def test_inference_response_checks_its_arguments():
    response = pb_utils.InferenceResponse(parameters={"tokens": 3})
    assert response.output_tensors() == [] and not response.has_error()
    assert response.parameters() == '{"tokens": 3}'
    with pytest.raises(pb_utils.TritonModelException, match="must be a list"):
        pb_utils.InferenceResponse(pb_utils.Tensor("X", np.zeros(1)))
    with pytest.raises(pb_utils.TritonModelException, match=r"pb_utils\.Tensor objects"):
        pb_utils.InferenceResponse([np.zeros(1)])
    with pytest.raises(pb_utils.TritonModelException, match=r"pb_utils\.TritonError"):
        pb_utils.InferenceResponse(error="boom")


def test_triton_error_codes_map_to_client_statuses():
    error = pb_utils.TritonError("nope")
    assert (error.message(), error.code(), str(error)) == (
        "nope",
        pb_utils.TritonError.INTERNAL,
        "nope",
    )
    cases = [
        (pb_utils.TritonError.INVALID_ARG, InvalidArgumentError, 400),
        (pb_utils.TritonError.UNAVAILABLE, UnavailableError, 503),
        (pb_utils.TritonError.UNSUPPORTED, UnsupportedError, 501),
        (pb_utils.TritonError.ALREADY_EXISTS, AlreadyExistsError, 400),
        (pb_utils.TritonError.CANCELLED, CancelledError, 400),
        (pb_utils.TritonError.INTERNAL, ModelExecutionError, 500),
    ]
    for code, cls, status in cases:
        converted = to_trident_error(pb_utils.TritonError("m", code))
        assert type(converted) is cls and converted.http_status == status
        assert from_trident_error(converted).code() == code
    unknown = to_trident_error(pb_utils.TritonError("m", pb_utils.TritonError.UNKNOWN))
    assert unknown.grpc_code == "UNKNOWN"
    assert to_trident_error(pb_utils.TritonError("m", 6)).failure_reason == "BACKEND"
    assert to_trident_error(pb_utils.TritonError("m", 7)).failure_reason == "CANCELED"
    with pytest.raises(ValueError, match="unknown TritonError code"):
        pb_utils.TritonError("m", 42)
    exception = pb_utils.TritonModelException("bad")
    assert exception.message() == "bad" and str(exception) == "bad"


def test_logger_goes_to_the_trident_logger_with_the_callers_line(caplog):
    with caplog.at_level(logging.DEBUG, logger="trident"):
        pb_utils.Logger.log_info("info line")
        pb_utils.Logger.log_warn("warn line")
        pb_utils.Logger.log_error("error line")
        pb_utils.Logger.log_verbose("verbose line")
        pb_utils.Logger.log("explicit", pb_utils.Logger.ERROR)
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        ("trident.python_model", logging.INFO, "info line"),
        ("trident.python_model", logging.WARNING, "warn line"),
        ("trident.python_model", logging.ERROR, "error line"),
        ("trident.python_model", logging.DEBUG, "verbose line"),
        ("trident.python_model", logging.ERROR, "explicit"),
    ]
    assert all(r.pathname == __file__ for r in caplog.records)


def test_model_config_object_edits():
    config = pb_utils.ModelConfig('{"name": "m", "max_batch_size": 0, "input": [], "output": []}')
    config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [2]})
    config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [2], "optional": True})
    config.add_output({"name": "B", "data_type": "TYPE_INT32", "dims": [-1]})
    config.set_max_batch_size(4)
    config.set_dynamic_batching()
    config.set_model_transaction_policy({"decoupled": False})
    assert config.as_dict() == {
        "name": "m",
        "max_batch_size": 4,
        "input": [{"name": "A", "data_type": "TYPE_FP32", "dims": [2], "optional": True}],
        "output": [{"name": "B", "data_type": "TYPE_INT32", "dims": [-1]}],
        "dynamic_batching": {},
        "model_transaction_policy": {"decoupled": False},
    }
    with pytest.raises(ValueError, match="missing 'name' property"):
        config.add_input({"data_type": "TYPE_FP32", "dims": [1]})
    with pytest.raises(ValueError, match="contains property other than 'name', 'data_type' and"):
        config.add_output({"name": "C", "data_type": "TYPE_FP32", "dims": [1], "optional": True})
    with pytest.raises(ValueError, match="contains property other than 'decoupled'"):
        config.set_model_transaction_policy({"batched": True})


def test_custom_metric_families_render_as_prometheus_text():
    from trident.backends.python.metrics import CustomMetricsRegistry

    registry = CustomMetricsRegistry()
    requests = registry.family(
        pb_utils.MetricFamily, "test_requests_total", "Requests seen", pb_utils.MetricFamily.COUNTER
    )
    counter = requests.Metric(labels={"model": "m", "kind": 'a"b'})
    counter.increment(2)
    counter.increment(1.5)
    assert requests.Metric(labels={"kind": 'a"b', "model": "m"}) is counter
    with pytest.raises(pb_utils.TritonModelException, match="cannot be decremented"):
        counter.increment(-1)
    with pytest.raises(pb_utils.TritonModelException, match="only gauge"):
        counter.set(1)
    depth = registry.family(
        pb_utils.MetricFamily, "test_depth", "Depth", pb_utils.MetricFamily.GAUGE
    )
    gauge = depth.Metric()
    gauge.set(7)
    gauge.increment(-2)
    assert gauge.value() == 5
    latency = registry.family(
        pb_utils.MetricFamily, "test_latency", "Latency", pb_utils.MetricFamily.HISTOGRAM
    )
    histogram = latency.Metric(labels={"model": "m"}, buckets=[0.1, 1])
    for value in (0.05, 0.5, 3):
        histogram.observe(value)
    with pytest.raises(pb_utils.TritonModelException, match="needs 'buckets'"):
        latency.Metric()
    assert registry.render() == (
        "# HELP test_requests_total Requests seen\n"
        "# TYPE test_requests_total counter\n"
        'test_requests_total{model="m",kind="a\\"b"} 3.5\n'
        "# HELP test_depth Depth\n"
        "# TYPE test_depth gauge\n"
        "test_depth 5\n"
        "# HELP test_latency Latency\n"
        "# TYPE test_latency histogram\n"
        'test_latency_bucket{model="m",le="0.1"} 1\n'
        'test_latency_bucket{model="m",le="1"} 2\n'
        'test_latency_bucket{model="m",le="+Inf"} 3\n'
        'test_latency_sum{model="m"} 3.55\n'
        'test_latency_count{model="m"} 3\n'
    )
    with pytest.raises(pb_utils.TritonModelException, match="different kind"):
        registry.family(pb_utils.MetricFamily, "test_depth", "Depth", pb_utils.MetricFamily.COUNTER)
    with pytest.raises(pb_utils.TritonModelException, match="'nv_' prefix"):
        registry.family(pb_utils.MetricFamily, "nv_mine", "x", pb_utils.MetricFamily.GAUGE)


def test_metric_family_constructor_shares_families_process_wide():
    from trident.backends.python.metrics import render_custom_metrics

    first = pb_utils.MetricFamily("test_shared_family", "Shared", pb_utils.MetricFamily.GAUGE)
    second = pb_utils.MetricFamily(
        name="test_shared_family", description="Shared", kind=pb_utils.MetricFamily.GAUGE
    )
    assert first is second
    first.Metric(labels={"model": "shared"}).set(4)
    assert 'test_shared_family{model="shared"} 4' in render_custom_metrics()


@pytest.mark.gpu
def test_tensor_from_a_cuda_dlpack_tensor_stays_on_the_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from trident.backends.python.tensor import to_runtime_tensor

    source = torch.arange(4, device="cuda", dtype=torch.float32)
    for given in (source, torch.utils.dlpack.to_dlpack(source)):
        tensor = pb_utils.Tensor.from_dlpack("G", given)
        assert tensor.is_cpu() is False
        assert tensor.shape() == [4] and tensor.triton_dtype() == 11
        with pytest.raises(pb_utils.TritonModelException, match="stored in GPU"):
            tensor.as_numpy()
        assert torch.from_dlpack(tensor).device.type == "cuda"
        assert to_runtime_tensor(tensor).data.tolist() == [0.0, 1.0, 2.0, 3.0]
