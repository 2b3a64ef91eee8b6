"""Model warmup: the config's `model_warmup` samples run on every instance before the model
version reports READY, as Triton does.

Each sample of `batch_size` N becomes N requests of batch 1 executed together in one call,
`count` times (at least once) on each instance; samples with batch_size 0 are skipped. Input data is
zeros (`zero_data`), random values (`random_data`; BYTES inputs get empty strings, as in Triton) or
the bytes of MODEL/warmup/FILE (`input_data_file`; raw little-endian values, or length-prefixed
elements for BYTES). Warmup runs straight on the instances, not through the scheduler, so it never
shows in statistics or metrics. A failing sample makes the load fail with
"failed to run warmup sample '<name>': <why>".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trident.runtime.errors import ModelLoadError, TridentError
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import (
    CONFIG_TYPE_TO_DATATYPE,
    DATATYPE_SIZE,
    DATATYPE_TO_NUMPY,
    InferenceRequest,
    InferenceResponse,
    Tensor,
    deserialize_bytes_tensor,
    element_count,
)

from .in_flight import InFlightRequest, validated
from .instances import InstanceWorker
from .scheduling.base import SingleResponder, StreamResponder

#: Folder of a model holding `input_data_file` files (Triton's MODEL/warmup/).
WARMUP_FOLDER = "warmup"


@dataclass(frozen=True, slots=True)
class WarmupInput:
    name: str
    datatype: str
    #: Shape of each batch-1 request (batch dim included when the model batches).
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True, slots=True)
class WarmupSample:
    name: str
    batch_size: int
    count: int
    inputs: tuple[WarmupInput, ...]

    def requests(self, model_name: str, model_version: int) -> list[InFlightRequest]:
        """Fresh requests for one iteration (models may keep or change what they are given),
        in flight without routing: warm-up runs them on an instance directly."""
        requests = []
        for _ in range(self.batch_size):
            request = InferenceRequest(
                model_name=model_name,
                model_version=model_version,
                id=f"warmup_{self.name}",
                inputs=[Tensor(i.name, i.datatype, i.shape, i.data) for i in self.inputs],
            )
            requests.append(validated(request, model_version))
        return requests


def build_samples(config: mc.ModelConfig, model_dir: Path) -> list[WarmupSample]:
    """Read `model_warmup` into ready-to-run samples; ModelLoadError says what is wrong."""
    samples = []
    batching = config.max_batch_size > 0
    declared = {tensor.name: tensor for tensor in config.input}
    rng = np.random.default_rng()
    for index, setting in enumerate(config.model_warmup):
        name = setting.name or f"warmup_{index}"
        if setting.batch_size == 0:
            continue  # Triton skips batch-0 samples
        inputs = []
        for input_name in sorted(setting.inputs):
            spec = setting.inputs[input_name]
            try:
                inputs.append(
                    _build_input(
                        input_name, spec, declared.get(input_name), batching, model_dir, rng
                    )
                )
            except ModelLoadError as exc:
                raise ModelLoadError(f"failed to run warmup sample '{name}': {exc}") from None
        samples.append(WarmupSample(name, setting.batch_size, max(setting.count, 1), tuple(inputs)))
    return samples


def _build_input(
    name: str,
    spec: mc.ModelWarmup.Input,
    declared: mc.ModelInput | None,
    batching: bool,
    model_dir: Path,
    rng: np.random.Generator,
) -> WarmupInput:
    datatype = CONFIG_TYPE_TO_DATATYPE.get(mc.DataType.Name(spec.data_type), "")
    if not datatype:
        raise ModelLoadError(f"input '{name}' needs a data_type (e.g. TYPE_FP32)")
    if declared is not None and declared.data_type != spec.data_type:
        raise ModelLoadError(
            f"input '{name}' is {mc.DataType.Name(spec.data_type)} in the warmup setting but "
            f"{mc.DataType.Name(declared.data_type)} in the model's inputs"
        )
    dims = tuple(int(d) for d in spec.dims)
    if any(d < 0 for d in dims):
        raise ModelLoadError(
            f"warmup setting expects all variable-size dimensions are specified for input '{name}'"
        )
    count = element_count(dims)
    kind = spec.WhichOneof("input_data_type")
    if kind == "zero_data" or (kind == "random_data" and datatype == "BYTES"):
        data = _zeros(datatype, count)
    elif kind == "random_data":
        data = _random(datatype, count, rng)
    elif kind == "input_data_file":
        data = _from_file(name, datatype, count, model_dir, spec.input_data_file)
    else:
        raise ModelLoadError(
            f"warmup setting expects input '{name}' to have input_data_type set (zero_data, "
            "random_data or input_data_file)"
        )
    if declared is not None and declared.HasField("reshape"):
        dims = tuple(int(d) for d in declared.reshape.shape)
    shape = (1, *dims) if batching else dims
    return WarmupInput(name, datatype, shape, data.reshape(shape))


def _zeros(datatype: str, count: int) -> np.ndarray:
    if datatype == "BYTES":
        data = np.empty(count, dtype=np.object_)
        data.fill(b"")
        return data
    return np.zeros(count, dtype=DATATYPE_TO_NUMPY[datatype])


def _random(datatype: str, count: int, rng: np.random.Generator) -> np.ndarray:
    dtype = DATATYPE_TO_NUMPY[datatype]
    if datatype == "BOOL":
        return rng.integers(0, 2, count).astype(np.bool_)
    if dtype.kind == "f":
        return rng.random(count).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, count, dtype=dtype, endpoint=True)


def _from_file(name: str, datatype: str, count: int, model_dir: Path, filename: str) -> np.ndarray:
    folder = (model_dir / WARMUP_FOLDER).resolve()
    path = (folder / filename).resolve()
    if folder not in path.parents:
        raise ModelLoadError(
            f"input '{name}': input_data_file '{filename}' must name a file inside {folder}"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            f"input '{name}': cannot read input_data_file {path}: {exc.strerror}"
        ) from None
    if datatype == "BYTES":
        try:
            return deserialize_bytes_tensor(raw, count)
        except TridentError as exc:
            raise ModelLoadError(
                f"input '{name}': {path} does not hold {count} length-prefixed BYTES elements: "
                f"{exc}"
            ) from None
    needed = count * DATATYPE_SIZE[datatype]
    if len(raw) < needed:
        raise ModelLoadError(
            f"warmup setting expects {needed} bytes, but the data provided from {filename} only "
            f"has {len(raw)} bytes"
        )
    return np.frombuffer(raw[:needed], dtype=DATATYPE_TO_NUMPY[datatype]).copy()


async def warm_up(
    samples: list[WarmupSample],
    workers: Iterable[InstanceWorker],
    model_name: str,
    model_version: int,
    decoupled: bool,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Run every sample on every instance (instances in parallel, samples in order). Raises
    ModelLoadError naming the first failing sample."""
    if not samples:
        return
    await asyncio.gather(
        *(
            _warm_up_instance(samples, worker, model_name, model_version, decoupled, loop)
            for worker in workers
        )
    )


