"""Response cache, model warmup and in-place instance-count changes through the real server,
driven by tritonclient."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers import running_server, write_model

# Counts its executions (process-wide, per model file) and returns the count with the input.
COUNTING_MODEL_PY = """
import itertools
import time

import numpy as np
import triton_python_backend_utils as pb_utils

CALLS = itertools.count(1)


class TritonPythonModel:
    def initialize(self, args):
        self.name = args["model_instance_name"]
        self.seen_sum = 0.0

    def execute(self, requests):
        call = next(CALLS)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            self.seen_sum += float(x.sum())
            if {fail_on_zero} and not x.any():
                raise ValueError("cannot warm up on zeros")
            time.sleep({sleep})
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT0", x),
                pb_utils.Tensor("CALLS", np.array([call], dtype=np.int64)),
                pb_utils.Tensor("SEEN", np.array([self.seen_sum], dtype=np.float64)),
                pb_utils.Tensor("INSTANCE", np.array([self.name.encode()], dtype=np.object_)),
            ]))
        return responses
"""

COUNTING_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }},
         {{ name: "CALLS" data_type: TYPE_INT64 dims: [ 1 ] }},
         {{ name: "SEEN" data_type: TYPE_FP64 dims: [ 1 ] }},
         {{ name: "INSTANCE" data_type: TYPE_STRING dims: [ 1 ] }} ]
{extra}
"""


def _write_counting(
    repo: Path, name: str, extra: str = "", sleep: float = 0.0, fail_on_zero: bool = False
) -> Path:
    return write_model(
        repo,
        name,
        COUNTING_MODEL_PY.format(sleep=sleep, fail_on_zero=fail_on_zero),
        COUNTING_CONFIG.format(name=name, extra=textwrap.dedent(extra)),
    )


def _infer(client, model: str, values=(1, 2, 3, 4)):
    tensor = httpclient.InferInput("INPUT0", [4], "FP32")
    tensor.set_data_from_numpy(np.array(values, dtype=np.float32))
    return client.infer(model, [tensor])


def _index(client) -> dict[tuple[str, str], dict]:
    return {(e["name"], e.get("version", "")): e for e in client.get_model_repository_index()}


def _stats(client, model: str) -> dict:
    return client.get_inference_statistics(model)["model_stats"][0]


def _metrics(url: str) -> set[str]:
    import urllib.request

    with urllib.request.urlopen(f"http://{url}/metrics", timeout=10) as response:
        return set(response.read().decode().splitlines())


CACHE_ON = "response_cache { enable: true }"


def test_a_cache_hit_answers_without_running_the_model(tmp_path: Path) -> None:
    _write_counting(tmp_path, "cached", CACHE_ON)
    _write_counting(tmp_path, "plain")
    with running_server(tmp_path, cache_config=["local,size=1048576"]) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        assert int(_infer(client, "cached").as_numpy("CALLS")[0]) == 1
        second = _infer(client, "cached")
        assert int(second.as_numpy("CALLS")[0]) == 1  # served from the cache: no execution
        np.testing.assert_array_equal(second.as_numpy("OUTPUT0"), [1, 2, 3, 4])
        assert int(_infer(client, "cached", (4, 3, 2, 1)).as_numpy("CALLS")[0]) == 2
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("INPUT0", [4], "FP32")
        tensor.set_data_from_numpy(np.array([4, 3, 2, 1], dtype=np.float32))
        assert int(grpc.infer("cached", [tensor]).as_numpy("CALLS")[0]) == 2  # a gRPC hit
        # A model without response_cache never uses it.
        assert int(_infer(client, "plain").as_numpy("CALLS")[0]) == 1
        assert int(_infer(client, "plain").as_numpy("CALLS")[0]) == 2

        inference = _stats(client, "cached")
        counts = {k: v["count"] for k, v in inference["inference_stats"].items()}
        assert counts["success"] == 4 and counts["queue"] == 4  # hits included
        assert counts["cache_hit"] == 2 and counts["cache_miss"] == 2
        assert counts["compute_infer"] == 2  # hits excluded
        assert inference["inference_count"] == 2 and inference["execution_count"] == 2
        assert inference["inference_stats"]["cache_hit"]["ns"] > 0

        lines = _metrics(server.metrics_url)
        assert 'nv_cache_num_hits_per_model{model="cached",version="1"} 2' in lines
        assert 'nv_cache_num_misses_per_model{model="cached",version="1"} 2' in lines
        assert not any('model="plain"' in line and line.startswith("nv_cache") for line in lines)
        assert "nv_cache_num_entries 2" in lines
        assert "nv_cache_num_hits 2" in lines
        assert 'nv_inference_exec_count{model="cached",version="1"} 2' in lines


