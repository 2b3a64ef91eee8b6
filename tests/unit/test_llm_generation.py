"""One request through an engine: streamed and aggregated responses, cancellation and errors.

The engine here is a scripted stand-in with the real engine's `generate` contract (an async
generator of RequestOutput deltas, aborted when closed); the real engine runs in
tests/integration/test_llm_*.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

pytest.importorskip("torch")

from trident.backends.llm.engine import (
    EngineOverloaded,
    PromptTooLong,
    RequestOutput,
    SamplingParams,
    TokenLogprob,
)
from trident.backends.llm.generation import EngineOverloadedError, run_generation
from trident.backends.llm.tensor_schema import GenerationRequest, ReturnOptions
from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import CancelledError, InvalidArgumentError
from trident.runtime.types import InferenceRequest, InferenceResponse


@dataclass
class Collector:
    """A responder that keeps what it is sent."""

    responses: list[InferenceResponse] = field(default_factory=list)

    def send(self, response: InferenceResponse) -> None:
        self.responses.append(response)

    def fail(self, error) -> None:
        self.send(InferenceResponse(error=error, final=True))


def _output(text: str, ids: list[int], n: int, finished: bool = False, reason=None, lp=()):
    return RequestOutput("r", ids, text, finished, reason, None, 3, n, list(lp))


class ScriptedEngine:
    def __init__(self, outputs=(), error: Exception | None = None, hang: bool = False) -> None:
        self.outputs = list(outputs)
        self.error = error
        self.hang = hang
        self.closed = asyncio.Event()

    async def generate(self, request_id, prompt, params):
        try:
            if self.error is not None:
                raise self.error
            for output in self.outputs:
                yield output
            if self.hang:
                await asyncio.sleep(3600)
        finally:
            self.closed.set()  # the real engine aborts the request here


def _job(stream: bool, exclude: bool = True, returns: ReturnOptions | None = None):
    returns = returns or ReturnOptions(finish_reason=True, num_output_tokens=True)
    return GenerationRequest("Hi", "Hi", SamplingParams(max_tokens=4), stream, exclude, returns)


def _values(response: InferenceResponse) -> dict:
    return {t.name: t.data.reshape(-1)[0] for t in response.outputs}


SCRIPT = [
    _output("", [1], 1),  # text held back: no response
    _output("Hel", [2], 2, lp=[TokenLogprob(1, -1.0, "", []), TokenLogprob(2, -0.5, "Hel", [])]),
    _output("lo", [3], 3, finished=True, reason="length", lp=[TokenLogprob(3, -0.25, "lo", [])]),
]


def _run(engine, job) -> Collector:
    request = InFlightRequest(InferenceRequest(model_name="m"), 1, responder=Collector())
    asyncio.run(run_generation(engine, "r", request, job))
    return request.responder


def test_a_stream_sends_one_response_per_visible_delta_and_ends_with_the_final_one() -> None:
    returns = ReturnOptions(finish_reason=True, num_output_tokens=True, cumulative_logprob=True)
    responses = _run(ScriptedEngine(SCRIPT), _job(True, returns=returns)).responses
    assert [_values(r)["text_output"] for r in responses] == [b"Hel", b"lo"]
    assert [r.final for r in responses] == [False, True]
    # Tokens of a skipped step are counted in the next response.
    assert [_values(r)["num_output_tokens"] for r in responses] == [2, 1]
    assert [_values(r)["finish_reason"] for r in responses] == [b"", b"length"]
    assert _values(responses[-1])["cumulative_logprob"] == pytest.approx(-1.75)


def test_a_stream_echoes_the_prompt_first_when_the_input_is_not_excluded() -> None:
    responses = _run(ScriptedEngine(SCRIPT), _job(True, exclude=False)).responses
    assert [_values(r)["text_output"] for r in responses] == [b"Hi", b"Hel", b"lo"]


def test_without_stream_exactly_one_response_holds_everything() -> None:
    responses = _run(ScriptedEngine(SCRIPT), _job(False, exclude=False)).responses
    assert len(responses) == 1 and responses[0].final
    values = _values(responses[0])
    assert values["text_output"] == b"HiHello"
    assert values["num_output_tokens"] == 3
    assert values["finish_reason"] == b"length"


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        (EngineOverloaded("256 requests waiting"), EngineOverloadedError, 429),
        (PromptTooLong("prompt of 300 tokens"), InvalidArgumentError, 400),
    ],
)
def test_engine_refusals_become_errors_with_their_status(error, kind, status) -> None:
    responses = _run(ScriptedEngine(error=error), _job(True)).responses
    assert len(responses) == 1 and responses[0].final
    assert isinstance(responses[0].error, kind)
    assert responses[0].error.http_status == status


def test_overloaded_is_unavailable_over_grpc() -> None:
    assert EngineOverloadedError("overloaded").grpc_code == "UNAVAILABLE"


def test_cancelling_the_task_closes_the_engine_generator_and_ends_the_request() -> None:
    async def scenario() -> Collector:
        engine = ScriptedEngine(SCRIPT[:2], hang=True)
        request = InFlightRequest(InferenceRequest(model_name="m"), 1, responder=Collector())
        task = asyncio.get_running_loop().create_task(
            run_generation(engine, "r", request, _job(True))
        )
        while not request.responder.responses:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine.closed.is_set()
        return request.responder

    responses = asyncio.run(scenario()).responses
    assert _values(responses[0])["text_output"] == b"Hel"
    assert isinstance(responses[-1].error, CancelledError) and responses[-1].final
