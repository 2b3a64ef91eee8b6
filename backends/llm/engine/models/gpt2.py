"""GPT-2: learned position embeddings, pre-LayerNorm blocks, GELU (tanh), tied LM head. Hugging
Face stores its projections as Conv1D weights ([in, out]); they are transposed once on load."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from trident.backends.llm.engine.attention import AttentionMetadata, paged_attention
from trident.backends.llm.engine.models.arch import ModelArch
from trident.backends.llm.engine.models.base import CausalLM, ShardSpec, take


class GPT2Layer:
    def __init__(self, weights: dict[str, torch.Tensor], arch: ModelArch, shard: ShardSpec):
        self.w = weights
        self.arch = arch
        self.num_heads = arch.num_heads // shard.size
        self.scale = arch.head_dim**-0.5
        self.shard = shard

    def forward(
        self, x: torch.Tensor, meta: AttentionMetadata, kv: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        w, eps, d = self.w, self.arch.norm_eps, self.arch.head_dim
        h = F.layer_norm(x, (x.shape[-1],), w["ln1_w"], w["ln1_b"], eps)
        t = x.shape[0]
        q, k, v = F.linear(h, w["qkv"], w["qkv_bias"]).view(t, 3, self.num_heads, d).unbind(1)
        attn = paged_attention(q, k, v, kv[0], kv[1], meta, self.scale)
        x = x + self.shard.reduce(F.linear(attn, w["o"], w["o_bias"]))
        h = F.layer_norm(x, (x.shape[-1],), w["ln2_w"], w["ln2_b"], eps)
        h = F.gelu(F.linear(h, w["fc"], w["fc_bias"]), approximate="tanh")
        return x + self.shard.reduce(F.linear(h, w["proj"], w["proj_bias"]))


class GPT2Model(CausalLM):
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
        prefix = "transformer." if "transformer.wte.weight" in state else ""
        get = take(state, dtype, device)
        self.wte = get(prefix + "wte.weight")
        self.wpe = get(prefix + "wpe.weight")
        self.ln_f = (get(prefix + "ln_f.weight"), get(prefix + "ln_f.bias"))
        self.lm_head = self.wte
        hidden = arch.hidden_size
        local = shard.rows(hidden)
        ff = shard.rows(arch.intermediate_size)
        self.layers: list[GPT2Layer] = []
        for i in range(arch.num_layers):
            p = f"{prefix}h.{i}."
            # c_attn is [hidden, 3 * hidden] (Conv1D): transposed, q, k and v are row blocks;
            # a shard takes its heads' rows from each block.
            qkv_w = state[p + "attn.c_attn.weight"].t()
            qkv_b = state[p + "attn.c_attn.bias"]
            qkv_w = torch.cat([blk[local] for blk in qkv_w.split(hidden)])
            qkv_b = torch.cat([blk[local] for blk in qkv_b.split(hidden)])
            weights = {
                "ln1_w": get(p + "ln_1.weight"),
                "ln1_b": get(p + "ln_1.bias"),
                "ln2_w": get(p + "ln_2.weight"),
                "ln2_b": get(p + "ln_2.bias"),
                "qkv": qkv_w.to(device=device, dtype=dtype).contiguous(),
                "qkv_bias": qkv_b.to(device=device, dtype=dtype).contiguous(),
                "o": get(p + "attn.c_proj.weight", transpose=True, cols=local),
                "o_bias": shard.first_only(get(p + "attn.c_proj.bias")),
                "fc": get(p + "mlp.c_fc.weight", transpose=True, rows=ff),
                "fc_bias": get(p + "mlp.c_fc.bias", rows=ff),
                "proj": get(p + "mlp.c_proj.weight", transpose=True, cols=ff),
                "proj_bias": shard.first_only(get(p + "mlp.c_proj.bias")),
            }
            self.layers.append(GPT2Layer(weights, arch, shard))

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        x = self.wte[input_ids] + self.wpe[positions]
        for layer, kv in zip(self.layers, kv_caches):
            x = layer.forward(x, meta, kv)
        return x

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.ln_f[0], self.ln_f[1], self.arch.norm_eps)
