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
    return gs.ModelStatisticsResponse(model_stats=[_model(stats) for stats in statistics])


def _model(stats: ModelStatistics) -> gs.ModelStatistics:
    inference = stats.inference
    return gs.ModelStatistics(
        name=stats.name,
        version=str(stats.version),
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=gs.InferStatistics(
            success=_duration(inference.success),
            fail=_duration(inference.fail),
            queue=_duration(inference.queue),
            compute_input=_duration(inference.compute_input),
            compute_infer=_duration(inference.compute_infer),
            compute_output=_duration(inference.compute_output),
            cache_hit=_duration(inference.cache_hit),
            cache_miss=_duration(inference.cache_miss),
        ),
        batch_stats=[
            gs.InferBatchStatistics(
                batch_size=batch.batch_size,
                compute_input=_duration(batch.compute_input),
                compute_infer=_duration(batch.compute_infer),
                compute_output=_duration(batch.compute_output),
            )
            for batch in stats.batches
        ],
    )


def _duration(total: DurationTotal) -> gs.StatisticDuration:
    # Passed to the parent's constructor, the message is present even when both are 0.
    return gs.StatisticDuration(count=total.count, ns=total.ns)


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
