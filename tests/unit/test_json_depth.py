"""JSON nesting is measured without recursion and refused past the limit with a 400."""

from __future__ import annotations

import json
import random

import pytest

from trident.runtime.core.json_depth import check_json_depth, json_depth
from trident.runtime.errors import InvalidArgumentError
from trident.runtime.frontends.http import codec


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"1", 0),
        (b'"[[[["', 0),
        (b"[]", 1),
        (b'{"a": [1, [2, {"b": 3}]]}', 4),
        (b'{"a": "]]]]", "b": [[1]]}', 3),  # brackets in strings do not count
        (b'{"a": "\\"[[[", "b": []}', 2),  # nor after an escaped quote
        (b'["\\\\", [[]]]', 3),  # an escaped backslash ends before the quote
        (b'["\\\\\\"]]", [[]]]', 3),  # three backslashes: the quote is escaped
        (b'{"k\\u005b": "\\u005d", "v": {}}', 2),
        (b"[" * 5000 + b"]" * 5000, 5000),
    ],
)
def test_depth_counts_only_brackets_outside_strings(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth


def test_the_limit_is_inclusive_and_the_message_names_the_flag() -> None:
    check_json_depth(b"[" * 64 + b"]" * 64, 64)
    check_json_depth(b"{" * 32 + b"[" * 32 + b"]" * 32 + b"}" * 32, 64)
    with pytest.raises(InvalidArgumentError, match="nests deeper than the 64 levels") as e:
        check_json_depth(b"[" * 65 + b"]" * 65, 64, "request")
    assert "--http-max-json-depth" in str(e.value)
    # Also past the numpy threshold, and unclosed brackets (the parser would recurse on them).
    with pytest.raises(InvalidArgumentError):
        check_json_depth(b"[" * 40000 + b"]" * 40000, 64)
    with pytest.raises(InvalidArgumentError, match="do not balance"):
        check_json_depth(b"[" * 5000, 64)
    check_json_depth(b"[" + b"[1]," * 20000 + b"[1]]", 64)


def test_many_brackets_in_strings_or_flat_arrays_are_not_refused() -> None:
    # More brackets than the limit in all, but shallow: the slow path must not refuse them.
    body = json.dumps({"s": "[" * 500, "rows": [[i] for i in range(500)]}).encode()
    check_json_depth(body, 4)


def test_the_codec_answers_400_for_deep_json_instead_of_recursing() -> None:
    deep = b'{"inputs": ' + b"[" * 4000 + b"]" * 4000 + b"}"
    with pytest.raises(InvalidArgumentError, match="nests deeper than the 64"):
        codec.parse_json(deep)
    with pytest.raises(InvalidArgumentError, match="nests"):
        codec.decode_infer_request("m", 0, deep, None, max_json_depth=64)
    with pytest.raises(InvalidArgumentError, match="nests"):
        codec.decode_load_parameters(b'{"parameters": ' + b"[" * 100 + b"]" * 100 + b"}")
    assert codec.parse_json(b"[" * 10 + b"]" * 10, max_depth=10) == [[[[[[[[[[]]]]]]]]]]


def _reference_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_reference_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_reference_depth(item) for item in value.values()), default=0)
    return 0


def _random_value(rng: random.Random, depth: int) -> object:
    kind = rng.randrange(5 if depth < 12 else 2)
    if kind == 0:
        return "".join(rng.choice('[]{}"\\/ab\n\u00e9') for _ in range(rng.randrange(6)))
    if kind == 1:
        return rng.choice([1, 2.5, None, True])
    if kind == 2:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        str(_random_value(rng, 99)): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))
    }


def test_depth_matches_the_parsed_document_on_random_json() -> None:
    rng = random.Random(8)
    for _ in range(400):
        value = _random_value(rng, 0)
        for body in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
            encoded = body.encode()
            depth = _reference_depth(value)
            assert json_depth(encoded) == depth, body
            check_json_depth(encoded, depth)
            if depth:
                with pytest.raises(InvalidArgumentError):
                    check_json_depth(encoded, depth - 1)
