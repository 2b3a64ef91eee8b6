"""`pb_utils.ModelConfig`: what a model's static `auto_complete_config` receives and returns,
and how the result lands in the server's ModelConfig message."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from trident.runtime.core.model_config import config_to_json
from trident.runtime.errors import ModelLoadError
from trident.runtime.protocol import model_config_pb2 as mc


class ModelConfig:
    """The model configuration as a dict, with the edits Triton allows during auto-complete.

    Errors are ValueError with Triton's wording, so models that catch them keep working.
    """

    def __init__(self, model_config: str | dict[str, Any]) -> None:
        self._model_config: dict[str, Any] = (
            json.loads(model_config) if isinstance(model_config, str) else model_config
        )
        self._model_config.setdefault("max_batch_size", 0)
        self._model_config.setdefault("input", [])
        self._model_config.setdefault("output", [])

    def as_dict(self) -> dict[str, Any]:
        """The configuration (treat it as read-only; use the setters to change it)."""
        return self._model_config

    def _model(self) -> str:
        return str(self._model_config.get("name", ""))

    def set_max_batch_size(self, max_batch_size: int) -> None:
        """Set max_batch_size; a config that already sets a larger one wins with an error."""
        current = int(self._model_config["max_batch_size"])
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in auto-complete-config "
                f"function for model '{self._model()}' specified max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        """Use the dynamic batcher, unless the config chose another scheduler (an error)."""
        for scheduler in ("sequence_batching", "ensemble_scheduling"):
            if scheduler in self._model_config:
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{scheduler}', but "
                    f"auto-complete-config function for model '{self._model()}' tries to set "
                    "scheduling_choice as 'dynamic_batching'"
                )
        self._model_config.setdefault("dynamic_batching", {})

    def add_input(self, input: dict[str, Any]) -> None:
        """Add an input {'name', 'data_type', 'dims'[, 'optional']}; one the config already
        declares must agree with it."""
        self._add_tensor("input", input, ("name", "data_type", "dims", "optional"))

    def add_output(self, output: dict[str, Any]) -> None:
        """Add an output {'name', 'data_type', 'dims'}; one the config already declares must
        agree with it."""
        self._add_tensor("output", output, ("name", "data_type", "dims"))

    def set_model_transaction_policy(self, transaction_policy_dict: dict[str, Any]) -> None:
        """Set `{'decoupled': bool}`; a config that already says otherwise wins with an error."""
        for key in transaction_policy_dict:
            if key != "decoupled":
                raise ValueError(
                    "model transaction property in auto-complete-config function for model "
                    f"'{self._model()}' contains property other than 'decoupled'."
                )
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            wanted = transaction_policy_dict["decoupled"]
            if "decoupled" in policy and policy["decoupled"] != wanted:
                raise ValueError(
                    "trying to change decoupled property in auto-complete-config for model "
                    f"'{self._model()}', which is already set to '{policy['decoupled']}'."
                )
            policy["decoupled"] = wanted

    def _add_tensor(self, kind: str, tensor: dict[str, Any], allowed: tuple[str, ...]) -> None:
        model = self._model()
        if not isinstance(tensor, dict):
            raise ValueError(
                f"{kind} in auto-complete-config function for model '{model}' must be a dict"
            )
        if "name" not in tensor:
            raise ValueError(
                f"{kind} in auto-complete-config function for model '{model}' is missing 'name' "
                "property."
            )
        name = tensor["name"]
        for key in tensor:
            if key not in allowed:
                raise ValueError(
                    f"{kind} '{name}' in auto-complete-config function for model '{model}' "
                    f"contains property other than {_quoted(allowed)}."
                )
        for key in ("data_type", "dims"):
            if key not in tensor:
                raise ValueError(
                    f"{kind} '{name}' in auto-complete-config function for model '{model}' is "
                    f"missing '{key}' property."
                )
        for existing in self._model_config[kind]:
            if existing.get("name") != name:
                continue
            declared_type = existing.get("data_type", "TYPE_INVALID")
            if declared_type != "TYPE_INVALID" and declared_type != tensor["data_type"]:
                raise ValueError(
                    f"unable to load model '{model}', configuration expects datatype "
                    f"{declared_type} for {kind} '{name}', model provides {tensor['data_type']}"
                )
            declared_dims = existing.get("dims") or []
            if declared_dims and list(declared_dims) != list(tensor["dims"]):
                raise ValueError(
                    f"model '{model}', tensor '{name}': the model expects dims "
                    f"{list(tensor['dims'])} but the model configuration specifies dims "
                    f"{list(declared_dims)}"
                )
            if (
                "optional" in tensor
                and "optional" in existing
                and existing["optional"] != tensor["optional"]
            ):
                raise ValueError(
                    f"model '{model}', tensor '{name}': the model expects optional "
                    f"{tensor['optional']} but the model configuration specifies optional "
                    f"{existing['optional']}"
                )
            existing["data_type"] = tensor["data_type"]
            existing["dims"] = list(tensor["dims"])
            if "optional" in tensor:
                existing["optional"] = tensor["optional"]
            return
        self._model_config[kind].append(dict(tensor))


def _quoted(names: tuple[str, ...]) -> str:
    quoted = [f"'{name}'" for name in names]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def run_auto_complete(model_class: type, config: mc.ModelConfig) -> None:
    """Call `model_class.auto_complete_config` (when it has one) and apply what it returns to
    `config` in place."""
    hook = getattr(model_class, "auto_complete_config", None)
    if hook is None:
        return
    name = config.name
    try:
        result = hook(ModelConfig(config_to_json(config)))
    except BaseException as exc:  # SystemExit too: model code never ends the server
        raise ModelLoadError(
            f"auto_complete_config of Python model '{name}' failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(result, ModelConfig):
        raise ModelLoadError(
            f"auto_complete_config function in model '{name}' must return a valid "
            f"pb_utils.ModelConfig object (it returned {type(result).__name__})"
        )
    completed = mc.ModelConfig()
    try:
        json_format.ParseDict(result.as_dict(), completed)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"auto_complete_config of Python model '{name}' produced an invalid configuration: "
            f"{exc}"
        ) from None
    config.CopyFrom(completed)
