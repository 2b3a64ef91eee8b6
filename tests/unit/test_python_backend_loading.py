"""Loading Python models (copied from tests/models to tmp_path): module isolation, sibling imports,
initialize/finalize, load errors and the model's auto_complete_config."""

from __future__ import annotations

import importlib
import json
import pickle
import sys

import numpy as np
import pytest

from tests.helpers import copy_model
from trident.backends.base import ComputeTiming
from trident.backends.python.backend import PythonBackend
from trident.runtime.core.model_config import normalize, parse_config_text
from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc

from .test_python_backend_support import (
    LoopThread,
    loop_thread,
    make_context,
    make_request,
    output,
    write_model,
)


@pytest.fixture
def loop():
    yield from loop_thread()


def instance_of(model_dir, **context):
    return PythonBackend().create_instance(make_context(model_dir, **context))


def run_once(instance, model="m"):
    (response,) = instance.execute([make_request(model, {"IN": np.zeros(1)})], ComputeTiming())
    return response


def test_two_models_named_model_py_with_same_named_helpers_do_not_clash(tmp_path):
    instances = []
    for name, value in (("first", 10), ("second", 20)):
        model_dir = copy_model(tmp_path, "py_uses_helper", name)
        (model_dir / "1" / "helper.py").write_text(f"VALUE = {value}\n")
        (model_dir / "1" / "relative.py").write_text(f"OFFSET = {value // 10}\n")
        instances.append(instance_of(model_dir))
    first, second = instances
    assert int(output(run_once(first), "OUT")[0]) == 10 + 1 + 10
    assert int(output(run_once(second), "OUT")[0]) == 20 + 2 + 20
    assert "helper" not in sys.modules  # nothing leaks under the bare name
    assert first._imported.module is not second._imported.module


def test_helpers_in_the_model_folder_and_sibling_packages_import(tmp_path):
    # shared_settings.py lies in the model folder, next to config; tools/ in the version folder.
    model_dir = copy_model(tmp_path, "py_sibling_packages")
    instance = instance_of(model_dir)
    assert int(output(run_once(instance), "OUT")[0]) == 5 * 5 + 1


def test_standard_and_installed_modules_win_over_same_named_files(tmp_path):
    # As in Triton, where the model folders come last on sys.path.
    model_dir = copy_model(tmp_path, "py_shadowed_modules")  # with 1/types.py and 1/numpy.py
    assert bool(output(run_once(instance_of(model_dir)), "OUT")[0]) is True


def test_pickle_finds_classes_of_the_models_sibling_modules(tmp_path):
    # Copied as `pickled`: the module name checked below (`..._pickled_v1`) derives from it.
    model_dir = copy_model(tmp_path, "py_pickled_weights", "pickled")  # with 1/weightsdef.py
    # Pickled elsewhere with the class living in a top-level module called `weightsdef`.
    sys.path.insert(0, str(model_dir / "1"))
    try:
        import weightsdef

        (model_dir / "weights.pkl").write_bytes(pickle.dumps(weightsdef.Weights(99)))
    finally:
        sys.path.remove(str(model_dir / "1"))
        sys.modules.pop("weightsdef", None)
    instance = instance_of(model_dir)
    assert int(output(run_once(instance), "OUT")[0]) == 99
    assert sys.modules["weightsdef"].__name__.endswith("_pickled_v1.weightsdef")
    instance.close()
    assert "weightsdef" not in sys.modules  # the alias goes with the model


def test_importlib_lookups_of_sibling_names_resolve_while_the_model_runs(tmp_path):
    model_dir = copy_model(tmp_path, "py_importlib_lookup")  # with 1/plugin_for_lookup.py
    instance = instance_of(model_dir)
    assert int(output(run_once(instance), "OUT")[0]) == 31
    with pytest.raises(ModuleNotFoundError):  # outside the model's code: unknown
        sys.modules.pop("plugin_for_lookup", None)
        importlib.import_module("plugin_for_lookup")
    instance.close()