async def _warm_up_instance(
    samples: list[WarmupSample],
    worker: InstanceWorker,
    model_name: str,
    model_version: int,
    decoupled: bool,
    loop: asyncio.AbstractEventLoop,
) -> None:
    loop_thread = threading.get_ident()
    for sample in samples:
        for _ in range(sample.count):
            requests = sample.requests(model_name, model_version)
            for request in requests:
                request.responder = (
                    StreamResponder(loop, loop_thread)
                    if decoupled
                    else SingleResponder(loop, loop_thread)
                )
            try:
                responses = (await worker.execute(requests)).responses
                errors = await _errors(requests, responses)
            except TridentError as exc:
                errors = [exc.message]
            if errors:
                raise ModelLoadError(
                    f"failed to run warmup sample '{sample.name}': " + "; ".join(errors)
                )


async def _errors(
    requests: list[InFlightRequest], responses: list[InferenceResponse] | None
) -> list[str]:
    """The error messages of one warmup execution's responses."""
    if responses is not None:
        return [r.error.message for r in responses if r.error is not None]
    errors = []  # the model answered through its response senders
    for request in requests:
        responder = request.responder
        if isinstance(responder, StreamResponder):
            async for response in responder:
                if response.error is not None:
                    errors.append(response.error.message)
        else:
            response = await responder.result()
            if response.error is not None:
                errors.append(response.error.message)
    return errors
