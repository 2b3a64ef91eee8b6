"""perf_analyzer (NVIDIA's load generator) against the `trident` command, over gRPC and HTTP.

perf_analyzer checks the server the way it checks Triton (ServerLive, ModelMetadata, ModelConfig,
model statistics) before it sends load, checks outputs against expected values when it is given
them, and exits non-zero on any failed request or wrong output; a clean run says the wire
protocol (plain and with system shared memory) is compatible enough for Triton's own tooling.

perf_analyzer comes from perf/install_peers.sh. Without it the tests skip, except under CI (the
CI environment variable set), where they fail: CI must not pass by measuring nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from perf import peers
from tests.launcher import ServerProcess, start_trident


@pytest.fixture(scope="module")
def perf_analyzer() -> peers.PerfAnalyzer:
    try:
        return peers.find_perf_analyzer()
    except peers.PeerNotInstalledError as exc:
        missing = str(exc)
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and perf_analyzer is required: {missing}", pytrace=False)
    pytest.skip("perf_analyzer not installed: run perf/install_peers.sh")


@pytest.fixture(scope="module")
def trident_server(
    tmp_path_factory: pytest.TempPathFactory, perf_analyzer: peers.PerfAnalyzer
) -> Iterator[ServerProcess]:
    """`trident serve` as a subprocess, on free loopback ports, serving the identity model."""
    repository = tmp_path_factory.mktemp("repository")
    peers.write_identity_model(repository, "identity", max_batch_size=0)
    logs = tmp_path_factory.mktemp("logs")
    # --exit-on-error: a model that fails to load ends the command at once, with the reason in
    # its log, instead of a server that never turns ready.
    with start_trident(repository, extra_args=["--exit-on-error"], log_dir=Path(logs)) as server:
        yield server
    # A clean shutdown on SIGTERM is part of the command's contract.
    assert server.process.returncode == 0, server.log_tail()


@pytest.fixture(scope="module")
def validated_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """perf_analyzer input data with the expected outputs: it checks every response against
    them and reports "Output doesn't match expected output" (an error) on any difference."""
    values = [round(i * 0.75 - 5.5, 2) for i in range(16)]
    path = tmp_path_factory.mktemp("input") / "identity.json"
    path.write_text(
        json.dumps({"data": [{"INPUT0": values}], "validation_data": [{"OUTPUT0": values}]})
    )
    return path


@pytest.mark.parametrize(
    ("protocol", "shared_memory"),
    [("grpc", "none"), ("http", "none"), ("grpc", "system"), ("http", "system")],
)
def test_perf_analyzer_measures_trident(
    perf_analyzer: peers.PerfAnalyzer,
    trident_server: ServerProcess,
    validated_input: Path,
    protocol: str,
    shared_memory: str,
) -> None:
    url = trident_server.grpc_url if protocol == "grpc" else trident_server.http_url
    # perf_analyzer cannot check outputs it reads back from shared memory ("Output size doesn't
    # match expected size", against real Triton too): validate only without shared memory.
    input_data = str(validated_input) if shared_memory == "none" else "random"
    # Short windows and a loose stability rule: this checks that it works, not how fast.
    run = peers.run_perf_analyzer(
        "identity",
        url,
        protocol=protocol,
        concurrency=(2,),
        measurement_ms=1000,
        max_trials=5,
        stability_percentage=1000,
        extra_args=["--input-data", input_data, "--shared-memory", shared_memory],
        timeout_s=60,
        analyzer=perf_analyzer,
    )
    (result,) = run.results
    assert result.concurrency == 2
    assert result.throughput > 0, run.output
    assert 0 < result.p50_us <= result.p99_us, run.output
    assert trident_server.process.poll() is None, trident_server.log_tail()
