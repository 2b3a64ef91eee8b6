"""Request tracing: Triton's trace file (trace mode `triton`), read by Triton's trace tooling.

A sampled request carries a `RequestTrace`. The frontend that received it, the core and the
instance worker that ran it stamp the stages Triton timestamps (steady-clock nanoseconds, as
Triton's), and with the TENSORS level the tensors it entered and left the model with. When the
frontend has sent the response the trace is written out, as Triton writes it: a JSON array of
records, each carrying the trace's `id`:

    {"id":1,"model_name":"m","model_version":1,"request_id":"r"}      once, at REQUEST_START
    {"id":1,"timestamps":[{"name":"HTTP_RECV_START","ns":123}]}       one per stage
    {"id":1,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"INPUT0","data":"1,2",
        "shape":"1,2","dtype":"FP32"}}                                 TENSORS level

Sampling follows Triton's rules for each setting in force (the global one, or a model's own):
one request in `rate` is traced, at most `count` in all (-1: no limit). Files follow Triton's
`log_frequency`: with 0 every trace goes to `file`; with N > 0 traces are collected and each N
of them written to `file.0`, `file.1`, ... (the last, partial group when the setting is
replaced or the server stops, and at once when `count` runs out). Unlike Triton, which writes
`file` only when the server stops, Trident appends each trace as it completes and keeps the
file a valid JSON array after every write. Writing happens on the event loop; tracing is a
diagnostic, and the untraced path pays one attribute check per request.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntFlag
from typing import IO, Any, TypeVar

import numpy as np

from trident.runtime.types import Tensor

logger = logging.getLogger("trident.tracing")

R = TypeVar("R")
T = TypeVar("T")


class TraceLevel(IntFlag):
    """What a trace records (Triton's TRITONSERVER_InferenceTraceLevel, without MIN/MAX)."""

    OFF = 0
    TIMESTAMPS = 1
    TENSORS = 2


@dataclass(frozen=True, slots=True)
class TraceConfig:
    """One trace setting in force (global, or a model's own with the global one filled in)."""

    level: TraceLevel = TraceLevel.OFF
    rate: int = 1000
    count: int = -1
    log_frequency: int = 0
    file: str = ""

    def invalid_reason(self) -> str | None:
        """Why this setting cannot trace (Triton's rules); None when it can."""
        if not self.level:
            return "tracing is disabled"
        if self.rate <= 0:
            return "sample rate must be non-zero"
        if not self.file:
            return "trace file name is not given"
        return None


class TraceFile:
    """One trace file and its numbered siblings. Thread-safe: a trace may be finished on a
    worker thread when the last reference to a failed request goes there."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle: IO[bytes] | None = None
        self._index = 0
        self._failed = False
        self._closed = False

    def append(self, records: list[str]) -> None:
        """Add traces to `path`, keeping it one valid JSON array."""
        with self._lock:
            if self._closed:
                return  # a straggler after the server stopped: the file is complete
            try:
                if self._handle is None:
                    self._handle = open(self.path, "wb")  # noqa: SIM115 (kept open)
                    self._handle.write(b"[" + ",".join(records).encode() + b"]")
                else:
                    self._handle.seek(-1, 2)  # over the closing bracket
                    self._handle.write(b"," + ",".join(records).encode() + b"]")
                self._handle.flush()
            except OSError as exc:
                self._report(exc)

    def write_indexed(self, records: list[str]) -> None:
        """Write traces as one JSON array to `path.N`, N counting from 0."""
        with self._lock:
            name = f"{self.path}.{self._index}"
            self._index += 1
            try:
                with open(name, "wb") as handle:
                    handle.write(b"[" + ",".join(records).encode() + b"]")
            except OSError as exc:
                self._report(exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def _report(self, exc: OSError) -> None:
        if not self._failed:  # once: a full disk must not flood the log
            self._failed = True
            logger.error("cannot write the trace file %s: %s", self.path, exc)


_trace_ids = itertools.count(1)


class TraceSampler:
    """A trace setting in force and its counters (Triton's TraceSetting): decides which
    requests are traced and collects their traces for the file."""

    def __init__(self, config: TraceConfig, file: TraceFile | None, remaining: int) -> None:
        self.config = config
        self._file = file
        #: Traces still allowed (-1: no limit); Triton reports this as trace_count.
        self.remaining = remaining
        self._seen = 0
        self._created = 0
        self._collected = 0
        self._pending: list[str] = []
        self._retired = False
        #: Traces handed out and not yet finished (weakly: a trace left behind by a failed
        #: request is finished when it is collected, or when the server stops).
        self._outstanding: weakref.WeakSet[RequestTrace] = weakref.WeakSet()
        self.active = file is not None and config.invalid_reason() is None and remaining != 0

    def sample(self, model_name: str) -> RequestTrace | None:
        if not self.active:
            return None
        self._seen += 1
        if self._seen % self.config.rate:
            return None
        if self.remaining > 0:
            self.remaining -= 1
            if self.remaining == 0:
                self.active = False
        self._created += 1
        trace = RequestTrace(next(_trace_ids), self.config.level, model_name, self)
        self._outstanding.add(trace)
        return trace

    def collect(self, trace: RequestTrace, record: str) -> None:
        """A finished trace's records (one JSON text without brackets; empty when it
        recorded nothing, at the TENSORS level of a request without tensors)."""
        assert self._file is not None
        self._outstanding.discard(trace)
        self._collected += 1
        if not record:
            return
        frequency = self.config.log_frequency
        if frequency == 0:
            self._file.append([record])
            return
        self._pending.append(record)
        exhausted = self.remaining == 0 and self._collected == self._created
        if len(self._pending) >= frequency or exhausted or self._retired:
            self._flush()

    def retire(self) -> None:
        """Replaced by a new setting or the server stops: write what is collected (traces
        still in flight write themselves when they finish)."""
        self._retired = True
        self.active = False
        if self._pending:
            self._flush()

    def close(self) -> None:
        """The server stops: finish the traces still in flight, write everything."""
        self._retired = True
        self.active = False
        for trace in list(self._outstanding):
            trace.finish()
        self.retire()

    def _flush(self) -> None:
        assert self._file is not None
        pending, self._pending = self._pending, []
        self._file.write_indexed(pending)


class RequestTrace:
    """The trace of one request: its stages and, at the TENSORS level, its tensors."""

    __slots__ = (
        "__weakref__",
        "_done",
        "_events",
        "_sampler",
        "id",
        "level",
        "model_name",
        "model_version",
        "parent_id",
        "request_id",
    )

    def __init__(
        self, trace_id: int, level: TraceLevel, model_name: str, sampler: TraceSampler
    ) -> None:
        self.id = trace_id
        self.level = level
        self.model_name = model_name
        #: Set by the core once it has routed the request.
        self.model_version = -1
        self.request_id = ""
        #: The ensemble request's trace id, for the trace of one of its steps (else 0).
        self.parent_id = 0
        self._sampler = sampler
        #: Rendered records; a trace marks where the record naming its model goes.
        self._events: list[str | RequestTrace] = []
        self._done = False

    def child(self, model_name: str) -> RequestTrace:
        """The trace of an ensemble step's request: its own id, `parent_id` this trace's,
        written with this trace (as Triton writes an ensemble's traces, in one group)."""
        child = RequestTrace(next(_trace_ids), self.level, model_name, self._sampler)
        child.parent_id = self.id
        child._events = self._events
        child._done = True  # the parent writes the records
        return child

    def stamp(self, name: str, ns: int = 0) -> None:
        """Record that stage `name` happened at `ns` (steady clock; now when 0)."""
        if self.level & TraceLevel.TIMESTAMPS:
            self._events.append(
                f'{{"id":{self.id},"timestamps":[{{"name":"{name}",'
                f'"ns":{ns or time.monotonic_ns()}}}]}}'
            )

    def request_start(self, ns: int, request_id: str) -> None:
        """REQUEST_START, preceded by the record naming the model (as Triton writes it)."""
        if self.level & TraceLevel.TIMESTAMPS:
            self.request_id = request_id
            self._events.append(self)
            self.stamp("REQUEST_START", ns)

    def queued(self, model_version: int, inputs: list[Tensor]) -> None:
        """The core routed and checked the request and queues it for `model_version`."""
        self.model_version = model_version
        self.tensors("TENSOR_QUEUE_INPUT", inputs)
        self.stamp("QUEUE_START")

    def tensors(self, activity: str, tensors: Iterable[Tensor]) -> None:
        """TENSORS level: the tensors as they were at `activity` (TENSOR_QUEUE_INPUT,
        TENSOR_BACKEND_INPUT, TENSOR_BACKEND_OUTPUT)."""
        if not self.level & TraceLevel.TENSORS:
            return
        for tensor in tensors:
            if tensor.data is None:
                continue  # still in shared memory: nothing read yet
            record = {
                "name": tensor.name,
                "data": tensor_text(tensor),
                "shape": ",".join(str(d) for d in tensor.shape),
                "dtype": tensor.datatype,
            }
            self._events.append(
                f'{{"id":{self.id},"activity":"{activity}","tensor":'
                f"{json.dumps(record, separators=(',', ':'))}}}"
            )

    def compute(
        self,
        start: int,
        input_end: int,
        output_start: int,
        end: int,
        inputs: list[Tensor],
        outputs: list[Tensor] | None,
    ) -> None:
        """The execution the request ran in (called by the instance worker)."""
        self.stamp("COMPUTE_START", start)
        self.tensors("TENSOR_BACKEND_INPUT", inputs)
        self.stamp("COMPUTE_INPUT_END", input_end)
        self.stamp("COMPUTE_OUTPUT_START", output_start)
        if outputs is not None:
            self.tensors("TENSOR_BACKEND_OUTPUT", outputs)
        self.stamp("COMPUTE_END", end)

    def failed(self) -> None:
        """The core refused or failed the request: it ends here, and so does its trace (no
        frontend stamps follow an error)."""
        self.stamp("REQUEST_END")
        self.finish()

    def finish(self) -> None:
        """The frontend has sent the response: hand the trace to its file (once)."""
        if self._done:
            return
        self._done = True
        text = ",".join(e if isinstance(e, str) else e._header() for e in self._events)
        self._sampler.collect(self, text)

    def _header(self) -> str:
        """The record naming the model; rendered last, as the version is known only once the
        core has routed the request."""
        header = (
            f'{{"id":{self.id},"model_name":{json.dumps(self.model_name)},'
            f'"model_version":{self.model_version}'
        )
        if self.request_id:
            header += f',"request_id":{json.dumps(self.request_id)}'
        if self.parent_id:
            header += f',"parent_id":{self.parent_id}'
        return header + "}"

    def __del__(self) -> None:
        # A request that failed before its frontend finished the trace: Triton writes those
        # too (its trace is written when the last reference goes).
        if not self._done:
            try:
                self.finish()
            except Exception:  # never raise from a finalizer
                logger.exception("writing an unfinished trace failed")


def tensor_text(tensor: Tensor) -> str:
    """A tensor's values as Triton's trace writes them: comma-separated, floating point as
    C++ streams print it (6 significant digits), BYTES elements in double quotes."""
    data = tensor.data
    assert data is not None
    flat = np.asarray(data).reshape(-1)
    datatype = tensor.datatype
    if datatype == "BYTES":
        return ",".join(
            '"' + (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)) + '"'
            for v in flat
        )
    if datatype == "BF16":  # raw bfloat16 words: the top half of a float32
        flat = (flat.astype(np.uint32) << 16).view(np.float32)
    if datatype in ("FP16", "BF16", "FP32", "FP64"):
        return ",".join(format(v, "g") for v in flat.tolist())
    if datatype == "BOOL":
        return ",".join("1" if v else "0" for v in flat.tolist())
    return ",".join(str(v) for v in flat.tolist())


class Tracer:
    """The samplers in force, global and per model, over one trace file. Frontends check
    `enabled` (one attribute read) before asking for a trace."""

    def __init__(self) -> None:
        self.enabled = False
        self._file: TraceFile | None = None
        self._global = TraceSampler(TraceConfig(), None, -1)
        self._models: dict[str, TraceSampler] = {}

    def configure(self, global_config: TraceConfig, per_model: dict[str, TraceConfig]) -> None:
        """Put settings in force. A sampler whose setting did not change keeps its counters;
        a changed one is retired (writing what it collected) and replaced, with the count
        left over unless the count itself changed (Triton's behaviour)."""
        path = global_config.file or next((c.file for c in per_model.values() if c.file), "")
        if self._file is None or self._file.path != path:
            if self._file is not None:
                self._retire_all()
                self._file.close()
            self._file = TraceFile(path) if path else None
        self._global = self._renewed(self._global, global_config)
        models = {}
        for name, config in per_model.items():
            current = self._models.get(name)
            models[name] = self._renewed(current, config)
        for name, sampler in self._models.items():
            if name not in models:
                sampler.retire()
        self._models = models
        self.enabled = self._global.active or any(s.active for s in models.values())

    def _renewed(self, current: TraceSampler | None, config: TraceConfig) -> TraceSampler:
        if current is not None and current.config == config and current._file is self._file:
            return current
        remaining = config.count
        if current is not None:
            current.retire()
            if current.config.count == config.count:
                remaining = current.remaining
        return TraceSampler(config, self._file, remaining)

    def sample(self, model_name: str) -> RequestTrace | None:
        """A trace for a request to `model_name`, when the setting in force samples it."""
        sampler = self._models.get(model_name, self._global)
        trace = sampler.sample(model_name)
        if not sampler.active:
            self.enabled = self._global.active or any(s.active for s in self._models.values())
        return trace

    def remaining(self, model_name: str = "") -> int:
        """Traces the setting in force may still take (Triton reports it as trace_count)."""
        return self._models.get(model_name, self._global).remaining

    def close(self) -> None:
        """The server stops: write what is collected and close the file."""
        self.enabled = False
        self._global.close()
        for sampler in self._models.values():
            sampler.close()
        if self._file is not None:
            self._file.close()

    def _retire_all(self) -> None:
        self._global.retire()
        for sampler in self._models.values():
            sampler.retire()


def begin_trace(tracer: Tracer, model_name: str, stage: str, start_ns: int) -> RequestTrace | None:
    """Sample a request whose first stage (`stage`_START at `start_ns`) has just ended: a
    frontend that learns the model name only once it has read the request (gRPC)."""
    trace = tracer.sample(model_name)
    if trace is not None:
        trace.stamp(f"{stage}_START", start_ns)
        trace.stamp(f"{stage}_END")
    return trace


def send_traced(trace: RequestTrace, protocol: str, encode: Callable[[R], T], response: R) -> T:
    """Encode a traced request's reply between `protocol`_SEND_START and _SEND_END, then write
    the trace out (the transport sends the encoded reply when the handler returns)."""
    trace.stamp(f"{protocol}_SEND_START")
    reply = encode(response)
    trace.stamp(f"{protocol}_SEND_END")
    trace.finish()
    return reply


def record_compute(
    requests: Iterable[Any],
    responses: list[Any] | None,
    start: int,
    input_end: int,
    output_start: int,
    end: int,
) -> None:
    """Stamp the execution into each traced request of a batch (called by the instance
    worker: its responses, None when decoupled, and its stages in monotonic ns)."""
    for index, request in enumerate(requests):
        trace = request.trace
        if trace is not None:
            outputs = responses[index].outputs if responses is not None else None
            trace.compute(start, input_end, output_start, end, request.inputs, outputs)
