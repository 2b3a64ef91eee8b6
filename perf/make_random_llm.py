"""Write a Hugging Face Llama folder with a model's shapes and seeded random weights.

For machines a model's weights cannot reach (the GPU machine has no network, and SmolLM2's GGUF
is larger than what may travel there): the tokenizer and config travel (a few MB), the weights
are made there. Throughput does not depend on the weights' values when every request asks for a
fixed number of tokens (the benchmark ignores EOS on both sides).

    python perf/make_random_llm.py --from DIR_WITH_CONFIG_AND_TOKENIZER --out DIR [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()

    import transformers

    torch.manual_seed(0)
    config = transformers.AutoConfig.from_pretrained(str(args.source))
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype))
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out))
    for path in args.source.iterdir():
        if path.name != "config.json" and path.is_file():
            shutil.copy2(path, args.out / path.name)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {config.model_type}, {parameters / 1e6:.0f}M params, {args.dtype}")


if __name__ == "__main__":
    main()
