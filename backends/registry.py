"""Backends by name. Each backend module is imported only when a model needs it, so the server
starts without torch, TensorRT or any other framework installed."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from trident.runtime.errors import ModelLoadError

from .base import Backend


@dataclass(frozen=True, slots=True)
class BackendSpec:
    name: str
    module: str
    platforms: tuple[str, ...]
    #: Model file names that identify the backend when the config names neither backend nor
    #: platform.
    model_files: tuple[str, ...]
    #: `pip install` hint when the framework is missing.
    extra: str = ""


BACKENDS: tuple[BackendSpec, ...] = (
    BackendSpec("python", "trident.backends.python.backend", (), ("model.py",)),
    BackendSpec(
        "onnxruntime",
        "trident.backends.onnxruntime.backend",
        ("onnxruntime_onnx",),
        ("model.onnx",),
        "trident-serve[onnx]",
    ),
    BackendSpec(
        "pytorch",
        "trident.backends.pytorch.backend",
        ("pytorch_libtorch", "torch_export"),
        ("model.pt", "model.pt2"),
        "trident-serve[torch]",
    ),
    BackendSpec(
        "llm",
        "trident.backends.llm.backend",
        (),
        ("model.json",),
        "trident-serve[torch,llm]",
    ),
    BackendSpec(
        "tensorrt",
        "trident.backends.tensorrt.backend",
        ("tensorrt_plan",),
        ("model.plan",),
        "trident-serve[tensorrt]",
    ),
)


class BackendRegistry:
    """Resolves a model's backend and imports it on first use."""

    def __init__(self, specs: tuple[BackendSpec, ...] = BACKENDS) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._by_platform = {p: spec for spec in specs for p in spec.platforms}
        self._loaded: dict[str, Backend] = {}

    def resolve_name(self, backend: str, platform: str, model_dir: Path) -> str:
        """The backend name for a config's `backend`/`platform`, or guessed from model files."""
        if backend:
            if backend not in self._specs:
                known = ", ".join(sorted(self._specs))
                raise ModelLoadError(f"unknown backend '{backend}' (known backends: {known})")
            return backend
        if platform:
            if platform == "ensemble":
                return "ensemble"
            spec = self._by_platform.get(platform)
            if spec is None:
                known = ", ".join(sorted(self._by_platform))
                raise ModelLoadError(f"unknown platform '{platform}' (known platforms: {known})")
            return spec.name
        for spec in self._specs.values():
            for filename in spec.model_files:
                if any(model_dir.glob(f"*/{filename}")):
                    return spec.name
        raise ModelLoadError(
            "cannot tell which backend serves this model: set 'backend' in config.pbtxt, or put "
            "one of "
            + ", ".join(f for s in self._specs.values() for f in s.model_files)
            + " in a version folder"
        )

    def loaded(self) -> list[Backend]:
        """The backends imported so far."""
        return list(self._loaded.values())

    def loaded_backend(self, name: str) -> Backend | None:
        """The backend `name` if it was imported already (never imports it)."""
        return self._loaded.get(name)

    def get(self, name: str) -> Backend:
        backend = self._loaded.get(name)
        if backend is not None:
            return backend
        spec = self._specs.get(name)
        if spec is None:
            raise ModelLoadError(f"unknown backend '{name}'")
        try:
            module = importlib.import_module(spec.module)
        except ImportError as exc:
            hint = f"; install it with: pip install '{spec.extra}'" if spec.extra else ""
            raise ModelLoadError(f"backend '{name}' is not available ({exc}){hint}") from exc
        backend = module.create_backend()
        self._loaded[name] = backend
        return backend
