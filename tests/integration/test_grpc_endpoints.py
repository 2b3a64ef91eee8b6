"""Every non-inference RPC of inference.GRPCInferenceService, plus grpc.health.v1.Health,
driven by tritonclient.grpc (and by our generated stubs where tritonclient hides the wire)."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm

from tests.helpers import IDENTITY_MODEL_PY, running_server
from trident.runtime.core.cuda_runtime import cuda_runtime_available
from trident.runtime.protocol import grpc_service_pb2 as gs
from trident.runtime.protocol import grpc_service_pb2_grpc as gs_grpc
from trident.runtime.protocol import health_pb2, health_pb2_grpc

from .grpc_support import GRPC_IMPLEMENTATIONS, expect_code, serving_test_models


@pytest.fixture(scope="module", params=GRPC_IMPLEMENTATIONS)
def server(request, tmp_path_factory):
    with serving_test_models(
        tmp_path_factory, request.param, model_control_mode="explicit", startup_models=["*"]
    ) as running:
        yield running


@pytest.fixture
def client(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield gs_grpc.GRPCInferenceServiceStub(channel)


def _infer_ident(client: grpcclient.InferenceServerClient, model: str = "ident") -> np.ndarray:
    data = np.arange(4, dtype=np.float32).reshape(1, 4)
    tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(data)
    return client.infer(model, [tensor]).as_numpy("OUTPUT0")


# ------------------------------------------------------------------------------ health


def test_live_ready_and_health_check(server, client):
    assert client.is_server_live()
    assert client.is_server_ready()
    with grpc.insecure_channel(server.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        named = health.Check(health_pb2.HealthCheckRequest(service="inference"))
        assert named.status == health_pb2.HealthCheckResponse.SERVING


def test_model_ready(client):
    assert client.is_model_ready("ident")
    assert client.is_model_ready("ident", "1")
    assert not client.is_model_ready("ident", "7")


def test_model_ready_unknown_model(client):
    try:
        ready = client.is_model_ready("nosuch")
    except grpcclient.InferenceServerException as error:
        assert error.status() == str(grpc.StatusCode.NOT_FOUND)
    else:
        assert ready is False


# ------------------------------------------------------------------------------ metadata


def test_server_metadata(client):
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "trident"
    assert metadata["version"]
    for extension in ("model_repository", "system_shared_memory", "statistics", "sequence"):
        assert extension in metadata["extensions"]


def test_model_metadata(client):
    metadata = client.get_model_metadata("ident")
    assert metadata.name == "ident"
    assert list(metadata.versions) == ["1"]
    assert metadata.platform == "python"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("INPUT0", "FP32", [-1, 4])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("OUTPUT0", "FP32", [-1, 4])
    ]


def test_unknown_model_metadata_and_config_are_not_found(client):
    expect_code(grpc.StatusCode.NOT_FOUND, lambda: client.get_model_metadata("nosuch"), "nosuch")
    expect_code(grpc.StatusCode.NOT_FOUND, lambda: client.get_model_config("nosuch"), "nosuch")


def test_bad_version_string_is_invalid(client):
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.get_model_metadata("ident", "one"))


def test_model_config(client):
    config = client.get_model_config("ident").config
    assert config.name == "ident"
    assert config.max_batch_size == 8
    assert config.backend == "python"
    assert [i.name for i in config.input] == ["INPUT0"]
    assert list(config.input[0].dims) == [4]
    decoupled = client.get_model_config("repeat", as_json=True)["config"]
    assert decoupled["model_transaction_policy"]["decoupled"] is True


def test_model_statistics(client):
    before = client.get_inference_statistics("ident").model_stats[0].inference_stats.success.count
    _infer_ident(client)
    stats = client.get_inference_statistics("ident")
    assert [(s.name, s.version) for s in stats.model_stats] == [("ident", "1")]
    assert stats.model_stats[0].inference_stats.success.count == before + 1
    everything = client.get_inference_statistics()
    assert "ident" in {s.name for s in everything.model_stats}
    with pytest.raises(grpcclient.InferenceServerException):
        client.get_inference_statistics("nosuch")


# ------------------------------------------------------------------------------ repository


def test_repository_index(client):
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert {"ident", "echo", "repeat"} <= set(index)
    assert index["ident"].state == "READY" and index["ident"].version == "1"
    ready_only = client.get_model_repository_index(as_json=True)
    assert all("name" in entry for entry in ready_only["models"])


def test_load_with_config_and_files_then_unload(client):
    config = {
        "name": "uploaded",
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [2]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [2]}],
    }
    files = {"file:1/model.py": IDENTITY_MODEL_PY.encode()}
    client.load_model("uploaded", config=json.dumps(config), files=files)
    assert client.is_model_ready("uploaded")
    tensor = grpcclient.InferInput("INPUT0", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1.5, 2.5], dtype=np.float32))
    result = client.infer("uploaded", [tensor])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), [1.5, 2.5])
    client.unload_model("uploaded", unload_dependents=True)
    assert not client.is_model_ready("uploaded")


def test_reload_from_repository(client):
    client.unload_model("echo")
    assert not client.is_model_ready("echo")
    client.load_model("echo")
    assert client.is_model_ready("echo")


def test_load_parameter_types_are_checked(stub):
    request = gs.RepositoryModelLoadRequest(model_name="ident")
    request.parameters["config"].bytes_param = b"{}"
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.RepositoryModelLoad(request))
    request = gs.RepositoryModelLoadRequest(model_name="ident")
    request.parameters["file:1/model.py"].string_param = "text"
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.RepositoryModelLoad(request))
    request = gs.RepositoryModelLoadRequest(model_name="ident")
    request.parameters["colour"].string_param = "blue"
    expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: stub.RepositoryModelLoad(request),
        "unrecognized load parameter 'colour'",
    )
    unload = gs.RepositoryModelUnloadRequest(model_name="ident")
    unload.parameters["unload_dependents"].string_param = "yes"
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.RepositoryModelUnload(unload))
    assert stub.ModelReady(gs.ModelReadyRequest(name="ident")).ready


def test_load_of_a_missing_model_fails(client):
    with pytest.raises(grpcclient.InferenceServerException):
        client.load_model("nosuch")


# ------------------------------------------------------------------------------ shared memory


def test_system_shared_memory_register_status_unregister(client):
    handle = shm.create_shared_memory_region("grpc_ep_region", "/grpc_ep_region", 64)
    try:
        client.register_system_shared_memory("grpc_ep_region", "/grpc_ep_region", 32, offset=8)
        status = client.get_system_shared_memory_status()
        region = status.regions["grpc_ep_region"]
        assert (region.name, region.key, region.offset, region.byte_size) == (
            "grpc_ep_region",
            "/grpc_ep_region",
            8,
            32,
        )
        one = client.get_system_shared_memory_status("grpc_ep_region")
        assert list(one.regions) == ["grpc_ep_region"]
        expect_code(
            grpc.StatusCode.ALREADY_EXISTS,
            lambda: client.register_system_shared_memory("grpc_ep_region", "/grpc_ep_region", 32),
        )
        client.unregister_system_shared_memory("grpc_ep_region")
        assert len(client.get_system_shared_memory_status().regions) == 0
        expect_code(
            grpc.StatusCode.NOT_FOUND,
            lambda: client.get_system_shared_memory_status("grpc_ep_region"),
        )
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(handle)


def test_system_shared_memory_bad_key(client):
    with pytest.raises(grpcclient.InferenceServerException):
        client.register_system_shared_memory("nokey", "/trident_no_such_key", 16)


def test_cuda_shared_memory_without_regions(client, stub):
    assert len(client.get_cuda_shared_memory_status().regions) == 0
    request = gs.CudaSharedMemoryRegisterRequest(
        name="gpu", raw_handle=b"\x00" * 64, device_id=0, byte_size=16
    )
    if cuda_runtime_available():  # a GPU server tries the handle, which is no real one
        code, match = grpc.StatusCode.INVALID_ARGUMENT, "could not be opened"
    else:  # more in tests/integration/test_cuda_shared_memory.py
        code, match = grpc.StatusCode.UNIMPLEMENTED, "CUDA shared memory needs"
    expect_code(code, lambda: stub.CudaSharedMemoryRegister(request), match)
    # With nothing registered, unregistering (all, or by name) succeeds: perf_analyzer
    # unregisters all CUDA regions before every shared-memory run.
    client.unregister_cuda_shared_memory()
    client.unregister_cuda_shared_memory("gpu")


# ------------------------------------------------------------------------------ trace and log


def test_trace_settings(client):
    settings = client.get_trace_settings(as_json=True)["settings"]
    assert "trace_rate" in settings and "trace_level" in settings
    updated = client.update_trace_settings(settings={"trace_rate": "7"}, as_json=True)
    assert updated["settings"]["trace_rate"]["value"] == ["7"]
    per_model = client.update_trace_settings(
        model_name="ident", settings={"trace_rate": "3"}, as_json=True
    )
    assert per_model["settings"]["trace_rate"]["value"] == ["3"]
    cleared = client.update_trace_settings(
        model_name="ident", settings={"trace_rate": None}, as_json=True
    )
    assert cleared["settings"]["trace_rate"]["value"] == ["7"]
    # No trace file was given at startup: a level that traces is refused (as in Triton).
    expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]}),
    )
    expect_code(
        grpc.StatusCode.UNIMPLEMENTED,
        lambda: client.update_trace_settings(settings={"trace_file": "/tmp/x"}),
    )
    client.update_trace_settings(settings={"trace_rate": None})
    expect_code(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: client.update_trace_settings(settings={"no_such_setting": "1"}),
    )
    expect_code(
        grpc.StatusCode.NOT_FOUND,
        lambda: client.update_trace_settings(model_name="nosuch", settings={"trace_rate": "1"}),
    )


def test_log_settings(client, stub):
    settings = client.get_log_settings(as_json=True)["settings"]
    assert settings["log_info"]["bool_param"] is True
    assert settings["log_format"]["string_param"] == "default"
    original = settings["log_verbose_level"].get("uint32_param", 0)
    updated = client.update_log_settings({"log_verbose_level": 2}, as_json=True)["settings"]
    assert updated["log_verbose_level"]["uint32_param"] == 2
    client.update_log_settings({"log_verbose_level": original})
    unknown = gs.LogSettingsRequest()
    unknown.settings["log_colour"].string_param = "blue"
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.LogSettings(unknown), "log_colour")
    wrong_type = gs.LogSettingsRequest()
    wrong_type.settings["log_info"].string_param = "yes"
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.LogSettings(wrong_type))
    empty = gs.LogSettingsRequest()
    empty.settings["log_info"].SetInParent()
    expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: stub.LogSettings(empty), "no value")


# ------------------------------------------------------------------------------ the frontend


def test_port_in_use_fails_to_start(server, tmp_path):
    port = int(server.grpc_url.rsplit(":", 1)[1])
    with (
        pytest.raises(Exception, match=str(port)),
        running_server(tmp_path, allow_http=False, allow_metrics=False, grpc_port=port),
    ):
        pass
