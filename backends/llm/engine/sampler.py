"""The batched sampler: one fp32 pass over the logits of every sequence that samples this step.

Order (vLLM's): min_tokens mask -> repetition / presence / frequency penalties -> temperature ->
top-k -> top-p -> min-p -> sample. Greedy rows (temperature 0) take the argmax of the penalised
logits. Random rows sample with the exponential race (argmax of p / E, E ~ Exp(1)); a request
with a seed draws its E from its own torch.Generator, so its tokens do not depend on its batch
neighbours. Logprobs are the model's own (log_softmax of the raw logits), as OpenAI reports them.
Work that no row asks for (penalties, top-k/p, logprobs) is skipped for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trident.backends.llm.engine.params import SamplingParams


@dataclass
class SamplingRow:
    """What the sampler needs to know about one sequence."""

    params: SamplingParams
    #: The request's prompt + output token ids so far (for penalties).
    token_ids: list[int]
    num_prompt_tokens: int
    num_output_tokens: int
    #: EOS and stop token ids, masked while num_output_tokens < min_tokens.
    stop_ids: Sequence[int]
    generator: torch.Generator | None


@dataclass
class SampleResult:
    token_ids: list[int]
    #: Per row: logprob of the sampled token, or None when the row did not ask for logprobs.
    logprobs: list[float | None]
    #: Per row: (ids, logprobs) of the top-n tokens, or None.
    top: list[tuple[list[int], list[float]] | None]


def _apply_penalties(logits: torch.Tensor, rows: Sequence[SamplingRow]) -> None:
    vocab = logits.shape[1]
    for i, row in enumerate(rows):
        p = row.params
        if p.repetition_penalty == 1.0 and p.presence_penalty == 0 and p.frequency_penalty == 0:
            continue
        device = logits.device
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(row.token_ids)), dtype=torch.int64, device=device)
            seen = seen[seen < vocab]
            values = logits[i, seen]
            values = torch.where(
                values > 0, values / p.repetition_penalty, values * p.repetition_penalty
            )
            logits[i, seen] = values
        if (p.presence_penalty or p.frequency_penalty) and row.num_output_tokens:
            out = torch.tensor(row.token_ids[row.num_prompt_tokens :], device=device)
            counts = torch.bincount(out[out < vocab], minlength=vocab).to(logits.dtype)
            logits[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)


def _top_k_top_p_min_p(
    logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor
) -> torch.Tensor:
    """Mask to -inf what top-k, top-p and min-p drop; one sort serves top-k and top-p."""
    vocab = logits.shape[1]
    if bool((top_k < vocab).any()) or bool((top_p < 1.0).any()):
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        ranks = torch.arange(vocab, device=logits.device).unsqueeze(0)
        drop = ranks >= top_k.unsqueeze(1)
        probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
        # Drop a token when the tokens before it already reach top_p (keep at least one).
        before = probs.cumsum(dim=-1) - probs
        drop |= before > top_p.unsqueeze(1)
        drop[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(1, order, sorted_logits)
    if bool((min_p > 0).any()):
        probs = logits.softmax(dim=-1)
        threshold = probs.max(dim=-1, keepdim=True).values * min_p.unsqueeze(1)
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


class Sampler:
    """Samples one token per row of a [rows, vocab] fp32 logits tensor."""

    def __init__(self, device: torch.device, seed: int | None = None) -> None:
        self.device = device
        self.generator = torch.Generator(device=device)
        if seed is not None:
            self.generator.manual_seed(seed)
        else:
            self.generator.seed()

    def sample(self, logits: torch.Tensor, rows: Sequence[SamplingRow]) -> SampleResult:
        n, vocab = logits.shape
        want_logprobs = [r.params.logprobs for r in rows]
        raw_logprobs = (
            torch.log_softmax(logits, dim=-1) if any(w is not None for w in want_logprobs) else None
        )
        for i, row in enumerate(rows):
            if row.num_output_tokens < row.params.min_tokens and row.stop_ids:
                ids = torch.tensor([t for t in row.stop_ids if t < vocab], dtype=torch.int64)
                logits[i, ids.to(logits.device)] = float("-inf")
        _apply_penalties(logits, rows)

        greedy = [r.params.greedy for r in rows]
        if all(greedy):
            tokens = logits.argmax(dim=-1)
        else:
            temps = torch.tensor(
                [1.0 if g else r.params.temperature for g, r in zip(greedy, rows)],
                device=logits.device,
            )
            top_k = torch.tensor(
                [r.params.top_k if r.params.top_k > 0 else vocab for r in rows],
                device=logits.device,
            )
            top_p = torch.tensor([r.params.top_p for r in rows], device=logits.device)
            min_p = torch.tensor([r.params.min_p for r in rows], device=logits.device)
            scaled = _top_k_top_p_min_p(logits / temps.unsqueeze(1), top_k, top_p, min_p)
            probs = scaled.softmax(dim=-1)
            noise = torch.empty_like(probs)
            shared = [i for i, r in enumerate(rows) if r.generator is None]
            if shared:
                noise[shared] = torch.empty(
                    (len(shared), vocab), device=logits.device
                ).exponential_(generator=self.generator)
            for i, r in enumerate(rows):
                if r.generator is not None:
                    noise[i].exponential_(generator=r.generator)
            tokens = (probs / noise).argmax(dim=-1)
            if any(greedy):
                greedy_rows = torch.tensor(greedy, device=logits.device)
                tokens = torch.where(greedy_rows, logits.argmax(dim=-1), tokens)
        token_list = tokens.tolist()

        logprob_list: list[float | None] = [None] * n
        top_list: list[tuple[list[int], list[float]] | None] = [None] * n
        if raw_logprobs is not None:
            chosen = raw_logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1).tolist()
            k = max(w or 0 for w in want_logprobs)
            if k:
                top_values, top_ids = raw_logprobs.topk(k, dim=-1)
                top_values_l, top_ids_l = top_values.tolist(), top_ids.tolist()
            for i, w in enumerate(want_logprobs):
                if w is None:
                    continue
                logprob_list[i] = chosen[i]
                if w:
                    top_list[i] = (top_ids_l[i][:w], top_values_l[i][:w])
        return SampleResult(token_list, logprob_list, top_list)
