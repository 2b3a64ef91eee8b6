"""Loads, reloads and unloads model versions; tracks their states; answers "which loaded model
serves this request".

A model that fails to load is UNAVAILABLE with the real reason (in the repository index and in
the load call's error), and never stops the server from serving the others.

Building one version (instances, warmup, scheduler) is version_loader.py's job; the states and
control modes are named in model_states.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from trident.backends.base import InferCallable, StreamInferCallable
from trident.backends.registry import BackendRegistry
from trident.runtime.errors import (
    InvalidArgumentError,
    ModelLoadError,
    NotFoundError,
    TridentError,
    UnavailableError,
)
from trident.runtime.protocol import model_config_pb2 as mc

from . import model_config
from .instance_resize import model_files
from .json_depth import check_json_depth
from .loaded_model import LoadedModel
from .model_names import check_model_name
from .model_overrides import (
    FILE_PREFIX,
    LoadRequestLimits,
    OverrideFolder,
    write_override_files,
)
from .model_preparation import ModelPreparer, PreparedModel
from .model_states import UNLOADED_REASON, ControlMode, ModelState, RepositoryIndexEntry
from .repository import ModelRepository, fingerprint, version_folders
from .response_cache import ResponseCache
from .unload_plan import LoadedNode, unload_plan
from .version_loader import VersionLoader

logger = logging.getLogger("trident.models")

__all__ = ["ModelManager", "RepositoryIndexEntry"]


@dataclass
class _VersionState:
    state: ModelState
    reason: str = ""
    model: LoadedModel | None = None


@dataclass
class _ModelRecord:
    name: str
    versions: dict[int, _VersionState] = field(default_factory=dict)
    #: A failure that concerns the whole model (unreadable config, unknown backend...).
    reason: str = ""
    fingerprint: tuple[tuple[str, int, int], ...] = ()
    #: The temporary folder holding files sent with a load request (removed with the model).
    override: OverrideFolder | None = None
    #: Loaded because someone asked for it (load API, --load-model, the repository at start),
    #: not only because an ensemble needs it: `unload_dependents` leaves such a model loaded.
    explicit: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelManager:
    """All models of the server's repositories, by name."""

    def __init__(
        self,
        repository: ModelRepository,
        backends: BackendRegistry,
        control_mode: ControlMode | str = ControlMode.NONE,
        strict_model_config: bool = False,
        response_cache: ResponseCache | None = None,
        load_limits: LoadRequestLimits | None = None,
    ) -> None:
        if control_mode not in set(ControlMode):
            modes = ", ".join(ControlMode)
            raise ValueError(f"model control mode must be one of {modes}, got '{control_mode}'")
        self.repository = repository
        self.backends = backends
        self.control_mode = ControlMode(control_mode)
        self.strict_model_config = strict_model_config
        self._preparer = ModelPreparer(repository, backends, strict_model_config)
        #: The server-wide response cache (`--cache-config`); None when not configured.
        self.response_cache = response_cache
        #: Bounds on what a load request may send.
        self.load_limits = load_limits or LoadRequestLimits()
        self._records: dict[str, _ModelRecord] = {}
        #: name -> {version: model} for READY versions; name -> highest READY version.
        self._ready: dict[str, dict[int, LoadedModel]] = {}
        self._latest: dict[str, LoadedModel] = {}
        self._loader = VersionLoader(backends, response_cache)
        self._poll_task: asyncio.Task[None] | None = None

    def bind(
        self,
        loop: asyncio.AbstractEventLoop,
        infer: InferCallable,
        stream_infer: StreamInferCallable,
        model_control: object | None = None,
    ) -> None:
        """The event loop, and how models call other models (BLS, ensembles)."""
        extras: dict[str, object] = {"model_control": model_control} if model_control else {}
        self._loader.bind(loop, infer, stream_infer, extras)

    # ------------------------------------------------------------------ lookups (hot path)

    def get(self, name: str, version: int = 0) -> LoadedModel:
        """The READY model serving `name` (at `version`, or the highest ready one)."""
        if not version:
            model = self._latest.get(name)
            if model is not None:
                return model
        else:
            versions = self._ready.get(name)
            if versions is not None:
                model = versions.get(version)
                if model is not None:
                    return model
        raise self._not_found(name, version)

    def _not_found(self, name: str, version: int) -> NotFoundError:
        record = self._records.get(name)
        if record is None:
            return NotFoundError(f"Request for unknown model: '{name}' is not found")
        if version:
            state = record.versions.get(version)
            if state is None:
                return NotFoundError(
                    f"Request for unknown model: '{name}' version {version} is not found"
                )
            detail = f": {state.reason}" if state.reason else ""
            return NotFoundError(
                f"Request for unknown model: '{name}' version {version} is not at ready state "
                f"({state.state}{detail})"
            )
        reason = record.reason or next((s.reason for s in record.versions.values() if s.reason), "")
        detail = f" ({reason})" if reason else ""
        return NotFoundError(
            f"Request for unknown model: '{name}' has no available versions{detail}"
        )

    def get_any(self, name: str) -> None:
        """Raise NotFoundError unless `name` is a model this server knows."""
        if name not in self._records and name not in self.repository.scan():
            raise NotFoundError(f"Request for unknown model: '{name}' is not found")

    def is_ready(self, name: str, version: int = 0) -> bool:
        versions = self._ready.get(name)
        if not versions:
            return False
        return True if not version else version in versions

    def ready_versions(self, name: str) -> list[int]:
        return sorted(self._ready.get(name, {}))

    def loaded_versions(self) -> Iterable[LoadedModel]:
        for name in sorted(self._ready):
            for version in sorted(self._ready[name]):
                yield self._ready[name][version]

    def loaded_versions_of(self, name: str, version: int = 0) -> list[LoadedModel]:
        """The ready versions of `name` (all, or `version`), for statistics: Triton's errors
        (INVALID_ARGUMENT for an unknown model and for a version that is not ready)."""
        versions = self._ready.get(name)
        if not versions:
            raise InvalidArgumentError(f"requested model '{name}' is not available")
        if version:
            if version not in versions:
                raise InvalidArgumentError(
                    f"requested model version is not available for model '{name}'"
                )
            return [versions[version]]
        return [versions[v] for v in sorted(versions)]

    def all_ready(self) -> bool:
        """Every model this server tried to load is ready (Triton's strict readiness)."""
        for record in self._records.values():
            if record.reason:
                return False
            for state in record.versions.values():
                if state.state == ModelState.LOADING:
                    return False
                if state.state == ModelState.UNAVAILABLE and state.reason != UNLOADED_REASON:
                    return False
        return True

    def index(self, repository: str = "", ready_only: bool = False) -> list[RepositoryIndexEntry]:
        names = set(self._records)
        if repository:
            root = self.repository.repository_named(repository)
            if root is None:
                raise NotFoundError(f"unknown model repository '{repository}'")
            names = {n for n, loc in self.repository.scan().items() if loc.repository == root}
        else:
            names |= set(self.repository.scan())
        # Folders whose name is no model name are reported (not attributed to one repository).
        rejected = {} if repository else self.repository.rejected_folders()
        entries = [
            RepositoryIndexEntry(name, "", ModelState.UNAVAILABLE, f"not served: {problem}")
            for name, problem in rejected.items()
            if not ready_only
        ]
        for name in sorted(names):
            record = self._records.get(name)
            if record is None or (not record.versions and not record.reason):
                if not ready_only:
                    entries.append(RepositoryIndexEntry(name))
                continue
            if not record.versions:
                if not ready_only:
                    entries.append(
                        RepositoryIndexEntry(name, "", ModelState.UNAVAILABLE, record.reason)
                    )
                continue
            for version in sorted(record.versions):
                state = record.versions[version]
                if ready_only and state.state != ModelState.READY:
                    continue
                reason = state.reason or (state.model.health_reason() if state.model else "")
                entries.append(RepositoryIndexEntry(name, str(version), state.state, reason))
        entries.sort(key=lambda entry: entry.name)  # stable: versions stay in order
        return entries

    # ------------------------------------------------------------------ start / stop / poll

    async def start(self, startup_models: list[str], poll_secs: float = 15.0) -> dict[str, str]:
        """Load what the control mode says to load at start. Returns {model: error} for the
        models that failed (they stay UNAVAILABLE with that reason)."""
        self.repository.check_roots()
        if self.control_mode == ControlMode.EXPLICIT:
            names = (
                list(self.repository.scan())
                if "*" in startup_models
                else list(dict.fromkeys(startup_models))
            )
        else:
            names = list(self.repository.scan())
        results = await asyncio.gather(*(self._load_reporting(n) for n in names))
        failures = {name: error for name, error in zip(names, results) if error}
        if self.control_mode == ControlMode.POLL:
            self._poll_task = asyncio.get_running_loop().create_task(self._poll_forever(poll_secs))
        return failures

    async def _load_reporting(self, name: str) -> str:
        try:
            await self.load(name)
        except TridentError as exc:
            logger.error("failed to load model '%s': %s", name, exc)
            return str(exc)
        return ""

    async def stop(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            try:
                await self._poll_task
            except asyncio.CancelledError:
                pass
        await asyncio.gather(*(self.unload(name) for name in list(self._records)))

    def unloading_models(self) -> list[str]:
        return [
            name
            for name, record in self._records.items()
            if any(state.state == ModelState.UNLOADING for state in record.versions.values())
        ]

    async def _poll_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.poll_once()
            except Exception:
                logger.exception("polling the model repository failed")

    async def poll_once(self) -> None:
        """Load new models, reload changed ones, unload removed ones."""
        found = self.repository.scan()
        for name, location in found.items():
            record = self._records.get(name)
            if record is None or record.fingerprint != fingerprint(location.path):
                await self._load_reporting(name)
        for name, record in list(self._records.items()):
            if name not in found and record.override is None:
                await self.unload(name)

    # ------------------------------------------------------------------ repository API

    def _check_explicit(self) -> None:
        if self.control_mode != ControlMode.EXPLICIT:
            raise UnavailableError(
                "explicit model load / unload is not allowed in model control mode "
                f"'{self.control_mode}': start the server with --model-control-mode=explicit"
            )

    async def load_via_api(self, name: str, config_json: str, files: dict[str, bytes]) -> None:
        """The repository API's load. `files` maps the paths of `file:` parameters (with or
        without that prefix: the HTTP codec drops it, a Python model's load_model keeps it) to
        their contents."""
        check_model_name(name)
        files = {path.removeprefix(FILE_PREFIX): content for path, content in files.items()}
        self._check_explicit()
        override = None
        if config_json:
            check_json_depth(
                config_json.encode("utf-8", "surrogatepass"),
                self.load_limits.max_json_depth,
                "config",
            )
            override = model_config.parse_config_json(config_json)
        folder = None
        if files:
            if override is None:
                raise InvalidArgumentError(
                    f"failed to load '{name}': model files sent with a load request need a "
                    "'config' parameter too"
                )
            folder = write_override_files(name, files, self.load_limits)
        elif not self._records.get(name) and name not in self.repository.scan():
            raise NotFoundError(
                f"failed to load '{name}': no model folder named '{name}' in "
                + ", ".join(str(r) for r in self.repository.roots)
            )
        await self.load(name, override, folder)

    async def unload_via_api(self, name: str, unload_dependents: bool = False) -> None:
        """The repository API's unload. Unloading a model that is unknown or not loaded
        succeeds and does nothing, as in Triton."""
        check_model_name(name)
        self._check_explicit()
        if name not in self._records:
            return
        loaded = {
            model: LoadedNode(frozenset(self._composing_models_of(model)), record.explicit)
            for model, record in self._records.items()
            if model in self._ready
        }
        for target in unload_plan(loaded, name, unload_dependents):
            await self.unload(target)

    def _composing_models_of(self, name: str) -> list[str]:
        """The models the loaded versions of ensemble `name` call (none for other models)."""
        composing: dict[str, None] = {}
        for model in self._ready.get(name, {}).values():
            if model.ensemble is not None:
                composing.update(dict.fromkeys(model.ensemble.graph.composing_models()))
        return list(composing)

    # ------------------------------------------------------------------ load / unload

    async def load(
        self,
        name: str,
        override: mc.ModelConfig | None = None,
        override_files: OverrideFolder | None = None,
        explicit: bool = True,
    ) -> None:
        """Load (or reload) every version the version policy selects. A version that fails
        keeps its previous incarnation serving, if it had one. Raises ModelLoadError.

        `explicit` is False when only an ensemble asks for the model (see `unload_dependents`).
        """
        check_model_name(name)
        override_dir = override_files.model_dir if override_files is not None else None
        record = self._records.setdefault(name, _ModelRecord(name))
        record.explicit |= explicit
        async with record.lock:
            try:
                prepared = await asyncio.to_thread(
                    self._preparer.prepare, name, override, override_dir
                )
            except TridentError as exc:
                self._record_model_failure(record, str(exc), override_files)
                raise ModelLoadError(f"failed to load '{name}': {exc}") from None
            except Exception as exc:  # a bug in a backend's auto-complete: report, keep serving
                self._record_model_failure(record, f"{type(exc).__name__}: {exc}", override_files)
                raise ModelLoadError(
                    f"failed to load '{name}': {type(exc).__name__}: {exc}"
                ) from None
            record.reason = ""
            if record.override is not None and record.override != override_files:
                record.override.remove()
            record.override = override_files
            previous_fingerprint = record.fingerprint
            record.fingerprint = fingerprint(prepared.model_dir)
            # Only config.pbtxt changed (or a config override came): a change of instance counts
            # alone is then applied to the live model instead of reloading it (Triton does too).
            files_unchanged = model_files(previous_fingerprint, prepared.model_dir) == (
                model_files(record.fingerprint, prepared.model_dir)
            )
            failures: dict[int, str] = {}
            for version in prepared.versions:
                previous = record.versions.get(version)
                if previous is None or previous.model is None:
                    record.versions[version] = _VersionState(ModelState.LOADING)
                try:
                    if (
                        files_unchanged
                        and previous is not None
                        and previous.model is not None
                        and await self._loader.resize_in_place(previous.model, prepared)
                    ):
                        continue
                    model = await self._load_version(prepared, version)
                except TridentError as exc:
                    failures[version] = str(exc)
                    if previous is None or previous.model is None:
                        record.versions[version] = _VersionState(ModelState.UNAVAILABLE, str(exc))
                    else:
                        logger.error(
                            "reloading '%s' version %d failed, the previous one keeps serving: %s",
                            name,
                            version,
                            exc,
                        )
                    continue
                record.versions[version] = _VersionState(ModelState.READY, "", model)
                self._publish(name, record)
                if previous is not None and previous.model is not None:
                    await previous.model.stop()
            for version, state in list(record.versions.items()):
                if version not in prepared.versions and state.model is not None:
                    record.versions[version] = _VersionState(ModelState.UNLOADING)
                    self._publish(name, record)
                    await state.model.stop()
                    record.versions[version] = _VersionState(
                        ModelState.UNAVAILABLE, UNLOADED_REASON
                    )
            self._publish(name, record)
            if failures:
                detail = "; ".join(f"version {v}: {reason}" for v, reason in failures.items())
                raise ModelLoadError(f"failed to load '{name}': {detail}")

    def _record_model_failure(
        self, record: _ModelRecord, reason: str, override_files: OverrideFolder | None
    ) -> None:
        if override_files is not None:
            # Only the folder this load request made: the one the model uses, if any, stays.
            override_files.remove()
        override_dir = override_files.model_dir if override_files is not None else None
        if any(state.model is not None for state in record.versions.values()):
            logger.error(
                "reloading '%s' failed, the loaded versions keep serving: %s", record.name, reason
            )
            return
        record.reason = reason
        for state in record.versions.values():
            state.state, state.reason = ModelState.UNAVAILABLE, reason
        location_dir = override_dir
        if location_dir is None:
            try:
                location_dir = self.repository.find(record.name).path
            except TridentError:
                return
        if not record.versions:
            for version in version_folders(location_dir):
                record.versions[version] = _VersionState(ModelState.UNAVAILABLE, reason)
        if record.versions:
            record.reason = ""  # the versions carry it now
        record.fingerprint = fingerprint(location_dir)

    async def _load_version(self, prepared: PreparedModel, version: int) -> LoadedModel:
        if prepared.ensemble is None:
            return await self._loader.load(prepared, version)
        # An ensemble first needs its composing models (loaded now unless they are).
        for dependency in prepared.ensemble.composing_models():
            await self._ensure_loaded(dependency, prepared.name)
        return self._loader.load_ensemble(prepared, version, self.get)

    async def _ensure_loaded(self, name: str, ensemble: str) -> None:
        """Make a composing model ready: wait for a load already under way (every model loads
        at once at start), else load it now (explicit mode loads what an ensemble needs)."""
        if self.is_ready(name):
            return
        check_model_name(name)
        record = self._records.get(name)
        if record is not None and record.lock.locked():
            async with record.lock:
                pass
        elif record is not None or name in self.repository.scan():
            try:
                await self.load(name, explicit=False)
            except ModelLoadError as exc:
                raise ModelLoadError(
                    f"ensemble '{ensemble}' needs model '{name}', which failed to load: {exc}"
                ) from None
        if not self.is_ready(name):
            raise ModelLoadError(
                f"ensemble '{ensemble}' needs model '{name}', which is not available: "
                + str(self._not_found(name, 0))
            )

    def _publish(self, name: str, record: _ModelRecord) -> None:
        """Rebuild the hot-path lookup tables for one model."""
        ready = {
            v: s.model
            for v, s in record.versions.items()
            if s.state == ModelState.READY and s.model
        }
        if ready:
            self._ready[name] = ready  # type: ignore[assignment]
            self._latest[name] = ready[max(ready)]  # type: ignore[assignment]
        else:
            self._ready.pop(name, None)
            self._latest.pop(name, None)

    async def unload(self, name: str) -> None:
        record = self._records.get(name)
        if record is None:
            return
        async with record.lock:
            loaded = [(v, s.model) for v, s in record.versions.items() if s.model is not None]
            for version, _ in loaded:
                record.versions[version] = _VersionState(ModelState.UNLOADING)
            self._publish(name, record)
            for version, model in loaded:
                assert model is not None
                await model.stop()
                record.versions[version] = _VersionState(ModelState.UNAVAILABLE, UNLOADED_REASON)
            for state in record.versions.values():
                if state.state != ModelState.READY:
                    state.state, state.reason = ModelState.UNAVAILABLE, UNLOADED_REASON
            record.reason = ""
            record.explicit = False
            if record.override is not None:
                record.override.remove()
                record.override = None
