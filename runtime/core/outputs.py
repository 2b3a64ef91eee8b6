"""Turns a model's raw response into what the client asked for: only the requested outputs,
classification results in place of tensors, and outputs written to shared memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from trident.runtime.errors import InternalError, InvalidArgumentError
from trident.runtime.types import InferenceRequest, InferenceResponse, Tensor

if TYPE_CHECKING:
    from .cuda_shared_memory import CudaSharedMemoryRegistry
    from .loaded_model import LoadedModel
    from .shared_memory import SharedMemoryRegistry


def finish_outputs(
    model: LoadedModel,
    request: InferenceRequest,
    response: InferenceResponse,
    shared_memory: SharedMemoryRegistry,
    cuda_shared_memory: CudaSharedMemoryRegistry | None = None,
) -> None:
    if not request.outputs:
        return
    produced = {tensor.name: tensor for tensor in response.outputs}
    selected: list[Tensor] = []
    for wanted in request.outputs:
        tensor = produced.get(wanted.name)
        if tensor is None:
            if response.final and not response.outputs:
                continue  # an empty final response of a decoupled model
            raise InternalError(
                f"model '{model.name}' did not produce the requested output '{wanted.name}'"
            )
        if wanted.classification:
            tensor = classify(
                tensor,
                wanted.classification,
                model.labels.get(wanted.name),
                model.max_batch_size > 0,
            )
        if wanted.shared_memory is not None:
            # Region names are unique across system and CUDA shared memory (see administration.py).
            if cuda_shared_memory is not None and wanted.shared_memory.region in cuda_shared_memory:
                cuda_shared_memory.write_output(tensor, wanted.shared_memory)
            else:
                shared_memory.write_output(tensor, wanted.shared_memory)
        selected.append(tensor)
    response.outputs = selected


def classify(tensor: Tensor, top_k: int, labels: list[str] | None, batched: bool) -> Tensor:
    """The classification extension: the top `top_k` entries of each batch item as
    "value:index[:label]" strings, largest first, each value printed as Triton prints its type
    (C++ `std::to_string`: integers as integers, floating point with "%f")."""
    kind = _CLASSIFIABLE.get(tensor.datatype)
    if tensor.data is None or kind is None:
        raise InvalidArgumentError(
            "class result not available for output due to unsupported type "
            f"'{tensor.datatype}' (output '{tensor.name}')"
        )
    data = tensor.data
    if tensor.datatype == "BF16":  # raw bfloat16 words: the top half of a float32
        data = (data.astype(np.uint32) << 16).view(np.float32)
    rows = data.reshape(data.shape[0], -1) if batched and data.ndim > 0 else data.reshape(1, -1)
    width = rows.shape[1]
    k = min(top_k, width)
    results = np.empty((rows.shape[0], k), dtype=np.object_)
    for row_index, row in enumerate(rows):
        # Largest first, ties in index order: a stable ascending sort of the reversed row,
        # read backwards (negating would wrap unsigned values and round large int64 ones).
        order = width - 1 - np.argsort(row[::-1], kind="stable")[::-1][:k]
        values = row[order].tolist()  # Python ints for integer types, floats otherwise
        for column, index in enumerate(order.tolist()):
            value = values[column]
            text = f"{value:f}:{index}" if kind is float else f"{value}:{index}"
            if labels is not None and index < len(labels):
                text += f":{labels[index]}"
            results[row_index, column] = text.encode()
    shape = results.shape if batched else (k,)
    return Tensor(tensor.name, "BYTES", tuple(shape), results.reshape(shape))


#: The datatypes Triton classifies, and how it prints their values. Triton refuses FP16 and
#: BF16; Trident prints them as floats (docs/protocol.md, deliberate differences).
_CLASSIFIABLE: dict[str, type] = {
    **dict.fromkeys(
        ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"), int
    ),
    **dict.fromkeys(("FP16", "BF16", "FP32", "FP64"), float),
}
