"""Our generated protocol modules stay wire-compatible with tritonclient's, and stay generated.

1. Every message, enum and service in tritonclient's `service_pb2` / `model_config_pb2` exists in
   `trident.runtime.protocol` under the same full name, with the same fields (names, numbers,
   types, labels, type names, oneofs), enum values and RPC signatures. A difference here means
   tritonclient (and perf_analyzer, which uses the same .proto files) would mis-read our bytes.
2. Regenerating from protos/ reproduces the committed modules byte for byte, so nobody edits
   generated code by hand and the .proto sources stay the single source of truth.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FileDescriptor

from trident.runtime.protocol import grpc_service_pb2, health_pb2, model_config_pb2

triton_grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
from tritonclient.grpc import model_config_pb2 as triton_model_config_pb2  # noqa: E402
from tritonclient.grpc import service_pb2 as triton_service_pb2  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_DIR = REPO_ROOT / "runtime" / "protocol"

PAIRS = [
    pytest.param(triton_service_pb2, grpc_service_pb2, id="grpc_service"),
    pytest.param(triton_model_config_pb2, model_config_pb2, id="model_config"),
]


def _all_messages(file: FileDescriptor) -> dict[str, Descriptor]:
    """Every message in a file, nested ones included (map entries too), by full name."""
    found: dict[str, Descriptor] = {}
    pending = list(file.message_types_by_name.values())
    while pending:
        message = pending.pop()
        found[message.full_name] = message
        pending.extend(message.nested_types)
    return found


def _all_enums(file: FileDescriptor) -> dict[str, EnumDescriptor]:
    found = {enum.full_name: enum for enum in file.enum_types_by_name.values()}
    for message in _all_messages(file).values():
        for enum in message.enum_types:
            found[enum.full_name] = enum
    return found


def _field_signatures(message: Descriptor) -> dict[str, tuple]:
    """name -> (number, type, label, type_name, oneof, proto3_optional), from the descriptor
    proto so that the deprecated `label` accessor is not needed."""
    proto = descriptor_pb2.DescriptorProto()
    message.CopyToProto(proto)
    oneofs = [oneof.name for oneof in proto.oneof_decl]
    signatures = {}
    for field in proto.field:
        oneof = oneofs[field.oneof_index] if field.HasField("oneof_index") else None
        signatures[field.name] = (
            field.number,
            descriptor_pb2.FieldDescriptorProto.Type.Name(field.type),
            descriptor_pb2.FieldDescriptorProto.Label.Name(field.label),
            field.type_name.lstrip("."),
            oneof,
            field.proto3_optional,
        )
    return signatures


@pytest.mark.parametrize(("theirs", "ours"), PAIRS)
def test_same_messages_and_fields(theirs, ours) -> None:
    their_messages = _all_messages(theirs.DESCRIPTOR)
    our_messages = _all_messages(ours.DESCRIPTOR)
    assert sorted(our_messages) == sorted(their_messages)
    assert ours.DESCRIPTOR.package == theirs.DESCRIPTOR.package
    for name, their_message in their_messages.items():
        our_message = our_messages[name]
        assert _field_signatures(our_message) == _field_signatures(their_message), name
        assert [o.name for o in our_message.oneofs] == [o.name for o in their_message.oneofs], name
        assert our_message.GetOptions().map_entry == their_message.GetOptions().map_entry, name


@pytest.mark.parametrize(("theirs", "ours"), PAIRS)
def test_same_enums(theirs, ours) -> None:
    their_enums = _all_enums(theirs.DESCRIPTOR)
    our_enums = _all_enums(ours.DESCRIPTOR)
    assert sorted(our_enums) == sorted(their_enums)
    for name, their_enum in their_enums.items():
        their_values = [(v.name, v.number) for v in their_enum.values]
        our_values = [(v.name, v.number) for v in our_enums[name].values]
        assert our_values == their_values, name


def test_same_service_methods() -> None:
    theirs = triton_service_pb2.DESCRIPTOR.services_by_name
    ours = grpc_service_pb2.DESCRIPTOR.services_by_name
    assert sorted(ours) == sorted(theirs) == ["GRPCInferenceService"]
    for service_name, their_service in theirs.items():
        our_service = ours[service_name]
        assert our_service.full_name == their_service.full_name
        their_methods = {m.name: m for m in their_service.methods}
        our_methods = {m.name: m for m in our_service.methods}
        assert sorted(our_methods) == sorted(their_methods)
        for name, their_method in their_methods.items():
            ours_proto = descriptor_pb2.MethodDescriptorProto()
            theirs_proto = descriptor_pb2.MethodDescriptorProto()
            our_methods[name].CopyToProto(ours_proto)
            their_method.CopyToProto(theirs_proto)
            assert (
                ours_proto.input_type,
                ours_proto.output_type,
                ours_proto.client_streaming,
                ours_proto.server_streaming,
            ) == (
                theirs_proto.input_type,
                theirs_proto.output_type,
                theirs_proto.client_streaming,
                theirs_proto.server_streaming,
            ), name


def test_stream_infer_is_bidirectional() -> None:
    method = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name[
        "ModelStreamInfer"
    ]
    proto = descriptor_pb2.MethodDescriptorProto()
    method.CopyToProto(proto)
    assert proto.client_streaming and proto.server_streaming


def test_our_messages_live_in_a_private_pool() -> None:
    # tritonclient registers the same names in the default pool; ours must not collide.
    from google.protobuf import descriptor_pool

    default = descriptor_pool.Default()
    ours = grpc_service_pb2.ModelInferRequest.DESCRIPTOR
    assert ours.file.pool is not default
    # And a message serialized by one parses in the other, byte for byte.
    theirs = triton_service_pb2.ModelInferRequest(model_name="m", id="7")
    theirs.parameters["sequence_id"].int64_param = 42
    theirs.raw_input_contents.append(b"\x00\x01")
    parsed = grpc_service_pb2.ModelInferRequest.FromString(theirs.SerializeToString())
    assert parsed.parameters["sequence_id"].int64_param == 42
    assert parsed.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )


def test_health_service_is_the_standard_one() -> None:
    service = health_pb2.DESCRIPTOR.services_by_name["Health"]
    assert service.full_name == "grpc.health.v1.Health"
    assert service.methods_by_name["Check"].input_type.full_name == (
        "grpc.health.v1.HealthCheckRequest"
    )
    statuses = health_pb2.HealthCheckResponse.ServingStatus
    assert statuses.Value("SERVING") == 1 and statuses.Value("NOT_SERVING") == 2


def test_regenerated_modules_match_committed(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpc_tools (grpcio-tools) is not installed: cannot regenerate")
    spec = importlib.util.spec_from_file_location(
        "_trident_generate", REPO_ROOT / "protos" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    written = generate.generate(tmp_path)
    generated = sorted(path.name for path in written)
    committed = sorted(path.name for path in PROTOCOL_DIR.glob("*_pb2*.py*"))
    assert generated == committed
    for name in generated:
        assert (tmp_path / name).read_bytes() == (PROTOCOL_DIR / name).read_bytes(), (
            f"runtime/protocol/{name} differs from what protos/generate.py produces: "
            "regenerate it (python protos/generate.py) instead of editing it by hand"
        )
