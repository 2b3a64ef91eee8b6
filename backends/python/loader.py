"""Imports a model's model.py as its own uniquely named module.

Triton runs every model instance in a process of its own, so two models may both be called
model.py and both import a `utils.py` that sits next to them. In one process that takes care:

- each import of a model file gets a private package, `trident_python_model_<n>_<name>_v<version>`,
  whose search path is the version folder then the model folder; model.py is `<package>.model`;
- model code runs with its own `__import__` (through the module's `__builtins__`), which resolves
  the names of files next to model.py to the package's private copies. So `import utils` in two
  models gives each its own `utils`, also when imported lazily inside `execute`; relative imports
  (`from .utils import f`) work too;
- lookups that bypass import statements (pickle, importlib.import_module) resolve sibling names
  through a meta-path finder that asks the running model's scope (a ContextVar).

Name resolution follows Triton, which appends the model folders to sys.path: the standard
library and installed modules win over a file of the same name next to model.py.
"""

from __future__ import annotations

import builtins
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import os
import re
import sys
import threading
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trident.runtime.errors import ModelLoadError

from .scope import ModelScope, current_scope, entered

_PACKAGE_PREFIX = "trident_python_model"
_package_numbers = itertools.count(1)
_real_import = builtins.__import__


class _NotASibling(ModuleNotFoundError):
    """No file of that name in the model's folders (the normal import may still find it)."""


