"""ONNX Runtime: runs model.onnx (and any external-data files beside it in the version folder).

Auto-complete reads model.onnx (see backends/model_signature.py for Triton's rules). Each
instance owns one `InferenceSession`, on the CPU or, for KIND_GPU instances, on its GPU through
the CUDA (and optionally TensorRT) execution provider; session options and providers come from the
config as described in session_options.py. `execute` batches the requests it is handed
(backends/batching.py), runs the session once per batch and splits the outputs back.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from trident.backends.base import Backend, ComputeTiming, InstanceContext, ModelInstance
from trident.backends.batching import (
    Batch,
    BatchResponses,
    fetched_output_names,
    form_batches,
    output_specs,
    request_arrays,
    requested_output_names,
    state_output_names,
)
from trident.backends.model_signature import DEFAULT_MAX_BATCH_SIZE, auto_complete, check_config
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import (
    InvalidArgumentError,
    ModelExecutionError,
    ModelLoadError,
    TridentError,
)
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import InferenceResponse

from .session_options import execution_providers, run_options, session_options
from .signature import read_file_signature, resolve_model_path, session_signature

MODEL_FILENAME = "model.onnx"


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    platforms = ("onnxruntime_onnx",)
    default_model_filename = MODEL_FILENAME

    def __init__(self, default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE) -> None:
        self.default_max_batch_size = default_max_batch_size

    def auto_complete_config(self, config: mc.ModelConfig, model_dir: Path, strict: bool) -> None:
        auto_complete(
            config,
            model_dir,
            strict,
            MODEL_FILENAME,
            read_file_signature,
            self.default_max_batch_size,
        )

    def create_instance(self, context: InstanceContext) -> ModelInstance:
        return OnnxRuntimeInstance(context)


class OnnxRuntimeInstance(ModelInstance):
    """One InferenceSession."""

    def __init__(self, context: InstanceContext) -> None:
        config = context.config
        self._model_name = context.model_name
        # Short CPU executions may run on the event loop (runtime/core/instances.py).
        self.may_run_inline = context.kind == "CPU"
        self._version = context.model_version
        self._batched = config.max_batch_size > 0
        for tensor in [*config.input, *config.output]:
            if tensor.data_type == mc.TYPE_BF16:
                raise ModelLoadError(
                    f"'{tensor.name}' is TYPE_BF16, which ONNX Runtime's Python API cannot pass "
                    "to or from numpy; cast it to FP32 or FP16 at the model's edge"
                )
        path = resolve_model_path(
            context.version_dir / (config.default_model_filename or MODEL_FILENAME)
        )
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        providers = execution_providers(
            config,
            context.kind,
            context.device_id,
            ort.get_available_providers(),
            context.instance_name,
        )
        try:
            self._session = ort.InferenceSession(
                str(path),
                sess_options=session_options(ort, config),
                providers=[name for name, _ in providers],
                provider_options=[options for _, options in providers],
            )
        except Exception as exc:  # ORT raises its own pybind error types
            raise ModelLoadError(f"ONNX Runtime cannot load {path.name}: {exc}") from None
        active = self._session.get_providers()
        for name, _ in providers:
            if name not in active:
                # ORT falls back to the CPU with a warning when a provider fails to start.
                raise ModelLoadError(
                    f"ONNX Runtime could not start {name} for instance '{context.instance_name}' "
                    "(check that the CUDA / cuDNN / TensorRT libraries match the installed "
                    "onnxruntime build)"
                )
        check_config(config, session_signature(self._session, path.name))
        self._run_options = run_options(ort, config)
        # The sequence batcher's state outputs are fetched too, whether or not config.output
        # lists them: it feeds them to the sequence's next request.
        self._output_names = fetched_output_names(config)
        self._state_outputs = state_output_names(config)
        self._specs = output_specs(config)
        self._string_inputs = {t.name for t in config.input if t.data_type == mc.TYPE_STRING}
        self._string_outputs = {t.name for t in config.output if t.data_type == mc.TYPE_STRING}

    def execute(
        self, requests: list[InFlightRequest], timing: ComputeTiming
    ) -> list[InferenceResponse]:
        responses = BatchResponses(
            requests, self._specs, self._model_name, self._version, self._batched
        )
        arrays: list[dict[str, np.ndarray] | None] = []
        for index, request in enumerate(requests):
            try:
                arrays.append(self._inputs_of(request))
            except TridentError as error:
                # Only this request fails: it is checked before it joins a batch.
                responses.fail_request(index, error)
                arrays.append(None)
        ready = form_batches(requests, self._batched, arrays)
        timing.input_end_ns = time.monotonic_ns()
        finished: list[tuple[Batch, dict[str, np.ndarray]]] = []
        for batch in ready:
            names = requested_output_names(requests, batch, self._output_names, self._state_outputs)
            try:
                results = self._session.run(names, batch.inputs, self._run_options)
            except Exception as exc:
                responses.fail(batch, _run_error(exc))
                continue
            finished.append((batch, dict(zip(names, results))))
        timing.output_start_ns = time.monotonic_ns()
        for batch, outputs in finished:
            for name in self._string_outputs.intersection(outputs):
                outputs[name] = _encode_strings(outputs[name])
            responses.respond(batch, outputs)
        return responses.result()

    def _inputs_of(self, request: InFlightRequest) -> dict[str, np.ndarray]:
        arrays = request_arrays(request)
        # ONNX Runtime takes string tensors as numpy arrays of str (bytes would be str()'d).
        for name in self._string_inputs.intersection(arrays):
            arrays[name] = _decode_strings(name, arrays[name])
        return arrays

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]  # ORT frees the session with its last reference


def _decode_strings(name: str, array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    decoded = np.empty(flat.shape, dtype=np.object_)
    for index, item in enumerate(flat):
        if isinstance(item, (bytes, bytearray, memoryview)):
            try:
                item = bytes(item).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgumentError(
                    f"input '{name}' element {index} is not valid UTF-8: ONNX Runtime string "
                    "tensors hold text"
                ) from None
        decoded[index] = item
    return decoded.reshape(array.shape)


def _encode_strings(array: np.ndarray) -> np.ndarray:
    """str elements -> bytes, as BYTES tensors carry them everywhere else in the server."""
    flat = array.reshape(-1)
    encoded = np.empty(flat.shape, dtype=np.object_)
    for index, item in enumerate(flat):
        encoded[index] = item.encode("utf-8") if isinstance(item, str) else item
    return encoded.reshape(array.shape)


def _run_error(exc: Exception) -> TridentError:
    if isinstance(exc, ort_errors.InvalidArgument):
        # A bad input (shape, rank, value) that the config's dims let through.
        return InvalidArgumentError(f"ONNX Runtime rejected the input: {exc}")
    return ModelExecutionError(f"ONNX Runtime failed: {exc}")


def create_backend() -> Backend:
    return OnnxRuntimeBackend()
