"""The core's plain answers as the JSON documents of Triton's HTTP endpoints (everything but
inference, which codec.py encodes).

Metadata and statistics keep the exact bytes Trident has always sent: the keys in the order
protobuf's JSON printer gave them (`_printer_order`), 64-bit integers as JSON numbers (as Triton
sends them), and Trident's `batch_close_reasons` after Triton's statistics fields (tritonclient
ignores keys it does not know).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trident.runtime.core.cuda_shared_memory import CudaShmRegionStatus
from trident.runtime.core.model_manager import RepositoryIndexEntry
from trident.runtime.core.model_queries import ModelMetadata, ServerMetadata, TensorMetadata
from trident.runtime.core.shared_memory import SystemShmRegionStatus
from trident.runtime.core.stats import DurationTotal, ModelStatistics

Document = dict[str, Any]


def _printer_order(*fields: tuple[str, Any]) -> Document:
    """The fields (given in the message's field-number order) as protobuf's JSON printer orders
    them: those holding a value first, then those at their default (0, "", empty), each group
    in field-number order. Sub-messages are always present, so always first."""
    document = {key: value for key, value in fields if value}
    document.update((key, value) for key, value in fields if not value)
    return document


def server_metadata(metadata: ServerMetadata) -> Document:
    return {
        "name": metadata.name,
        "version": metadata.version,
        "extensions": list(metadata.extensions),
    }


def model_metadata(metadata: ModelMetadata) -> Document:
    return _printer_order(
        ("name", metadata.name),
        ("versions", list(metadata.versions)),
        ("platform", metadata.platform),
        ("inputs", [_tensor(tensor) for tensor in metadata.inputs]),
        ("outputs", [_tensor(tensor) for tensor in metadata.outputs]),
    )


def _tensor(tensor: TensorMetadata) -> Document:
    return _printer_order(
        ("name", tensor.name), ("datatype", tensor.datatype), ("shape", list(tensor.shape))
    )


def model_statistics(statistics: Iterable[ModelStatistics]) -> Document:
    """Triton's statistics document, each model's entry extended with `batch_close_reasons`
    (why each dynamic batch closed, docs/batching.md)."""
    return {"model_stats": [_model(stats) for stats in statistics]}


def _model(stats: ModelStatistics) -> Document:
    inference = stats.inference
    document = _printer_order(
        ("name", stats.name),
        ("version", str(stats.version)),
        ("last_inference", stats.last_inference_ms),
        ("inference_count", stats.inference_count),
        ("execution_count", stats.execution_count),
        (
            "inference_stats",
            {
                "success": _duration(inference.success),
                "fail": _duration(inference.fail),
                "queue": _duration(inference.queue),
                "compute_input": _duration(inference.compute_input),
                "compute_infer": _duration(inference.compute_infer),
                "compute_output": _duration(inference.compute_output),
                "cache_hit": _duration(inference.cache_hit),
                "cache_miss": _duration(inference.cache_miss),
            },
        ),
        (
            "batch_stats",
            [
                _printer_order(
                    ("batch_size", batch.batch_size),
                    ("compute_input", _duration(batch.compute_input)),
                    ("compute_infer", _duration(batch.compute_infer)),
                    ("compute_output", _duration(batch.compute_output)),
                )
                for batch in stats.batches
            ],
        ),
        ("memory_usage", []),
        ("response_stats", {}),
    )
    document["batch_close_reasons"] = dict(stats.batch_close_reasons)
    return document


def _duration(total: DurationTotal) -> Document:
    return _printer_order(("count", total.count), ("ns", total.ns))


def repository_index(entries: Iterable[RepositoryIndexEntry]) -> list[Document]:
    """Triton leaves out the empty fields of each entry (a model never loaded has no version,
    state or reason)."""
    documents = []
    for entry in entries:
        document: Document = {"name": entry.name}
        for key, value in (
            ("version", entry.version),
            ("state", entry.state),
            ("reason", entry.reason),
        ):
            if value:
                document[key] = str(value)
        documents.append(document)
    return documents


def system_shm_status(regions: Iterable[SystemShmRegionStatus]) -> list[Document]:
    return [
        {
            "name": region.name,
            "key": region.key,
            "offset": region.offset,
            "byte_size": region.byte_size,
        }
        for region in regions
    ]


def cuda_shm_status(regions: Iterable[CudaShmRegionStatus]) -> list[Document]:
    return [
        {"name": region.name, "device_id": region.device_id, "byte_size": region.byte_size}
        for region in regions
    ]


def trace_settings(settings: dict[str, list[str]]) -> Document:
    """trace_level is a list; every other setting a single string ("" when unset)."""
    return {
        key: values if key == "trace_level" else (values[0] if values else "")
        for key, values in settings.items()
    }
