"""One request through the engine: consume its outputs, send them as responses.

A streaming request gets one response per delta (empty deltas skipped, so chunked-prefill steps
send nothing) and a final one; a non-streaming request gets exactly one response, the whole text,
which is what `/generate`, unary `ModelInfer` and `/infer` need. The task runs on the event loop
and only awaits the engine, which works on its own thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from trident.runtime.core.in_flight import InFlightRequest
from trident.runtime.errors import (
    CancelledError,
    InvalidArgumentError,
    ModelExecutionError,
    TridentError,
    UnavailableError,
)
from trident.runtime.types import InferenceResponse

from .engine import (
    EngineOverloaded,
    EngineStopped,
    InvalidSamplingParams,
    PromptTooLong,
    RequestOutput,
    TokenLogprob,
)
from .tensor_schema import GenerationRequest, response_tensors

logger = logging.getLogger("trident.backends.llm")


class EngineOverloadedError(UnavailableError):
    """The engine's waiting queue is full: HTTP 429 (Too Many Requests), gRPC UNAVAILABLE."""

    http_status = 429


def engine_error(exc: BaseException) -> TridentError:
    """The server error for an engine exception (each knows its HTTP status and gRPC code)."""
    if isinstance(exc, TridentError):
        return exc
    if isinstance(exc, EngineOverloaded):
        return EngineOverloadedError(f"overloaded: {exc}" if str(exc) else "overloaded")
    if isinstance(exc, (PromptTooLong, InvalidSamplingParams)):
        return InvalidArgumentError(str(exc))
    if isinstance(exc, EngineStopped):
        return UnavailableError(f"the model's engine stopped: {exc}")
    return ModelExecutionError(f"generation failed: {type(exc).__name__}: {exc}")


async def run_generation(
    engine: Any,
    engine_request_id: str,
    request: InFlightRequest,
    job: GenerationRequest,
) -> None:
    """Generate and send every response of `request`; always ends it with a final response."""
    responder = request.responder
    try:
        if job.stream:
            await _stream(engine, engine_request_id, request, job)
        else:
            responder.send(await _aggregate(engine, engine_request_id, job))
    except asyncio.CancelledError:
        # The client cancelled or went away: the engine aborted the request when its
        # generator closed; end the request so nothing waits on it.
        responder.fail(CancelledError(f"request for model '{request.model_name}' was cancelled"))
        raise
    except Exception as exc:
        error = engine_error(exc)
        if isinstance(error, ModelExecutionError):
            logger.exception("generation of request %s failed", engine_request_id)
        responder.fail(error)


async def _stream(
    engine: Any, engine_request_id: str, request: InFlightRequest, job: GenerationRequest
) -> None:
    responder = request.responder
    prefix = "" if job.exclude_input else job.prompt_text
    pending_logprobs: list[TokenLogprob] = []
    pending_tokens = 0
    cumulative = 0.0
    generator = engine.generate(engine_request_id, job.prompt, job.params)
    try:
        async for output in generator:
            pending_logprobs.extend(output.new_logprobs)
            cumulative += sum(entry.logprob for entry in output.new_logprobs)
            pending_tokens += len(output.new_token_ids)
            text = prefix + output.new_text
            if not text and not output.finished:
                continue  # nothing to show yet (a prefill chunk, or text held back for stop)
            prefix = ""
            outputs = response_tensors(
                job.returns,
                text,
                output.finish_reason,
                output.num_prompt_tokens,
                pending_tokens,
                pending_logprobs,
                cumulative,
            )
            pending_logprobs, pending_tokens = [], 0
            responder.send(InferenceResponse(outputs=outputs, final=output.finished))
            if output.finished:
                return
    finally:
        await generator.aclose()
    raise ModelExecutionError("the engine ended a request without a final output")


async def _aggregate(
    engine: Any, engine_request_id: str, job: GenerationRequest
) -> InferenceResponse:
    parts = [] if job.exclude_input else [job.prompt_text]
    logprobs: list[TokenLogprob] = []
    last: RequestOutput | None = None
    generator = engine.generate(engine_request_id, job.prompt, job.params)
    try:
        async for output in generator:
            parts.append(output.new_text)
            logprobs.extend(output.new_logprobs)
            last = output
            if output.finished:
                break
    finally:
        await generator.aclose()
    if last is None or not last.finished:
        raise ModelExecutionError("the engine ended a request without a final output")
    outputs = response_tensors(
        job.returns,
        "".join(parts),
        last.finish_reason,
        last.num_prompt_tokens,
        last.num_output_tokens,
        logprobs,
        float(sum(entry.logprob for entry in logprobs)),
    )
    return InferenceResponse(outputs=outputs, final=True)