class SiblingImporter:
    """The `__import__` of one imported model file and of the sibling modules it loads."""

    def __init__(self, package: str, search_dirs: Sequence[Path]) -> None:
        self.package = package
        self._search_dirs = [str(directory) for directory in search_dirs]
        self._is_sibling: dict[str, bool] = {}
        # Re-entrant: a sibling's own imports run while its import holds the lock.
        self._lock = threading.RLock()
        self.builtins: dict[str, Any] = dict(builtins.__dict__)
        self.builtins["__import__"] = self.import_

    def is_sibling(self, name: str) -> bool:
        """Whether `name` resolves to a .py file or package folder next to model.py (cached).

        As in Triton, which appends the model's folders to sys.path, the standard library and
        installed modules come first: a model's `types.py` does not hide `import types`.
        """
        known = self._is_sibling.get(name)
        if known is None:
            known = any(
                os.path.isfile(os.path.join(directory, name + ".py"))
                or os.path.isfile(os.path.join(directory, name, "__init__.py"))
                for directory in self._search_dirs
            ) and not _importable_elsewhere(name)
            self._is_sibling[name] = known
        return known

    def import_(
        self,
        name: str,
        globals: dict[str, Any] | None = None,
        locals: Any = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> types.ModuleType:
        if level == 0:
            top = name.partition(".")[0]
            if self.is_sibling(top):
                module = self.load(f"{self.package}.{name}")
                if isinstance(fromlist, list) and not fromlist:
                    # Only C's PyImport_Import (pickle's find_class...) passes an empty list,
                    # and it then reads sys.modules[name]: alias the bare name for it.
                    parts = name.split(".")
                    for end in range(1, len(parts) + 1):
                        dotted = ".".join(parts[:end])
                        sys.modules[dotted] = sys.modules[f"{self.package}.{dotted}"]
                if not fromlist:
                    return sys.modules[f"{self.package}.{top}"]
                self._load_fromlist(module, fromlist)
                return module
        elif globals is not None:
            self._preload_relative(name, globals, fromlist, level)
        return _real_import(name, globals, locals, fromlist or (), level)

    def load(self, fullname: str) -> types.ModuleType:
        """Import `<package>.<dotted name>` from the model's folders, running its code with this
        importer, and return it."""
        with self._lock:
            module = sys.modules.get(fullname)
            if module is not None:
                return module
            parent_name, _, child = fullname.rpartition(".")
            if not parent_name:
                raise _NotASibling(f"the model's package '{fullname}' is unloaded")
            parent = sys.modules.get(parent_name) or self.load(parent_name)
            search = getattr(parent, "__path__", None)
            spec = (
                importlib.machinery.PathFinder.find_spec(fullname, search)
                if search is not None
                else None
            )
            if spec is None or spec.loader is None:
                shown = self.shown_name(fullname)
                raise _NotASibling(f"No module named '{shown}'", name=shown)
            module = importlib.util.module_from_spec(spec)
            module.__builtins__ = self.builtins  # type: ignore[attr-defined]
            sys.modules[fullname] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(fullname, None)
                raise
            setattr(parent, child, module)
            return sys.modules[fullname]

    def shown_name(self, fullname: str) -> str:
        """The name the model's author wrote (without the private package prefix)."""
        return fullname.removeprefix(self.package + ".")

    def _load_fromlist(self, module: types.ModuleType, fromlist: Sequence[str]) -> None:
        if not hasattr(module, "__path__"):
            return
        for item in fromlist:
            if item != "*" and not hasattr(module, item):
                try:
                    self.load(f"{module.__name__}.{item}")
                except _NotASibling:
                    pass  # not a submodule: the import statement reports the missing name

    def _preload_relative(
        self, name: str, globals: dict[str, Any], fromlist: Sequence[str] | None, level: int
    ) -> None:
        """Load the target of a relative import inside the package with this importer, so the
        normal import machinery then finds it already in sys.modules."""
        package = globals.get("__package__") or ""
        if package != self.package and not package.startswith(self.package + "."):
            return
        try:
            target = importlib.util.resolve_name("." * level + name, package)
        except ImportError:
            return  # beyond the top-level package: the normal import raises the error
        if target != self.package and not target.startswith(self.package + "."):
            return
        try:
            module = self.load(target)
        except _NotASibling:
            return
        if fromlist:
            self._load_fromlist(module, fromlist)


def _importable_elsewhere(name: str) -> bool:
    """Whether the normal import system finds top-level `name` (stdlib, installed, sys.path)."""
    if name in sys.builtin_module_names or name in sys.stdlib_module_names:
        return True
    loaded = sys.modules.get(name)
    if loaded is not None:
        # A bare-name alias of another model's sibling (pickle lookups) does not count.
        return not (getattr(loaded, "__name__", "") or "").startswith(_PACKAGE_PREFIX)
    try:
        return importlib.machinery.PathFinder.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class ImportedModel:
    """One import of a model file, with the private package that holds it and its siblings."""

    def __init__(self, module: types.ModuleType, importer: SiblingImporter) -> None:
        self.module = module
        self.importer = importer

    def unload(self) -> None:
        """Forget the modules of this import, so an unloaded model's code can be collected."""
        package = self.importer.package
        prefix = package + "."
        # dict.copy() is one C call; iterating sys.modules itself (list(...items()) too) can be
        # interrupted by a garbage collection, whose callbacks let another thread import.
        for name, module in sys.modules.copy().items():
            # Also the bare-name aliases that pickle-style lookups made (import_, the finder).
            owner = getattr(module, "__name__", None) or ""
            if name == package or name.startswith(prefix) or owner.startswith(prefix):
                sys.modules.pop(name, None)


def import_model_file(
    model_file: Path,
    model_name: str,
    version: int,
    search_dirs: Sequence[Path],
    scope_context: Any = None,
) -> ImportedModel:
    """Import `model_file` in a fresh private package; raise ModelLoadError saying what failed."""
    if model_file.suffix != ".py":
        raise ModelLoadError(
            f"model '{model_name}': the Python model file must end with '.py', got "
            f"'{model_file.name}'"
        )
    if not model_file.is_file():
        raise ModelLoadError(
            f"model '{model_name}' version {version}: {model_file} does not exist; put the "
            "model's TritonPythonModel class there, or set 'default_model_filename' in "
            "config.pbtxt"
        )
    safe_name = re.sub(r"\W", "_", model_name)
    package_name = f"{_PACKAGE_PREFIX}_{next(_package_numbers)}_{safe_name}_v{version}"
    importer = SiblingImporter(package_name, search_dirs)
    package = types.ModuleType(package_name, f"Model '{model_name}' version {version}")
    package.__path__ = [str(directory) for directory in search_dirs]
    package.__package__ = package_name
    package.__spec__ = importlib.machinery.ModuleSpec(package_name, None, is_package=True)
    package.__spec__.submodule_search_locations = package.__path__
    sys.modules[package_name] = package
    imported = ImportedModel(package, importer)
    module_name = f"{package_name}.{model_file.stem}"
    spec = importlib.util.spec_from_file_location(module_name, model_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__builtins__ = importer.builtins  # type: ignore[attr-defined]
    sys.modules[module_name] = module
    try:
        with entered(ModelScope(scope_context, importer)):
            spec.loader.exec_module(module)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt too: a load failure, not an exit
        imported.unload()
        raise ModelLoadError(
            f"failed to load Python model '{model_name}' version {version} from {model_file}: "
            f"{describe_exception(exc, search_dirs)}"
        ) from exc
    setattr(package, model_file.stem, module)
    imported.module = module
    return imported


def describe_exception(exc: BaseException, search_dirs: Sequence[Path] = ()) -> str:
    """'Type: message', plus the model file and line that raised it when the traceback has one."""
    text = f"{type(exc).__name__}: {exc}"
    folders = tuple(str(directory) + os.sep for directory in search_dirs)
    where = ""
    traceback = exc.__traceback__
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        if folders and filename.startswith(folders):
            where = f" ({os.path.basename(filename)}, line {traceback.tb_lineno})"
        traceback = traceback.tb_next
    return text + where


class _ScopedSiblingFinder(importlib.abc.MetaPathFinder):
    """Resolves a model's sibling names for lookups that bypass import statements (pickle's
    find_class, importlib.import_module) while that model's code runs. The module is then also
    known under its bare name, as it would be in Triton."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None:
            return None
        scope: ModelScope | None = current_scope()
        if scope is None or not scope.importer.is_sibling(fullname):
            return None
        module = scope.importer.load(f"{scope.importer.package}.{fullname}")
        return importlib.util.spec_from_loader(fullname, _AlreadyLoaded(module))


class _AlreadyLoaded(importlib.abc.Loader):
    def __init__(self, module: types.ModuleType) -> None:
        self._module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return self._module

    def exec_module(self, module: types.ModuleType) -> None:
        """Already executed by the model's importer."""


if not any(isinstance(finder, _ScopedSiblingFinder) for finder in sys.meta_path):
    # Last: only names nothing else can import reach it.
    sys.meta_path.append(_ScopedSiblingFinder())
