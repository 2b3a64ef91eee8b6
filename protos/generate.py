"""Regenerate Trident's protobuf and gRPC modules from the .proto files beside this script.

Usage: python protos/generate.py [OUTPUT_DIR]   (default: runtime/protocol)

Besides the modules it writes their type stubs (`*_pb2.pyi`), so mypy and editors know every
message's fields.

The generated modules register their descriptors in a private descriptor pool
(runtime/protocol/_pool.py), not in protobuf's default pool. tritonclient registers messages with
the same full names ("inference.ModelInferRequest", ...) in the default pool, and both must be
importable in one process (tests, BLS clients, user code).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = PROTO_DIR.parent / "runtime" / "protocol"
PROTO_FILES = ("model_config.proto", "grpc_service.proto", "health.proto")
MODULES = ("model_config_pb2", "grpc_service_pb2", "health_pb2")


def _rewrite(text: str) -> str:
    text = text.replace(
        "_descriptor_pool.Default().AddSerializedFile(", "_pool.POOL.AddSerializedFile("
    )
    text = text.replace(
        "from google.protobuf import descriptor_pool as _descriptor_pool\n",
        "from google.protobuf import descriptor_pool as _descriptor_pool  # noqa: F401\n"
        "from . import _pool\n",
    )
    for module in MODULES:
        text = re.sub(rf"^import {module} as ", f"from . import {module} as ", text, flags=re.M)
        text = re.sub(rf"^from {module} import ", f"from .{module} import ", text, flags=re.M)
    return text


def generate(output_dir: Path) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTO_DIR}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                f"--grpc_python_out={scratch}",
                *(str(PROTO_DIR / name) for name in PROTO_FILES),
            ],
            check=True,
        )
        written = []
        for generated in sorted(Path(scratch).glob("*.py*")):
            if (
                generated.name.endswith("_pb2_grpc.py")
                and "rpc "
                not in (PROTO_DIR / generated.name.replace("_pb2_grpc.py", ".proto")).read_text()
            ):
                continue  # a .proto without services needs no gRPC module
            target = output_dir / generated.name
            target.write_text(_rewrite(generated.read_text()))
            written.append(target)
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    for path in generate(out):
        print(path)