def test_close_calls_finalize_and_forgets_the_models_modules(tmp_path):
    model_dir = copy_model(tmp_path, "py_finalize_writes")  # with 1/helper.py
    instance = instance_of(model_dir)
    package = instance._imported.importer.package
    assert f"{package}.helper" in sys.modules
    instance.close()
    assert (model_dir / "finalized").read_text() == "done"
    assert not [name for name in sys.modules if name.startswith(package)]


def test_async_initialize_and_finalize_run_on_the_server_loop(tmp_path, loop: LoopThread):
    model_dir = copy_model(tmp_path, "py_async_lifecycle")
    instance = instance_of(model_dir, loop=loop.loop)
    assert instance._model.init_thread == loop.thread_id
    instance._model.path = str(tmp_path / "finalized")
    instance.close()
    assert (tmp_path / "finalized").read_text() == str(loop.thread_id)


def test_initialize_receives_tritons_args(tmp_path):
    # Served as args_model, version 3: the names and version args must carry.
    model_dir = copy_model(tmp_path, "py_args_recorder", "args_model")
    (model_dir / "1").rename(model_dir / "3")
    instance = instance_of(model_dir, version=3, kind="GPU", device_id=1)
    args = instance._model.args
    assert set(args) == {
        "model_config",
        "model_instance_kind",
        "model_instance_name",
        "model_instance_device_id",
        "model_repository",
        "model_version",
        "model_name",
    }
    assert all(isinstance(value, str) for value in args.values())
    assert args["model_instance_kind"] == "GPU"
    assert args["model_instance_device_id"] == "1"
    assert args["model_instance_name"] == "args_model_0_0"
    assert args["model_repository"] == str(model_dir)
    assert args["model_version"] == "3"
    assert args["model_name"] == "args_model"
    model_config = json.loads(args["model_config"])
    assert model_config["name"] == "args_model"
    assert model_config["max_batch_size"] == 8
    assert model_config["input"][0]["dims"] == [4]
    assert model_config["input"][0]["data_type"] == "TYPE_FP32"


def test_default_model_filename_renames_the_model_file(tmp_path):
    model_dir = copy_model(tmp_path, "py_default_filename")  # 1/main.py, named in its config
    instance = instance_of(model_dir)
    assert instance._imported.module.__name__.endswith(".main")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, r"1/model\.py does not exist"),
        ({"model.py": "def broken(:\n"}, r"SyntaxError: .*model\.py"),
        ({"model.py": "import not_a_real_module_xyz\n"}, "No module named 'not_a_real_module_xyz'"),
        ({"model.py": "class Model:\n    pass\n"}, "defines no class 'TritonPythonModel'"),
        ({"model.py": "class TritonPythonModel:\n    pass\n"}, "does not implement `execute`"),
        (
            {
                "model.py": "class TritonPythonModel:\n"
                "    def initialize(self, args):\n"
                "        raise RuntimeError('no weights here')\n"
                "    def execute(self, requests):\n"
                "        return []\n"
            },
            r"initialize\(\) of Python model 'broken' failed: RuntimeError: no weights here "
            r"\(model\.py, line 3\)",
        ),
    ],
)
def test_load_errors_say_what_failed(tmp_path, files, expected):
    model_dir = tmp_path / "broken"
    (model_dir / "1").mkdir(parents=True)
    for filename, text in files.items():
        (model_dir / "1" / filename).write_text(text)
    with pytest.raises(ModelLoadError, match=expected):
        instance_of(model_dir)
    assert not [name for name in sys.modules if name.endswith("_broken_v1")]


# ----------------------------------------------------------------------------- auto-complete


def completed_config(model_dir, config_text='backend: "python"', strict=False):
    config = parse_config_text(config_text)
    normalize(config, model_dir.name, "python")
    PythonBackend().auto_complete_config(config, model_dir, strict)
    return config


def test_auto_complete_fills_the_config(tmp_path):
    model_dir = copy_model(tmp_path, "auto")
    config = completed_config(model_dir)
    assert [(i.name, i.data_type, list(i.dims), i.optional) for i in config.input] == [
        ("INPUT0", mc.TYPE_FP32, [4], True),
        ("INPUT1", mc.TYPE_FP32, [4], False),
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("OUTPUT0", mc.TYPE_STRING, [-1])
    ]
    assert config.max_batch_size == 8
    assert config.HasField("dynamic_batching")
    assert config.model_transaction_policy.decoupled is True
    assert config.name == "auto" and config.backend == "python"
    assert config.instance_group[0].name == "auto_0"  # what normalize filled stays
    assert not [name for name in sys.modules if name.endswith("_auto_v1")]  # throwaway import


