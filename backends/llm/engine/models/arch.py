"""The architecture facts the engine needs, read from a Hugging Face `config.json` (either
transformers 4's `rope_theta` / `rope_scaling` or transformers 5's `rope_parameters`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: config.json `model_type` values served by the Llama-family code.
LLAMA_FAMILY = ("llama", "mistral", "qwen2")


class UnsupportedModel(ValueError):
    """The checkpoint uses an architecture or option this engine does not implement."""


class ModelKind(str, enum.Enum):
    LLAMA = "llama"  # Llama, Mistral, Qwen2, SmolLM: RMSNorm, RoPE, GQA, SwiGLU
    GPT2 = "gpt2"  # LayerNorm, learned positions, GELU (tanh), Conv1D weights


@dataclass(frozen=True)
class RopeSpec:
    """Rotary embedding: base, and the scaling variant ("default", "linear" or "llama3")."""

    theta: float = 10000.0
    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


@dataclass(frozen=True)
class ModelArch:
    """One decoder-only model's shape."""

    kind: ModelKind
    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    norm_eps: float
    max_position: int
    tie_embeddings: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    activation: str = "silu"
    rope: RopeSpec = field(default_factory=RopeSpec)
    eos_token_ids: tuple[int, ...] = ()


def _rope(cfg: Mapping[str, Any]) -> RopeSpec:
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    merged = {**scaling, **params}
    theta = float(merged.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    kind = str(merged.get("rope_type", merged.get("type", "default")))
    if kind == "default":
        return RopeSpec(theta=theta)
    if kind == "linear":
        return RopeSpec(theta=theta, kind=kind, factor=float(merged["factor"]))
    if kind == "llama3":
        return RopeSpec(
            theta=theta,
            kind=kind,
            factor=float(merged["factor"]),
            low_freq_factor=float(merged["low_freq_factor"]),
            high_freq_factor=float(merged["high_freq_factor"]),
            original_max_position=int(merged["original_max_position_embeddings"]),
        )
    raise UnsupportedModel(f"RoPE scaling {kind!r} is not supported (default, linear, llama3)")


def _eos(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    eos = cfg.get("eos_token_id")
    if eos is None:
        return ()
    if isinstance(eos, int):
        return (eos,)
    return tuple(int(e) for e in eos)


def arch_from_config(cfg: Mapping[str, Any]) -> ModelArch:
    """Read a config.json dict; raise UnsupportedModel for what the engine cannot run."""
    model_type = str(cfg.get("model_type", ""))
    if model_type in LLAMA_FAMILY:
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        window = cfg.get("sliding_window")
        uses_window = cfg.get("use_sliding_window", model_type == "mistral")
        if (
            window is not None
            and uses_window
            and int(window) < int(cfg.get("max_position_embeddings", 2048))
        ):
            raise UnsupportedModel("sliding-window attention is not supported")
        if cfg.get("hidden_act", "silu") != "silu":
            raise UnsupportedModel(f"activation {cfg.get('hidden_act')!r} is not supported")
        is_qwen2 = model_type == "qwen2"
        bias = bool(cfg.get("attention_bias", False))
        return ModelArch(
            kind=ModelKind.LLAMA,
            model_type=model_type,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(cfg["intermediate_size"]),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            max_position=int(cfg.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=is_qwen2 or bias,
            o_bias=bias and not is_qwen2,
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            rope=_rope(cfg),
            eos_token_ids=_eos(cfg),
        )
    if model_type == "gpt2":
        if cfg.get("scale_attn_by_inverse_layer_idx") or not cfg.get("scale_attn_weights", True):
            raise UnsupportedModel("GPT-2 attention scaling variants are not supported")
        if cfg.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise UnsupportedModel(f"activation {cfg.get('activation_function')!r}")
        hidden = int(cfg["n_embd"])
        heads = int(cfg["n_head"])
        return ModelArch(
            kind=ModelKind.GPT2,
            model_type=model_type,
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(cfg["n_layer"]),
            num_heads=heads,
            num_kv_heads=heads,
            head_dim=hidden // heads,
            intermediate_size=int(cfg.get("n_inner") or 4 * hidden),
            norm_eps=float(cfg.get("layer_norm_epsilon", 1e-5)),
            max_position=int(cfg.get("n_positions", 1024)),
            tie_embeddings=True,
            qkv_bias=True,
            o_bias=True,
            mlp_bias=True,
            activation="gelu_tanh",
            eos_token_ids=_eos(cfg),
        )
    raise UnsupportedModel(
        f"model_type {model_type!r} is not supported (llama, mistral, qwen2, gpt2)"
    )
