"""Bad sampling parameters and engine settings are refused with a message naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from trident.backends.llm.engine import EngineConfig, InvalidSamplingParams, SamplingParams


def test_defaults_follow_vllm() -> None:
    p = SamplingParams.from_dict({})
    assert (p.max_tokens, p.temperature, p.top_k, p.top_p, p.logprobs) == (16, 1.0, 0, 1.0, None)
    assert not p.greedy and SamplingParams(temperature=0).greedy and SamplingParams(top_k=1).greedy


def test_a_single_stop_string_becomes_a_list() -> None:
    assert SamplingParams.from_dict({"stop": "\n\n"}).stop == ["\n\n"]
    assert SamplingParams.from_dict({"stop": None}).stop == []


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": "16"}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 2}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"stop": ["ok", ""]}, "stop"),
        ({"stop": [1]}, "stop"),
        ({"stop": ["x"] * 17}, "stop"),
        ({"stop": "x" * 257}, "stop"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"stop_token_ids": "2"}, "stop_token_ids"),
        ({"ignore_eos": 1}, "ignore_eos"),
        ({"min_tokens": 20, "max_tokens": 10}, "min_tokens"),
        ({"logprobs": 21}, "logprobs"),
        ({"logprobs": -1}, "logprobs"),
        ({"seed": "1"}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
        ({"best_of": 2}, "best_of"),
    ],
)
def test_bad_sampling_params_name_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSamplingParams) as info:
        SamplingParams.from_dict(values)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


def test_a_non_mapping_is_refused() -> None:
    with pytest.raises(InvalidSamplingParams):
        SamplingParams.from_dict(["max_tokens"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"dtype": "int8"}, "dtype"),
        ({"dtype": "float16"}, "dtype"),  # float16 needs a GPU
        ({"device": "tpu"}, "device"),
        ({"device": "cuda:x"}, "device"),
        ({"block_size": 0}, "block_size"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"gpu_memory_fraction": 1.5}, "gpu_memory_fraction"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"max_num_batched_tokens": -4}, "max_num_batched_tokens"),
        ({"max_model_len": 1}, "max_model_len"),
        ({"max_waiting": -1}, "max_waiting"),
        ({"enable_prefix_caching": "yes"}, "enable_prefix_caching"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"gpu_memory_utilization": 0.5}, "gpu_memory_utilization"),
    ],
)
def test_bad_engine_settings_name_the_field(values: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSamplingParams) as info:
        EngineConfig.from_dict(values)
    assert info.value.field == field


def test_engine_config_from_dict() -> None:
    config = EngineConfig.from_dict({"block_size": 32, "num_blocks": 10, "dtype": "bfloat16"})
    assert (config.block_size, config.num_blocks, config.dtype) == (32, 10, "bfloat16")
    assert EngineConfig(device="cuda:1", dtype="float16").device == "cuda:1"