def test_auto_complete_keeps_matching_declarations_and_is_skipped_when_strict(tmp_path):
    model_dir = copy_model(tmp_path, "auto")
    declared = """
        backend: "python"
        max_batch_size: 4
        input [ { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
    """
    config = completed_config(model_dir, declared)
    assert [(i.name, i.optional) for i in config.input] == [("INPUT1", False), ("INPUT0", True)]
    assert config.max_batch_size == 8
    strict = completed_config(model_dir, declared, strict=True)
    assert [i.name for i in strict.input] == ["INPUT1"]
    assert not strict.HasField("dynamic_batching")


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (
            'input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 4 ] } ]',
            "configuration expects datatype TYPE_INT32 for input 'INPUT0', model provides "
            "TYPE_FP32",
        ),
        (
            'input [ { name: "INPUT1" data_type: TYPE_FP32 dims: [ 2 ] } ]',
            r"tensor 'INPUT1': the model expects dims \[4\] but the model configuration "
            r"specifies dims \[2\]",
        ),
        (
            # The rendered config always says optional: false, so (as in Triton) a model that
            # makes a declared input optional conflicts with it.
            'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]',
            "the model expects optional True but the model configuration specifies optional False",
        ),
        ("max_batch_size: 16", "configuration specified max_batch_size 16"),
        (
            "sequence_batching { }",
            "Configuration specified scheduling_choice as 'sequence_batching'",
        ),
        (
            "model_transaction_policy { decoupled: false }",
            "trying to change decoupled property",
        ),
    ],
)
def test_auto_complete_conflicts_are_clear_load_errors(tmp_path, declared, expected):
    model_dir = copy_model(tmp_path, "auto")
    with pytest.raises(ModelLoadError, match=expected) as caught:
        completed_config(model_dir, 'backend: "python"\n' + declared)
    assert caught.value.message.startswith("auto_complete_config of Python model 'auto' failed")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("return None", "must return a valid pb_utils.ModelConfig object"),
        (
            "c.add_input({'name': 'X', 'data_type': 'TYPE_FP32', 'dims': [1], 'format': 1})\n"
            "                return c",
            "contains property other than 'name', 'data_type', 'dims' and 'optional'",
        ),
        (
            "c.add_output({'name': 'X', 'dims': [1]})\n                return c",
            "output 'X' in auto-complete-config function for model 'bad_auto' is missing "
            "'data_type' property",
        ),
        (
            "c.add_input({'name': 'X', 'data_type': 'TYPE_FLOAT', 'dims': [1]})\n"
            "                return c",
            "produced an invalid configuration: .*TYPE_FLOAT",
        ),
    ],
)
def test_auto_complete_misuse_is_a_clear_load_error(tmp_path, body, expected):
    source = f"""
        class TritonPythonModel:
            @staticmethod
            def auto_complete_config(c):
                {body}

            def execute(self, requests):
                return []
    """
    model_dir = write_model(tmp_path, "bad_auto", source)
    with pytest.raises(ModelLoadError, match=expected):
        completed_config(model_dir)


def test_auto_complete_uses_the_latest_version_and_tolerates_no_version(tmp_path):
    for version, dims in ((1, 1), (3, 3), (2, 2)):
        write_model(
            tmp_path,
            "versions",
            f"""
            class TritonPythonModel:
                @staticmethod
                def auto_complete_config(c):
                    c.add_input({{"name": "IN", "data_type": "TYPE_FP32", "dims": [{dims}]}})
                    return c
            """,
            version=version,
        )
    config = completed_config(tmp_path / "versions")
    assert list(config.input[0].dims) == [3]
    (tmp_path / "empty").mkdir()
    assert list(completed_config(tmp_path / "empty").input) == []
