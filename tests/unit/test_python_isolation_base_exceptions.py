"""BaseExceptions from a Python model's code (SystemExit, KeyboardInterrupt, GeneratorExit)
become load failures or error responses on every path: import, initialize, sync execute on its
thread and inline, async and decoupled async execute, finalize."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from trident.backends.base import ComputeTiming
from trident.backends.python.backend import PythonBackend
from trident.runtime.core.instances import InstanceWorker
from trident.runtime.errors import ModelExecutionError, ModelLoadError

from .test_python_backend_support import (
    LoopThread,
    loop_thread,
    make_context,
    make_request,
    write_model,
)

CONFIG = """
    backend: "python"
    max_batch_size: 0
    input [ { name: "IN" data_type: TYPE_FP32 dims: [ 1 ] } ]
    output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""
DECOUPLED_CONFIG = CONFIG + "model_transaction_policy { decoupled: true }\n"
EXCEPTIONS = ["SystemExit", "KeyboardInterrupt", "GeneratorExit"]


@pytest.fixture
def loop():
    yield from loop_thread()


def _instance(tmp_path, source: str, config: str = CONFIG, **context):
    model_dir = write_model(tmp_path, "m", source, config)
    return PythonBackend().create_instance(make_context(model_dir, **context))


def _request():
    return make_request("m", {"IN": np.ones(1, np.float32)})


@pytest.mark.parametrize("exception", EXCEPTIONS)
def test_at_import_it_is_a_load_failure(tmp_path, exception: str) -> None:
    with pytest.raises(ModelLoadError, match=exception):
        _instance(tmp_path, f"raise {exception}('at import')\n")


@pytest.mark.parametrize("exception", EXCEPTIONS)
def test_in_initialize_it_is_a_load_failure(tmp_path, exception: str) -> None:
    source = f"""
        class TritonPythonModel:
            def initialize(self, args):
                raise {exception}(7)

            def execute(self, requests):
                return []
    """
    with pytest.raises(ModelLoadError, match=f"initialize.*{exception}"):
        _instance(tmp_path, source)


@pytest.mark.parametrize("exception", EXCEPTIONS)
def test_in_a_sync_execute_inline_or_on_its_thread_it_is_an_error(
    tmp_path, loop: LoopThread, exception: str
) -> None:
    source = f"""
        class TritonPythonModel:
            def execute(self, requests):
                raise {exception}("from execute")
    """
    instance = _instance(tmp_path, source, loop=loop.loop)
    worker = InstanceWorker("m_0", instance, loop.loop)
    with pytest.raises(ModelExecutionError, match=exception):
        loop.run(worker.execute([_request()]))  # on its thread
    with pytest.raises(ModelExecutionError, match=exception):
        worker.execute_now([_request()])  # inline, as the scheduler calls it
    worker.close()


@pytest.mark.parametrize("exception", EXCEPTIONS)
def test_in_an_async_execute_it_is_an_error(tmp_path, loop: LoopThread, exception: str) -> None:
    source = f"""
        class TritonPythonModel:
            async def execute(self, requests):
                raise {exception}("from async execute")
    """
    instance = _instance(tmp_path, source, loop=loop.loop)
    with pytest.raises(ModelExecutionError, match=exception):
        loop.run(instance.execute([_request()], ComputeTiming()))
    instance.close()


def test_in_a_decoupled_async_execute_it_ends_the_open_stream(tmp_path, loop: LoopThread) -> None:
    source = """
        class TritonPythonModel:
            async def execute(self, requests):
                raise SystemExit(3)
    """
    instance = _instance(tmp_path, source, DECOUPLED_CONFIG, loop=loop.loop)
    request = _request()
    request.responder = loop.stream_responder()
    assert loop.run(instance.execute([request], ComputeTiming())) is None
    (response,) = loop.collect(request.responder)
    assert response.final and isinstance(response.error, ModelExecutionError)
    assert "SystemExit: 3" in response.error.message
    instance.close()


def test_in_finalize_it_is_logged_and_the_unload_goes_on(tmp_path, caplog) -> None:
    source = """
        class TritonPythonModel:
            def execute(self, requests):
                return []

            def finalize(self):
                raise SystemExit(9)
    """
    instance = _instance(tmp_path, source)
    instance.close()  # does not raise
    assert "finalize() of Python model 'm' failed: SystemExit: 9" in caplog.text


def test_the_event_loop_survives_them(tmp_path, loop: LoopThread) -> None:
    source = """
        class TritonPythonModel:
            async def execute(self, requests):
                raise KeyboardInterrupt
    """
    instance = _instance(tmp_path, source, loop=loop.loop)
    with pytest.raises(ModelExecutionError):
        loop.run(instance.execute([_request()], ComputeTiming()))
    assert loop.run(asyncio.sleep(0, result="alive")) == "alive"
    instance.close()