def test_cache_settings_that_cannot_work(tmp_path: Path) -> None:
    _write_counting(tmp_path, "no_server_cache", CACHE_ON)
    write_model(
        tmp_path,
        "decoupled_cached",
        "class TritonPythonModel:\n    def execute(self, requests):\n        return None\n",
        COUNTING_CONFIG.format(
            name="decoupled_cached",
            extra=CACHE_ON + "\nmodel_transaction_policy { decoupled: true }",
        ),
    )
    with running_server(tmp_path) as server:  # no --cache-config
        client = httpclient.InferenceServerClient(server.http_url)
        # Like Triton, the model loads and just runs every request (we also log a warning).
        assert int(_infer(client, "no_server_cache").as_numpy("CALLS")[0]) == 1
        assert int(_infer(client, "no_server_cache").as_numpy("CALLS")[0]) == 2
        assert _stats(client, "no_server_cache")["inference_stats"]["cache_hit"]["count"] == 0
        reason = _index(client)[("decoupled_cached", "1")]["reason"]
        assert "Response Cache does not currently support model 'decoupled_cached'" in reason
        assert not any(line.startswith("nv_cache") for line in _metrics(server.metrics_url))


WARMUP = """
model_warmup [ {{
  name: "w0" batch_size: 2 count: {count}
  inputs {{ key: "INPUT0" value: {{ data_type: TYPE_FP32 dims: [ 4 ] {data} }} }}
}} ]
"""


def test_warmup_runs_before_the_model_is_ready_and_is_not_counted(tmp_path: Path) -> None:
    model_dir = _write_counting(
        tmp_path, "warm", WARMUP.format(count=3, data='input_data_file: "ones"'), sleep=0.15
    )
    (model_dir / "warmup").mkdir()
    (model_dir / "warmup" / "ones").write_bytes(np.ones(4, dtype="<f4").tobytes())
    with running_server(tmp_path, model_control_mode="explicit") as server:
        client = httpclient.InferenceServerClient(server.http_url)
        # tritonclient.http clients are gevent-based: one client per thread.
        loader = threading.Thread(
            target=lambda: httpclient.InferenceServerClient(server.http_url).load_model("warm")
        )
        loader.start()
        saw_loading, first = False, None
        deadline = time.monotonic() + 30
        while first is None and time.monotonic() < deadline:
            if client.is_model_ready("warm"):
                first = _infer(client, "warm")  # the very first request once READY
                break
            entry = _index(client).get(("warm", "1"))
            saw_loading |= entry is not None and entry.get("state") == "LOADING"
            time.sleep(0.02)
        loader.join()
        assert saw_loading  # warmup (3 x 2 x 0.15 s) ran while the model was LOADING
        assert first is not None
        assert int(first.as_numpy("CALLS")[0]) == 4  # all 3 warmup executions came before
        assert float(first.as_numpy("SEEN")[0]) == 3 * 2 * 4 + 10  # warmup saw the file's ones
        stats = _stats(client, "warm")
        assert stats["execution_count"] == 1  # warmup is not in the statistics
        assert stats["inference_stats"]["success"]["count"] == 1


