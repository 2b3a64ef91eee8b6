"""Restricted API rules: tritonserver's option syntax, the endpoint-to-group tables, refusals."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from tests.tls_certs import make_certificates
from trident.runtime.frontends.http.server import HttpRouter
from trident.runtime.frontends.restricted_api import (
    GRPC_METHOD_GROUPS,
    ApiGroup,
    RestrictedApiError,
    RestrictedApis,
    Restriction,
    http_api_group,
)
from trident.runtime.frontends.tls import TlsConfig, TlsSettingsError
from trident.runtime.protocol import grpc_service_pb2, health_pb2

# --- parsing -------------------------------------------------------------------------------


def test_one_option_restricts_each_listed_group_with_its_header() -> None:
    rules = RestrictedApis.for_http(["model-repository,shared-memory:admin-key=s3cret"])
    assert rules.rules == {
        ApiGroup.MODEL_REPOSITORY: Restriction("admin-key", "s3cret"),
        ApiGroup.SHARED_MEMORY: Restriction("admin-key", "s3cret"),
    }
    assert rules


def test_several_options_give_each_group_its_own_key() -> None:
    rules = RestrictedApis.for_http(["inference:infer-key=a", "logging,trace:admin=b"])
    assert rules.rules[ApiGroup.INFERENCE] == Restriction("infer-key", "a")
    assert rules.rules[ApiGroup.TRACE] == Restriction("admin", "b")
    assert ApiGroup.HEALTH not in rules.rules


def test_no_option_restricts_nothing() -> None:
    rules = RestrictedApis.for_http([])
    assert not rules
    assert rules.refusal(ApiGroup.INFERENCE, {}) is None


def test_the_value_is_everything_after_the_first_equals_sign() -> None:
    rules = RestrictedApis.for_http(["health:key=a=b:c"])
    assert rules.rules[ApiGroup.HEALTH] == Restriction("key", "a=b:c")


def test_grpc_keys_take_tritons_prefix_in_lowercase() -> None:
    rules = RestrictedApis.for_grpc(["inference:Infer-Key=v"])
    assert rules.rules[ApiGroup.INFERENCE] == Restriction("triton-grpc-protocol-infer-key", "v")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("inference", "option format is '<api>[,<api>...]:<key>=<value>'"),
        ("inference:key", "option format is"),
        ("inference:key=", "option format is"),
        (":key=value", "option format is"),
        ("inference:=value", "option format is"),
        ("infrence:key=value", "unknown API group 'infrence'"),
        ("inference,:key=value", "unknown API group ''"),
        ("inference:bad key=value", "'bad key' is not a valid header name"),
        ("inference:key=caf\u00e9", "must be printable ASCII"),
        ("inference:key=a\nb", "must be printable ASCII"),
    ],
)
def test_malformed_options_are_refused_with_the_rule(option: str, message: str) -> None:
    with pytest.raises(RestrictedApiError, match="--http-restricted-api") as caught:
        RestrictedApis.for_http([option])
    assert message in str(caught.value)


def test_a_group_restricted_twice_is_refused() -> None:
    with pytest.raises(RestrictedApiError, match="'inference' can not be specified in multiple"):
        RestrictedApis.for_http(["inference:a=1", "health,inference:b=2"])


def test_binary_grpc_metadata_keys_are_refused() -> None:
    with pytest.raises(RestrictedApiError, match="-bin"):
        RestrictedApis.for_grpc(["inference:token-bin=x"])


# --- refusals ------------------------------------------------------------------------------


def test_refusal_names_the_header_as_triton_does() -> None:
    http = RestrictedApis.for_http(["inference:infer-key=v"])
    assert http.refusal(ApiGroup.INFERENCE, {}) == (
        "This API is restricted, expecting header 'infer-key'"
    )
    assert http.refusal(ApiGroup.INFERENCE, {"infer-key": "wrong"}) is not None
    assert http.refusal(ApiGroup.INFERENCE, {"infer-key": "v"}) is None
    assert http.refusal(ApiGroup.HEALTH, {}) is None
    assert http.refusal(None, {}) is None
    grpc = RestrictedApis.for_grpc(["inference:infer-key=v"])
    assert grpc.grpc_refusal("/inference.GRPCInferenceService/ModelInfer", []) == (
        "This protocol is restricted, expecting header 'triton-grpc-protocol-infer-key'"
    )


def test_grpc_refusal_reads_the_first_value_of_the_key() -> None:
    grpc = RestrictedApis.for_grpc(["inference:k=v"])
    method = "/inference.GRPCInferenceService/ModelInfer"
    assert grpc.grpc_refusal(method, [("triton-grpc-protocol-k", "v")]) is None
    assert grpc.grpc_refusal(method, [("triton-grpc-protocol-k", "x"), ("x", "v")]) is not None
    assert grpc.grpc_refusal(method, [("k", "v")]) is not None  # the prefix is required
    assert grpc.grpc_refusal("/inference.GRPCInferenceService/ServerLive", []) is None
    assert grpc.grpc_refusal("/no.Such/Method", []) is None


def test_a_non_ascii_value_is_refused_not_an_error() -> None:
    http = RestrictedApis.for_http(["logging:k=v"])
    assert http.refusal(ApiGroup.LOGGING, {"k": "v\u00e9"}) is not None


# --- the tables ----------------------------------------------------------------------------


def test_every_grpc_method_belongs_to_a_group() -> None:
    service = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    methods = {f"/inference.GRPCInferenceService/{m.name}" for m in service.methods}
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    methods |= {f"/grpc.health.v1.Health/{m.name}" for m in health.methods}
    assert methods == set(GRPC_METHOD_GROUPS)


#: One path of every HTTP route and the group Triton puts it in.
HTTP_PATHS = {
    "/v2/health/live": ApiGroup.HEALTH,
    "/v2/health/ready": ApiGroup.HEALTH,
    "/v2/models/m/ready": ApiGroup.HEALTH,
    "/v2/models/m/versions/2/ready": ApiGroup.HEALTH,
    "/v2": ApiGroup.METADATA,
    "/v2/models/m": ApiGroup.METADATA,
    "/v2/models/m/versions/3": ApiGroup.METADATA,
    "/v2/models/ready": ApiGroup.METADATA,  # a model named "ready"
    "/v2/models/m/infer": ApiGroup.INFERENCE,
    "/v2/models/m/versions/1/infer": ApiGroup.INFERENCE,
    "/v2/models/m/generate": ApiGroup.INFERENCE,
    "/v2/models/m/generate_stream": ApiGroup.INFERENCE,
    "/v2/models/m%2Fx/infer": ApiGroup.INFERENCE,
    "/v1/completions": ApiGroup.INFERENCE,
    "/v1/chat/completions": ApiGroup.INFERENCE,
    "/v2/models/m/config": ApiGroup.MODEL_CONFIG,
    "/v2/models/m/versions/1/config": ApiGroup.MODEL_CONFIG,
    "/v2/models/stats": ApiGroup.STATISTICS,
    "/v2/models/m/stats": ApiGroup.STATISTICS,
    "/v2/models/m/versions/1/stats": ApiGroup.STATISTICS,
    "/v2/repository/index": ApiGroup.MODEL_REPOSITORY,
    "/v2/repository/r/index": ApiGroup.MODEL_REPOSITORY,
    "/v2/repository/models/m/load": ApiGroup.MODEL_REPOSITORY,
    "/v2/repository/models/m/unload": ApiGroup.MODEL_REPOSITORY,
    "/v2/repository/r/models/m/load": ApiGroup.MODEL_REPOSITORY,
    "/v1/models": ApiGroup.MODEL_REPOSITORY,
    "/v1/models/m": ApiGroup.MODEL_REPOSITORY,
    "/v2/systemsharedmemory/status": ApiGroup.SHARED_MEMORY,
    "/v2/systemsharedmemory/region/r/status": ApiGroup.SHARED_MEMORY,
    "/v2/systemsharedmemory/region/r/register": ApiGroup.SHARED_MEMORY,
    "/v2/systemsharedmemory/unregister": ApiGroup.SHARED_MEMORY,
    "/v2/cudasharedmemory/status": ApiGroup.SHARED_MEMORY,
    "/v2/cudasharedmemory/region/r/register": ApiGroup.SHARED_MEMORY,
    "/v2/cudasharedmemory/region/r/unregister": ApiGroup.SHARED_MEMORY,
    "/v2/trace/setting": ApiGroup.TRACE,
    "/v2/models/m/trace/setting": ApiGroup.TRACE,
    "/v2/logging": ApiGroup.LOGGING,
}


@pytest.mark.parametrize(("path", "group"), list(HTTP_PATHS.items()))
def test_every_http_route_belongs_to_its_group(path: str, group: ApiGroup) -> None:
    assert http_api_group(path) is group
    # The path is a route the server serves: the table and the router agree.
    router = HttpRouter(mock.MagicMock())
    assert router.resolve(path) is not None, path


@pytest.mark.parametrize(
    "path", ["/", "/v2/", "/v3", "/v2/models", "/v2/models/m/versions/x", "/v2/loggingx"]
)
def test_paths_that_are_no_route_have_no_group(path: str) -> None:
    assert http_api_group(path) is None
    assert HttpRouter(mock.MagicMock()).resolve(path) is None


# --- TLS settings --------------------------------------------------------------------------


def test_tls_flags_are_checked_and_mutual_turns_tls_on(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    cert, key, ca = str(certs.server_cert), str(certs.server_key), str(certs.ca_cert)
    plain = TlsConfig.from_flags(
        "grpc", use_ssl=False, mutual=False, server_cert="", server_key="", root_cert=""
    )
    assert plain is None
    config = TlsConfig.from_flags(
        "grpc", use_ssl=False, mutual=True, server_cert=cert, server_key=key, root_cert=ca
    )
    assert config is not None and config.mutual
    context = config.ssl_context(alpn=("h2",))
    assert context.verify_mode.name == "CERT_REQUIRED"
    with pytest.raises(TlsSettingsError, match=r"--http-server-key .*: cannot read it"):
        TlsConfig.from_flags(
            "http", use_ssl=True, mutual=False, server_cert=cert, server_key=ca + "x", root_cert=""
        )
    with pytest.raises(TlsSettingsError, match=r"--grpc-root-cert .*: not a PEM certificate"):
        TlsConfig.from_flags(
            "grpc", use_ssl=True, mutual=True, server_cert=cert, server_key=key, root_cert=key
        )
