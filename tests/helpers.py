"""Helpers for tests: start a real server in-process, write small models into a repository."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import textwrap
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trident.runtime.server import TridentServer
from trident.runtime.settings import ServerSettings


@dataclass
class RunningServer:
    """A TridentServer serving on free loopback ports, in a thread with its own event loop."""

    server: TridentServer
    loop: asyncio.AbstractEventLoop

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.server.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"127.0.0.1:{self.server.metrics_port}"

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        """Run a coroutine on the server's loop (e.g. to poke at the model manager)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


@contextlib.contextmanager
def running_server(repositories: list[Path] | Path, **overrides: Any) -> Iterator[RunningServer]:
    """Start a real server on 127.0.0.1 with free ports; stop it on exit."""
    if isinstance(repositories, Path):
        repositories = [repositories]
    settings = ServerSettings(
        model_repositories=list(repositories),
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        http_address="127.0.0.1",
        grpc_address="127.0.0.1",
        metrics_address="127.0.0.1",
        exit_timeout_secs=5,
    )
    for key, value in overrides.items():
        if not hasattr(settings, key):
            raise TypeError(f"ServerSettings has no field '{key}'")
        setattr(settings, key, value)
    server = TridentServer(settings)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    errors: list[BaseException] = []
    stop_event: list[asyncio.Event] = []

    async def main() -> None:
        stop = asyncio.Event()
        stop_event.append(stop)
        try:
            await server.start()
        except BaseException as exc:
            errors.append(exc)
            started.set()
            return
        started.set()
        await stop.wait()
        await server.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(120):
        raise TimeoutError("server did not start within 120 s")
    if errors:
        thread.join(10)
        loop.close()
        raise errors[0]
    try:
        yield RunningServer(server, loop)
    finally:
        loop.call_soon_threadsafe(stop_event[0].set)
        thread.join(60)
        if thread.is_alive():  # the loop still runs: closing it would only hide why
            raise RuntimeError("the server did not stop within 60 s")
        loop.close()


def write_model(
    repository: Path,
    name: str,
    model_py: str,
    config: str | None = None,
    versions: tuple[int, ...] = (1,),
) -> Path:
    """Write a Python-backend model (model.py in each version folder, optional config.pbtxt)."""
    model_dir = repository / name
    for version in versions:
        version_dir = model_dir / str(version)
        version_dir.mkdir(parents=True, exist_ok=True)
        (version_dir / "model.py").write_text(textwrap.dedent(model_py))
    if config is not None:
        (model_dir / "config.pbtxt").write_text(textwrap.dedent(config))
    return model_dir


#: The suite's test models, one folder each (config.pbtxt, 1/model.py), named as they serve.
MODELS = Path(__file__).resolve().parent / "models"
_BYTECODE = shutil.ignore_patterns("__pycache__")  # left there by anything that imported one


def copy_models(repository: Path, *names: str) -> Path:
    """Copy tests/models/<name> for each of `names` into `repository`; return `repository`."""
    repository.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(MODELS / name, repository / name, ignore=_BYTECODE)
    return repository


def copy_model(repository: Path, name: str, as_name: str | None = None) -> Path:
    """Copy tests/models/<name> into `repository` as `as_name` (default: `name`); return the copy.

    For a test that needs the folder under a name of its own (the instance name, a module name
    derived from it): the model's config.pbtxt, if any, must then leave `name` out.
    """
    target = repository / (as_name or name)
    shutil.copytree(MODELS / name, target, ignore=_BYTECODE)
    return target


def model_source(name: str) -> str:
    """The model.py of tests/models/<name>, for a test that serves it under its own config."""
    return (MODELS / name / "1" / "model.py").read_text()


#: Returns INPUT0 as OUTPUT0: served under many configs (names, shapes, data types).
IDENTITY_MODEL_PY = model_source("identity_fp32")


def identity_config(
    name: str,
    datatype: str = "TYPE_FP32",
    dims: str = "[ 16 ]",
    max_batch_size: int = 0,
    extra: str = "",
) -> str:
    return f"""
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: {datatype} dims: {dims} }} ]
output [ {{ name: "OUTPUT0" data_type: {datatype} dims: {dims} }} ]
{extra}
"""