def test_a_failing_warmup_makes_the_model_unavailable_with_the_reason(tmp_path: Path) -> None:
    _write_counting(
        tmp_path, "cold", WARMUP.format(count=1, data="zero_data: true"), fail_on_zero=True
    )
    with running_server(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        entry = _index(client)[("cold", "1")]
        assert entry["state"] == "UNAVAILABLE"
        assert "failed to run warmup sample 'w0'" in entry["reason"]
        assert "cannot warm up on zeros" in entry["reason"]
        with pytest.raises(InferenceServerException, match="failed to run warmup sample"):
            _infer(client, "cold")


def _instance_names(url: str, model: str, requests: int = 6) -> set[bytes]:
    def one(_: int) -> bytes:
        client = httpclient.InferenceServerClient(url)
        return bytes(_infer(client, model).as_numpy("INSTANCE")[0])

    with ThreadPoolExecutor(requests) as pool:
        return set(pool.map(one, range(requests)))


class _IndexWatcher:
    """Polls the repository index in the background and remembers every state it saw."""

    def __init__(self, url: str, model: str) -> None:
        self.url = url
        self.model = model
        self.states: set[str] = set()
        self.not_ready = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = httpclient.InferenceServerClient(self.url)  # gevent: one client per thread
        while not self._stop.is_set():
            self.states.add(_index(client)[(self.model, "1")]["state"])
            if not client.is_model_ready(self.model):
                self.not_ready += 1
            time.sleep(0.005)

    def __enter__(self) -> _IndexWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _counts_config(count: int) -> str:
    return COUNTING_CONFIG.format(
        name="scaled", extra=f"instance_group [ {{ count: {count} kind: KIND_CPU }} ]"
    )


def test_instance_count_changes_apply_in_place(tmp_path: Path) -> None:
    model_dir = _write_counting(
        tmp_path, "scaled", "instance_group [ { count: 1 kind: KIND_CPU } ]", sleep=0.3
    )
    with running_server(tmp_path, model_control_mode="poll", repository_poll_secs=3600) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        assert _instance_names(server.http_url, "scaled") == {b"scaled_0_0"}
        with _IndexWatcher(server.http_url, "scaled") as watcher:
            # Poll mode: config.pbtxt changes only in its instance count.
            (model_dir / "config.pbtxt").write_text(_counts_config(3))
            server.call(server.server.models.poll_once())
            grown = _instance_names(server.http_url, "scaled")
        assert watcher.states == {"READY"} and watcher.not_ready == 0
        assert len(grown) == 3 and b"scaled_0_0" in grown
        assert client.get_model_config("scaled")["instance_group"][0]["count"] == 3
        # The statistics survived: the same loaded model served throughout.
        assert _stats(client, "scaled")["inference_stats"]["success"]["count"] == 12

        (model_dir / "config.pbtxt").write_text(_counts_config(1))
        with _IndexWatcher(server.http_url, "scaled") as watcher:
            server.call(server.server.models.poll_once())
        assert watcher.states == {"READY"} and watcher.not_ready == 0
        assert len(_instance_names(server.http_url, "scaled")) == 1
        assert _stats(client, "scaled")["inference_stats"]["success"]["count"] == 18

        # Anything else changing is a real reload (new statistics).
        (model_dir / "config.pbtxt").write_text(
            _counts_config(1) + '\nparameters { key: "p" value: { string_value: "x" } }'
        )
        server.call(server.server.models.poll_once())
        assert _stats(client, "scaled")["inference_stats"]["success"]["count"] == 0


def test_a_load_override_changing_only_counts_is_applied_in_place(tmp_path: Path) -> None:
    _write_counting(tmp_path, "scaled", "instance_group [ { count: 1 kind: KIND_CPU } ]", sleep=0.3)
    with running_server(
        tmp_path, model_control_mode="explicit", startup_models=["scaled"]
    ) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        _infer(client, "scaled")
        config = client.get_model_config("scaled")
        config["instance_group"][0]["count"] = 2
        with _IndexWatcher(server.http_url, "scaled") as watcher:
            client.load_model("scaled", config=json.dumps(config))
        assert watcher.states == {"READY"}
        assert len(_instance_names(server.http_url, "scaled", 4)) == 2
        assert _stats(client, "scaled")["inference_stats"]["success"]["count"] == 5
