"""The repository API stays inside its folders, driven as a hostile client would drive it.

Every test runs the real server with the temporary folder (tempfile's) moved into the test's
own folder, with sentinel files beside the repository and beside the temporary folders: after
each attack, nothing outside a temporary folder the server made may have been written or
removed, and no temporary folder may be left behind by a refused or failed load.
"""

from __future__ import annotations

import base64
import http.client
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.helpers import (
    IDENTITY_MODEL_PY,
    RunningServer,
    identity_config,
    running_server,
    write_model,
)

CONFIG = json.dumps(
    {
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [16]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [16]}],
    }
)
#: A model that fails to load, so the load's clean-up path runs.
FAILING_MODEL_PY = b"raise RuntimeError('this model never loads')\n"


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tmp_path/repo (the repository), tmp_path/tmp (tempfile's folder), sentinels around."""
    repo = tmp_path / "repo"
    write_model(repo, "good", IDENTITY_MODEL_PY, identity_config("good"))
    (repo / "bad\\name" / "1").mkdir(parents=True)  # on disk, but not a valid model name
    temp = tmp_path / "tmp"
    temp.mkdir()
    for sentinel in (tmp_path / "sentinel", temp / "sentinel", tmp_path / "escape" / "keep"):
        sentinel.parent.mkdir(exist_ok=True)
        sentinel.write_text("keep")
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    yield tmp_path


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if "__pycache__" not in path.parts}


def _override_folders(sandbox: Path) -> list[Path]:
    return sorted((sandbox / "tmp").glob("trident-override-*"))


def _post(server: RunningServer, raw_path: str, body: bytes) -> tuple[int, str]:
    """POST with the path sent exactly as given (no client-side quoting or normalizing)."""
    host, port = server.http_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", raw_path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _load_body(files: dict[str, bytes]) -> bytes:
    parameters = {"config": CONFIG}
    parameters.update({f"file:{k}": base64.b64encode(v).decode() for k, v in files.items()})
    return json.dumps({"parameters": parameters}).encode()


@pytest.mark.parametrize(
    ("quoted_name", "rule"),
    [
        ("..%2F..%2Fescape", "single path component"),
        ("..%2Fescape", "single path component"),
        ("%2E%2E", "must not be '.' or '..'"),
        ("..", "must not be '.' or '..'"),
        ("..%5C..%5Cescape", "single path component"),
        ("bad%00name", "NUL or other control characters"),
        ("x" * 256, "at most 255 bytes"),
    ],
)
def test_http_load_and_unload_refuse_names_that_leave_the_folder(
    sandbox: Path, quoted_name: str, rule: str
) -> None:
    before = _files(sandbox)
    body = _load_body({"1/model.py": FAILING_MODEL_PY, "1/extra.txt": b"x"})
    with running_server(sandbox / "repo", model_control_mode="explicit") as server:
        for action, payload in (("load", body), ("unload", b"")):
            status, text = _post(server, f"/v2/repository/models/{quoted_name}/{action}", payload)
            assert status == 400, text
            assert "invalid model name" in text and rule in text
    assert _files(sandbox) == before


def test_http_unencoded_traversal_matches_no_route_and_writes_nothing(sandbox: Path) -> None:
    before = _files(sandbox)
    body = _load_body({"1/model.py": FAILING_MODEL_PY})
    with running_server(sandbox / "repo", model_control_mode="explicit") as server:
        status, _ = _post(server, "/v2/repository/models/../../escape/load", body)
        assert status in (400, 404)
        status, text = _post(server, "/v2/repository/models/../load", body)
        assert status in (400, 404), text
    assert _files(sandbox) == before


def test_grpc_load_and_unload_refuse_traversal_names(sandbox: Path) -> None:
    before = _files(sandbox)
    with running_server(sandbox / "repo", model_control_mode="explicit") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for name in ("../../escape", "../escape", "..", "a/b", "nul\x00"):
            with pytest.raises(InferenceServerException) as raised:
                client.load_model(name, config=CONFIG, files={"file:1/model.py": FAILING_MODEL_PY})
            assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert "invalid model name" in raised.value.message()
            with pytest.raises(InferenceServerException) as raised:
                client.unload_model(name)
            assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert _files(sandbox) == before


def test_file_paths_must_stay_in_the_model_folder(sandbox: Path) -> None:
    before = _files(sandbox)
    with running_server(sandbox / "repo", model_control_mode="explicit") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for path in ("../../escape/x.py", "/tmp/abs.py", "1/../../../x", "1\\..\\x", "1//m.py"):
            files = {"file:1/model.py": IDENTITY_MODEL_PY.encode(), f"file:{path}": b"x"}
            with pytest.raises(InferenceServerException, match="invalid model file path"):
                client.load_model("victim", config=CONFIG, files=files)
            status, text = _post(
                server,
                "/v2/repository/models/victim/load",
                _load_body({"1/model.py": b"", path: b"x"}),
            )
            assert status == 400 and "invalid model file path" in text
        assert not client.is_model_ready("victim")
    assert _files(sandbox) == before


def test_a_failed_load_removes_its_temporary_folder_and_nothing_else(sandbox: Path) -> None:
    before = _files(sandbox)
    with running_server(sandbox / "repo", model_control_mode="explicit") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException, match="this model never loads"):
            client.load_model("failing", config=CONFIG, files={"file:1/model.py": FAILING_MODEL_PY})
        status, text = _post(
            server,
            "/v2/repository/models/failing2/load",
            _load_body({"1/model.py": FAILING_MODEL_PY, "1/deep/er/file.bin": b"\0"}),
        )
        assert status == 400 and "this model never loads" in text
        assert _override_folders(sandbox) == []
    assert _files(sandbox) == before


