"""The core knows no wire format: nothing under runtime/core imports a frontend, a transport
library or the gRPC service messages (the frontends render the core's plain results)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "runtime" / "core"

#: Modules (and their submodules) the core must not import.
FORBIDDEN = (
    "trident.runtime.protocol.grpc_service_pb2",
    "trident.runtime.protocol.grpc_service_pb2_grpc",
    "trident.runtime.protocol.health_pb2",
    "trident.runtime.protocol.health_pb2_grpc",
    "trident.runtime.frontends",
    "grpc",
    "aiohttp",
)


def _package(path: Path) -> str:
    """The package a file under runtime/core belongs to, e.g. trident.runtime.core.scheduling."""
    return ".".join(("trident", "runtime", *path.relative_to(CORE.parent).parent.parts))


def _imported(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, relative ones resolved
    against `package`; deferred imports inside functions count too."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((node.lineno, base))
            # `from trident.runtime.protocol import grpc_service_pb2` names the module itself.
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def _refused(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_no_module_under_runtime_core_imports_a_wire_format():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 20  # the walk found the core
    offenders = [
        f"{path.relative_to(CORE.parent)}:{line}: {module}"
        for path in files
        for line, module in _imported(path.read_text(), _package(path))
        if _refused(module)
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        ("from trident.runtime.protocol import grpc_service_pb2 as gs\n", True),
        ("import trident.runtime.protocol.grpc_service_pb2\n", True),
        ("from ...frontends.http import codec\n", True),
        ("from ... import frontends\n", True),
        ("import grpc.aio\n", True),
        ("from aiohttp import web\n", True),
        ("def f():\n    import aiohttp\n", True),  # a deferred import counts too
        ("from trident.runtime.protocol import model_config_pb2 as mc\n", False),
        ("from .stats import ModelStatistics\n", False),
        ("import json\n", False),
    ],
)
def test_the_check_sees_every_form_of_import(source, refused):
    # Resolved as if the source sat in runtime/core/scheduling/.
    found = _imported(source, "trident.runtime.core.scheduling")
    assert any(_refused(module) for _, module in found) is refused
