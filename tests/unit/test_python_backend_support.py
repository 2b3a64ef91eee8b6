"""Shared helpers (no tests here) for the Python-backend unit tests: write model.py files,
build instances from them, and run an event loop in a thread as the server would."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trident.backends.base import InstanceContext
from trident.backends.python.backend import PythonBackend
from trident.runtime.core.in_flight import InFlightRequest, validated
from trident.runtime.core.model_config import config_to_json, normalize, parse_config_text
from trident.runtime.core.scheduling.base import SingleResponder, StreamResponder
from trident.runtime.types import (
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    datatype_of_array,
)


class LoopThread:
    """An event loop running in a background thread, like the server's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.thread_id = threading.get_ident()
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def single_responder(self) -> SingleResponder:
        async def make() -> SingleResponder:
            return SingleResponder(self.loop, self.thread_id)

        return self.run(make())

    def stream_responder(self) -> StreamResponder:
        async def make() -> StreamResponder:
            return StreamResponder(self.loop, self.thread_id)

        return self.run(make())

    def collect(self, responder: StreamResponder, timeout: float = 10) -> list[InferenceResponse]:
        async def gather() -> list[InferenceResponse]:
            return [response async for response in responder]

        return self.run(gather(), timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def loop_thread() -> Iterator[LoopThread]:
    """Generator behind the `loop` fixtures."""
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.stop()


def write_model(
    repo: Path, name: str, source: str, config: str = "", version: int = 1, filename: str = ""
) -> Path:
    """REPO/NAME/VERSION/model.py (+ config.pbtxt); returns the model folder."""
    model_dir = repo / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / (filename or "model.py")).write_text(textwrap.dedent(source))
    if config:
        (model_dir / "config.pbtxt").write_text(textwrap.dedent(config))
    return model_dir


def make_context(
    model_dir: Path,
    config_text: str = "",
    version: int = 1,
    auto_complete: bool = True,
    **overrides: Any,
) -> InstanceContext:
    """An InstanceContext as the model manager builds it (normalized, auto-completed config)."""
    name = model_dir.name
    config_path = model_dir / "config.pbtxt"
    if not config_text and config_path.exists():
        config_text = config_path.read_text()
    config = parse_config_text(config_text)
    normalize(config, name, "python")
    if auto_complete:
        PythonBackend().auto_complete_config(config, model_dir, strict=False)
    fields: dict[str, Any] = {
        "config": config,
        "model_name": name,
        "model_version": version,
        "model_dir": model_dir,
        "version_dir": model_dir / str(version),
        "instance_name": f"{name}_0_0",
        "config_json": config_to_json(config),
    }
    fields.update(overrides)
    return InstanceContext(**fields)


def make_request(
    model: str, inputs: dict[str, np.ndarray], outputs: tuple[str, ...] = (), **fields: Any
) -> InFlightRequest:
    """A request in flight as the core hands it to an instance (version 1)."""
    tensors = [
        Tensor(name, datatype_of_array(array), tuple(array.shape), array)
        for name, array in inputs.items()
    ]
    request = InferenceRequest(
        model_name=model,
        inputs=tensors,
        outputs=[RequestedOutput(name) for name in outputs],
        **fields,
    )
    return validated(request, 1)


def output(response: InferenceResponse, name: str) -> np.ndarray:
    for tensor in response.outputs:
        if tensor.name == name:
            assert tensor.data is not None
            return tensor.data
    raise AssertionError(f"no output {name!r} in {[t.name for t in response.outputs]}")
