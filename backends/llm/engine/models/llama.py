"""The Llama family (Llama 2/3, Mistral, Qwen2, SmolLM): RMSNorm, RoPE, grouped-query attention,
SwiGLU. The project's own layers over a flattened variable-length batch; weights come from a
Hugging Face state dict, with q/k/v and gate/up fused into one matrix each (one matmul instead of
three or two)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from trident.backends.llm.engine.attention import AttentionMetadata, paged_attention
from trident.backends.llm.engine.models.arch import ModelArch
from trident.backends.llm.engine.models.base import CausalLM, ShardSpec, take
from trident.backends.llm.engine.models.rope import RotaryEmbedding, apply_rotary

OptTensor = torch.Tensor | None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Hugging Face's LlamaRMSNorm: normalise in fp32, cast back, then scale."""
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return weight * normed.to(x.dtype)


class LlamaLayer:
    """One decoder layer's weights and forward pass."""

    def __init__(self, weights: dict[str, torch.Tensor | None], arch: ModelArch, shard: ShardSpec):
        self.w = weights
        self.arch = arch
        self.num_heads = arch.num_heads // shard.size
        self.num_kv_heads = arch.num_kv_heads // shard.size
        self.q_size = self.num_heads * arch.head_dim
        self.kv_size = self.num_kv_heads * arch.head_dim
        self.scale = arch.head_dim**-0.5
        self.shard = shard

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        meta: AttentionMetadata,
        kv: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        w, d, eps = self.w, self.arch.head_dim, self.arch.norm_eps
        h = rms_norm(x, w["input_norm"], eps)  # type: ignore[arg-type]
        qkv = F.linear(h, w["qkv"], w["qkv_bias"])  # type: ignore[arg-type]
        q, k, v = qkv.split((self.q_size, self.kv_size, self.kv_size), dim=-1)
        t = x.shape[0]
        q = apply_rotary(q.view(t, self.num_heads, d), cos, sin)
        k = apply_rotary(k.view(t, self.num_kv_heads, d), cos, sin)
        v = v.reshape(t, self.num_kv_heads, d)
        attn = paged_attention(q, k, v, kv[0], kv[1], meta, self.scale)
        x = x + self.shard.reduce(F.linear(attn, w["o"], w["o_bias"]))  # type: ignore[arg-type]
        h = rms_norm(x, w["post_norm"], eps)  # type: ignore[arg-type]
        gate, up = F.linear(h, w["gate_up"], w["gate_up_bias"]).chunk(2, dim=-1)  # type: ignore[arg-type]
        return x + self.shard.reduce(F.linear(F.silu(gate) * up, w["down"], w["down_bias"]))  # type: ignore[arg-type]


class LlamaModel(CausalLM):
    """Embedding, N LlamaLayers, final RMSNorm, LM head (tied to the embedding or not)."""

    def __init__(
        self,
        arch: ModelArch,
        state: Mapping[str, torch.Tensor],
        dtype: torch.dtype,
        device: torch.device,
        max_positions: int,
        shard: ShardSpec,
    ) -> None:
        super().__init__(arch, dtype, device, shard)
        get = take(state, dtype, device)
        self.embed = get("model.embed_tokens.weight")
        self.norm = get("model.norm.weight")
        self.lm_head = self.embed if arch.tie_embeddings else get("lm_head.weight")
        self.rope = RotaryEmbedding(arch.rope, arch.head_dim, max_positions, dtype, device)
        q_rows = shard.rows(arch.num_heads * arch.head_dim)
        kv_rows = shard.rows(arch.num_kv_heads * arch.head_dim)
        ff_rows = shard.rows(arch.intermediate_size)
        self.layers: list[LlamaLayer] = []
        for i in range(arch.num_layers):
            p = f"model.layers.{i}."
            a, m = p + "self_attn.", p + "mlp."

            def proj(
                name: str, rows: slice, bias: bool
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
                weight = get(name + ".weight", rows=rows)
                return weight, (get(name + ".bias", rows=rows) if bias else None)

            qw, qb = proj(a + "q_proj", q_rows, arch.qkv_bias)
            kw, kb = proj(a + "k_proj", kv_rows, arch.qkv_bias)
            vw, vb = proj(a + "v_proj", kv_rows, arch.qkv_bias)
            gw, gb = proj(m + "gate_proj", ff_rows, arch.mlp_bias)
            uw, ub = proj(m + "up_proj", ff_rows, arch.mlp_bias)
            weights: dict[str, torch.Tensor | None] = {
                "input_norm": get(p + "input_layernorm.weight"),
                "post_norm": get(p + "post_attention_layernorm.weight"),
                "qkv": torch.cat((qw, kw, vw)),
                "qkv_bias": torch.cat((qb, kb, vb)) if qb is not None else None,  # type: ignore[arg-type]
                "o": get(a + "o_proj.weight", cols=q_rows),
                "o_bias": shard.first_only(get(a + "o_proj.bias")) if arch.o_bias else None,
                "gate_up": torch.cat((gw, uw)),
                "gate_up_bias": torch.cat((gb, ub)) if gb is not None else None,  # type: ignore[arg-type]
                "down": get(m + "down_proj.weight", cols=ff_rows),
                "down_bias": shard.first_only(get(m + "down_proj.bias")) if arch.mlp_bias else None,
            }
            self.layers.append(LlamaLayer(weights, arch, shard))

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        x = self.embed[input_ids]
        cos, sin = self.rope.lookup(positions)
        for layer, kv in zip(self.layers, kv_caches):
            x = layer.forward(x, cos, sin, meta, kv)
        return x

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.norm, self.arch.norm_eps)
