"""From a model folder to a checked, completed config and the versions to load.

Reads config.pbtxt (or a load request's override), picks the backend, normalizes and auto-completes
the config, and checks everything that can be checked before any instance is created, so a bad
config fails fast with a message that says what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trident.backends.registry import BackendRegistry
from trident.runtime.errors import ModelLoadError, TridentError
from trident.runtime.protocol import model_config_pb2 as mc

from . import model_config
from .repository import ModelRepository, version_folders, versions_to_serve
from .scheduling.dynamic_batcher import BatcherSettings
from .scheduling.ensemble import ENSEMBLE_PLATFORM, EnsembleGraph
from .scheduling.sequence_config import SequenceSettings
from .warmup import build_samples


@dataclass
class PreparedModel:
    """A model whose config is read, completed and checked, with the versions to load."""

    name: str
    model_dir: Path
    config: mc.ModelConfig
    backend_name: str
    versions: list[int]
    #: The checked step graph of an ensemble; None for other models.
    ensemble: EnsembleGraph | None = None


class ModelPreparer:
    """Prepares models of the server's repositories with its backends."""

    def __init__(
        self, repository: ModelRepository, backends: BackendRegistry, strict_model_config: bool
    ) -> None:
        self.repository = repository
        self.backends = backends
        self.strict_model_config = strict_model_config

    def prepare(
        self, name: str, override: mc.ModelConfig | None, override_dir: Path | None
    ) -> PreparedModel:
        """Read, complete and check the config; pick the versions. Runs off the event loop."""
        model_dir = override_dir if override_dir is not None else self.repository.find(name).path
        if override is not None:
            config = mc.ModelConfig()
            config.CopyFrom(override)
        else:
            config = model_config.read_config(model_dir)
        available = version_folders(model_dir)
        if not available:
            if config.platform == ENSEMBLE_PLATFORM:
                example = f"{model_dir}/1 (an ensemble's version folder holds no files)"
            else:
                example = f"{model_dir}/1/{config.default_model_filename or 'model.onnx'}"
            raise ModelLoadError(
                f"no version folder found in {model_dir}: put the model files in a numbered "
                f"folder, e.g. {example}"
            )
        backend_name = self.backends.resolve_name(config.backend, config.platform, model_dir)
        if backend_name == ENSEMBLE_PLATFORM:
            return self._prepare_ensemble(name, model_dir, config, available)
        if config.HasField("ensemble_scheduling"):
            raise ModelLoadError(
                f"ensemble scheduling cannot be set for model '{name}' whose platform is not "
                'ensemble: set platform: "ensemble" or remove ensemble_scheduling'
            )
        backend = self.backends.get(backend_name)
        model_config.normalize(config, name, backend_name)
        backend.auto_complete_config(config, model_dir, self.strict_model_config)
        model_config.validate(config)
        _check_response_cache(config)
        if config.HasField("sequence_batching"):
            _complete_sequence_batching(config)
            # A bad sequence_batching fails here, before any instance is created.
            SequenceSettings.from_model_config(config, model_dir)
        elif config.HasField("dynamic_batching") and config.max_batch_size > 0:
            BatcherSettings.from_config(config)  # likewise a bad dynamic_batching
        build_samples(config, model_dir)  # a bad model_warmup fails before instances load
        versions = versions_to_serve(config, available)
        if not versions:
            raise ModelLoadError(
                f"no version folder found in {model_dir}: put the model files in a numbered "
                f"folder, e.g. {model_dir}/1/{config.default_model_filename or 'model'}"
            )
        return PreparedModel(name, model_dir, config, backend_name, versions)

    def _prepare_ensemble(
        self, name: str, model_dir: Path, config: mc.ModelConfig, available: list[int]
    ) -> PreparedModel:
        """An ensemble has no backend and no instances: check its graph and pick versions."""
        model_config.normalize(config, name, ENSEMBLE_PLATFORM)
        model_config.validate(config)
        graph = EnsembleGraph.from_config(config)
        self._check_no_ensemble_cycle(name, graph.composing_models(), [name])
        if config.model_transaction_policy.decoupled:
            raise ModelLoadError(
                f"ensemble '{name}': decoupled ensembles are not supported by Trident yet; "
                "remove model_transaction_policy { decoupled: true }"
            )
        _check_response_cache(config)
        versions = versions_to_serve(config, available)
        return PreparedModel(name, model_dir, config, ENSEMBLE_PLATFORM, versions, graph)

    def _check_no_ensemble_cycle(self, name: str, composing: list[str], path: list[str]) -> None:
        """Ensembles calling ensembles must never come back to one on the path (its load would
        wait on itself). Reads the nested ensembles' configs from the repository."""
        for step_model in composing:
            if step_model in path:
                cycle = " -> ".join([*path, step_model])
                raise ModelLoadError(f"ensemble '{name}' ends up calling itself: {cycle}")
            try:
                nested = model_config.read_config(self.repository.find(step_model).path)
            except TridentError:
                continue  # loading that model reports its own problem
            if nested.platform == ENSEMBLE_PLATFORM:
                steps = list(dict.fromkeys(s.model_name for s in nested.ensemble_scheduling.step))
                self._check_no_ensemble_cycle(name, steps, [*path, step_model])


def _complete_sequence_batching(config: mc.ModelConfig) -> None:
    """Show Triton's sequence-batching defaults in the normalized config."""
    batching = config.sequence_batching
    if not batching.max_sequence_idle_microseconds:
        batching.max_sequence_idle_microseconds = 1_000_000
    if (
        batching.HasField("oldest")
        and not batching.oldest.preferred_batch_size
        and config.max_batch_size > 0
    ):
        batching.oldest.preferred_batch_size.append(config.max_batch_size)


def _check_response_cache(config: mc.ModelConfig) -> None:
    if config.response_cache.enable and config.model_transaction_policy.decoupled:
        raise ModelLoadError(
            f"Response Cache does not currently support model '{config.name}' with 'decoupled' "
            "transaction policy. Please disable the response cache."
        )
