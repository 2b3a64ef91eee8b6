"""The core's plain answers as GRPCInferenceService messages (everything but inference, which
codec.py and wire.py frame).

Every field Triton's messages carry is set the way Triton sets it: each StatisticDuration is
present even when zero, batch statistics come by increasing batch size, and Trident's own
additions (the batch close reasons) stay out of Triton's messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from trident.runtime.core.cuda_shared_memory import CudaShmRegionStatus
from trident.runtime.core.model_manager import RepositoryIndexEntry
from trident.runtime.core.model_queries import ModelMetadata, ServerMetadata, TensorMetadata
from trident.runtime.core.shared_memory import SystemShmRegionStatus
from trident.runtime.core.stats import DurationTotal, ModelStatistics
from trident.runtime.protocol import grpc_service_pb2 as gs


def server_metadata(metadata: ServerMetadata) -> gs.ServerMetadataResponse:
    return gs.ServerMetadataResponse(
        name=metadata.name, version=metadata.version, extensions=metadata.extensions
    )


def model_metadata(metadata: ModelMetadata) -> gs.ModelMetadataResponse:
    return gs.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[_tensor(tensor) for tensor in metadata.inputs],
        outputs=[_tensor(tensor) for tensor in metadata.outputs],
    )


def _tensor(tensor: TensorMetadata) -> gs.ModelMetadataResponse.TensorMetadata:
    return gs.ModelMetadataResponse.TensorMetadata(
        name=tensor.name, datatype=tensor.datatype, shape=tensor.shape
    )


def model_statistics(statistics: Iterable[ModelStatistics]) -> gs.ModelStatisticsResponse:
    response = gs.ModelStatisticsResponse()
    for stats in statistics:
        _model(stats, response.model_stats.add())
    return response


def _model(stats: ModelStatistics, message: gs.ModelStatistics) -> None:
    message.name = stats.name
    message.version = str(stats.version)
    message.last_inference = stats.last_inference_ms
    message.inference_count = stats.inference_count
    message.execution_count = stats.execution_count
    # Filled in place (no sub-message built and copied): setting a field marks each
    # StatisticDuration present even when both are 0, as Triton sends them.
    inference, target = stats.inference, message.inference_stats
    _fill(target.success, inference.success)
    _fill(target.fail, inference.fail)
    _fill(target.queue, inference.queue)
    _fill(target.compute_input, inference.compute_input)
    _fill(target.compute_infer, inference.compute_infer)
    _fill(target.compute_output, inference.compute_output)
    _fill(target.cache_hit, inference.cache_hit)
    _fill(target.cache_miss, inference.cache_miss)
    for batch in stats.batches:
        entry = message.batch_stats.add(batch_size=batch.batch_size)
        _fill(entry.compute_input, batch.compute_input)
        _fill(entry.compute_infer, batch.compute_infer)
        _fill(entry.compute_output, batch.compute_output)


def _fill(target: gs.StatisticDuration, total: DurationTotal) -> None:
    target.count = total.count
    target.ns = total.ns


def repository_index(entries: Iterable[RepositoryIndexEntry]) -> gs.RepositoryIndexResponse:
    return gs.RepositoryIndexResponse(
        models=[
            gs.RepositoryIndexResponse.ModelIndex(
                name=entry.name, version=entry.version, state=entry.state, reason=entry.reason
            )
            for entry in entries
        ]
    )


def system_shm_status(
    regions: Iterable[SystemShmRegionStatus],
) -> gs.SystemSharedMemoryStatusResponse:
    response = gs.SystemSharedMemoryStatusResponse()
    for region in regions:
        status = response.regions[region.name]
        status.name = region.name
        status.key = region.key
        status.offset = region.offset
        status.byte_size = region.byte_size
    return response


def cuda_shm_status(regions: Iterable[CudaShmRegionStatus]) -> gs.CudaSharedMemoryStatusResponse:
    response = gs.CudaSharedMemoryStatusResponse()
    for region in regions:
        status = response.regions[region.name]
        status.name = region.name
        status.device_id = region.device_id
        status.byte_size = region.byte_size
    return response


def trace_settings(settings: Mapping[str, list[str]]) -> gs.TraceSettingResponse:
    response = gs.TraceSettingResponse()
    for key, values in settings.items():
        response.settings[key].value.extend(values)
    return response


def log_settings(settings: Mapping[str, bool | int | str]) -> gs.LogSettingsResponse:
    response = gs.LogSettingsResponse()
    for key, value in settings.items():
        target = response.settings[key]
        if isinstance(value, bool):
            target.bool_param = value
        elif isinstance(value, int):
            target.uint32_param = value
        else:
            target.string_param = str(value)
    return response
