"""How deeply a JSON body nests, checked before it is parsed.

Python's json module parses nested arrays and objects by recursion, so a body of a few thousand
`[` ends in RecursionError (a 500, and a deep stack for every such request). The check here
counts nesting without recursion and without a Python loop over the bytes:

1. fast path: a body with no more `[` and `{` bytes in all than the limit cannot nest deeper
   (a typical 1 KiB infer request stops here after two C-level `bytes.count` calls);
2. otherwise JSON strings are cut out with one regular expression (brackets inside strings do not
   nest) and the running depth over the remaining brackets is computed with numpy.
"""

from __future__ import annotations

import re

import numpy as np

from trident.runtime.errors import InvalidArgumentError

#: Default of --http-max-json-depth.
DEFAULT_MAX_JSON_DEPTH = 64

# A JSON string, unrolled so that the runs between escapes are matched in one step.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STEP = np.zeros(256, np.int8)
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in `body` (0 for a scalar)."""
    without_strings = _STRING.sub(b'""', body)
    steps = _STEP[np.frombuffer(without_strings, np.uint8)]
    brackets = steps[steps != 0]
    if brackets.size == 0:
        return 0
    return int(np.cumsum(brackets, dtype=np.int64).max())


def check_json_depth(body: bytes, max_depth: int, what: str = "request") -> None:
    """Raise InvalidArgumentError (400) when `body` nests deeper than `max_depth`."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return
    depth = json_depth(body)
    if depth > max_depth:
        raise InvalidArgumentError(
            f"the {what} JSON nests {depth} levels deep, more than the {max_depth} allowed "
            "(--http-max-json-depth)"
        )
