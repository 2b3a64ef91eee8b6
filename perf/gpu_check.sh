#!/usr/bin/env bash
# GPU checks, run on a machine with a CUDA GPU, from the repository root:
#   bash perf/gpu_check.sh            # logs under $OUT (default /tmp/trident-gpu)
# 1. every test marked `gpu` (they skip on machines without a GPU);
# 2. the LLM engine's benchmark at 1, 16 and 64 concurrent requests in bf16 and fp16 against
#    transformers generate() one request at a time, on SmolLM2-135M's shapes.
# Without network: wheels in .whl/ are installed first (pip download ... -d .whl), and the model's
# config and tokenizer come from .gpu/smollm2 (saved from the GGUF with transformers'
# save_pretrained); its weights are made there, seeded (perf/make_random_llm.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/trident-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/trident-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/trident-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi -L
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0))"

echo "== tests marked gpu"
timeout 300 python3 -m pytest -q -rs -m gpu --timeout 120 --continue-on-collection-errors tests/unit tests/integration 2>&1 \
    | tee "$OUT/gpu_tests.log" | tail -40

echo "== LLM engine vs transformers"
MODEL_SRC=${MODEL_SRC:-.gpu/smollm2}
python3 perf/make_random_llm.py --from "$MODEL_SRC" --out /tmp/trident-llm --dtype bfloat16 2>&1 \
    | grep -v "shards" | tail -2
timeout 420 python3 perf/bench_llm.py --device cuda --model-dir /tmp/trident-llm \
    --dtypes bfloat16,float16 --concurrency 1,16,64 --prompts 64 --prompts-at-1 4 \
    --new-tokens 128 --peer-budget-s 30 2>&1 | grep -v "Loading weights" | tee "$OUT/bench_llm.log"