def test_override_folders_are_removed_on_reload_and_unload(sandbox: Path) -> None:
    before = _files(sandbox)
    with running_server(sandbox / "repo", model_control_mode="explicit") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        client.load_model(
            "uploaded", config=CONFIG, files={"file:1/model.py": IDENTITY_MODEL_PY.encode()}
        )
        first = _override_folders(sandbox)
        assert len(first) == 1 and (first[0] / "uploaded" / "1" / "model.py").is_file()
        client.load_model(
            "uploaded", config=CONFIG, files={"file:1/model.py": IDENTITY_MODEL_PY.encode()}
        )
        second = _override_folders(sandbox)
        assert len(second) == 1 and second != first  # the previous one went, only it
        assert client.is_model_ready("uploaded")
        client.unload_model("uploaded")
        assert _override_folders(sandbox) == []
    assert _files(sandbox) == before


def test_load_requests_are_bounded_in_files_and_bytes(sandbox: Path) -> None:
    before = _files(sandbox)
    with running_server(
        sandbox / "repo",
        model_control_mode="explicit",
        model_load_max_files=3,
        http_max_input_size=64 * 1024,
    ) as server:
        many = {f"{i}.txt": b"" for i in range(4)}
        status, text = _post(server, "/v2/repository/models/m/load", _load_body(many))
        assert status == 400 and "at most 3 files, this one sends 4" in text
        client = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException, match="at most 3 files"):
            client.load_model("m", config=CONFIG, files={f"file:{k}": v for k, v in many.items()})
        big = {"file:1/a.bin": b"a" * 40_000, "file:1/b.bin": b"b" * 40_000}
        with pytest.raises(InferenceServerException, match="at most 65536 bytes in all"):
            client.load_model("m", config=CONFIG, files=big)
    assert _files(sandbox) == before


def test_a_folder_with_an_invalid_name_is_reported_not_served(sandbox: Path) -> None:
    with running_server(sandbox / "repo") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        index = {model.name: model for model in client.get_model_repository_index().models}
        assert index["good"].state == "READY"
        assert index["bad\\name"].state == "UNAVAILABLE"
        assert "not served" in index["bad\\name"].reason
        assert "single path component" in index["bad\\name"].reason
        assert client.is_server_live()


LOADER_MODEL_PY = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils

CONFIG = json.dumps({config})
FILES = {{"file:1/model.py": {model!r}}}


class TritonPythonModel:
    def execute(self, requests):
        outcomes = []
        for name in ("child", "../escape", "..", "a/b"):
            try:
                pb_utils.load_model(name, config=CONFIG, files=FILES)
                outcomes.append("loaded")
            except pb_utils.TritonModelException as exc:
                outcomes.append(str(exc))
        out = pb_utils.Tensor("OUTPUT0", np.array(outcomes, dtype=object))
        return [pb_utils.InferenceResponse(output_tensors=[out]) for _ in requests]
"""


def test_a_python_model_loading_models_is_held_to_the_same_rules(sandbox: Path) -> None:
    repo = sandbox / "repo"
    source = LOADER_MODEL_PY.format(config=CONFIG, model=IDENTITY_MODEL_PY.encode())
    write_model(
        repo,
        "loader",
        source,
        identity_config("loader", datatype="TYPE_STRING", dims="[ -1 ]"),
    )
    before = _files(sandbox)
    with running_server(repo, model_control_mode="explicit", startup_models=["loader"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("INPUT0", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"go"], dtype=object))
        outcomes = [o.decode() for o in client.infer("loader", [tensor]).as_numpy("OUTPUT0")]
        assert outcomes[0] == "loaded" and client.is_model_ready("child")
        assert all("invalid model name" in outcome for outcome in outcomes[1:]), outcomes
        assert len(_override_folders(sandbox)) == 1  # the child's, until it is unloaded
        client.unload_model("child")
        assert _override_folders(sandbox) == []
    assert {p for p in _files(sandbox) if "loader" not in p.parts} == {
        p for p in before if "loader" not in p.parts
    }


def test_an_ensemble_step_cannot_reach_a_model_outside_the_repository(sandbox: Path) -> None:
    repo = sandbox / "repo"
    write_model(sandbox, "outside", IDENTITY_MODEL_PY, identity_config("outside"))
    (repo / "sneaky" / "1").mkdir(parents=True)
    (repo / "sneaky" / "config.pbtxt").write_text(
        'name: "sneaky"\nplatform: "ensemble"\nmax_batch_size: 0\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
        'ensemble_scheduling { step [ { model_name: "../outside" model_version: -1 '
        'input_map { key: "INPUT0" value: "INPUT0" } '
        'output_map { key: "OUTPUT0" value: "OUTPUT0" } } ] }\n'
    )
    with running_server(repo, model_control_mode="explicit") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException, match=r"invalid model name '\.\./outside'"):
            client.load_model("sneaky")
        assert not client.is_model_ready("sneaky")
        assert not client.is_model_ready("../outside")
        reasons = [m.reason for m in client.get_model_repository_index().models]
        assert any("invalid model name" in reason for reason in reasons), reasons
