"""The response cache: --cache-config parsing, keys, LRU by bytes, statistics and metrics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from trident.runtime.core.response_cache import (
    ResponseCache,
    create_response_cache,
    parse_cache_config,
    request_key,
)
from trident.runtime.core.stats import ModelStats
from trident.runtime.errors import InvalidArgumentError
from trident.runtime.observability.metrics import render_metrics
from trident.runtime.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor


def test_cache_config_uses_tritonservers_syntax():
    assert parse_cache_config([]) is None
    assert parse_cache_config(["local,size=1048576"]) == ("local", 1048576)
    assert create_response_cache(["local,size=4096"]).size_bytes == 4096


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["local"], "expected <cache>,<key>=<value>"),
        (["local,size"], "expected <key>=<value>"),
        (["local,size=big"], "size must be a whole number of bytes"),
        (["local,size=0"], "size must be more than 0 bytes"),
        (["local,color=blue"], "unknown setting(s) ['color']"),
        (["redis,host=localhost"], "cache 'redis' is not available in Trident"),
        (["local,size=10", "redis,port=1"], "multiple cache configurations"),
    ],
)
def test_bad_cache_configs_say_what_to_change(items, message):
    with pytest.raises(InvalidArgumentError) as info:
        parse_cache_config(items)
    assert message in str(info.value)


def _request(values, dtype=np.float32, shape=None, outputs=(), **parameters) -> InferenceRequest:
    data = np.array(values, dtype=dtype)
    if shape is not None:
        data = data.reshape(shape)
    datatype = {np.float32: "FP32", np.int32: "INT32"}[dtype]
    return InferenceRequest(
        model_name="m",
        inputs=[Tensor("X", datatype, data.shape, data)],
        outputs=[RequestedOutput(name) for name in outputs],
        parameters=parameters,
    )


def test_keys_change_with_everything_that_decides_a_response():
    base = request_key("m", 1, _request([1, 2, 3, 4]))
    assert base == request_key("m", 1, _request([1, 2, 3, 4]))
    different = [
        request_key("other", 1, _request([1, 2, 3, 4])),
        request_key("m", 2, _request([1, 2, 3, 4])),
        request_key("m", 1, _request([1, 2, 3, 5])),
        request_key("m", 1, _request([1, 2, 3, 4], shape=(2, 2))),
        request_key("m", 1, _request([1, 2, 3, 4], dtype=np.int32)),
        request_key("m", 1, _request([1, 2, 3, 4], outputs=["Y"])),
        request_key("m", 1, _request([1, 2, 3, 4], knob=1)),
    ]
    assert base not in different
    assert len(set(different)) == len(different)


def test_bytes_inputs_and_non_contiguous_arrays_hash():
    strings = np.array([b"a", b"bc"], dtype=np.object_)
    request = InferenceRequest("m", inputs=[Tensor("S", "BYTES", (2,), strings)])
    other = InferenceRequest(
        "m", inputs=[Tensor("S", "BYTES", (2,), np.array([b"ab", b"c"], dtype=np.object_))]
    )
    assert request_key("m", 1, request) != request_key("m", 1, other)
    matrix = np.arange(16, dtype=np.float32).reshape(4, 4)
    view = InferenceRequest("m", inputs=[Tensor("X", "FP32", (4, 2), matrix[:, ::2])])
    copy = InferenceRequest(
        "m", inputs=[Tensor("X", "FP32", (4, 2), np.ascontiguousarray(matrix[:, ::2]))]
    )
    assert request_key("m", 1, view) == request_key("m", 1, copy)


def test_an_input_still_in_shared_memory_is_not_cacheable():
    request = InferenceRequest("m", inputs=[Tensor("X", "FP32", (4,), None)])
    assert request_key("m", 1, request) is None
    assert ResponseCache(1024).lookup("m", 1, request, ModelStats()) is None


def _response(size: int, fill: float = 1.0) -> InferenceResponse:
    data = np.full(size, fill, dtype=np.uint8)
    return InferenceResponse(outputs=[Tensor("Y", "UINT8", data.shape, data)])


def test_least_recently_used_entries_go_first_when_bytes_run_out():
    cache = ResponseCache(3 * (1000 + 64 + 16))
    for key in (b"a" * 16, b"b" * 16, b"c" * 16):
        assert cache.put(key, _response(1000))
    assert cache.num_entries == 3 and cache.evictions == 0
    assert cache.get(b"a" * 16) is not None  # a is now the most recently used
    cache.put(b"d" * 16, _response(1000))
    assert cache.get(b"b" * 16) is None  # b was the least recently used
    assert cache.get(b"a" * 16) is not None
    assert cache.evictions == 1
    assert cache.used_bytes <= cache.size_bytes
    assert 0.9 < cache.utilization <= 1.0


def test_a_response_larger_than_the_cache_is_not_stored():
    cache = ResponseCache(512)
    assert not cache.put(b"k" * 16, _response(1000))
    assert cache.num_entries == 0 and cache.used_bytes == 0


def test_cached_arrays_are_copies():
    cache = ResponseCache(4096)
    response = _response(8, fill=3)
    cache.put(b"k", response)
    response.outputs[0].data[:] = 0  # e.g. a view of client shared memory that changed
    hit = cache.get(b"k")
    assert hit is not None
    np.testing.assert_array_equal(hit.outputs[0].data, np.full(8, 3, np.uint8))
    assert hit.outputs[0] is not cache.get(b"k").outputs[0]  # fresh tensors per hit


def test_lookup_records_triton_statistics_for_hits_and_misses():
    cache, stats = ResponseCache(4096), ModelStats()
    miss = cache.lookup("m", 1, _request([1, 2]), stats)
    assert miss is not None and miss.response is None
    miss.store(_response(4))
    assert stats.cache_miss.count == 1 and stats.cache_miss.ns > 0
    assert stats.success.count == 0  # the scheduler counts the miss's run
    hit = cache.lookup("m", 1, _request([1, 2]), stats)
    assert hit is not None and hit.response is not None
    assert stats.cache_hit.count == 1
    assert stats.success.count == 1 and stats.queue.count == 1
    assert stats.compute_infer.count == 0
    assert stats.inference_count == 0 and stats.execution_count == 0
    assert (cache.hits, cache.misses, cache.lookups) == (1, 1, 2)


def test_failed_responses_are_not_cached():
    cache, stats = ResponseCache(4096), ModelStats()
    miss = cache.lookup("m", 1, _request([1, 2]), stats)
    miss.store(InferenceResponse(error=InvalidArgumentError("no")))
    assert cache.num_entries == 0 and stats.cache_miss.count == 0


@dataclass
class _Model:
    name: str
    version: int
    stats: ModelStats
    response_cache: ResponseCache | None


def test_metrics_show_cache_families_for_caching_models_and_the_cache():
    cache = ResponseCache(4096)
    cached, plain = ModelStats(), ModelStats()
    cache.lookup("c", 1, _request([1]), cached).store(_response(4))
    cache.lookup("c", 1, _request([1]), cached)
    text = render_metrics([_Model("c", 1, cached, cache), _Model("p", 1, plain, None)], cache)
    lines = set(text.splitlines())
    assert "# TYPE nv_cache_num_hits_per_model counter" in lines
    assert 'nv_cache_num_hits_per_model{model="c",version="1"} 1' in lines
    assert 'nv_cache_num_misses_per_model{model="c",version="1"} 1' in lines
    assert not any('model="p"' in line and "nv_cache" in line for line in lines)
    assert "nv_cache_num_entries 1" in lines
    assert "nv_cache_num_hits 1" in lines
    assert "nv_cache_num_lookups 2" in lines
    assert "# TYPE nv_cache_util gauge" in lines
    without = render_metrics([_Model("p", 1, plain, None)])
    assert "nv_cache" not in without
