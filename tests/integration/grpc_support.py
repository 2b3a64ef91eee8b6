"""The repository the gRPC integration tests serve (its models in tests/models) and small
helpers they share."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from tritonclient.utils import InferenceServerException

from tests.helpers import (
    IDENTITY_MODEL_PY,
    RunningServer,
    copy_models,
    running_server,
    write_model,
)

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


def copy_marked_models(repository: Path, markers: Path, *names: str) -> None:
    """Copy the models that write a marker file (slow, ticker) from tests/models, each told its
    marker path (markers/<name>) by a parameter added to its config."""
    copy_models(repository, *names)
    for name in names:
        marker = markers / name
        with (repository / name / "config.pbtxt").open("a") as config:
            config.write(f'parameters {{ key: "marker" value: {{ string_value: "{marker}" }} }}\n')


def write_test_models(repository: Path, markers: Path) -> None:
    """The models every gRPC integration test module serves."""
    ident_dir = write_model(repository, "ident", IDENTITY_MODEL_PY, IDENT_CONFIG)
    (ident_dir / "labels.txt").write_text("a\nb\nc\nd\n")
    for name, datatype in (("any_fp32", "TYPE_FP32"), ("strings", "TYPE_STRING")):
        write_model(
            repository, name, IDENTITY_MODEL_PY, ANY_CONFIG.format(name=name, datatype=datatype)
        )
    copy_models(repository, "echo", "repeat", "last_is_final", "fail")
    copy_marked_models(repository, markers, "slow", "ticker")


@contextlib.contextmanager
def serving_test_models(
    tmp_path_factory: pytest.TempPathFactory,
    implementation: str = "native",
    extra_models: tuple[str, ...] = (),
    **settings: object,
) -> Iterator[RunningServer]:
    """A server on the gRPC test models (write_test_models, plus `extra_models` from
    tests/models), gRPC served by `implementation` and HTTP off; `markers` on it is the folder
    where the slow and ticker models write. `settings` override ServerSettings fields."""
    repository = tmp_path_factory.mktemp("grpc_repo")
    markers = tmp_path_factory.mktemp("markers")
    write_test_models(repository, markers)
    copy_models(repository, *extra_models)
    with running_server(
        repository, allow_http=False, grpc_implementation=implementation, **settings
    ) as running:
        running.markers = markers  # type: ignore[attr-defined]
        yield running


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
