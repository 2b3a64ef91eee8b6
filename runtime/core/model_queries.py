"""Model queries: what a client may ask about the server and its models without changing
anything (health, server and model metadata, configuration, statistics, metrics).

Every answer is a plain value (the frozen types below, `ModelStatistics` from stats.py, the
repository's `ModelConfig` message); each frontend renders it in its own wire format.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from trident.runtime.observability.metrics import render_metrics
from trident.runtime.protocol import model_config_pb2 as mc
from trident.runtime.types import CONFIG_TYPE_TO_DATATYPE

from .cuda_shared_memory import CudaSharedMemoryRegistry
from .loaded_model import LoadedModel
from .model_manager import ModelManager
from .model_versions import parse_model_version
from .stats import ModelStatistics

SERVER_NAME = "trident"
#: The Triton release whose protocol surface Trident implements (reported as the version).
PROTOCOL_VERSION = "2.51.0"

EXTENSIONS: tuple[str, ...] = (
    "classification",
    "sequence",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "trace",
    "logging",
    "generate",
)
#: Advertised (after system_shared_memory, as Triton lists it) only where a GPU is visible.
CUDA_SHARED_MEMORY_EXTENSION = "cuda_shared_memory"


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    """One input or output as the metadata endpoint shows it."""

    name: str
    #: The v2 datatype ("FP32", "BYTES"...); "" for a config type with no v2 name.
    datatype: str
    #: The config's dims, led by -1 (the batch dimension) when the model batches.
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    #: The version asked for, or every ready version when none was.
    versions: tuple[str, ...]
    #: The config's platform, or its backend where the platform is empty.
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


class ModelQueries:
    """Answers the read-only questions; `begin_shutdown` turns readiness off for good."""

    def __init__(
        self,
        models: ModelManager,
        cuda_shared_memory: CudaSharedMemoryRegistry,
        strict_readiness: bool = True,
    ) -> None:
        self._models = models
        self._cuda_shared_memory = cuda_shared_memory
        #: --strict-readiness: the server is ready only while every model is.
        self._strict_readiness = strict_readiness
        self._stopping = False

    def begin_shutdown(self) -> None:
        self._stopping = True

    # ---------------------------------------------------------------- health

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        if self._stopping:
            return False
        if not self._strict_readiness:
            return True
        return self._models.all_ready()

    def model_ready(self, name: str, version: str = "") -> bool:
        return self._models.is_ready(name, parse_model_version(version))

    # ---------------------------------------------------------------- metadata and config

    def server_metadata(self) -> ServerMetadata:
        extensions = EXTENSIONS
        if self._cuda_shared_memory.available():
            at = EXTENSIONS.index("system_shared_memory") + 1
            extensions = (*EXTENSIONS[:at], CUDA_SHARED_MEMORY_EXTENSION, *EXTENSIONS[at:])
        return ServerMetadata(SERVER_NAME, PROTOCOL_VERSION, extensions)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        model = self._models.get(name, parse_model_version(version))
        config = model.config
        if version:
            versions: tuple[str, ...] = (str(model.version),)
        else:
            versions = tuple(str(v) for v in self._models.ready_versions(name))
        batch_prefix = (-1,) if config.max_batch_size > 0 else ()
        return ModelMetadata(
            name=name,
            versions=versions,
            platform=config.platform or config.backend,
            inputs=_tensors(config.input, batch_prefix),
            outputs=_tensors(config.output, batch_prefix),
        )

    def model_config(self, name: str, version: str = "") -> mc.ModelConfig:
        """The model's completed configuration (the repository's own format, shared by every
        frontend)."""
        return self._models.get(name, parse_model_version(version)).config

    def is_decoupled(self, name: str, version: str = "") -> bool:
        return self._models.get(name, parse_model_version(version)).decoupled

    # ---------------------------------------------------------------- statistics and metrics

    def model_statistics(self, name: str = "", version: str = "") -> tuple[ModelStatistics, ...]:
        """The statistics of every loaded version of `name` (or of every model when no name is
        given; of one version when `version` is given)."""
        models: Iterable[LoadedModel]
        if name:
            models = self._models.loaded_versions_of(name, parse_model_version(version))
        else:
            models = self._models.loaded_versions()
        return tuple(model.stats.snapshot(model.name, model.version) for model in models)

    def metrics_text(self) -> str:
        """Prometheus text exposition of every loaded model version's counters (rendered by
        observability, which owns Triton's metric names)."""
        text = render_metrics(self._models.loaded_versions(), self._models.response_cache)
        return text + "".join(backend.metrics_text() for backend in self._models.backends.loaded())


def _tensors(
    source: Iterable[mc.ModelInput] | Iterable[mc.ModelOutput], batch_prefix: tuple[int, ...]
) -> tuple[TensorMetadata, ...]:
    return tuple(
        TensorMetadata(
            name=tensor.name,
            datatype=CONFIG_TYPE_TO_DATATYPE.get(mc.DataType.Name(tensor.data_type), ""),
            shape=(*batch_prefix, *tensor.dims),
        )
        for tensor in source
    )
