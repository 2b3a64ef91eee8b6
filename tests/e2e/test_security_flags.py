"""The `trident` command with security flags that cannot work: it says why and exits 1 before
loading any model (the checks themselves are unit- and integration-tested)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.launcher import trident_command


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--grpc-use-ssl-mutual", "--grpc-server-cert", "/nonexistent.pem"], "--grpc-server-key"),
        (["--http-restricted-api=inference,infrence:k=v"], "unknown API group 'infrence'"),
    ],
)
def test_bad_security_flags_exit_1_with_the_reason(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    result = subprocess.run(
        [
            *trident_command(),
            "serve",
            "--model-repository",
            str(tmp_path),
            "--http-port=0",
            "--grpc-port=0",
            "--metrics-port=0",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
